"""SynthMARS's per-frame truth aligned with a prepared test split, and the corrupted-frame AUC.

The sidecar ``info/synth_frames.csv`` of a SynthMARS tree (never read by training) says for every
frame its corruption (clean, occlusion, truncation, blur, switch), gait phase in [0, 1) and the
tracklet kind; rows are matched to the prepared split's records by file name.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from reid_jax.data import builders
from reid_jax.data.synth_scene import CORRUPTIONS

SIDECAR = Path("info") / "synth_frames.csv"
JUNK = "junk"  # label of every frame of a junk tracklet (neither clean nor corrupted)


def read_sidecar(raw_dir: str | Path, split: str = "test") -> dict[str, tuple[str, float]]:
    """file name -> (corruption label, gait phase or NaN) for one split of a SynthMARS tree."""
    path = Path(raw_dir) / SIDECAR
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: per-frame labels exist only for SynthMARS trees "
            f"(python -m reid_jax.data.synth_mars); config.data.raw_dir={str(raw_dir)!r}"
        )
    out = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"name", "split", "kind", "corruption", "gait_phase"} - set(
            reader.fieldnames or ()
        )
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for row in reader:
            if row["split"] != split:
                continue
            # kinds: identity, distractor, junk_background, junk_fragment
            label = JUNK if row["kind"].startswith("junk") else row["corruption"]
            phase = float(row["gait_phase"]) if row["gait_phase"] else float("nan")
            out[row["name"]] = (label, phase)
    return out


def record_labels(source: Any, raw_dir: str | Path, split: str = "test") -> dict[str, np.ndarray]:
    """Per record of a prepared split: ``corruption`` (str [N]) and ``gait_phase`` (float [N])."""
    table = read_sidecar(raw_dir, split)
    labels, phases = [], []
    for i in range(len(source)):
        name = Path(builders.record_name(source[i])).name
        if name not in table:
            raise KeyError(
                f"record {i} ({name}) of the prepared {split} split has no row in "
                f"{Path(raw_dir) / SIDECAR}: the prepared data and the tree differ; prepare again"
            )
        label, phase = table[name]
        labels.append(label)
        phases.append(phase)
    return {
        "corruption": np.asarray(labels),
        "gait_phase": np.asarray(phases, np.float64),
    }


def chunk_records(dump: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Record index [M, T] of every weight in a ``fusion_weights_step*.npz`` dump, and a mask
    that is False on repeats of a frame within its chunk (a tracklet's last chunk pads so)."""
    offsets = np.asarray(dump["offsets"])
    records = np.asarray(dump["start"])[np.asarray(dump["tracklet"])][:, None] + offsets
    first = np.ones(offsets.shape, bool)
    for j in range(1, offsets.shape[1]):
        first[:, j] = ~np.any(offsets[:, :j] == offsets[:, j : j + 1], axis=1)
    return records, first


def pairwise_auc(weights: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> tuple[float, int]:
    """P(weight of a ``pos`` frame > weight of a ``neg`` frame of the SAME row), ties count 1/2.

    ``weights``, ``pos``, ``neg``: [M, T]. Comparing within a chunk is what a softmax over the
    chunk's frames can do; returns (AUC, number of pairs), AUC NaN when there is no pair.
    """
    pair = pos[:, :, None] & neg[:, None, :]
    n = int(pair.sum())
    if n == 0:
        return float("nan"), 0
    diff = weights[:, :, None] - weights[:, None, :]
    wins = np.sum((diff > 0) & pair) + 0.5 * np.sum((diff == 0) & pair)
    return float(wins / n), n


def corrupted_frame_auc(
    dump: dict[str, np.ndarray], corruption: np.ndarray
) -> dict[str, dict[str, float]]:
    """Corrupted-frame AUC of a weight dump, per corruption type and for all of them ("any").

    1.0: the fusion gives every corrupted frame less weight than every clean frame of its chunk;
    0.5: no preference (temporal average pooling gives exactly 0.5). ``corruption`` is
    ``record_labels(...)["corruption"]``. Returns {type: {"auc", "pairs"}}.
    """
    records, first = chunk_records(dump)
    labels = corruption[records]
    weights = np.asarray(dump["weights"], np.float64)
    clean = (labels == "clean") & first
    out = {}
    for kind in (*CORRUPTIONS, "any"):
        bad = np.isin(labels, CORRUPTIONS) if kind == "any" else labels == kind
        auc, pairs = pairwise_auc(weights, clean, bad & first)
        out[kind] = {"auc": auc, "pairs": pairs}
    return out
