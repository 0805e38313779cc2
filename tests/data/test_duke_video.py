"""Tests for the DukeMTMC-VideoReID reader and builder: layout, order, query/gallery, errors."""

from __future__ import annotations

import io
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid_jax.data import builders, duke_video
from reid_jax.evaluation import metrics

# folder -> [(pid, tracklet folder, camera, F numbers in temporal order, underscores?)]
TREE = {
    "train": [
        (1, "0001", 6, [9998, 9999, 10000], True),  # 'F10000' sorts before 'F9998' as a string
        (1, "0002", 2, [2, 3, 4], False),  # starts at F0002; old name style, no underscores
        (4, "9", 1, [1, 2], True),  # tracklet folders '9' and '10': numeric order
        (4, "10", 1, [5], True),
    ],
    "query": [(10, "0005", 3, [1, 2], True), (12, "0007", 1, [3, 4, 5], True)],
    "gallery": [
        (10, "0006", 4, [1, 2, 3], True),
        (10, "0009", 3, [7, 8], True),  # same person and camera as its query
        (12, "0008", 5, [1], True),
        (20, "0010", 2, [1, 2], True),  # distractor identity
    ],
}


def frame_name(pid: int, cam: int, frame: int, underscores: bool, x: int) -> str:
    sep = "_" if underscores else ""
    return f"{pid:04d}{sep}C{cam}{sep}F{frame:04d}{sep}X{x}.jpg"


def jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 8), (value * 9 % 256, 3, 5)).save(buf, "JPEG")
    return buf.getvalue()


def write_tree(root: Path) -> dict[str, list[list[str]]]:
    """Writes the tiny tree (files in shuffled order); returns folder -> per-tracklet paths."""
    expected = {}
    for folder, tracklets in TREE.items():
        expected[folder] = [
            [
                f"{folder}/{pid:04d}/{t}/{frame_name(pid, cam, f, us, 3000 + 12 * f)}"
                for f in frames
            ]
            for pid, t, cam, frames, us in tracklets
        ]
    files = [rel for tracklets in expected.values() for rels in tracklets for rel in rels]
    random.Random(2).shuffle(files)
    for i, rel in enumerate(files):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(jpeg(i))
    return expected


def test_tables_follow_person_tracklet_and_frame_numbers(tmp_path):
    expected = write_tree(tmp_path)
    tables = duke_video.read_duke_video(tmp_path)
    assert set(tables) == {"train", "test"}
    train, test = tables["train"], tables["test"]
    assert train.pid.tolist() == [1, 1, 4, 4] and train.camid.tolist() == [6, 2, 1, 1]
    assert train.length.tolist() == [3, 3, 2, 1]
    assert train.paths == [rel for rels in expected["train"] for rel in rels]
    assert train.paths[:3] == [
        "train/0001/0001/0001_C6_F9998_X122976.jpg",
        "train/0001/0001/0001_C6_F9999_X122988.jpg",
        "train/0001/0001/0001_C6_F10000_X123000.jpg",
    ]
    assert "/4/9/" not in train.paths[6] and train.paths[6].startswith("train/0004/9/")
    assert not train.is_query.any()
    # test = query tracklets first, then gallery tracklets
    assert test.pid.tolist() == [10, 12, 10, 10, 12, 20]
    assert test.camid.tolist() == [3, 1, 4, 3, 5, 2]
    assert test.is_query.tolist() == [True, True, False, False, False, False]
    assert test.paths == [rel for f in ("query", "gallery") for rels in expected[f] for rel in rels]
    assert test.start.tolist() == [0, 2, 5, 8, 10, 11]


def test_legacy_protocol_ranks_the_gallery_folder_without_same_camera_matches(tmp_path):
    write_tree(tmp_path)
    test = duke_video.read_duke_video(tmp_path)["test"]
    q, g = metrics.query_gallery_indices(test.pid, test.is_query, "legacy")
    assert q.tolist() == [0, 1] and g.tolist() == [2, 3, 4, 5]
    # Query 0 (pid 10, C3) is nearest to gallery row 3 (pid 10, C3): that tracklet is dropped,
    # so the first true match is row 2 (pid 10, C4) at rank 2 behind the distractor.
    dist = np.array([[0.3, 0.1, 0.9, 0.2], [0.9, 0.9, 0.1, 0.5]])
    res = metrics.evaluate(dist, test.pid[q], test.pid[g], test.camid[q], test.camid[g], "legacy")
    assert res["cmc"][:2].tolist() == [0.5, 1.0]
    assert res["mAP"] == pytest.approx((0.5 + 1.0) / 2)


