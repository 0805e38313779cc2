"""A validation split carved from a SynthMARS tree's training identities, for choosing hyper-
parameters without ever looking at the test split.

``carve(src, dst)`` writes a MARS-format tree whose train split is the source's training
identities minus the last ``fraction`` of them (by pid) and whose test split is those held-out
identities' tracklets (one query per (pid, camera), for pids seen by at least two cameras). The
frames are hard links to the source's; ``info/synth_frames.csv`` and ``info/synth_params.json``
are carried over (the latter with the new frame counts), so ``data.name=synth_mars`` jobs reuse
the tree as it is. The source's test split is not read.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import scipy.io as sio

from reid_jax.data.mars import INFO_MATS, NAME_FILES, read_info

DONE = "synth_params.json"  # written last: a complete carved tree


def _savemat(path: Path, key: str, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    sio.savemat(buf, {key: arr})
    path.write_bytes(buf.getvalue())


def held_out_pids(pids: np.ndarray, fraction: float) -> np.ndarray:
    """The last ceil(fraction x n) of the sorted distinct positive pids (at least 1, not all)."""
    ids = np.unique(pids[pids > 0])
    if len(ids) < 2:
        raise ValueError(f"need >= 2 training identities to carve a validation split, got {ids}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction {fraction}: expected a number in (0, 1)")
    k = min(len(ids) - 1, max(1, int(np.ceil(fraction * len(ids)))))
    return ids[-k:]


def carve(src: str | Path, dst: str | Path, fraction: float = 1 / 3) -> Path:
    """Write (or reuse) the validation tree of the SynthMARS tree ``src`` at ``dst``."""
    src, dst = Path(src), Path(dst)
    if (dst / "info" / DONE).is_file():
        return dst
    if dst.exists():
        shutil.rmtree(dst)  # an interrupted carve
    info = read_info(src / "info")
    rows = info["track_train_info"]
    names = (src / "info" / NAME_FILES["train"]).read_text().split()
    val = held_out_pids(rows[:, 2], fraction)
    is_val = np.isin(rows[:, 2], val)
    (dst / "info").mkdir(parents=True)
    out = {}
    for split, keep in (("train", ~is_val), ("test", is_val)):
        new_rows, new_names, start = [], [], 1
        for s, e, pid, cam in rows[keep]:
            frames = names[s - 1 : e]
            new_names += frames
            new_rows.append([start, start + len(frames) - 1, pid, cam])
            start += len(frames)
            for name in frames:
                folder = dst / f"bbox_{split}" / name[:4]
                folder.mkdir(parents=True, exist_ok=True)
                os.link(src / "bbox_train" / name[:4] / name, folder / name)
        (dst / "info" / NAME_FILES[split]).write_text("\n".join(new_names) + "\n")
        out[split] = (np.asarray(new_rows, np.int32), len(new_names))
        _savemat(dst / "info" / INFO_MATS[f"track_{split}_info"], f"track_{split}_info",
                 out[split][0])  # fmt: skip
    test = out["test"][0]
    query, seen = [], set()
    for r, (_, _, pid, cam) in enumerate(test):
        if (pid, cam) not in seen and len(set(test[test[:, 2] == pid, 3])) >= 2:
            seen.add((pid, cam))
            query.append(r + 1)
    _savemat(dst / "info" / INFO_MATS["query_IDX"], "query_IDX",
             np.asarray(query, np.uint16)[None])  # fmt: skip
    with open(src / "info" / "synth_frames.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames
        kept = []
        for row in reader:
            if row["split"] != "train":
                continue
            row["split"] = "test" if int(row["pid"]) in set(val.tolist()) else "train"
            kept.append(row)
    with open(dst / "info" / "synth_frames.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    params = json.loads((src / "info" / DONE).read_text())
    params["summary"] = dict(params["summary"], train_frames=out["train"][1],
                             test_frames=out["test"][1], validation_of=str(src),
                             validation_pids=val.tolist())  # fmt: skip
    (dst / "info" / DONE).write_text(json.dumps(params, indent=1, sort_keys=True))
    return dst
