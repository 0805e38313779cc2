"""Exact k nearest neighbours of N items under squared Euclidean distance, blockwise in JAX.

The N x N distance matrix is never held: one jitted function (a fixed block of rows, so one
compile) computes a block of rows against all items and keeps only each row's maximum, its k
nearest items, and, for query rows, the distances to the gallery items. Ranking uses
``s_ij = 2 x_i.x_j - |x_j|^2 = |x_i|^2 - d_ij`` (the same order per row: one matmul and a
broadcast subtraction, no clamping pass over the block); ties: lower index first (``top_k``).
An item whose nearest neighbour is not itself (a float32 near-duplicate) has its list recomputed
exactly in float64.

(Computing only the upper-triangle block pairs and merging running top-k lists halves the
matmul; measured on MARS's 11310 items it saved ~20% CPU with 2048-wide features but cost ~40%
more with 128-wide ones (the per-pair top-k and merges), so the simple row pass stays.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST


@functools.partial(jax.jit, static_argnames=("k",))
def _block(x_blk, x2_all, sq_all, k):
    """Row maxima of the squared distances of items ``x_blk`` and their k nearest items."""
    s = jnp.matmul(x_blk, x2_all.T, precision=_HIGHEST) - sq_all[None, :]
    sq_blk = jnp.sum(x_blk * x_blk, axis=1)
    return sq_blk - jnp.min(s, axis=1), jax.lax.top_k(s, k)[1]


@functools.partial(jax.jit, static_argnames=("k",))
def _query_block(x_blk, x2_all, sq_all, gallery, k):
    """``_block`` plus the items' squared distances to the gallery items."""
    s = jnp.matmul(x_blk, x2_all.T, precision=_HIGHEST) - sq_all[None, :]
    sq_blk = jnp.sum(x_blk * x_blk, axis=1)
    d = jnp.maximum(sq_blk[:, None] - jnp.take(s, gallery, axis=1), 0.0)
    return sq_blk - jnp.min(s, axis=1), jax.lax.top_k(s, k)[1], d


def _self_first(features: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """Rows whose first neighbour is not the item itself are ranked again exactly: float64
    distances, self = 0, ties by index."""
    n, k = nearest.shape
    bad = np.flatnonzero(nearest[:, 0] != np.arange(n))
    if len(bad):
        x = features.astype(np.float64)
        for i in bad:
            diff = x - x[i]
            d = np.einsum("ij,ij->i", diff, diff)
            d[i] = 0.0
            nearest[i] = np.argsort(d, kind="stable")[:k]
    return nearest


def nearest_neighbours(
    features: np.ndarray, k: int, query_rows: np.ndarray, gallery_rows: np.ndarray, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row maxima of the squared distances [N] float32, k nearest items [N, k] int64 (the item
    itself first), squared distances of ``query_rows`` to ``gallery_rows`` [Q, G] float32)."""
    n = len(features)
    x = jnp.asarray(features, dtype=jnp.float32)
    sq = jnp.sum(x * x, axis=1)
    x2 = 2.0 * x
    gallery = jnp.asarray(gallery_rows)
    rowmax = np.empty(n, dtype=np.float32)
    nearest = np.empty((n, k), dtype=np.int64)
    qg = np.empty((len(query_rows), len(gallery_rows)), dtype=np.float32)
    rest = np.setdiff1d(np.arange(n), query_rows)
    order = np.concatenate([query_rows, rest])  # query rows first: their distances are kept
    block = max(1, min(block, n))
    for start in range(0, n, block):
        rows = order[start : start + block]
        m = len(rows)
        padded = jnp.asarray(np.concatenate([rows, np.full(block - m, rows[-1])]))
        if start < len(query_rows):
            mx, nn, dq = _query_block(x[padded], x2, sq, gallery, k)
            q = min(m, len(query_rows) - start)
            qg[start : start + q] = np.asarray(dq)[:q]
        else:
            mx, nn = _block(x[padded], x2, sq, k)
        rowmax[rows] = np.asarray(mx)[:m]
        nearest[rows] = np.asarray(nn)[:m]
    return np.maximum(rowmax, 0.0), _self_first(np.asarray(features), nearest), qg
