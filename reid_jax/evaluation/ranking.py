"""Where given gallery items land in each query's ranked list, without ranking whole rows.

Retrieval metrics only need the ranked positions of a query's *same-identity* gallery items
(about 15 per query on MARS, out of 12180): AP, CMC and INP follow from those positions and the
protocol's junk rules. ``stable_positions`` finds them per block of query rows: the entries of a
row that can precede one of its items (those <= its largest item value; ~1% of the row for a
trained model) are gathered, sorted with numpy's sort (whole rows when that is most of
them), and each item located by a vectorised binary search. Blocks run on threads (numpy releases
the GIL while sorting). Ties follow gallery order, exactly as ``np.argsort(kind="stable")``: an
item's position counts the entries with a smaller value plus the equal ones in earlier columns.
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np

BLOCK = 256  # query rows sorted at once: memory is a few [BLOCK, G] arrays per worker
_TIE_CHUNK = 512  # pairs whose ties are resolved at once (a [_TIE_CHUNK, G] comparison)


def default_workers() -> int:
    """Threads for the row sorts: the usable cores, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def same_id_pairs(q_pids: np.ndarray, g_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query row, gallery column) of every gallery item sharing the query's id, int64.

    Sorted by row, then by column.
    """
    order = np.argsort(g_pids, kind="stable")
    sorted_pids = g_pids[order]
    lo = np.searchsorted(sorted_pids, q_pids, side="left")
    counts = np.searchsorted(sorted_pids, q_pids, side="right") - lo
    rows = np.repeat(np.arange(len(q_pids), dtype=np.int64), counts)
    offsets = np.arange(len(rows), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = order[np.repeat(lo, counts) + offsets].astype(np.int64)
    return rows, cols


def _sortable(dist: np.ndarray) -> np.ndarray:
    """``dist`` as float32 when that is exact (sorts twice as fast), else as it is."""
    if dist.dtype == np.float64:
        d32 = dist.astype(np.float32)
        if np.array_equal(d32, dist):
            return d32
    return dist


def _count_below(sorted_rows: np.ndarray, local: np.ndarray, v: np.ndarray, inclusive: bool):
    """Per pair, how many entries of ``sorted_rows[local]`` are < v (or <= v): binary lifting."""
    width = sorted_rows.shape[1]
    if width == 0:
        return np.zeros(len(v), dtype=np.int64)
    flat = sorted_rows.reshape(-1)
    base = local * width
    count = np.zeros(len(v), dtype=np.int64)
    step = 1 << (width.bit_length() - 1) if width else 0
    while step:
        cand = count + step
        ok = cand <= width
        probe = flat[base + np.minimum(cand, width) - 1]
        below = probe <= v if inclusive else probe < v
        count = np.where(ok & below, cand, count)
        step >>= 1
    return count


def _sorted_candidates(block: np.ndarray, local: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Each row's entries that can rank before one of its pairs (<= the row's largest pair
    value), sorted, padded with +inf to a common width: the rest of a row never counts.

    A trained model ranks its matches near the top, so this sorts ~1% of the matrix; rows
    whose pairs rank deep (an untrained model) fall back to sorting everything.
    """
    if not np.issubdtype(block.dtype, np.floating):
        return np.sort(block, axis=1)
    thr = np.full(block.shape[0], -np.inf, dtype=block.dtype)
    np.maximum.at(thr, local, v)
    mask = block <= thr[:, None]
    counts = np.count_nonzero(mask, axis=1)
    width = int(counts.max()) if len(counts) else 0
    if width * 2 > block.shape[1]:
        return np.sort(block, axis=1)
    r, c = np.nonzero(mask)  # row-major: each row's kept entries are contiguous
    offset = np.arange(len(r)) - np.repeat(np.cumsum(counts) - counts, counts)
    padded = np.full((block.shape[0], width), np.inf, dtype=block.dtype)
    padded[r, offset] = block[r, c]
    padded.sort(axis=1)
    return padded


def _block_positions(dist, start, stop, local, v, cols, sub_cols):
    """Stable positions of one block's pairs among the block rows' ``sub_cols`` entries."""
    block = dist[start:stop] if sub_cols is None else dist[start:stop][:, sub_cols]
    sorted_rows = _sorted_candidates(block, local, v)
    lt = _count_below(sorted_rows, local, v, inclusive=False)
    le = _count_below(sorted_rows, local, v, inclusive=True)
    if sub_cols is None:
        itself = np.ones(len(v), dtype=np.int64)
    else:
        at = np.minimum(np.searchsorted(sub_cols, cols), len(sub_cols) - 1)
        itself = (sub_cols[at] == cols).astype(np.int64)
    pos = lt.copy()
    tied = np.flatnonzero(le - lt > itself)  # equal values besides the item itself
    col_ids = np.arange(block.shape[1]) if sub_cols is None else sub_cols
    for s in range(0, len(tied), _TIE_CHUNK):
        t = tied[s : s + _TIE_CHUNK]
        eq = block[local[t]] == v[t, None]
        pos[t] += np.count_nonzero(eq & (col_ids[None, :] < cols[t, None]), axis=1)
    return pos


def stable_positions(
    dist: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    sub_cols: np.ndarray | None = None,
    block: int = BLOCK,
    workers: int | None = None,
) -> np.ndarray:
    """0-based position of each pair's entry ``dist[row, col]`` in the stable ascending order of
    its row (restricted to the ascending column list ``sub_cols`` when given: then it counts the
    ``sub_cols`` entries ranked before it, whether or not ``col`` is one of them). int64 [P].

    Equals ``np.argsort(dist[row], kind="stable")``'s inverse at ``col`` for ``sub_cols=None``.
    """
    dist = _sortable(np.asarray(dist))
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if sub_cols is not None:
        sub_cols = np.asarray(sub_cols, dtype=np.int64)
    out = np.zeros(len(rows), dtype=np.int64)
    if len(rows) == 0 or (sub_cols is not None and len(sub_cols) == 0):
        return out
    v = dist[rows, cols]
    order = np.argsort(rows, kind="stable")
    edges = np.arange(0, dist.shape[0] + block, block)
    bounds = np.searchsorted(rows[order], edges)
    jobs = []
    for b in range(len(edges) - 1):
        idx = order[bounds[b] : bounds[b + 1]]
        if len(idx):
            start, stop = int(edges[b]), int(min(edges[b + 1], dist.shape[0]))
            jobs.append((idx, start, stop))

    def run(job):
        idx, start, stop = job
        out[idx] = _block_positions(
            dist, start, stop, rows[idx] - start, v[idx], cols[idx], sub_cols
        )

    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            run(job)
    else:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, jobs))
    return out


def rank_within_groups(groups: np.ndarray, key: np.ndarray) -> np.ndarray:
    """For each element, how many elements of its group have a smaller ``key`` (keys distinct
    within a group). Vectorised with one lexsort."""
    order = np.lexsort((key, groups))
    g = groups[order]
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    run_start = np.repeat(starts, np.diff(np.concatenate([starts, [len(g)]])))
    out = np.empty(len(groups), dtype=np.int64)
    out[order] = np.arange(len(g)) - run_start
    return out
