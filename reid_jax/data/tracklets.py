"""Tracklet tables in and out of prepared datasets, without TFDS: split out of `builders`
(which imports `Tree` and `TrackletIndex` from here) to keep files short.

In: each dataset's reader gives a `Tree` (TFDS split name -> TrackletTable, plus trials).
Out: `index_from_metadata` rebuilds a split's TrackletIndex from the prepared metadata.json.
Fixed-split datasets (MARS, DukeMTMC-VideoReID) store one table per TFDS split. Datasets with
trials (iLIDS-VID, PRID-2011) store one table of every sequence (TFDS split `POOL`) plus the
trials' person lists; a trial's "train"/"test" index then selects rows of that table, and its
start offsets still address the records of the one shared `POOL` source.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from reid_jax.data import duke_video, ilidsvid, mars, prid2011

POOL = "tracklets"  # the one TFDS split of a dataset with trials
TRIAL_SPLITS = ("train", "test")


class Tree(NamedTuple):
    """A manual tree as read: TFDS split name -> table, and the trials (None: fixed splits)."""

    tables: dict[str, mars.TrackletTable]
    trials: ilidsvid.Trials | None = None


def tree_fingerprint(tree: Tree, version: int) -> str:
    """SHA-256 of every frame path, the tracklet columns and the trials of a read tree."""
    h = hashlib.sha256(f"tree-format-v{version}".encode())
    for split, table in sorted(tree.tables.items()):
        h.update(f"{split}:{len(table.paths)}:".encode())
        h.update("\n".join(table.paths).encode())
        for col in (table.start, table.length, table.pid, table.camid, table.is_query):
            h.update(np.ascontiguousarray(col).tobytes())
    h.update(json.dumps(tree.trials, sort_keys=True).encode())
    return h.hexdigest()


def table_json(table: mars.TrackletTable) -> dict[str, list]:
    """The tracklet columns of a table as JSON lists (paths excluded: they are the records)."""
    return {
        "start": table.start.tolist(),
        "length": table.length.tolist(),
        "pid": table.pid.tolist(),
        "camid": table.camid.tolist(),
        "is_query": table.is_query.tolist(),
    }


def read_mars(root: Path) -> Tree:
    """MARS-format tree: `train` and `test` tables."""
    return Tree({s: mars.read_split(root, s) for s in mars.SPLITS})


def read_ilidsvid(root: Path) -> Tree:
    """iLIDS-VID: every sequence in `POOL`, with the split file's trials."""
    table, trials = ilidsvid.read_ilidsvid(root)
    return Tree({POOL: table}, trials)


def read_prid2011(root: Path) -> Tree:
    """PRID-2011: the sequences of the persons any trial uses in `POOL`, with the trials."""
    table, trials = prid2011.read_prid2011(root)
    return Tree({POOL: table}, trials)


def read_duke_video(root: Path) -> Tree:
    """DukeMTMC-VideoReID: `train` and `test` (query then gallery) tables."""
    return Tree(duke_video.read_duke_video(root))


@dataclasses.dataclass(frozen=True)
class TrackletIndex:
    """Per-tracklet arrays of one prepared split: tracklet k is records start[k]..+length[k]."""

    start: np.ndarray  # int64 [N]
    length: np.ndarray  # int64 [N]
    pid: np.ndarray  # int64 [N]
    camid: np.ndarray  # int64 [N]
    is_query: np.ndarray  # bool [N]
    label: np.ndarray  # int64 [N]: train 0..C-1 from sorted unique pids, test -1

    @property
    def num_classes(self) -> int:
        """Number of distinct training labels (0 for a test split)."""
        return int(self.label.max()) + 1 if len(self.label) else 0

    @property
    def num_frames(self) -> int:
        """Total frames (= records) covered by the tracklets."""
        return int(self.length.sum())


def num_trials(meta: dict) -> int:
    """Number of train/test trials in prepared metadata (1 for fixed splits like MARS)."""
    return len(meta["trials"]) if "trials" in meta else 1


def _check_trial(trial: Any, meta: dict, where: str) -> int:
    if isinstance(trial, bool) or not isinstance(trial, (int, np.integer)):
        raise ValueError(f"trial (config.data.split) must be an integer, got {trial!r}")
    if "trials" not in meta and trial != 0:
        raise ValueError(
            f"{where} has one fixed train/test split; trial (config.data.split) must be 0, "
            f"got {trial}"
        )
    count = num_trials(meta)
    if not 0 <= trial < count:
        raise ValueError(
            f"trial {trial} (config.data.split) is out of range: {where} has {count} trials, "
            f"0..{count - 1}"
        )
    return int(trial)


def _columns(meta: dict, split: str, trial: int, splits: list[str], where: str) -> tuple:
    """(TFDS split holding the records, int64 columns of the selected tracklets)."""
    if "trials" not in meta:
        if split not in splits:
            raise ValueError(f"split {split!r} not in {where}: {splits}")
        return split, {k: np.asarray(v, np.int64) for k, v in meta["tracklets"][split].items()}
    if split not in TRIAL_SPLITS:
        raise ValueError(f"split {split!r} not in {where}: expected one of {TRIAL_SPLITS}")
    cols = {k: np.asarray(v, np.int64) for k, v in meta["tracklets"][POOL].items()}
    rows = np.isin(cols["pid"], np.asarray(meta["trials"][trial][split], np.int64))
    cols = {k: v[rows] for k, v in cols.items()}
    if split == "train":  # queries exist only at test time
        cols["is_query"] = np.zeros_like(cols["is_query"])
    return POOL, cols


def index_from_metadata(
    meta: dict, split: str, trial: Any, splits: list[str], where: str
) -> tuple[str, int, TrackletIndex]:
    """(TFDS split to read, records that split must hold, index of `split` in trial `trial`).

    `splits` are the prepared TFDS splits and `where` names the dataset in error messages.
    """
    trial = _check_trial(trial, meta, where)
    source_split, cols = _columns(meta, split, trial, splits, where)
    expected = int(np.sum(meta["tracklets"][source_split]["length"]))
    is_query = cols.pop("is_query").astype(bool)
    label = np.full(len(cols["pid"]), -1, np.int64)
    if split == "train":
        label = np.unique(cols["pid"], return_inverse=True)[1].astype(np.int64)
    return source_split, expected, TrackletIndex(is_query=is_query, label=label, **cols)
