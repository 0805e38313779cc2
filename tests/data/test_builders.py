"""Tests for the TFDS builders: record order, JPEG bytes, tracklet index, idempotence, errors."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from reid_jax.data import builders, mars

# (pid, cam, frames) per tracklet, in name order; pids 3, 7, 12 give labels 0, 1, 2.
TRAIN = [(3, 1, 3), (3, 2, 5), (7, 1, 4), (7, 4, 3), (12, 2, 3), (12, 2, 4)]
TEST = [(-1, 1, 2), (0, 3, 3), (0, 5, 2), (3, 1, 3), (3, 6, 4), (7, 2, 3), (7, 5, 2)]
QUERY_ROWS = [3, 6]  # 0-based rows of TEST


def write_tree(root: Path, query_rows=QUERY_ROWS) -> dict[str, list[str]]:
    """Writes a tiny MARS-format tree (JPEGs, name lists, info .mat files); returns the paths."""
    (root / "info").mkdir(parents=True)
    paths = {}
    for split, spec in (("train", TRAIN), ("test", TEST)):
        names, rows, tcount = [], [], {}
        for pid, cam, n in spec:
            t = tcount[(pid, cam)] = tcount.get((pid, cam), 0) + 1
            rows.append([len(names) + 1, len(names) + n, pid, cam])
            folder = "00-1" if pid == -1 else f"{pid:04d}"
            names += [f"{folder}C{cam}T{t:04d}F{f:03d}.jpg" for f in range(1, n + 1)]
        paths[split] = [f"bbox_{split}/{n[:4]}/{n}" for n in names]
        for i, rel in enumerate(paths[split]):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            Image.new("RGB", (4, 8), (i * 9 % 256, len(split) * 30, i % 7 * 30)).save(buf, "JPEG")
            (root / rel).write_bytes(buf.getvalue())
        (root / "info" / f"{split}_name.txt").write_text("\n".join(names) + "\n")
        info = {f"track_{split}_info": np.array(rows, np.int32)}
        scipy.io.savemat(root / "info" / f"tracks_{split}_info.mat", info)
    query = np.array([query_rows], np.uint16) + 1
    scipy.io.savemat(root / "info" / "query_IDX.mat", {"query_IDX": query})
    return paths


def expected_frames(spec) -> list[tuple[int, int, int, int]]:
    """(pid, camid, tracklet row, frame position) per frame, straight from the spec."""
    return [(pid, cam, k, f) for k, (pid, cam, n) in enumerate(spec) for f in range(n)]


def records(source) -> list[dict]:
    return [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tree prepared serially with tiny shards, so each split spans several array_record files."""
    root = tmp_path_factory.mktemp("mars")
    paths = write_tree(root / "manual")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builders, "MAX_SHARD_BYTES", 3000)
        builders.prepare("mars", root / "data", root / "manual", num_workers=0)
    return root, paths


@pytest.mark.parametrize(("split", "spec"), [("train", TRAIN), ("test", TEST)])
def test_records_follow_name_order_with_original_bytes(prepared, split, spec):
    root, paths = prepared
    source, _ = builders.load_split("mars", root / "data", split)
    recs = records(source)
    assert len(recs) == len(paths[split]) == sum(n for _, _, n in spec)
    for rec, rel in zip(recs, paths[split], strict=True):
        assert rec["jpeg"] == (root / "manual" / rel).read_bytes()
        assert builders.record_name(rec) == rel
    got = [(r["pid"], r["camid"], r["tracklet"], r["frame"]) for r in recs]
    assert got == expected_frames(spec)
    info = builders.DATASETS["mars"](data_dir=str(root / "data")).info
    assert len(info.splits[split].shard_lengths) > 1  # order holds across shards


def test_tracklet_index_matches_table(prepared):
    root, _ = prepared
    _, train = builders.load_split("mars", root / "data", "train")
    _, test = builders.load_split("mars", root / "data", "test")
    for index, split in ((train, "train"), (test, "test")):
        table = mars.read_split(root / "manual", split)
        for col in ("start", "length", "pid", "camid", "is_query"):
            np.testing.assert_array_equal(getattr(index, col), getattr(table, col))
        assert index.num_frames == len(table.paths)
    np.testing.assert_array_equal(train.label, [0, 0, 1, 1, 2, 2])
    assert train.num_classes == 3
    np.testing.assert_array_equal(test.label, -1)
    assert test.num_classes == 0
    np.testing.assert_array_equal(np.flatnonzero(test.is_query), QUERY_ROWS)
    np.testing.assert_array_equal(test.pid[:3], [-1, 0, 0])


def test_source_pickles(prepared):
    root, _ = prepared
    source, _ = builders.load_split("mars", root / "data", "test")
    clone = pickle.loads(pickle.dumps(source))
    assert len(clone) == len(source)
    last = len(source) - 1  # the source takes no negative indices
    assert clone[0] == source[0] and clone[last]["jpeg"] == source[last]["jpeg"]


