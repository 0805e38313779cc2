"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) and average query expansion, blockwise.

``k_reciprocal`` follows the authors' ``re_ranking()`` (github.com/zhunzhong07/person-re-ranking,
the de-facto definition), for N items (queries and gallery together):

1. ``dist`` = squared Euclidean distances between all items; ``original`` = each row divided by
   its maximum (the code's ``transpose(dist / max(dist, axis=0))``, the same for symmetric dist).
2. ``initial_rank`` = each row's items by increasing distance; ``R(i, k)`` = the k-reciprocal set
   {j in initial_rank[i, :k+1] : i in initial_rank[j, :k+1]}.
3. Expansion: for each ``c`` in ``R(i, k1)``, if |R(c, round(k1/2)) & R(i, k1)| > 2/3 |R(c,
   round(k1/2))|, add ``R(c, round(k1/2))``; ``V[i, e] = exp(-original[i, e])`` over the expanded
   set, normalised to sum 1.
4. Local query expansion (``k2 != 1``): ``V[i] = mean(V[initial_rank[i, :k2]])``.
5. ``jaccard[i, j] = 1 - m / (2 - m)``, ``m = sum_k min(V[i, k], V[j, k])``; the result is
   ``jaccard * (1 - lambda) + original * lambda`` for query rows and gallery columns.

Deviations from the authors' code, all below 1e-5 in the final distances except (b): (a) V and
the Jaccard sums are float64 (the code stores them in float16, ~1e-3 off); (b) ranking ties are
broken by item index (the code's ``np.argsort`` quicksort is unstable); (c) neighbours are ranked
on float32 distances (an item whose nearest neighbour is not itself, a float32 near-duplicate, is
re-ranked exactly in float64); the weights ``exp(-original)`` use distances summed from the
feature differences (no cancellation), in float64.

Where the work happens: one blockwise JAX pass over the N x N distances (a jitted function on a
fixed block of rows: matmul, row maxima, ``lax.top_k``) keeps only each row's maximum and
nearest items, plus the query x gallery block; the N x N matrix is never held. The sparse
neighbourhood logic and the Jaccard sums (a scatter over each query's non-zeros, via the column
lists of V) run in vectorised numpy / ``scipy.sparse``: V has ~k1 non-zeros per row, and XLA on
CPU has no fast sparse scatter. Memory: the [Q, G] float32 result, O(N k1^2) for the sets, one
[query block, G] float64 accumulator and one [row block, N] float32 block of distances.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from reid_jax.evaluation import neighbours

_ROW_BLOCK = 512  # rows of the distance matrix computed per jitted call
_QUERY_BLOCK = 512  # queries whose Jaccard sums are accumulated at once


def _reciprocal(fwd: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """[N, k] mask: ``fwd[i, a]`` is k-reciprocal, i.e. ``i`` is among ``fwd[fwd[i, a]]``."""
    out = np.empty(fwd.shape, dtype=bool)
    for s in range(0, len(fwd), chunk):
        rows = np.arange(s, min(s + chunk, len(fwd)))
        out[rows] = (fwd[fwd[rows]] == rows[:, None, None]).any(-1)
    return out


def _expanded_sets(nearest: np.ndarray, k1: int) -> scipy.sparse.csr_matrix:
    """Sparsity pattern (CSR, data = 1) of each item's expanded k-reciprocal set (step 3),
    with flat (item, member) pair lists instead of per-item loops."""
    n = len(nearest)
    half = int(np.around(k1 / 2.0))
    fwd, fwd_h = nearest[:, : k1 + 1], nearest[:, : half + 1]  # all items when N <= k1
    rec, rec_h = _reciprocal(fwd), _reciprocal(fwd_h)
    ri = np.nonzero(rec)[0]
    rj = fwd[rec]  # R(i, k1) as pairs (ri, rj)
    size_h = rec_h.sum(1)
    h_start = np.cumsum(size_h) - size_h
    h_members = fwd_h[rec_h]  # R(c, half) of item c at h_members[h_start[c]:][:size_h[c]]
    # Every (i, c in R(i), m in R(c, half)) triple; is m in R(i)?
    cnt = size_h[rj]
    pair = np.repeat(np.arange(len(ri)), cnt)
    m = h_members[np.repeat(h_start[rj] - (np.cumsum(cnt) - cnt), cnt) + np.arange(cnt.sum())]
    i = ri[pair]
    r_keys = np.sort(ri * n + rj)
    keys = i * n + m
    at = np.minimum(np.searchsorted(r_keys, keys), len(r_keys) - 1)
    overlap = np.bincount(pair, weights=r_keys[at] == keys, minlength=len(ri))
    accept = 3 * overlap > 2 * cnt  # |R(c, half) & R(i, k1)| > 2/3 |R(c, half)|, exactly
    take = accept[pair]
    entries = np.unique(np.concatenate([ri * n + rj, keys[take]]))
    rows, cols = entries // n, entries % n
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    return scipy.sparse.csr_matrix((np.ones(len(cols)), cols, indptr), shape=(n, n))


def _weights(pattern: scipy.sparse.csr_matrix, features: np.ndarray, rowmax: np.ndarray):
    """V: exp(-original distance) over each expanded set, rows normalised to sum 1 (float64;
    the set entries' distances recomputed as sums of squared differences: no cancellation)."""
    rows = np.repeat(np.arange(pattern.shape[0]), np.diff(pattern.indptr))
    cols = pattern.indices
    x = np.asarray(features, dtype=np.float32)
    chunk = max(1, (1 << 22) // max(x.shape[1], 1))  # ~16 MB of differences at a time
    d = np.empty(len(rows), dtype=np.float64)
    for s in range(0, len(rows), chunk):
        diff = x[rows[s : s + chunk]] - x[cols[s : s + chunk]]
        d[s : s + chunk] = np.sum(diff * diff, axis=1)  # pairwise summation
    scale = np.where(rowmax > 0, rowmax, 1.0).astype(np.float64)
    w = np.exp(-d / scale[rows])
    w /= np.bincount(rows, weights=w, minlength=pattern.shape[0])[rows]
    return scipy.sparse.csr_matrix((w, cols, pattern.indptr), shape=pattern.shape)


def _combine(v: scipy.sparse.csr_matrix, query_rows: np.ndarray, gallery_rows: np.ndarray,
             original: np.ndarray, scale: np.ndarray, lambda_value: float,
             max_entries: int = 20_000_000) -> np.ndarray:  # fmt: skip
    """Final distances, written over ``original`` ([Q, G] float32 query-gallery distances) a
    block of queries at a time: ``jaccard * (1 - lambda) + original / scale * lambda``.

    The Jaccard sums ``m = sum_k min(V[q, k], V[g, k])`` walk each query's non-zeros through
    the column lists of V (only pairs sharing a non-zero are touched), accumulated in float64.
    """
    n = v.shape[1]
    csc = v.tocsc()
    col_nnz = np.diff(csc.indptr)
    gmap = np.full(n, -1, dtype=np.int64)
    gmap[gallery_rows] = np.arange(len(gallery_rows))
    sub = v[query_rows]
    sub_rows = np.repeat(np.arange(len(query_rows)), np.diff(sub.indptr))
    row_work = np.bincount(sub_rows, weights=col_nnz[sub.indices], minlength=len(query_rows))
    num_g = len(gallery_rows)
    start = 0
    while start < len(query_rows):
        stop = start + 1
        budget = row_work[start]
        while stop < min(len(query_rows), start + _QUERY_BLOCK):
            if budget + row_work[stop] > max_entries:
                break
            budget += row_work[stop]
            stop += 1
        lo, hi = sub.indptr[start], sub.indptr[stop]
        k, val = sub.indices[lo:hi], sub.data[lo:hi]
        b = np.repeat(np.arange(stop - start), np.diff(sub.indptr[start : stop + 1]))
        cnt = col_nnz[k]
        at = np.repeat(csc.indptr[k] - (np.cumsum(cnt) - cnt), cnt) + np.arange(int(cnt.sum()))
        g = gmap[csc.indices[at]]
        keep = g >= 0
        w = np.minimum(np.repeat(val, cnt), csc.data[at])[keep]
        flat = np.repeat(b, cnt)[keep] * num_g + g[keep]
        m = np.bincount(flat, weights=w, minlength=(stop - start) * num_g).reshape(-1, num_g)
        jaccard = 1.0 - m / (2.0 - m)
        block = original[start:stop]
        block *= (lambda_value / scale[start:stop])[:, None].astype(np.float32)
        block += (jaccard * (1.0 - lambda_value)).astype(np.float32)
        start = stop
    return original


def k_reciprocal(
    features: np.ndarray,
    query_rows: np.ndarray,
    gallery_rows: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    block: int = _ROW_BLOCK,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Re-ranked [Q, G] float32 distances between ``features[query_rows]`` and
    ``features[gallery_rows]``, the neighbourhoods taken over all N rows of ``features``.

    ``timings``: if a dict, the seconds of each stage are stored in it (for bench/rerank.py).
    """
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        if timings is not None:
            timings[name] = now - clock[0]
        clock[0] = now

    features = np.asarray(features)
    n = len(features)
    if features.ndim != 2 or n == 0:
        raise ValueError(f"features must be [N, D] with N > 0, got shape {features.shape}")
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"need k1 >= 1, k2 >= 1, 0 <= lambda <= 1; got {k1}, {k2}, {lambda_value}")
    query_rows, gallery_rows = np.asarray(query_rows), np.asarray(gallery_rows)
    k = min(max(k1 + 1, k2), n)
    rowmax, nearest, qg = neighbours.nearest_neighbours(
        features, k, query_rows, gallery_rows, block
    )
    lap("distances_topk")
    pattern = _expanded_sets(nearest, k1)
    lap("reciprocal_sets")
    v = _weights(pattern, features, rowmax)
    if k2 != 1:
        k2 = min(k2, k)
        avg = scipy.sparse.csr_matrix(
            (np.full(n * k2, 1.0 / k2), nearest[:, :k2].ravel(), np.arange(0, n * k2 + 1, k2)),
            shape=(n, n),
        )
        v = (avg @ v).tocsr()
    v.sort_indices()
    lap("weights_qe")
    scale = np.where(rowmax > 0, rowmax, 1.0).astype(np.float64)[query_rows]
    out = _combine(v, query_rows, gallery_rows, qg, scale, lambda_value)
    lap("jaccard")
    return out


def re_ranking(
    q_feats: np.ndarray, g_feats: np.ndarray, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> np.ndarray:
    """The authors' ``re_ranking(probFea, galFea, k1, k2, lambda)``: queries and gallery
    concatenated into one set of N = Q + G items; returns [Q, G] float32."""
    feats = np.concatenate([q_feats, g_feats]).astype(np.float32)
    q = len(q_feats)
    return k_reciprocal(feats, np.arange(q), q + np.arange(len(g_feats)), k1, k2, lambda_value)


@functools.partial(jax.jit, static_argnames=("k",))
def _aqe_block(q_blk, g, g_sq, k):
    """Mean of each query and its k nearest gallery items (squared Euclidean, ties: lower
    index first)."""
    d = (
        jnp.sum(q_blk * q_blk, axis=1)[:, None]
        + g_sq[None, :]
        - 2.0 * jnp.matmul(q_blk, g.T, precision=jax.lax.Precision.HIGHEST)
    )
    _, top = jax.lax.top_k(-d, k)
    return (q_blk + jnp.sum(g[top], axis=1)) / (k + 1.0)


def average_query_expansion(
    q_feats: np.ndarray, g_feats: np.ndarray, k: int = 5, block: int = 1024
) -> np.ndarray:
    """Average query expansion (Chum et al., ICCV 2007): each query feature replaced by the mean
    of itself and its ``k`` nearest gallery features (squared Euclidean; L2-normalise the
    features first for cosine retrieval). Returns the new [Q, D] float32 query features."""
    q = jnp.asarray(q_feats, dtype=jnp.float32)
    g = jnp.asarray(g_feats, dtype=jnp.float32)
    if not 1 <= k <= g.shape[0]:
        raise ValueError(f"query expansion k={k}: expected 1 <= k <= {g.shape[0]} gallery items")
    g_sq = jnp.sum(g * g, axis=1)
    return _by_blocks(lambda rows: _aqe_block(rows, g, g_sq, k), q, block)


def _by_blocks(fn, rows: jax.Array, block: int) -> np.ndarray:
    """``fn`` over ``rows`` [N, D] in blocks of ``block`` rows (the last one zero-padded, so
    ``fn`` compiles once); float32 [N, D] on the host."""
    out = np.empty(rows.shape, dtype=np.float32)
    block = min(block, rows.shape[0])
    for start in range(0, rows.shape[0], block):
        blk = rows[start : start + block]
        m = blk.shape[0]
        if m < block:
            blk = jnp.concatenate([blk, jnp.zeros((block - m, rows.shape[1]), rows.dtype)])
        out[start : start + m] = np.asarray(fn(blk))[:m]
    return out


@functools.partial(jax.jit, static_argnames=("k",))
def _alpha_qe_block(norm_blk, norm, feats, k, alpha):
    """fast-reid's expansion of a block of rows: the mean over the k most cosine-similar items
    (the row itself included) of feature x similarity ** alpha."""
    sims = jnp.matmul(norm_blk, norm.T, precision=jax.lax.Precision.HIGHEST)
    vals, top = jax.lax.top_k(sims, k)
    return jnp.mean(feats[top] * jnp.power(vals, alpha)[..., None], axis=1)


def alpha_query_expansion(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    k: int = 5,
    alpha: float = 3.0,
    times: int = 1,
    block: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """fast-reid's ``aqe`` (JDAI-CV/fast-reid ``fastreid/evaluation/query_expansion.py`` at commit
    c9bc3ceb2f7a6438b62fb515ea3df6d1e999e95d; alpha-weighted query expansion, Radenovic et al.
    2018): queries and gallery are one database; each item, queries AND gallery, becomes the
    mean of ``feature * cos ** alpha`` over its ``k`` most cosine-similar items, itself included,
    ``times`` times. Returns the new (query [Q, D], gallery [G, D]) float32 features, not
    normalised (fast-reid's ``build_dist`` normalises for cosine). fast-reid's defaults:
    k = 5, alpha = 3, times = 1."""
    feats = jnp.asarray(np.concatenate([q_feats, g_feats]), dtype=jnp.float32)
    n = feats.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"alpha query expansion k={k}: expected 1 <= k <= {n} items")
    if times < 1:
        raise ValueError(f"alpha query expansion times={times}: expected >= 1")
    for _ in range(times):
        norm = feats / jnp.maximum(jnp.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        expand = functools.partial(_alpha_qe_block, norm=norm, feats=feats, k=k, alpha=alpha)
        feats = jnp.asarray(_by_blocks(expand, norm, block))
    out = np.asarray(feats)
    return out[: len(q_feats)], out[len(q_feats) :]
