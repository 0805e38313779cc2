"""Feature diagnostics of a trained SynthMARS run: do corrupted frames stand out, and does walking
move the representation?

    python -m reid_jax.experiments.analyze --workdir RUN [--config C] [--step N]

Embeds every test frame with the run's backbone (global average pooled, L2-normalised: the
per-frame feature every fusion starts from) and, with SynthMARS's sidecar labels, writes
``RUN/analysis/``: ``analysis.json``, ``analysis.md`` and PNGs of
- cosine to the tracklet centre for clean vs each corruption type (and how well it separates
  them: what a cosine-to-centre weighting has to work with);
- spread: within a tracklet, between tracklets of one identity in other cameras, between
  identities;
- gait: the spread of clean frames around the centre over the gait cycle, the similarity of two
  clean frames of one tracklet against their gait-phase difference and frame lag, and how fast
  the mean of a window of w consecutive frames converges to the centre.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from scipy import stats

from reid_jax import logs
from reid_jax import run as run_lib
from reid_jax.data.synth_scene import CORRUPTIONS
from reid_jax.experiments import chunks as chunks_lib
from reid_jax.experiments import frames

PHASE_BINS = np.linspace(0.0, 0.5, 6)  # circular gait-phase difference, 5 bins
MAX_LAG = 16
CYCLE_BINS = 8  # absolute gait phase bins
WINDOWS = (1, 2, 4, 8, 16)


def backbone_embed(state: Any, clips: jax.Array, *, model: Any) -> jax.Array:
    """[B,T,H,W,3] uint8 clips -> per-frame backbone features [B,T,C] (GAP, L2-normalised)."""
    f = chunks_lib.backbone_maps(state, clips, model=model).mean(axis=(2, 3))
    return f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-12)


def frame_features(run: run_lib.Run, state: Any) -> tuple[np.ndarray, np.ndarray]:
    """(record index [N], feature [N, C]) of every test frame, each frame once."""
    feats: list[np.ndarray] = []
    chunks = chunks_lib.map_test_chunks(run, state, backbone_embed, feats.append)
    feats = np.concatenate(feats)  # [rows, T, C]
    keep = chunks[:, 0] >= 0
    records = run.test_index.start[chunks[keep, 0]][:, None] + chunks[keep, 1:]
    records, first = np.unique(records.reshape(-1), return_index=True)
    return records, feats[keep].reshape(-1, feats.shape[-1])[first]


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + P(tie)/2 over all pairs (Mann-Whitney), NaN if either side is empty."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = stats.rankdata(np.concatenate([pos, neg]))  # ties share their mean rank
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def diagnostics(
    feats: np.ndarray, tracklet: np.ndarray, frame: np.ndarray, pid: np.ndarray,
    camid: np.ndarray, label: np.ndarray, phase: np.ndarray,
) -> dict[str, Any]:  # fmt: skip
    """All figures from per-frame features [N, C] (L2-normalised) and per-frame metadata:
    tracklet id, frame number within it, pid / camid of its tracklet, corruption label, phase.

    Two views: ``raw`` (the features as a fusion sees them: after a ReLU and average pooling
    they share a large positive mean, so all cosines crowd near 1) and ``centred`` (the mean
    feature of all these frames removed, then L2-normalised: what tells frames apart)."""
    use = label != frames.JUNK
    feats, tracklet, frame = feats[use], tracklet[use], frame[use]
    pid, camid, label, phase = pid[use], camid[use], label[use], phase[use]
    ids, inv = np.unique(tracklet, return_inverse=True)
    out: dict[str, Any] = {"frames": int(len(feats)), "tracklets": int(len(ids))}
    centred = feats - feats.mean(axis=0)
    centred /= np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    t_pid = np.zeros(len(ids), np.int64)
    t_cam = np.zeros(len(ids), np.int64)
    t_pid[inv], t_cam[inv] = pid, camid
    for view, f in (("raw", feats), ("centred", centred)):
        out[view] = _view(f, inv, t_pid, t_cam, frame, label, phase)
    return out


def _view(feats: np.ndarray, inv: np.ndarray, t_pid: np.ndarray, t_cam: np.ndarray,
          frame: np.ndarray, label: np.ndarray, phase: np.ndarray) -> dict[str, Any]:  # fmt: skip
    """The figures of one view of the features (``inv``: tracklet index of every frame)."""
    centre = np.zeros((len(t_pid), feats.shape[1]))
    np.add.at(centre, inv, feats)
    centre /= np.maximum(np.linalg.norm(centre, axis=1, keepdims=True), 1e-12)
    cos = np.sum(feats * centre[inv], axis=1)
    clean = label == "clean"
    out: dict[str, Any] = {}
    out["cos_to_centre"] = {
        k: {"mean": float(cos[label == k].mean()) if np.any(label == k) else float("nan"),
            "std": float(cos[label == k].std()) if np.any(label == k) else float("nan"),
            "frames": int(np.sum(label == k))}
        for k in ("clean", *CORRUPTIONS)
    }  # fmt: skip
    out["cos_auc"] = {k: _auc(cos[clean], cos[label == k]) for k in CORRUPTIONS}
    out["cos_auc"]["any"] = _auc(cos[clean], cos[~clean])
    # Spread (1 - cosine): frames around their tracklet centre; tracklet centres of one identity
    # in different cameras; centres of different identities (pid > 0: distractors are strangers).
    sim = centre @ centre.T
    upper = np.triu(np.ones_like(sim, bool), 1)
    real = (t_pid[:, None] > 0) & (t_pid[None, :] > 0)
    same = t_pid[:, None] == t_pid[None, :]
    cross = upper & real & same & (t_cam[:, None] != t_cam[None, :])
    between = upper & real & ~same
    out["spread"] = {
        "within_tracklet": float(np.mean(1 - cos[clean])),
        "same_id_cross_camera": float(np.mean(1 - sim[cross])) if cross.any() else float("nan"),
        "between_ids": float(np.mean(1 - sim[between])) if between.any() else float("nan"),
    }
    walk = clean & np.isfinite(phase)  # frames with a known gait phase
    out["gait"] = _gait(feats[walk], inv[walk], frame[walk], phase[walk])
    # Spread of clean frames around their tracklet centre by absolute gait phase (8 bins).
    bins = np.clip((phase[walk] * CYCLE_BINS).astype(int), 0, CYCLE_BINS - 1)
    spread = 1 - cos[walk]
    out["gait"]["spread_by_phase"] = [
        float(spread[bins == b].mean()) if np.any(bins == b) else float("nan")
        for b in range(CYCLE_BINS)
    ]
    out["window_convergence"] = _windows(feats, inv, frame, centre)
    return out


def _gait(feats: np.ndarray, inv: np.ndarray, frame: np.ndarray, phase: np.ndarray) -> dict:
    """Cosine between two clean frames of one tracklet by phase difference and by frame lag."""
    by_phase = [[] for _ in range(len(PHASE_BINS) - 1)]
    by_lag = [[] for _ in range(MAX_LAG)]
    for t in np.unique(inv):
        rows = np.flatnonzero(inv == t)
        if len(rows) < 2:
            continue
        f, fr, ph = feats[rows], frame[rows], phase[rows]
        s = f @ f.T
        i, j = np.triu_indices(len(rows), 1)
        d = np.abs(ph[i] - ph[j])
        d = np.minimum(d, 1 - d)
        b = np.clip(np.digitize(d, PHASE_BINS) - 1, 0, len(by_phase) - 1)
        lag = np.abs(fr[i] - fr[j])
        for k in range(len(by_phase)):
            by_phase[k].append(s[i, j][b == k])
        for k in range(MAX_LAG):
            by_lag[k].append(s[i, j][lag == k + 1])
    mean = lambda xs: float(np.concatenate(xs).mean()) if sum(map(len, xs)) else float("nan")  # noqa: E731
    return {
        "phase_bins": PHASE_BINS.tolist(),
        "cos_by_phase_diff": [mean(x) for x in by_phase],
        "pairs_by_phase_diff": [int(sum(map(len, x))) for x in by_phase],
        "cos_by_lag": [mean(x) for x in by_lag],
    }


def _windows(feats: np.ndarray, inv: np.ndarray, frame: np.ndarray, centre: np.ndarray) -> dict:
    """Mean cosine between the mean of w consecutive frames and the tracklet centre, per w."""
    out = {}
    for w in WINDOWS:
        vals = []
        for t in np.unique(inv):
            rows = np.flatnonzero(inv == t)
            rows = rows[np.argsort(frame[rows])]
            for s in range(0, len(rows) - w + 1, w):
                m = feats[rows[s : s + w]].mean(axis=0)
                vals.append(m @ centre[t] / max(np.linalg.norm(m), 1e-12))
        out[str(w)] = float(np.mean(vals)) if vals else float("nan")
    return out


def analyze_run(workdir: str | Path, config_path: str | None = None, step: int | None = None
                ) -> dict[str, Any]:  # fmt: skip
    """Diagnostics of the run in ``workdir`` at ``step`` (default: its last checkpoint)."""
    workdir = Path(workdir)
    run, state, step = run_lib.restore_latest(workdir, config_path, step)
    config = run.config
    records, feats = frame_features(run, state)
    truth = frames.record_labels(run.test_source, config.data.raw_dir)
    idx = run.test_index
    tracklet = np.searchsorted(idx.start, records, side="right") - 1
    out = diagnostics(
        feats, tracklet, records - idx.start[tracklet], idx.pid[tracklet], idx.camid[tracklet],
        truth["corruption"][records], truth["gait_phase"][records],
    )  # fmt: skip
    out.update(workdir=str(workdir), step=int(step), fusion=config.model.fusion)
    dest = workdir / "analysis"
    dest.mkdir(exist_ok=True)
    (dest / "analysis.json").write_text(json.dumps(out, indent=1, sort_keys=True))
    from reid_jax.experiments import analysis_report as report  # noqa: PLC0415 (matplotlib)

    (dest / "analysis.md").write_text(report.analysis_markdown(out))
    report.analysis_plots(out, dest)
    return out


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logs.quiet_libraries()
    f = flags.FLAGS
    out = analyze_run(f.workdir, f.config, f.step)
    print((Path(out["workdir"]) / "analysis" / "analysis.md").read_text())


if __name__ == "__main__":  # flags only here: ablate imports this module and has its own
    flags.DEFINE_string("workdir", None, "The training run to analyse.", required=True)
    flags.DEFINE_string("config", None, "Its config file[:arg] (default: WORKDIR/config.json).")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the last one).")
    app.run(main)
