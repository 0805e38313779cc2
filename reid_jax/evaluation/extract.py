"""Chunked tracklet feature extraction: memory bounded by the batch, whatever the tracklet length.

The test pipeline yields chunks of T frames (``pipeline.eval_iterator``); each chunk is embedded
on all devices, gathered to every host, and the chunk features are averaged per tracklet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from reid_jax import parallel


def extract_features(
    embed_fn: Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]],
    state: Any,
    batches: Iterator[dict[str, np.ndarray]],
    num_batches: int,
    num_tracklets: int,
    mesh: Mesh,
    weights: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Mean of the chunk features of every tracklet: float32 [num_tracklets, D].

    ``weights``: if a list, each batch's per-frame fusion weights [batch, T] (all rows, padding
    included, in chunk-table order) are appended to it.
    """
    sums = counts = None
    for _ in range(num_batches):
        local = next(batches)
        meta = parallel.global_batch({"tracklet": local["tracklet"], "mask": local["mask"]}, mesh)
        out = embed_fn(state, parallel.global_batch({"clip": local["clip"]}, mesh))
        feats = parallel.to_host(out["features"]).astype(np.float64)
        if weights is not None and "weights" in out:
            weights.append(parallel.to_host(out["weights"]).astype(np.float32))
        tracklet = parallel.to_host(meta["tracklet"])
        keep = parallel.to_host(meta["mask"]) > 0
        if sums is None:
            sums = np.zeros((num_tracklets, feats.shape[1]), np.float64)
            counts = np.zeros((num_tracklets,), np.int64)
        np.add.at(sums, tracklet[keep], feats[keep])
        np.add.at(counts, tracklet[keep], 1)
    if sums is None or np.any(counts == 0):
        missing = np.flatnonzero(counts == 0) if counts is not None else np.arange(num_tracklets)
        raise RuntimeError(f"no features extracted for tracklets {missing[:10].tolist()}...")
    return (sums / counts[:, None]).astype(np.float32)


def tracklet_weights(chunks: np.ndarray, weights: np.ndarray, index: Any) -> dict[str, np.ndarray]:
    """Per-frame fusion weights of every test chunk grouped by tracklet, as arrays for an .npz.

    ``chunks`` [N, 1+T] is ``pipeline.eval_chunks``'s table (tracklet, then T frame offsets;
    tracklet -1 = padding) and ``weights`` [N, T] the weights in the same row order. Returns
    ``tracklet`` [M], ``offsets`` [M, T] (0-based frames within the tracklet; a last chunk repeats
    the last frame), ``weights`` [M, T], ``row_start`` [num_tracklets + 1] (tracklet i owns rows
    row_start[i]:row_start[i+1]) and the index's per-tracklet pid, camid, is_query, start, length.
    """
    if weights.shape != (len(chunks), chunks.shape[1] - 1):
        raise ValueError(
            f"weights of shape {weights.shape} do not match the chunk table {chunks.shape}"
        )
    keep = chunks[:, 0] >= 0
    tracklet = chunks[keep, 0]
    order = np.argsort(tracklet, kind="stable")
    tracklet = tracklet[order]
    counts = np.bincount(tracklet, minlength=len(index.pid))
    return {
        "tracklet": tracklet,
        "offsets": chunks[keep, 1:][order],
        "weights": weights[keep][order],
        "row_start": np.concatenate([[0], np.cumsum(counts)]),
        "pid": index.pid,
        "camid": index.camid,
        "is_query": index.is_query,
        "start": index.start,
        "length": index.length,
    }


def pairwise_distance(q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    """[Q, G] distances: ``euclidean`` (squared, as the MARS codebases rank) or ``cosine``
    (1 - cos)."""
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