def test_second_prepare_does_not_rebuild(prepared, monkeypatch):
    root, _ = prepared
    data_path = root / "data" / "mars" / "1.0.0"
    before = {p: p.stat().st_mtime_ns for p in data_path.iterdir()}

    def fail(*args, **kwargs):
        raise AssertionError("prepare rebuilt a prepared dataset")

    monkeypatch.setattr(builders._MarsFormatBuilder, "_write_split", fail)
    builders.prepare("mars", root / "data", root / "manual")
    moved = root / "moved_manual"  # the same tree elsewhere has the same fingerprint
    shutil.copytree(root / "manual" / "info", moved / "info")
    builders.prepare("mars", root / "data", moved)
    assert {p: p.stat().st_mtime_ns for p in data_path.iterdir()} == before


def test_fingerprint_mismatch_names_both_dirs(prepared, tmp_path):
    root, _ = prepared
    write_tree(tmp_path / "other", query_rows=[3])
    with pytest.raises(ValueError, match="info files differ") as e:
        builders.prepare("mars", root / "data", tmp_path / "other")
    assert str(root / "manual") in str(e.value) and str(tmp_path / "other") in str(e.value)


def test_generate_examples_matches_records(prepared):
    root, _ = prepared
    builder = builders.DATASETS["mars"](data_dir=str(root / "data"))
    table = mars.read_split(root / "manual", "train")
    source, _ = builders.load_split("mars", root / "data", "train")
    examples = list(builder._generate_examples(root / "manual", table))
    assert [k for k, _ in examples] == list(range(len(source)))
    assert [ex for _, ex in examples] == records(source)


def test_worker_processes_give_identical_records(prepared, tmp_path, monkeypatch):
    root, _ = prepared
    monkeypatch.setattr(builders, "CHUNK_FRAMES", 4)  # several chunks per worker
    builders.prepare("synth_mars", tmp_path, root / "manual", num_workers=2)
    assert (tmp_path / "synth_mars" / "1.0.0").is_dir()
    for split in mars.SPLITS:
        serial, index_a = builders.load_split("mars", root / "data", split)
        parallel, index_b = builders.load_split("synth_mars", tmp_path, split)
        assert records(parallel) == records(serial)
        np.testing.assert_array_equal(index_a.label, index_b.label)


def test_failed_prepare_leaves_nothing_loadable(tmp_path, monkeypatch):
    write_tree(tmp_path / "manual")
    calls = []

    def flaky(task):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return original(task)

    original = builders._serialize_chunk
    monkeypatch.setattr(builders, "CHUNK_FRAMES", 4)
    monkeypatch.setattr(builders, "_serialize_chunk", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        builders.prepare("mars", tmp_path / "data", tmp_path / "manual", num_workers=0)
    with pytest.raises(FileNotFoundError, match="not prepared"):
        builders.load_split("mars", tmp_path / "data", "train")
    monkeypatch.setattr(builders, "_serialize_chunk", original)
    builders.prepare("mars", tmp_path / "data", tmp_path / "manual", num_workers=0)
    assert len(builders.load_split("mars", tmp_path / "data", "train")[0]) == 22


def test_killed_prepare_leaves_nothing_loadable(tmp_path):
    """A hard kill mid-write (no cleanup runs) leaves only an incomplete.* dir behind."""
    write_tree(tmp_path / "manual")
    script = (
        "import os, sys\n"
        "from reid_jax.data import builders\n"
        "builders.CHUNK_FRAMES = 4\n"
        "original = builders._serialize_chunk\n"
        "calls = []\n"
        "def dying(task):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 3:\n"
        "        os._exit(17)\n"
        "    return original(task)\n"
        "builders._serialize_chunk = dying\n"
        "builders.prepare('mars', sys.argv[1], sys.argv[2], num_workers=0)\n"
    )
    args = [sys.executable, "-c", script, str(tmp_path / "data"), str(tmp_path / "manual")]
    repo = Path(__file__).resolve().parents[2]
    assert subprocess.run(args, capture_output=True, cwd=repo).returncode == 17
    left = [p.name for p in (tmp_path / "data" / "mars").iterdir()]
    assert len(left) == 1 and left[0].startswith("incomplete."), left
    with pytest.raises(FileNotFoundError, match="not prepared"):
        builders.load_split("mars", tmp_path / "data", "test")
    builders.prepare("mars", tmp_path / "data", tmp_path / "manual", num_workers=0)
    assert len(builders.load_split("mars", tmp_path / "data", "test")[0]) == 19


def test_prepare_surfaces_reader_errors(tmp_path):
    paths = write_tree(tmp_path / "manual")
    (tmp_path / "manual" / paths["test"][5]).unlink()
    with pytest.raises(FileNotFoundError, match="missing MARS frame") as e:
        builders.prepare("mars", tmp_path / "data", tmp_path / "manual")
    assert str(tmp_path / "manual" / paths["test"][5]) in str(e.value)
    assert not (tmp_path / "data" / "mars" / "1.0.0").exists()
    os.remove(tmp_path / "manual" / "info" / "query_IDX.mat")
    with pytest.raises(FileNotFoundError, match="query_IDX.mat"):
        builders.prepare("mars", tmp_path / "data", tmp_path / "manual")


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="bbox_train/") as e:
        builders.prepare("mars", tmp_path / "data", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(e.value)
    with pytest.raises(ValueError, match="unknown dataset 'market'"):
        builders.load_split("market", tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="not prepared"):
        builders.load_split("synth_mars", tmp_path, "train")
    assert set(builders.DATASETS) == {"mars", "synth_mars", "ilidsvid", "prid2011", "duke_video"}
