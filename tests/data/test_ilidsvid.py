"""Tests for the iLIDS-VID reader and builder: layout, frame order, trials, queries, errors."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from reid_jax import config_base
from reid_jax.data import builders, ilidsvid, prepare, transforms
from reid_jax.evaluation import metrics

# Person numbers have gaps (as in the release); 5-digit frame numbers that cross 99999 sort
# differently as strings ('100000' < '99998') than as numbers.
PERSONS = [2, 5, 11, 40]
FRAMES = {  # (pid, cam) -> frame numbers in temporal order
    (2, 1): [99998, 99999, 100000, 100001],
    (2, 2): [7, 8, 9],
    (5, 1): [310, 311],
    (5, 2): [99999, 100000, 100002],
    (11, 1): [1, 2, 3],
    (11, 2): [50, 51],
    (40, 1): [12, 13, 14, 15, 16],
    (40, 2): [400, 401],
}
# ls_set rows: 1-based indices into PERSONS; first half test, second half train.
LS_SET = [[3, 1, 4, 2], [2, 4, 1, 3]]
TRIALS = [{"test": [2, 11], "train": [5, 40]}, {"test": [5, 40], "train": [2, 11]}]


def frame_rel(pid: int, cam: int, frame: int) -> str:
    return f"{ilidsvid.SEQUENCES}/cam{cam}/person{pid:03d}/cam{cam}_person{pid:03d}_{frame:05d}.png"


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 6), (value % 256, value // 256 % 256, 7)).save(buf, "PNG")
    return buf.getvalue()


def write_tree(root: Path, ls_set=LS_SET) -> dict[tuple[int, int], list[str]]:
    """Writes the tiny iLIDS-VID tree (files in shuffled order); returns expected frame paths."""
    expected = {k: [frame_rel(*k, f) for f in frames] for k, frames in FRAMES.items()}
    files = [rel for rels in expected.values() for rel in rels]
    random.Random(0).shuffle(files)
    for i, rel in enumerate(files):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png(i))
    mat = root / ilidsvid.SPLIT_MAT
    mat.parent.mkdir(parents=True)
    scipy.io.savemat(mat, {"ls_set": np.array(ls_set, np.float64)})  # MATLAB stores doubles
    return expected


def test_reader_orders_frames_numerically_and_reads_trials(tmp_path):
    expected = write_tree(tmp_path)
    table, trials = ilidsvid.read_ilidsvid(tmp_path)
    assert table.pid.tolist() == [2, 2, 5, 5, 11, 11, 40, 40]
    assert table.camid.tolist() == [1, 2] * 4
    assert table.is_query.tolist() == [True, False] * 4  # cam1 = query
    order = [(p, c) for p in PERSONS for c in (1, 2)]
    assert table.length.tolist() == [len(FRAMES[k]) for k in order]
    assert table.paths == [rel for k in order for rel in expected[k]]
    assert table.start.tolist() == np.cumsum([0] + table.length.tolist()[:-1]).tolist()
    assert trials == TRIALS


SEQ = Path(ilidsvid.SEQUENCES)
BREAKAGES = [
    (lambda r: _rmtree(r / SEQ / "cam2"), FileNotFoundError, "camera folder"),
    (
        lambda r: _rename(r, frame_rel(5, 1, 310), "cam1_person005_frame.png"),
        ValueError,
        "does not match the pattern",
    ),
    (
        lambda r: _rename(r, frame_rel(5, 1, 310), "cam1_person011_00310.png"),
        ValueError,
        "pid 11 in the file name does not match the folder",
    ),
    (
        lambda r: _rename(r, frame_rel(5, 1, 310), "cam2_person005_00310.png"),
        ValueError,
        "cam 2 in the file name does not match",
    ),
    (
        lambda r: _rename(r, frame_rel(5, 1, 310), "cam1_person005_0311.png"),
        ValueError,
        "the same frame 311",
    ),
    (
        lambda r: _rmtree(r / SEQ / "cam2" / "person040"),
        ValueError,
        r"persons \[40\] have a sequence folder in cam1/ but none in cam2/",
    ),
    (lambda r: (r / SEQ / "cam1" / "p041").mkdir(), ValueError, "person<NNN>"),
    (
        lambda r: [p.unlink() for p in (r / SEQ / "cam2" / "person011").iterdir()],
        ValueError,
        "holds no frames",
    ),
    (lambda r: (r / ilidsvid.SPLIT_MAT).unlink(), FileNotFoundError, "split file"),
    (
        lambda r: scipy.io.savemat(r / ilidsvid.SPLIT_MAT, {"ls_set": np.ones((10, 300))}),
        ValueError,
        r"shape \(10, 300\), expected \[num_trials, 4\]",
    ),
    (
        lambda r: scipy.io.savemat(r / ilidsvid.SPLIT_MAT, {"ls_set": [[1, 1, 2, 3]]}),
        ValueError,
        "row 1 is not a permutation of 1..4",
    ),
    (
        lambda r: scipy.io.savemat(r / ilidsvid.SPLIT_MAT, {"splits": [[1, 2, 3, 4]]}),
        ValueError,
        r"no variable 'ls_set' \(found \['splits'\]\)",
    ),
]


@pytest.mark.parametrize(("breakage", "error", "match"), BREAKAGES)
def test_layout_errors_name_the_path(tmp_path, breakage, error, match):
    write_tree(tmp_path)
    breakage(tmp_path)
    with pytest.raises(error, match=match) as e:
        ilidsvid.read_ilidsvid(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_missing_sequences_folder_says_where_to_get_the_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="i-LIDS-VID/sequences") as e:
        ilidsvid.read_ilidsvid(tmp_path)
    assert "iLIDS-VID.tar" in str(e.value)


def _rmtree(path: Path) -> None:
    for p in sorted(path.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    path.rmdir()


def _rename(root: Path, rel: str, new_name: str) -> None:
    (root / rel).rename((root / rel).parent / new_name)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("ilids")
    expected = write_tree(root / "manual")
    builders.prepare("ilidsvid", root / "data", root / "manual", num_workers=0)
    return root, expected


@pytest.mark.parametrize("trial", [0, 1])
def test_trials_select_train_and_test_persons(prepared, trial):
    root, expected = prepared
    assert builders.num_trials("ilidsvid", root / "data") == 2
    train_src, train = builders.load_split("ilidsvid", root / "data", "train", trial=trial)
    test_src, test = builders.load_split("ilidsvid", root / "data", "test", trial=trial)
    assert len(train_src) == len(test_src) == sum(len(f) for f in FRAMES.values())  # one pool
    want_train, want_test = TRIALS[trial]["train"], TRIALS[trial]["test"]
    assert train.pid.tolist() == [p for p in want_train for _ in (1, 2)]
    assert train.camid.tolist() == [1, 2] * len(want_train)
    assert not train.is_query.any()
    assert train.label.tolist() == [0, 0, 1, 1] and train.num_classes == 2
    assert test.pid.tolist() == [p for p in want_test for _ in (1, 2)]
    assert test.is_query.tolist() == [True, False] * len(want_test)
    assert (test.label == -1).all()
    for index, source in ((train, train_src), (test, test_src)):
        for k in range(len(index.pid)):
            recs = [source[int(i)] for i in range(index.start[k], index.start[k] + index.length[k])]
            rels = expected[(int(index.pid[k]), int(index.camid[k]))]
            assert [builders.record_name(r) for r in recs] == rels  # numeric frame order
            assert [r["frame"] for r in recs] == list(range(len(rels)))
            for rec, rel in zip(recs, rels, strict=True):  # the original PNG bytes
                assert rec["jpeg"] == (root / "manual" / rel).read_bytes()


def test_png_records_decode_through_decode_jpeg(prepared):
    root, expected = prepared
    source, index = builders.load_split("ilidsvid", root / "data", "test")
    rec = source[int(index.start[0])]
    image = transforms.decode_jpeg(rec["jpeg"], name="png")
    with Image.open(root / "manual" / builders.record_name(rec)) as ref:
        np.testing.assert_array_equal(image, np.asarray(ref.convert("RGB")))
    assert image.shape == (6, 4, 3)


def test_legacy_protocol_gallery_is_exactly_camera_2_of_test_persons(prepared):
    root, _ = prepared
    _, test = builders.load_split("ilidsvid", root / "data", "test", trial=0)
    query, gallery = metrics.query_gallery_indices(test.pid, test.is_query, "legacy")
    assert (test.camid[query] == 1).all() and (test.camid[gallery] == 2).all()
    assert sorted(test.pid[query]) == sorted(test.pid[gallery]) == TRIALS[0]["test"]
    # "official" keeps the camera-1 tracklets in the gallery: not the iLIDS-VID protocol.
    _, official_gallery = metrics.query_gallery_indices(test.pid, test.is_query, "official")
    assert (test.camid[official_gallery] == 1).any()


def test_bad_trials_and_splits(prepared):
    root, _ = prepared
    with pytest.raises(ValueError, match=r"trial 2 \(config.data.split\) is out of range.*2 "):
        builders.load_split("ilidsvid", root / "data", "train", trial=2)
    with pytest.raises(ValueError, match="split 'tracklets' not in"):
        builders.load_split("ilidsvid", root / "data", "tracklets")
    with pytest.raises(ValueError, match="must be an integer"):
        builders.load_split("ilidsvid", root / "data", "train", trial=True)


def test_prepare_refuses_a_tree_with_other_splits(prepared, tmp_path):
    root, _ = prepared
    builders.prepare("ilidsvid", root / "data", root / "manual")  # same tree: no error
    write_tree(tmp_path / "other", ls_set=[[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="frame lists or split files differ"):
        builders.prepare("ilidsvid", root / "data", tmp_path / "other")


def test_ensure_prepared_checks_config_data_split(prepared):
    root, _ = prepared
    cfg = config_base.base_config().data
    cfg.name, cfg.raw_dir, cfg.data_dir = "ilidsvid", str(root / "manual"), str(root / "data")
    cfg.split = 1
    prepare.ensure_prepared(cfg)
    cfg.split = 2
    with pytest.raises(ValueError, match=r"config.data.split=2: ilidsvid has 2 .*0..1"):
        prepare.ensure_prepared(cfg)
