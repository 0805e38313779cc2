"""Tests for the SynthMARS generator: MARS layout/format compatibility, split invariants,
determinism, corruption labels, visible identity consistency, embedded length table."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from reid_jax.data import mars_lengths
from reid_jax.data.synth_mars import MARKER, generate
from reid_jax.data.synth_render import make_identity, skeleton
from reid_jax.data.synth_scene import render_tracklet, resolve_difficulty

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mars_info"
NAME_RE = re.compile(r"^(\d{4}|00-1)C([1-6])T(\d{4})F(\d{3})\.jpg$")
KW = dict(num_ids=6, height=64, width=32, corruption_rate=0.3, seed=3, length_scale=0.1,
          min_length=4, progress=False)  # fmt: skip
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real MARS info files absent: {REAL}")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "mars"
    generate(root, num_workers=1, **KW)
    return root


def _names(root: Path, split: str) -> list[str]:
    return (root / "info" / f"{split}_name.txt").read_text().split()


def _table(root: Path, split: str) -> np.ndarray:
    return sio.loadmat(root / "info" / f"tracks_{split}_info.mat")[f"track_{split}_info"]


def _query(root: Path) -> np.ndarray:
    return sio.loadmat(root / "info" / "query_IDX.mat")["query_IDX"]


def _pid(name: str) -> int:
    return -1 if name.startswith("00-1") else int(name[:4])


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_layout_and_names(tree: Path) -> None:
    for split in ("train", "test"):
        names = _names(tree, split)
        assert names == sorted(names) and len(names) == len(set(names)) > 0
        on_disk = sorted(p.name for p in (tree / f"bbox_{split}").rglob("*.jpg"))
        assert on_disk == sorted(names)
        for n in names:
            assert NAME_RE.match(n), n
            assert (tree / f"bbox_{split}" / n[:4] / n).is_file()
    img = Image.open(tree / "bbox_train" / "0001" / _names(tree, "train")[0])
    assert img.format == "JPEG" and img.mode == "RGB" and img.size == (32, 64)


@needs_real
def test_mat_files_match_real_format(tree: Path) -> None:
    files = (("tracks_train_info", "track_train_info"), ("tracks_test_info", "track_test_info"),
             ("query_IDX", "query_IDX"))  # fmt: skip
    for fname, key in files:
        real, ours = sio.loadmat(REAL / f"{fname}.mat"), sio.loadmat(tree / "info" / f"{fname}.mat")
        assert set(ours) == set(real)
        assert ours[key].dtype == real[key].dtype and ours[key].ndim == real[key].ndim == 2
        if key == "query_IDX":
            assert ours[key].shape[0] == real[key].shape[0] == 1
        else:
            assert ours[key].shape[1] == real[key].shape[1] == 4


def test_rows_consistent_with_names(tree: Path) -> None:
    for split in ("train", "test"):
        names, table = _names(tree, split), _table(tree, split)
        assert table[0, 0] == 1 and table[-1, 1] == len(names)
        np.testing.assert_array_equal(table[1:, 0], table[:-1, 1] + 1)
        prefixes = set()
        for start, end, pid, cam in table:
            chunk = names[start - 1 : end]
            prefix = chunk[0][:11]
            assert prefix not in prefixes
            prefixes.add(prefix)
            assert [n[:11] for n in chunk] == [prefix] * len(chunk)
            assert [int(n[12:15]) for n in chunk] == list(range(1, len(chunk) + 1))
            assert _pid(prefix) == pid and int(prefix[5]) == cam
            assert len(chunk) >= KW["min_length"]


def test_split_pids_junk_and_distractors(tree: Path) -> None:
    train, test = _table(tree, "train"), _table(tree, "test")
    assert set(train[:, 2]) == set(range(1, 7))
    assert set(test[:, 2]) == set(range(7, 13)) | {0, -1}
    ids = test[test[:, 2] > 0]
    n_dis, n_junk = int((test[:, 2] == 0).sum()), int((test[:, 2] == -1).sum())
    assert n_dis == max(1, round(len(ids) * 3248 / 8062))
    assert n_junk == max(1, round(len(ids) * 870 / 8062))
    for table in (train, ids):
        for pid in set(table[:, 2]):
            assert len(set(table[table[:, 2] == pid, 3])) >= 2
    junk = [n for n in _names(tree, "test") if n.startswith("00-1")]
    assert junk and all(
        (tree / "bbox_test" / "00-1" / n).is_file() for n in junk
    )  # fmt: skip
    assert any((tree / "bbox_test" / "0000").iterdir())


def test_queries_one_per_pid_camera_with_cross_camera_match(tree: Path) -> None:
    test, q = _table(tree, "test"), _query(tree)[0].astype(np.int64)
    assert len(set(q)) == len(q) and q.min() >= 1 and q.max() <= len(test)
    qrows = test[q - 1]
    assert (qrows[:, 2] > 0).all()
    pairs = [(int(p), int(c)) for _, _, p, c in qrows]
    ids = test[test[:, 2] > 0]
    assert sorted(pairs) == sorted({(int(p), int(c)) for _, _, p, c in ids})
    for pid, cam in pairs:
        assert ((ids[:, 2] == pid) & (ids[:, 3] != cam)).any()


def test_sidecar_and_corruption_rate(tree: Path) -> None:
    with open(tree / "info" / "synth_frames.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == _names(tree, "train") + _names(tree, "test")
    allowed = {"clean", "occlusion", "truncation", "blur", "switch"}
    people = [r for r in rows if not r["kind"].startswith("junk")]
    assert {r["corruption"] for r in rows} <= allowed
    frac = np.mean([r["corruption"] != "clean" for r in people])
    assert abs(frac - KW["corruption_rate"]) < 0.08, frac
    for r in people:
        assert r["pid"] == str(_pid(r["name"])) and r["camera"] == r["name"][5]
        assert 0.0 <= float(r["gait_phase"]) < 1.0 and r["viewpoint"] in {"front", "back", "side"}
        assert (r["other_id"] != "") == (r["corruption"] == "switch")
        assert r["other_id"] != r["pid"]
    test = _table(tree, "test")
    qstarts = {int(test[i - 1, 0]) for i in _query(tree)[0]}
    test_rows = [r for r in rows if r["split"] == "test"]
    starts = {i + 1 for i, r in enumerate(test_rows) if r["is_query"] == "1" and r["frame"] == "1"}
    assert starts == qstarts
    summary = json.loads((tree / "info" / "synth_params.json").read_text())["summary"]
    assert summary["corrupted_frames"] == sum(r["corruption"] != "clean" for r in rows)


def test_render_tracklet_honours_rate_extremes() -> None:
    diff = resolve_difficulty("medium")
    job = dict(seed=0, index=5, diff=diff, height=32, width=16, cam=2, kind="identity", key=1,
               length=12, switch_keys=range(1, 4))  # fmt: skip
    assert all(m["corruption"] == "clean" for _, m in render_tracklet(dict(job, corruption_rate=0)))
    assert all(m["corruption"] != "clean" for _, m in render_tracklet(dict(job, corruption_rate=1)))


def test_same_identity_looks_alike_in_upper_body(tree: Path) -> None:
    with open(tree / "info" / "synth_frames.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    rows = [r for r in rows if r["corruption"] == "clean"]
    per_trk: dict[tuple[int, str], list[np.ndarray]] = {}
    for r in rows:
        im = np.asarray(Image.open(tree / "bbox_train" / r["name"][:4] / r["name"]), np.float32)
        h, w = im.shape[:2]
        crop = im[int(0.25 * h) : int(0.45 * h), int(0.3 * w) : int(0.7 * w)]
        per_trk.setdefault((int(r["pid"]), r["name"][:11]), []).append(crop.mean((0, 1)))
    keys = sorted(per_trk)
    mean = {k: np.mean(v, 0) for k, v in per_trk.items()}
    intra, inter = [], []
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            (intra if a[0] == b[0] else inter).append(np.linalg.norm(mean[a] - mean[b]))
    assert intra and inter
    assert np.mean(intra) < 0.7 * np.mean(inter), (np.mean(intra), np.mean(inter))


def test_gait_moves_limbs_periodically() -> None:
    ident = make_identity(0, 1, resolve_difficulty("medium"))
    for view in ("front", "side"):
        a, b, c = (skeleton(ident, view, p) for p in (0.0, 0.25, 1.0))
        ankle = lambda s: np.array(s["legs"][0][2])  # noqa: E731
        assert np.linalg.norm(ankle(a) - ankle(b)) > 0.005
        np.testing.assert_allclose(ankle(a), ankle(c), atol=1e-9)
    side = skeleton(ident, "side", 0.25)  # legs apart mid-stride: ankles on opposite sides
    assert side["legs"][0][2][0] * side["legs"][1][2][0] < 0


def test_deterministic_across_worker_counts(tree: Path, tmp_path: Path) -> None:
    generate(tmp_path / "again", num_workers=2, **KW)
    a, b = _all_bytes(tree), _all_bytes(tmp_path / "again")
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


@needs_real
def test_embedded_length_table_matches_real_files() -> None:
    t = sio.loadmat(REAL / "tracks_train_info.mat")["track_train_info"]
    te = sio.loadmat(REAL / "tracks_test_info.mat")["track_test_info"]
    real = np.concatenate([t[:, 1] - t[:, 0] + 1, te[:, 1] - te[:, 0] + 1])
    assert len(real) == mars_lengths.MARS_NUM_TRACKLETS
    np.testing.assert_allclose(
        mars_lengths.MARS_LENGTH_QUANTILES,
        np.percentile(real, mars_lengths.MARS_LENGTH_PERCENTS), atol=0.06
    )  # fmt: skip
    draw = mars_lengths.sample_lengths(np.random.default_rng(0), 100_000, 1.0, 1)
    assert abs(np.median(draw) - np.median(real)) <= 2
    assert abs(draw.mean() - real.mean()) < 0.03 * real.mean()
    scaled = mars_lengths.sample_lengths(np.random.default_rng(1), 20_000, 0.25, 4)
    assert scaled.min() == 4 and scaled.max() <= 999
    assert abs(np.median(scaled) - max(4, 0.25 * np.median(real))) <= 1


def test_sample_lengths_without_real_files() -> None:
    draw = mars_lengths.sample_lengths(np.random.default_rng(0), 50_000, 1.0, 1)
    assert abs(np.median(draw) - mars_lengths.MARS_MEDIAN_LENGTH) <= 2
    assert draw.min() >= 2 and draw.max() <= 920
    with pytest.raises(ValueError, match="length_scale"):
        mars_lengths.sample_lengths(np.random.default_rng(0), 3, 0.0, 1)


def test_reuse_refuse_and_regenerate(tree: Path, tmp_path: Path) -> None:
    again = generate(tree, num_workers=1, **KW)
    assert again["generated"] is False and again["train_frames"] == len(_names(tree, "train"))
    with pytest.raises(ValueError, match="other parameters"):
        generate(tree, num_workers=1, **dict(KW, seed=4))
    other = tmp_path / "foreign"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a SynthMARS tree"):
        generate(other, **KW)
    small = dict(KW, num_ids=1, length_scale=0.05, min_length=2)
    root = tmp_path / "small"
    first = generate(root, num_workers=1, **small)
    victim = next((root / "bbox_train").rglob("*.jpg"))
    victim.unlink()
    (root / MARKER).write_text("{}")  # as if killed mid-way
    redo = generate(root, num_workers=1, **small)
    assert redo["generated"] is True and victim.is_file() and not (root / MARKER).exists()
    assert redo["train_frames"] == first["train_frames"]
    with pytest.raises(ValueError, match="num_ids"):
        generate(tmp_path / "bad", num_ids=0)


def test_cli_writes_tree(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "reid_jax.data.synth_mars", f"--out={out}", "--num_ids=1",
           "--height=32", "--width=16", "--length_scale=0.05", "--min_length=2",
           "--num_workers=1"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["train_ids"] == 1
    assert "SynthMARS:" in res.stderr and (out / "info" / "synth_params.json").is_file()
    assert len(_names(out, "test")) > 0 and len(_names(out, "train")) > 0