BREAKAGES = [
    (lambda r: _rmtree(r / "gallery"), FileNotFoundError, "missing DukeMTMC-VideoReID folders"),
    (
        lambda r: _rename(r, "query/0010/0005", ".jpg", ".png"),
        ValueError,
        "does not match the pattern <pid4>_C<cam>_F<frame",
    ),
    (
        lambda r: _rename(r, "query/0010/0005", "0010_C3_F0001", "0011_C3_F0001"),
        ValueError,
        "pid 11 in the file name does not match the folder",
    ),
    (
        lambda r: _rename(r, "query/0010/0005", "0010_C3_F0001", "0010_C7_F0001"),
        ValueError,
        r"mixes frames of cameras \[3, 7\]",
    ),
    (
        lambda r: _rename(r, "gallery/0012/0008", "_C5_", "_C9_"),
        ValueError,
        "camera 9 outside 1..8",
    ),
    (
        lambda r: _rename(r, "train/0001/0001", "F9998", "F09999"),
        ValueError,
        "the same frame 9999",
    ),
    (lambda r: (r / "train/0001/0003").mkdir(), ValueError, "holds no frames"),
    (lambda r: (r / "gallery/12").mkdir(), ValueError, "<pid4>"),
    (lambda r: (r / "gallery/0030").mkdir(), ValueError, "holds no tracklet folders"),
    (
        lambda r: shutil.copytree(r / "gallery/0020", r / "train/0020"),
        ValueError,
        r"persons \[20\] appear both in train/ and in query/ or gallery/",
    ),
]


@pytest.mark.parametrize(("breakage", "error", "match"), BREAKAGES)
def test_layout_errors_name_the_path(tmp_path, breakage, error, match):
    write_tree(tmp_path)
    breakage(tmp_path)
    with pytest.raises(error, match=match) as e:
        duke_video.read_duke_video(tmp_path)
    assert str(tmp_path) in str(e.value)


def _rmtree(path: Path) -> None:
    for p in sorted(path.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    path.rmdir()


def _rename(root: Path, folder: str, old: str, new: str) -> None:
    """Renames the first file of root/folder whose name contains `old` (replacing it)."""
    path = next(p for p in sorted((root / folder).iterdir()) if old in p.name)
    path.rename(path.with_name(path.name.replace(old, new)))


def test_builder_records_and_index(tmp_path):
    expected = write_tree(tmp_path / "manual")
    builders.prepare("duke_video", tmp_path / "data", tmp_path / "manual", num_workers=0)
    assert builders.num_trials("duke_video", tmp_path / "data") == 1
    tables = duke_video.read_duke_video(tmp_path / "manual")
    for split, table in tables.items():
        source, index = builders.load_split("duke_video", tmp_path / "data", split)
        for col in ("start", "length", "pid", "camid", "is_query"):
            np.testing.assert_array_equal(getattr(index, col), getattr(table, col))
        recs = [source[i] for i in range(len(source))]
        assert [builders.record_name(r) for r in recs] == table.paths
        for rec, rel in zip(recs, table.paths, strict=True):
            assert rec["jpeg"] == (tmp_path / "manual" / rel).read_bytes()
        assert [r["frame"] for r in recs] == [i for n in table.length for i in range(n)]
        rows = np.repeat(np.arange(len(table.pid)), table.length)
        assert [r["tracklet"] for r in recs] == rows.tolist()
    _, train = builders.load_split("duke_video", tmp_path / "data", "train")
    assert train.label.tolist() == [0, 0, 1, 1]
    assert len(expected["train"]) == len(train.pid)
    with pytest.raises(ValueError, match=r"one fixed train/test split.*must be 0, got 1"):
        builders.load_split("duke_video", tmp_path / "data", "test", trial=1)
