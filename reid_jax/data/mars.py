"""Reader for the MARS video re-id layout: frame names, info .mat files and per-split tables.

Everything is validated up front with errors that name the offending file, line or row, so
that a broken download fails here rather than deep inside a training run.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.io

FRAME_NAME_RE = re.compile(
    r"(?P<pid>\d{4}|00-1)C(?P<cam>\d)T(?P<tracklet>\d{4})F(?P<frame>\d{3})\.jpg"
)
FRAME_NAME_PATTERN = (
    "<pid: 4 digits or 00-1>C<cam: 1 digit>T<tracklet: 4 digits>F<frame: 3 digits>.jpg"
)
SPLITS = ("train", "test")
INFO_MATS = {
    "track_train_info": "tracks_train_info.mat",
    "track_test_info": "tracks_test_info.mat",
    "query_IDX": "query_IDX.mat",
}
NAME_FILES = {"train": "train_name.txt", "test": "test_name.txt"}
NUM_CAMERAS = 6
GET_MARS = (
    "MARS frames (bbox_train/, bbox_test/) come from the MARS dataset release "
    "(http://zheng-lab.cecs.anu.edu.au/Project/project_mars.html); the info/ files "
    "(train_name.txt, test_name.txt, tracks_train_info.mat, tracks_test_info.mat, "
    "query_IDX.mat) come from the MARS evaluation code repository "
    "(https://github.com/liangzheng06/MARS-evaluation, folder info/)."
)


class FrameName(NamedTuple):
    """Fields of one MARS frame file name; pid -1 is junk, 0 is a distractor."""

    pid: int
    cam: int
    tracklet: int
    frame: int


def _pid(text: str) -> int:
    return -1 if text == "00-1" else int(text)


def parse_frame_name(name: str) -> FrameName:
    """Parses e.g. '0001C1T0001F001.jpg' (or '00-1C1T0001F001.jpg' for junk) into its fields."""
    m = FRAME_NAME_RE.fullmatch(name)
    if m is None:
        raise ValueError(
            f"frame name {name!r} does not match the MARS pattern {FRAME_NAME_PATTERN}"
        )
    return FrameName(_pid(m["pid"]), int(m["cam"]), int(m["tracklet"]), int(m["frame"]))


@dataclasses.dataclass(frozen=True)
class TrackletTable:
    """One split of MARS as numpy columns, tracklets in info-file row order."""

    paths: list[str]  # every frame's path relative to the root, in name-file order
    start: np.ndarray  # int64 [N], 0-based index into paths of the tracklet's first frame
    length: np.ndarray  # int64 [N]
    pid: np.ndarray  # int64 [N] (-1 junk, 0 distractor)
    camid: np.ndarray  # int64 [N], 1..6
    is_query: np.ndarray  # bool [N] (all False for train)


def missing_info_error(path: Path) -> FileNotFoundError:
    """The error for a missing info/ file: lists the expected files and where to get MARS."""
    expected = ", ".join(sorted([*INFO_MATS.values(), *NAME_FILES.values()]))
    return FileNotFoundError(
        f"missing MARS info file {path}; the info dir {path.parent} must hold: {expected}. "
        + GET_MARS
    )


def _load_int_matrix(path: Path, key: str) -> np.ndarray:
    """Loads variable `key` of a .mat file as int64, rejecting non-integral values."""
    if not path.is_file():
        raise missing_info_error(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several types for corrupt or v7.3 files
        raise ValueError(f"cannot read MATLAB file {path}: {e}") from e
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path} has no variable {key!r} (found {found})")
    arr = np.asarray(mat[key])
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{path}: {key} has dtype {arr.dtype}, expected integers")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(arr == np.round(arr)):
        raise ValueError(f"{path}: {key} holds non-integral values, expected integers")
    return arr.astype(np.int64)


def _validate_track_info(info: np.ndarray, path: Path, key: str) -> None:
    """Checks shape [N, 4] and per-row sanity of [start, end, pid, camera] (1-based)."""
    if info.ndim != 2 or info.shape[1] != 4 or info.shape[0] == 0:
        raise ValueError(f"{path}: {key} has shape {info.shape}, expected [N>0, 4]")
    start, end, pid, cam = info.T
    checks = [
        (start < 1, "start < 1 (rows are 1-based)"),
        (end < start, "zero-length or negative-length tracklet (end < start)"),
        (pid < -1, "pid < -1 (expected -1 junk, 0 distractor or a positive id)"),
        ((cam < 1) | (cam > NUM_CAMERAS), f"camera outside 1..{NUM_CAMERAS}"),
    ]
    for bad, what in checks:
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{path}: {key} row {r + 1} (1-based) [start, end, pid, camera]="
                f"{info[r].tolist()}: {what}"
            )


def read_info(info_dir: str | Path) -> dict[str, np.ndarray]:
    """Reads and validates the three MARS info .mat files (no name lists or frames needed).

    Returns int64 arrays: 'track_train_info' [N, 4], 'track_test_info' [M, 4] (columns
    start, end, pid, camera; 1-based inclusive rows of the name files) and 'query_IDX' [Q]
    (1-based rows of track_test_info), exactly as stored.
    """
    info_dir = Path(info_dir)
    out = {key: _load_int_matrix(info_dir / fname, key) for key, fname in INFO_MATS.items()}
    for key in ("track_train_info", "track_test_info"):
        _validate_track_info(out[key], info_dir / INFO_MATS[key], key)
    qpath = info_dir / INFO_MATS["query_IDX"]
    query = out["query_IDX"]
    if query.ndim != 2 or min(query.shape) != 1:
        raise ValueError(f"{qpath}: query_IDX has shape {query.shape}, expected [1, Q] or [Q, 1]")
    query = query.reshape(-1)
    num_test = out["track_test_info"].shape[0]
    bad = (query < 1) | (query > num_test)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{qpath}: query_IDX entry {i} is {int(query[i])}, outside the 1..{num_test} rows "
            f"of {INFO_MATS['track_test_info']}"
        )
    qpid = out["track_test_info"][query - 1, 2]
    if (qpid <= 0).any():
        i = int(np.flatnonzero(qpid <= 0)[0])
        raise ValueError(
            f"{qpath}: query_IDX entry {i} points to test row {int(query[i])} with pid "
            f"{int(qpid[i])}; queries must be real identities (pid > 0)"
        )
    out["query_IDX"] = query
    return out


def _read_names(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Reads a name file; returns the names and their pid and camera columns."""
    if not path.is_file():
        raise missing_info_error(path)
    names = path.read_text().splitlines()
    while names and not names[-1].strip():
        names.pop()
    pids = np.empty(len(names), np.int64)
    cams = np.empty(len(names), np.int64)
    match = FRAME_NAME_RE.fullmatch
    for i, name in enumerate(names):
        m = match(name)
        if m is None:
            raise ValueError(
                f"{path}:{i + 1}: frame name {name!r} does not match the MARS pattern "
                f"{FRAME_NAME_PATTERN}"
            )
        pids[i] = _pid(m["pid"])
        cams[i] = int(m["cam"])
    return names, pids, cams


