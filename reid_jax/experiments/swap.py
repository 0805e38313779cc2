"""Test-time swaps: one trained checkpoint, its fusion replaced at extraction, no retraining.

The frames' backbone features of a trained ``mean`` run are fused by every parameter-free
weighting (``SWAPS``: each ``cosine_center`` mode, several tau, the cosine computed on raw,
centred or BNNeck-normalised features, and the clean-frames oracle), then go through the run's
BNNeck and are averaged per tracklet exactly as the evaluator does. The backbone and the data are
the same for every row, so differences between rows are free of training noise; across seeds
(one ``mean`` checkpoint per seed) they are paired.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reid_jax.evaluation import metrics
from reid_jax.evaluation.extract import pairwise_distance
from reid_jax.fusion.cosine import cosine_center
from reid_jax.models.resnet import BN_EPSILON

VIEWS = ("raw", "centred", "bn")


@dataclasses.dataclass(frozen=True)
class Swap:
    """A test-time weighting: ``kind`` "mean" | "oracle" | "cosine"; for "cosine" the
    ``cosine_center`` mode / tau / weighting and the ``view`` the cosines are computed on."""

    name: str
    kind: str
    mode: str = "flat"
    tau: float = 1.0
    weighting: str = "softmax"
    view: str = "raw"


SWAPS = (
    Swap("mean", "mean"),
    Swap("oracle (clean frames only)", "oracle"),
    *(Swap(f"flat tau={t:g}", "cosine", "flat", t) for t in (1.0, 0.1, 0.01, 0.001)),
    *(Swap(f"pairwise tau={t:g}", "cosine", "pairwise", t) for t in (1.0, 0.1, 0.01)),
    Swap("flat angle tau=0.1", "cosine", "flat", 0.1, "angle"),
    *(Swap(f"centred flat tau={t:g}", "cosine", "flat", t, view="centred") for t in (0.1, 0.01)),
    *(Swap(f"BN-normalised flat tau={t:g}", "cosine", "flat", t, view="bn") for t in (0.1, 0.01)),
)


def view_features(gap: np.ndarray, view: str, bn_mean: np.ndarray, bn_var: np.ndarray
                  ) -> np.ndarray:  # fmt: skip
    """Frame features [M,T,C] the cosines are computed on: ``raw``; ``centred`` (minus the mean
    frame feature of these chunks); ``bn`` ((x - mean) / sqrt(var + eps) with the BNNeck's
    running statistics: what the note's "BN-normalised" cosine would see)."""
    if view == "raw":
        return gap
    if view == "centred":
        return gap - gap.reshape(-1, gap.shape[-1]).mean(axis=0)
    if view == "bn":
        return (gap - bn_mean) / np.sqrt(bn_var + BN_EPSILON)
    raise ValueError(f"view {view!r}: expected one of {VIEWS}")


def swap_weights(swap: Swap, gap: np.ndarray, labels: np.ndarray, bn_mean: np.ndarray,
                 bn_var: np.ndarray) -> np.ndarray:  # fmt: skip
    """Per-frame weights [M,T] of ``swap`` (rows sum to 1; an oracle row without a clean frame
    is all zero: that chunk is left out of its tracklet's mean)."""
    m, t = gap.shape[:2]
    if swap.kind == "mean":
        return np.full((m, t), 1.0 / t)
    if swap.kind == "oracle":
        clean = (labels == "clean").astype(np.float64)
        return clean / np.maximum(clean.sum(axis=1, keepdims=True), 1.0)
    x = jnp.asarray(view_features(gap, swap.view, bn_mean, bn_var), jnp.float32)
    _, aux = jax.jit(cosine_center, static_argnames=("mode", "weighting"))(
        x, tau=swap.tau, mode=swap.mode, weighting=swap.weighting
    )
    return np.asarray(aux.get("frame_weights", aux["weights"]), np.float64)


def tracklet_features(chunk_feats: np.ndarray, weights: np.ndarray, tracklet: np.ndarray,
                      num_tracklets: int) -> np.ndarray:  # fmt: skip
    """Mean of the chunk features of every tracklet, skipping chunks whose weights are all 0;
    a tracklet left without a chunk falls back to all of its chunks."""
    use = weights.sum(axis=1) > 0
    sums = np.zeros((num_tracklets, chunk_feats.shape[1]))
    counts = np.zeros(num_tracklets)
    np.add.at(sums, tracklet[use], chunk_feats[use])
    np.add.at(counts, tracklet[use], 1)
    empty = counts == 0
    if np.any(empty):
        fill = np.isin(tracklet, np.flatnonzero(empty))
        np.add.at(sums, tracklet[fill], chunk_feats[fill])
        np.add.at(counts, tracklet[fill], 1)
    return sums / np.maximum(counts, 1)[:, None]


def score(feats: np.ndarray, index: Any, distance: str, normalize: bool) -> dict[str, float]:
    """Official-protocol mAP and Rank-1 of tracklet features [N, D] (as the evaluator scores)."""
    if normalize:
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    q, g = metrics.query_gallery_indices(index.pid, index.is_query, "official")
    res = metrics.evaluate(
        pairwise_distance(feats[q], feats[g], distance), index.pid[q], index.pid[g],
        index.camid[q], index.camid[g], protocol="official",
    )  # fmt: skip
    return {"mAP": float(res["mAP"]), "Rank1": float(res["cmc"][0])}


def run_swaps(chunks: Any, swaps: tuple[Swap, ...] = SWAPS) -> dict[str, dict[str, float]]:
    """Every swap on a restored run (``chunks.extract``): name -> {"mAP", "Rank1"}."""
    state = chunks.state
    stats = state.batch_stats["bnneck"]
    bn_mean = np.asarray(stats["mean"], np.float64)
    bn_var = np.asarray(stats["var"], np.float64)
    scale = np.asarray(state.params["bnneck"]["scale"], np.float64)
    cfg = chunks.config.evals.retrieval
    out = {}
    for swap in swaps:
        w = swap_weights(swap, chunks.gap, chunks.labels, bn_mean, bn_var)
        fused = np.einsum("mt,mtc->mc", w, chunks.gap.astype(np.float64))
        if cfg.feature == "bn":
            fused = (fused - bn_mean) / np.sqrt(bn_var + BN_EPSILON) * scale
        feats = tracklet_features(fused, w, chunks.tracklet, len(chunks.index.pid))
        out[swap.name] = score(feats, chunks.index, cfg.distance, cfg.normalize)
    return out
