"""Reader for iLIDS-VID (Wang et al., ECCV 2014), and the folder-walking helpers that the
PRID-2011 (`prid2011`) and DukeMTMC-VideoReID (`duke_video`) readers share.

Layout (the iLIDS-VID.tar release, extracted into the manual dir)::

    i-LIDS-VID/sequences/cam1/person001/cam1_person001_00317.png   (one sequence per folder)
    i-LIDS-VID/sequences/cam2/person001/...
    train-test people splits/train_test_splits_ilidsvid.mat        (variable ls_set, [10, 300])

Frames are ordered by the number parsed from their name, never by directory or string order.
Each row of ls_set is a permutation of the 1-based indices of the 300 persons in ascending
person-number order; as in deep-person-reid (which cites Wang et al.), the FIRST half of a row is
the test identities and the second half the training ones. The table holds every sequence,
person by person (cam1 then cam2); cam1 sequences are the queries, cam2 ones the gallery.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.io

from reid_jax.data.mars import TrackletTable

SEQUENCES = "i-LIDS-VID/sequences"
CAMERAS = {"cam1": 1, "cam2": 2}
SPLIT_MAT = "train-test people splits/train_test_splits_ilidsvid.mat"
SPLIT_KEY = "ls_set"
PERSON_RE = re.compile(r"person(?P<pid>\d+)")
FRAME_RE = re.compile(r"cam(?P<cam>\d)_person(?P<pid>\d+)_(?P<frame>\d+)\.png")
FRAME_PATTERN = "cam<K>_person<NNN>_<frame number>.png"
GET_ILIDSVID = (
    "iLIDS-VID comes from http://www.eecs.qmul.ac.uk/~xiatian/downloads_qmul_iLIDS-VID_ReID_"
    "dataset.html (iLIDS-VID.tar); extract it so that the manual dir holds i-LIDS-VID/ and "
    "'train-test people splits/'."
)
MANUAL_INSTRUCTIONS = (
    "Put iLIDS-VID in the manual dir (e.g. `data/manual/ilidsvid/`) as:\n"
    "  i-LIDS-VID/sequences/cam1/person001/cam1_person001_00317.png   (and cam2/)\n"
    "  train-test people splits/train_test_splits_ilidsvid.mat\n" + GET_ILIDSVID
)

Trials = list[dict[str, list[int]]]  # per trial: {"train": sorted pids, "test": sorted pids}


class Tracklet(NamedTuple):
    """One sequence: identity, 1-based camera, frame paths (relative, in temporal order)."""

    pid: int
    camid: int
    paths: list[str]
    is_query: bool = False


def list_dir(path: Path, what: str) -> list[str]:
    """Entry names of folder `path`, hidden ones (.DS_Store, ...) skipped; errors name `what`."""
    if not path.is_dir():
        raise FileNotFoundError(f"missing {what} {path}")
    with os.scandir(path) as it:
        return [e.name for e in it if not e.name.startswith(".")]


def numbered(
    folder: Path, names: Iterable[str], pattern: re.Pattern, expected: str, key: str
) -> list[tuple[int, str, re.Match]]:
    """(number, name, match) of each name, sorted by the integer group `key` of `pattern`.

    Raises ValueError naming the file for a name that does not match, or for two names with the
    same number (e.g. '0010.png' and '10.png'), since either makes the order ambiguous.
    """
    out = []
    for name in names:
        m = pattern.fullmatch(name)
        if m is None:
            raise ValueError(f"{folder / name}: name does not match the pattern {expected}")
        out.append((int(m[key]), name, m))
    out.sort(key=lambda t: t[0])
    for (a, name_a, _), (b, name_b, _) in zip(out, out[1:]):
        if a == b:
            raise ValueError(f"{folder}: {name_a!r} and {name_b!r} have the same {key} {a}")
    return out


def sequence_frames(
    root: Path, rel: str, pattern: re.Pattern, expected: str, fields: dict[str, int]
) -> list[str]:
    """Paths (relative to root) of the frames in folder root/rel, in frame-number order.

    Named groups of `pattern` listed in `fields` must equal the given values (e.g. the person
    number in a file name must match its folder); an empty folder is an error.
    """
    folder = root / rel
    frames = numbered(folder, list_dir(folder, "sequence folder"), pattern, expected, "frame")
    if not frames:
        raise ValueError(f"sequence folder {folder} holds no frames ({expected})")
    for _, name, m in frames:
        for group, value in fields.items():
            if int(m[group]) != value:
                raise ValueError(
                    f"{folder / name}: {group} {int(m[group])} in the file name does not match "
                    f"the folder ({group} {value})"
                )
    return [f"{rel}/{name}" for _, name, _ in frames]


def read_cameras(
    root: Path,
    base: str,
    cameras: dict[str, int],
    person_re: re.Pattern,
    person_pattern: str,
    frame_re: re.Pattern,
    frame_pattern: str,
    keep: Iterable[int] | None = None,
) -> dict[int, dict[int, list[str]]]:
    """{camid: {pid: frame paths}} of a `base/<camera>/<person>/<frames>` tree.

    `keep`: read only these person numbers (other folder names are still validated). File-name
    groups `cam` and `pid`, where the pattern has them, must agree with the folders.
    """
    wanted = None if keep is None else set(keep)
    out: dict[int, dict[int, list[str]]] = {}
    for cam_dir, camid in cameras.items():
        rel_cam = f"{base}/{cam_dir}"
        names = list_dir(root / rel_cam, f"camera folder (expected {sorted(cameras)})")
        persons = numbered(root / rel_cam, names, person_re, person_pattern, "pid")
        out[camid] = {}
        for pid, name, _ in persons:
            if wanted is not None and pid not in wanted:
                continue
            groups = {"pid": pid, "cam": camid}
            fields = {g: v for g, v in groups.items() if g in frame_re.groupindex}
            out[camid][pid] = sequence_frames(
                root, f"{rel_cam}/{name}", frame_re, frame_pattern, fields
            )
    return out


def require_both_cameras(
    seqs: dict[int, dict[int, list[str]]], where: Path, cameras: dict[str, int]
) -> list[int]:
    """Sorted person numbers; raises if a person has a folder in only one of the two cameras."""
    (dir_a, cam_a), (dir_b, cam_b) = sorted(cameras.items(), key=lambda kv: kv[1])
    a, b = set(seqs[cam_a]), set(seqs[cam_b])
    for only, have, missing in ((a - b, dir_a, dir_b), (b - a, dir_b, dir_a)):
        if only:
            raise ValueError(
                f"{where}: persons {sorted(only)[:5]} have a sequence folder in {have}/ but "
                f"none in {missing}/; every person needs one folder per camera"
            )
    return sorted(a)


def table_from_tracklets(tracklets: Sequence[Tracklet]) -> TrackletTable:
    """Concatenates tracklets (frames already in temporal order) into a TrackletTable."""
    length = np.array([len(t.paths) for t in tracklets], np.int64)
    start = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
    return TrackletTable(
        paths=[p for t in tracklets for p in t.paths],
        start=start,
        length=length,
        pid=np.array([t.pid for t in tracklets], np.int64),
        camid=np.array([t.camid for t in tracklets], np.int64),
        is_query=np.array([t.is_query for t in tracklets], bool),
    )


def two_camera_table(
    seqs: dict[int, dict[int, list[str]]], persons: Iterable[int]
) -> TrackletTable:
    """Camera 1 then camera 2 sequence of each person; camera 1 sequences are the queries."""
    return table_from_tracklets(
        [Tracklet(p, cam, seqs[cam][p], cam == 1) for p in sorted(persons) for cam in (1, 2)]
    )


def read_split_mat(path: Path, persons: list[int]) -> Trials:
    """Trials from ls_set: row t is a permutation of 1..N; first half test, second half train."""
    if not path.is_file():
        raise FileNotFoundError(
            f"missing iLIDS-VID split file {path} (variable {SPLIT_KEY}, one row per trial). "
            + GET_ILIDSVID
        )
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several types for corrupt or v7.3 files
        raise ValueError(f"cannot read MATLAB file {path}: {e}") from e
    if SPLIT_KEY not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path} has no variable {SPLIT_KEY!r} (found {found})")
    sets = np.asarray(mat[SPLIT_KEY])
    n = len(persons)
    if sets.ndim != 2 or sets.shape[0] == 0 or sets.shape[1] != n:
        raise ValueError(
            f"{path}: {SPLIT_KEY} has shape {sets.shape}, expected [num_trials, {n}]: one row "
            f"per trial holding the 1-based indices of the {n} persons found under {SEQUENCES}"
        )
    half = n // 2
    trials = []
    for t, row in enumerate(sets):
        if not np.array_equal(np.sort(row), np.arange(1, n + 1)):
            raise ValueError(
                f"{path}: {SPLIT_KEY} row {t + 1} is not a permutation of 1..{n} "
                "(person indices in ascending person-number order)"
            )
        ids = [persons[int(i) - 1] for i in row]
        trials.append({"train": sorted(ids[half:]), "test": sorted(ids[:half])})
    return trials


def read_ilidsvid(root: str | Path) -> tuple[TrackletTable, Trials]:
    """Reads an iLIDS-VID tree: (table of all sequences, trials with train/test person numbers)."""
    root = Path(root)
    if not (root / SEQUENCES).is_dir():
        raise FileNotFoundError(f"missing iLIDS-VID folder {root / SEQUENCES}. " + GET_ILIDSVID)
    seqs = read_cameras(
        root, SEQUENCES, CAMERAS, PERSON_RE, "person<NNN>", FRAME_RE, FRAME_PATTERN
    )
    persons = require_both_cameras(seqs, root / SEQUENCES, CAMERAS)
    trials = read_split_mat(root / SPLIT_MAT, persons)
    return two_camera_table(seqs, persons), trials