def _check_rows(info: np.ndarray, info_path: Path, names_path: Path, num_names: int) -> None:
    """Rows must tile the name list exactly, in order: row k+1 starts where row k ends."""
    start, end = info[:, 0], info[:, 1]
    over = end > num_names
    if over.any():
        r = int(np.flatnonzero(over)[0])
        raise ValueError(
            f"{info_path}: row {r + 1} (1-based) [start, end]=[{start[r]}, {end[r]}] is out of "
            f"range of the {num_names} names in {names_path}"
        )
    expected_start = np.concatenate([[1], end[:-1] + 1])
    gap = start != expected_start
    if gap.any():
        r = int(np.flatnonzero(gap)[0])
        raise ValueError(
            f"{info_path}: row {r + 1} (1-based) starts at name {start[r]}, expected "
            f"{expected_start[r]}: rows must cover the names of {names_path} contiguously"
        )
    if end[-1] != num_names:
        raise ValueError(
            f"{info_path}: the last row ends at name {end[-1]} but {names_path} has "
            f"{num_names} names; every frame must belong to one tracklet"
        )


def _check_files(root: Path, paths: list[str]) -> None:
    """Raises FileNotFoundError for the first missing frame, listing each folder only once."""
    listings: dict[str, set[str]] = {}
    for rel in paths:
        folder, name = rel.rsplit("/", 1)
        listing = listings.get(folder)
        if listing is None:
            try:
                with os.scandir(root / folder) as it:
                    listing = {e.name for e in it}
            except FileNotFoundError:
                listing = set()
            listings[folder] = listing
        if name not in listing:
            raise FileNotFoundError(f"missing MARS frame {root / rel} (listed in the info files)")


def read_split(root: str | Path, split: str, check_files: bool = True) -> TrackletTable:
    """Reads one split ('train' or 'test') of a MARS tree at `root` into a TrackletTable.

    With check_files, every listed JPEG must exist (directories are listed, not stat'ed).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    info_dir = root / "info"
    info = read_info(info_dir)
    key = f"track_{split}_info"
    table = info[key]
    info_path = info_dir / INFO_MATS[key]
    names_path = info_dir / NAME_FILES[split]
    names, name_pid, name_cam = _read_names(names_path)
    _check_rows(table, info_path, names_path, len(names))
    start = table[:, 0] - 1
    length = table[:, 1] - table[:, 0] + 1
    pid, camid = table[:, 2].copy(), table[:, 3].copy()
    bad = (name_pid != np.repeat(pid, length)) | (name_cam != np.repeat(camid, length))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        r = int(np.searchsorted(start, j, side="right") - 1)
        raise ValueError(
            f"{info_path}: row {r + 1} (1-based) has pid {pid[r]} camera {camid[r]} but its "
            f"frame {names[j]!r} ({names_path}:{j + 1}) disagrees"
        )
    paths = [f"bbox_{split}/{n[:4]}/{n}" for n in names]
    if check_files:
        _check_files(root, paths)
    is_query = np.zeros(len(start), bool)
    if split == "test":
        is_query[info["query_IDX"] - 1] = True
    return TrackletTable(paths, start, length, pid, camid, is_query)
