"""Tests for the MARS reader: name parsing, info validation and per-split tables."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from reid_jax.data import mars

MARS_INFO = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mars_info"

# (pid, cam, frames) per tracklet, in name order ('00-1' < '0000' < '0001').
TRAIN = [(1, 1, 3), (1, 1, 4), (1, 2, 3), (4, 3, 5), (4, 6, 3)]
TEST = [(-1, 1, 2), (0, 2, 3), (2, 1, 3), (2, 4, 4), (5, 2, 3), (5, 5, 2)]
QUERY_ROWS = [2, 4]  # 0-based rows of TEST


def _pid_text(pid: int) -> str:
    return "00-1" if pid == -1 else f"{pid:04d}"


def write_tree(root: Path, train=TRAIN, test=TEST, query_rows=QUERY_ROWS) -> dict[str, list[str]]:
    """Writes a tiny MARS-format tree (JPEGs, name lists, info .mat files); returns the paths."""
    info = root / "info"
    info.mkdir(parents=True)
    paths = {}
    for split, spec in (("train", train), ("test", test)):
        names, rows, tcount = [], [], {}
        for pid, cam, n in spec:
            t = tcount[(pid, cam)] = tcount.get((pid, cam), 0) + 1
            rows.append([len(names) + 1, len(names) + n, pid, cam])
            names += [f"{_pid_text(pid)}C{cam}T{t:04d}F{f:03d}.jpg" for f in range(1, n + 1)]
        paths[split] = [f"bbox_{split}/{n[:4]}/{n}" for n in names]
        for i, rel in enumerate(paths[split]):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            Image.new("RGB", (4, 8), (i * 7 % 256, len(split) * 40, i % 5 * 50)).save(buf, "JPEG")
            (root / rel).write_bytes(buf.getvalue())
        (info / f"{split}_name.txt").write_text("\n".join(names) + "\n")
        key = f"track_{split}_info"
        scipy.io.savemat(info / f"tracks_{split}_info.mat", {key: np.array(rows, np.int32)})
    query = np.array([query_rows], np.uint16) + 1
    scipy.io.savemat(info / "query_IDX.mat", {"query_IDX": query})
    return paths


def _set_info(root: Path, split: str, rows) -> None:
    key = f"track_{split}_info"
    scipy.io.savemat(root / "info" / f"tracks_{split}_info.mat", {key: np.array(rows, np.int32)})


def test_parse_frame_name():
    assert mars.parse_frame_name("0001C1T0001F001.jpg") == (1, 1, 1, 1)
    assert mars.parse_frame_name("1501C6T0012F123.jpg") == mars.FrameName(1501, 6, 12, 123)
    assert mars.parse_frame_name("00-1C3T0002F010.jpg").pid == -1
    assert mars.parse_frame_name("0000C2T0001F001.jpg").pid == 0


@pytest.mark.parametrize(
    "name",
    [
        "0001C1T0001F01.jpg",
        "0001C10T001F001.jpg",
        "01-1C1T0001F001.jpg",
        "0001C1T0001F001.png",
        "x0001C1T0001F001.jpg",
        "0001c1T0001F001.jpg",
    ],
)
def test_parse_frame_name_rejects(name):
    with pytest.raises(ValueError, match=r"does not match the MARS pattern.*<pid") as e:
        mars.parse_frame_name(name)
    assert repr(name) in str(e.value)


def test_read_split_tables(tmp_path):
    paths = write_tree(tmp_path)
    train = mars.read_split(tmp_path, "train")
    assert train.paths == paths["train"]
    assert train.paths[:4] == [
        "bbox_train/0001/0001C1T0001F001.jpg",
        "bbox_train/0001/0001C1T0001F002.jpg",
        "bbox_train/0001/0001C1T0001F003.jpg",
        "bbox_train/0001/0001C1T0002F001.jpg",
    ]
    np.testing.assert_array_equal(train.start, [0, 3, 7, 10, 15])
    np.testing.assert_array_equal(train.length, [3, 4, 3, 5, 3])
    np.testing.assert_array_equal(train.pid, [1, 1, 1, 4, 4])
    np.testing.assert_array_equal(train.camid, [1, 1, 2, 3, 6])
    assert not train.is_query.any() and train.is_query.dtype == bool
    assert train.start.dtype == train.length.dtype == train.pid.dtype == np.int64

    test = mars.read_split(tmp_path, "test")
    assert test.paths[0] == "bbox_test/00-1/00-1C1T0001F001.jpg"
    assert test.paths[2] == "bbox_test/0000/0000C2T0001F001.jpg"
    np.testing.assert_array_equal(test.start, [0, 2, 5, 8, 12, 15])
    np.testing.assert_array_equal(test.pid, [-1, 0, 2, 2, 5, 5])
    np.testing.assert_array_equal(test.is_query, [False, False, True, False, True, False])
    assert len(test.paths) == 17


def test_read_info_real_mars():
    if not (MARS_INFO / "tracks_train_info.mat").is_file():
        pytest.skip(f"real MARS info files not found at {MARS_INFO} (shared/ not beside the repo)")
    info = mars.read_info(MARS_INFO)
    train, test, query = info["track_train_info"], info["track_test_info"], info["query_IDX"]
    assert train.shape == (8298, 4) and test.shape == (12180, 4) and query.shape == (1980,)
    assert len(np.unique(train[:, 2])) == 625 and train[:, 2].min() > 0
    assert (test[:, 2] == -1).sum() == 870 and (test[:, 2] == 0).sum() == 3248
    assert len(np.unique(query)) == 1980
    assert test[query - 1, 2].min() > 0  # every query is a real identity (min pid is 2)
    for t in (train, test):  # rows tile the name lists contiguously from name 1
        assert t[0, 0] == 1 and np.array_equal(t[1:, 0], t[:-1, 1] + 1)
    assert train[-1, 1] == 509914 and test[-1, 1] == 681089


@pytest.mark.parametrize(
    "fname",
    ["tracks_train_info.mat", "tracks_test_info.mat", "query_IDX.mat", "train_name.txt"],
)
def test_missing_info_file(tmp_path, fname):
    write_tree(tmp_path)
    (tmp_path / "info" / fname).unlink()
    with pytest.raises(FileNotFoundError, match="MARS-evaluation") as e:
        mars.read_split(tmp_path, "train")
    assert str(tmp_path / "info" / fname) in str(e.value)


def test_bad_name_names_file_and_line(tmp_path):
    write_tree(tmp_path)
    names_file = tmp_path / "info" / "test_name.txt"
    lines = names_file.read_text().splitlines()
    lines[6] = "0002C1T0001F1.jpg"
    names_file.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"test_name\.txt:7: frame name '0002C1T0001F1\.jpg'"):
        mars.read_split(tmp_path, "test")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[1, 3, 1, 1], [4, 3, 1, 1]], r"row 2 .*zero-length or negative-length"),
        ([[1, 3, 1, 1], [4, 1, 1, 1]], r"row 2 .*zero-length or negative-length"),
        ([[1, 3, 1, 1], [4, 99, 1, 1]], r"row 2 .*out of range of the 18 names"),
        ([[1, 3, 1, 1], [5, 18, 1, 1]], r"row 2 .*starts at name 5, expected 4"),
        ([[1, 3, 1, 1], [4, 10, 1, 1]], r"last row ends at name 10"),
        ([[1, 3, 1, 7], [4, 18, 1, 1]], r"row 1 .*camera outside 1..6"),
        (
            [[1, 3, 1, 1], [4, 7, 1, 1], [8, 18, 1, 2]],
            r"row 3 .*pid 1 camera 2.*'0004C3T0001F001\.jpg'.*:11\)",
        ),
        ([[1, 3, 1, 1], [4, 7, 1, 1], [8, 18, 4, 2]], r"row 3 .*pid 4 camera 2.*train_name\.txt:8"),
    ],
)
def test_bad_train_rows(tmp_path, rows, message):
    write_tree(tmp_path)
    _set_info(tmp_path, "train", rows)
    with pytest.raises(ValueError, match=message) as e:
        mars.read_split(tmp_path, "train", check_files=False)
    assert "tracks_train_info.mat" in str(e.value)


@pytest.mark.parametrize(
    ("query", "message"),
    [([0, 2], "outside the 1..6"), ([7], "outside"), ([1, 3], "pid -1; queries must be real")],
)
def test_bad_query_idx(tmp_path, query, message):
    write_tree(tmp_path)
    scipy.io.savemat(tmp_path / "info" / "query_IDX.mat", {"query_IDX": np.array([query])})
    with pytest.raises(ValueError, match=message) as e:
        mars.read_info(tmp_path / "info")
    assert "query_IDX.mat" in str(e.value)


def test_missing_jpeg_names_first_missing_file(tmp_path):
    paths = write_tree(tmp_path)
    (tmp_path / paths["test"][9]).unlink()
    (tmp_path / paths["test"][13]).unlink()
    with pytest.raises(FileNotFoundError, match="missing MARS frame") as e:
        mars.read_split(tmp_path, "test")
    assert str(tmp_path / paths["test"][9]) in str(e.value)
    assert mars.read_split(tmp_path, "test", check_files=False).paths == paths["test"]
    mars.read_split(tmp_path, "train")  # the other split is unaffected


def test_missing_pid_folder(tmp_path):
    paths = write_tree(tmp_path)
    for p in (tmp_path / "bbox_train" / "0004").iterdir():
        p.unlink()
    (tmp_path / "bbox_train" / "0004").rmdir()
    with pytest.raises(FileNotFoundError) as e:
        mars.read_split(tmp_path, "train")
    assert str(tmp_path / paths["train"][10]) in str(e.value)  # first frame of pid 4


def test_bad_split_name(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        mars.read_split(tmp_path, "val")
