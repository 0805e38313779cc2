"""The validation split carved from training identities: MARS-readable, test split untouched."""

import csv
import json

import numpy as np
import pytest
import scipy.io as sio

from reid_jax.data import mars, synth_mars
from reid_jax.experiments import validation


def _tree(root):
    """A hand-made SynthMARS-like tree: train pids 1..3, cameras 1 and 2, 2 frames per tracklet;
    test pid 4 (never to be read)."""
    info = root / "info"
    info.mkdir(parents=True)
    rows, names, side = {"train": [], "test": []}, {"train": [], "test": []}, []
    for split, pids in (("train", (1, 2, 3)), ("test", (4,))):
        for pid in pids:
            for cam in (1, 2):
                start = len(names[split]) + 1
                for f in (1, 2):
                    name = f"{pid:04d}C{cam}T0001F{f:03d}.jpg"
                    names[split].append(name)
                    folder = root / f"bbox_{split}" / f"{pid:04d}"
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / name).write_bytes(b"jpg")
                    side.append([name, split, pid, cam, 1, f, "identity", "blur" if f == 2
                                 else "clean", "0.5"])  # fmt: skip
                rows[split].append([start, start + 1, pid, cam])
    for split in ("train", "test"):
        (info / f"{split}_name.txt").write_text("\n".join(names[split]) + "\n")
        key = f"track_{split}_info"
        sio.savemat(info / mars.INFO_MATS[key], {key: np.asarray(rows[split], np.int32)})
    sio.savemat(info / "query_IDX.mat", {"query_IDX": np.array([[1]], np.uint16)})
    with open(info / "synth_frames.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "split", "pid", "camera", "tracklet", "frame", "kind", "corruption",
                    "gait_phase"])  # fmt: skip
        w.writerows(side)
    params = {"seed": 0, "num_ids": 3}
    summary = {"train_frames": 12, "test_frames": 4}
    (info / "synth_params.json").write_text(json.dumps({"params": params, "summary": summary}))
    return params


def test_carve_holds_out_the_last_training_ids(tmp_path):
    params = _tree(tmp_path / "src")
    dst = validation.carve(tmp_path / "src", tmp_path / "val", fraction=1 / 3)
    train, test = mars.read_split(dst, "train"), mars.read_split(dst, "test")
    assert sorted(set(train.pid.tolist())) == [1, 2] and sorted(set(test.pid.tolist())) == [3]
    assert test.is_query.tolist() == [True, True]  # one query per (pid, camera)
    assert all(p.startswith("bbox_test/0003/") for p in test.paths)
    side = validation.csv.DictReader(open(dst / "info" / "synth_frames.csv"))
    split_of = {r["name"]: r["split"] for r in side}
    assert split_of["0003C1T0001F001.jpg"] == "test" and split_of["0001C2T0001F002.jpg"] == "train"
    assert not any(n.startswith("0004") for n in split_of)  # the real test split is not used
    # SynthMARS's generator reuses the carved tree as complete (no re-rendering)
    stored = synth_mars._check_out_dir(dst, params)
    assert (stored["train_frames"], stored["test_frames"]) == (8, 4)
    # reused on a second call
    marker = (dst / "info" / "synth_params.json").stat().st_mtime_ns
    validation.carve(tmp_path / "src", dst)
    assert (dst / "info" / "synth_params.json").stat().st_mtime_ns == marker


def test_held_out_pids_bounds():
    assert validation.held_out_pids(np.array([0, -1, 5, 3, 3, 9]), 0.5).tolist() == [5, 9]
    assert validation.held_out_pids(np.array([1, 2]), 0.01).tolist() == [2]
    assert validation.held_out_pids(np.array([1, 2]), 0.99).tolist() == [2]
    with pytest.raises(ValueError, match="need >= 2 training identities"):
        validation.held_out_pids(np.array([1, 1]), 0.5)
    with pytest.raises(ValueError, match="fraction 1.5"):
        validation.held_out_pids(np.array([1, 2, 3]), 1.5)
