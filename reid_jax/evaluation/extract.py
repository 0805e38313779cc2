"""Chunked tracklet feature extraction: memory bounded by the batch, whatever the tracklet length.

The test pipeline yields chunks of T frames (``pipeline.eval_iterator``); each chunk is embedded
on all devices, gathered to every host, and the chunk features are averaged per tracklet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from reid_jax import parallel


def _to_host(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def extract_features(
    embed_fn: Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]],
    state: Any,
    batches: Iterator[dict[str, np.ndarray]],
    num_batches: int,
    num_tracklets: int,
    mesh: Mesh,
) -> np.ndarray:
    """Mean of the chunk features of every tracklet: float32 [num_tracklets, D]."""
    sums = counts = None
    for _ in range(num_batches):
        local = next(batches)
        meta = parallel.global_batch({"tracklet": local["tracklet"], "mask": local["mask"]}, mesh)
        out = embed_fn(state, parallel.global_batch({"clip": local["clip"]}, mesh))
        feats = _to_host(out["features"]).astype(np.float64)
        tracklet = _to_host(meta["tracklet"])
        keep = _to_host(meta["mask"]) > 0
        if sums is None:
            sums = np.zeros((num_tracklets, feats.shape[1]), np.float64)
            counts = np.zeros((num_tracklets,), np.int64)
        np.add.at(sums, tracklet[keep], feats[keep])
        np.add.at(counts, tracklet[keep], 1)
    if sums is None or np.any(counts == 0):
        missing = np.flatnonzero(counts == 0) if counts is not None else np.arange(num_tracklets)
        raise RuntimeError(f"no features extracted for tracklets {missing[:10].tolist()}...")
    return (sums / counts[:, None]).astype(np.float32)


def pairwise_distance(q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    """[Q, G] distances: ``euclidean`` (squared, as the MARS codebases rank) or ``cosine`` (1 - cos)."""
    q = q.astype(np.float32)
    g = g.astype(np.float32)
    if metric == "cosine":
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        return 1.0 - qn @ gn.T
    if metric == "euclidean":
        d = (q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2.0 * (q @ g.T)
        return np.maximum(d, 0.0)
    raise ValueError(f"distance={metric!r}: expected 'euclidean' or 'cosine'")
