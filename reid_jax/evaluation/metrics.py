"""Video re-ID retrieval metrics (mAP, CMC, mINP) under the three MARS evaluation protocols.

Everything is vectorised in numpy, with no Python loop over queries. The metrics need only where
each query's same-identity gallery items land in its ranked list: ``ranking.same_id_pairs``
lists those (query, item) pairs (~15 per MARS query), ``ranking.stable_positions`` locates them
(each row partially sorted, in blocks of ``_BLOCK`` queries, by threads), and AP, CMC and INP
follow from the positions with per-pair arithmetic and ``np.bincount`` per query.

Protocols (``PROTOCOLS``):

``official``
    The MATLAB evaluation code released with MARS (Zheng et al. 2016, ``compute_AP.m``).
    Gallery = ALL test tracklets, queries and junk included (``query_gallery_indices``).
    For a query with pid ``p`` and camera ``c``:
      * junk = gallery items with pid -1, plus items with pid ``p`` AND camera ``c`` (this
        includes the query itself);
      * good = items with pid ``p`` and a camera other than ``c`` that are not junk;
      * everything else (pid 0 distractors included) is an ordinary negative.
    Junk items are skipped when walking the ranked list: they take no rank and do not enter any
    precision. CMC uses the rank of the first good item counted without junk. AP is the
    trapezoidal rule with initial precision 1::

        old_recall = 0; old_precision = 1; ap = 0; hits = 0; j = 0
        for each non-junk item in rank order:
            if good: hits += 1
            recall = hits / ngood; precision = hits / (j + 1)
            ap += (recall - old_recall) * (old_precision + precision) / 2
            old_recall, old_precision = recall, precision; j += 1
            if hits == ngood: break

    In closed form, with the k-th good item at non-junk rank r_k (1-based) and n good items,
    AP = (1/n) * sum_k (k / r_k + q_k) / 2, where q_k = (k - 1) / (r_k - 1) for r_k > 1 and
    q_1 = 1 when r_1 = 1 (the initial precision). mAP and CMC are averaged over ALL queries; a
    query without any good item (impossible on real MARS) contributes AP 0 and CMC 0 and is not
    counted in ``num_valid_queries``. Because junk never takes a rank, results are identical
    whether or not the gallery contains the pid -1 rows.

``legacy``
    The common PyTorch code bases' scoring (deep-person-reid ``eval_func``, jiyanggao/
    Video-Person-ReID) with the gallery their MARS readers build; the video papers' own test()
    then append the queries to it (``appended``, below). The caller's gallery is the test
    tracklets minus the queries minus pid -1 (``query_gallery_indices``). For each query, gallery
    items with the same pid AND camera are removed; items with the same pid are matches;
    everything else (including any pid -1 rows the caller left in) is a negative. Queries with no
    remaining match are skipped. AP = (1/num_rel) * sum_k precision@k * rel_k; mAP and CMC are
    averaged over the valid (non-skipped) queries only.

``appended``
    What the papers' numbers use (AP3D, BiCnet-TKS, PSTA, TF-CLIP): guxinqian/AP3D ``train.py``
    ``test()`` and ``tools/eval_metrics.py`` at commit 84bd12afc1d9e99c58365559d9ec9269cb19d94f,
    WangYQ9/VideoReID-PSTA ``Train.py`` ``test()`` and ``eval_metrics.py`` at commit
    3a9fa62b0cf152b11eac50be1af6697e2b2294dc. Their MARS reader drops every pid -1 tracklet
    (``_process_data``: "junk images are just ignored"), the gallery is the other test tracklets,
    and ``test()`` APPENDS the queries to it ("gallery set must contain query set, otherwise 140
    query imgs will not have ground truth"): gallery = queries + (test minus queries minus pid -1),
    11,310 tracklets on MARS (``query_gallery_indices``). Scoring is ``legacy``'s: items with the
    query's pid and camera are removed (the query's own copy among them), items with its pid are
    matches, pid 0 distractors are negatives, AP = mean precision at the hits (step-wise), and
    mAP / CMC average over the queries that keep a match. The other queries of the same identity
    seen from another camera are thus matches, which is why the 140 queries whose identity has no
    other gallery tracklet count here and not under ``legacy``.

mINP (Ye et al. 2021, "Deep Learning for Person Re-identification: A Survey and Outlook"), in both
protocols: INP = num_good / (rank of the LAST good item, 1-based, counted after removing junk /
excluded items), averaged over the valid queries only.

``cmc[k]`` is the fraction of queries (all queries for ``official``, valid ones for ``legacy``)
whose first good item is at rank <= k + 1; it always has ``max_rank`` entries (it simply stays
flat past the gallery size, unlike deep-person-reid, which truncates it). If no query is valid,
mAP, mINP and the CMC are 0 (no NaN, no exception; check ``num_valid_queries``).

Ties in distance are broken by gallery order (as ``np.argsort(kind="stable")``), so results are
deterministic. The PyTorch code uses the default (unstable) argsort, so with exact ties its
numbers may differ. Speed: MARS size (1980 x 12180, float32) takes ~0.1 s when matches rank near
the top (a trained model: each row sorts only its entries up to its farthest match) and ~0.3 s
when they rank anywhere (an untrained model: whole rows are sorted), on 2 CPU cores.

``evaluate`` also returns per-query "AP" (0 for queries without a good item) and "first_rank"
(1-based rank of the first good item, 0 if none), and with ``camera_pairs=True`` the official
camera-pair matrices (``camera_pairs.from_positions``).
"""

from __future__ import annotations

import math

import numpy as np

from reid_jax.evaluation import camera_pairs as camera_pairs_lib
from reid_jax.evaluation import ranking

PROTOCOLS = ("official", "legacy", "appended")
_BLOCK = 256  # queries ranked at once: bounds memory to a few [_BLOCK, G] arrays

_PROTOCOL_LINES = {
    "official": (
        "Protocol: official (MARS MATLAB compute_AP.m): gallery = all test tracklets; junk = "
        "pid -1 and same pid + same camera; trapezoidal AP; mean over all queries."
    ),
    "legacy": (
        "Protocol: legacy (deep-person-reid eval_func): gallery = test minus queries minus "
        "pid -1; same pid + same camera removed; AP = mean precision at hits; mean over valid "
        "queries."
    ),
    "appended": (
        "Protocol: appended (AP3D / PSTA / TF-CLIP test(), the papers' numbers): gallery = "
        "queries + test minus queries minus pid -1; same pid + same camera removed; AP = mean "
        "precision at hits; mean over valid queries."
    ),
}


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def _as_int_vector(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers (pids / camera ids), got dtype {arr.dtype}")
    return arr.astype(np.int64)


def query_gallery_indices(
    pids: np.ndarray, is_query: np.ndarray, protocol: str
) -> tuple[np.ndarray, np.ndarray]:
    """Return (query rows, gallery rows) of a test split for ``protocol``, ascending int64 indices.

    official: gallery = all rows (queries and pid -1 junk included); legacy: gallery = rows that
    are neither queries nor pid -1; appended: legacy's gallery plus the queries (every row that
    is a query or not pid -1).
    """
    _check_protocol(protocol)
    pids = _as_int_vector("pids", pids)
    mask = np.asarray(is_query)
    if mask.dtype != np.bool_:
        raise ValueError(
            f"is_query must be a boolean mask over the {pids.size} test tracklets, got dtype "
            f"{mask.dtype} (convert 1-based query_IDX into a mask first)"
        )
    if mask.shape != pids.shape:
        raise ValueError(f"is_query shape {mask.shape} does not match pids shape {pids.shape}")
    query = np.flatnonzero(mask)
    if protocol == "official":
        gallery = np.arange(pids.size, dtype=np.int64)
    elif protocol == "appended":
        gallery = np.flatnonzero(mask | (pids != -1))
    else:
        gallery = np.flatnonzero(~mask & (pids != -1))
    return query.astype(np.int64), gallery.astype(np.int64)


def _pair_ranks(
    dist: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_cams: np.ndarray,
    g_cams: np.ndarray,
    protocol: str,
) -> dict[str, np.ndarray]:
    """Every (query, same-id gallery item) pair with its stable position in the query's ranked
    list (``pos``, over the whole gallery) and, for good pairs, its rank among kept items
    (``rank``, 1-based) and hit count ``k`` (1 for the first good item of the query, ...)."""
    rows, cols = ranking.same_id_pairs(q_pids, g_pids)
    pos = ranking.stable_positions(dist, rows, cols, block=_BLOCK)
    excluded = g_cams[cols] == q_cams[rows]
    junk_cols = np.flatnonzero(g_pids == -1) if protocol == "official" else np.zeros(0, np.int64)
    if len(junk_cols):
        excluded |= g_pids[cols] == -1
    good = ~excluded
    # Kept items ranked before a good pair = all items before it - excluded ones before it:
    # excluded same-id pairs (counted among the pairs) and, officially, pid -1 junk columns.
    before = ranking.rank_within_groups(rows, pos)
    excluded_before = np.zeros(len(rows), dtype=np.int64)
    order = np.lexsort((pos, rows))
    cum = np.cumsum(excluded[order]) - excluded[order]
    first = np.searchsorted(rows[order], rows[order])  # index of the row's first pair
    excluded_before[order] = cum - cum[first]
    rank = pos - excluded_before + 1
    if len(junk_cols) and good.any():
        rank[good] -= ranking.stable_positions(
            dist, rows[good], cols[good], sub_cols=junk_cols, block=_BLOCK
        )
    k = before - excluded_before + 1
    return {"rows": rows, "cols": cols, "pos": pos, "good": good, "rank": rank, "k": k}


def _scores(pairs: dict[str, np.ndarray], num_q: int, protocol: str) -> tuple:
    """Per query (AP, rank of first good, INP, number of good items) from ``_pair_ranks``."""
    good = pairs["good"]
    rows = pairs["rows"][good]
    r = pairs["rank"][good].astype(np.float64)
    k = pairs["k"][good].astype(np.float64)
    num_good = np.bincount(rows, minlength=num_q).astype(np.int64)
    if protocol == "official":
        # (k/r + previous precision) / 2; previous precision is 1 at r == 1 (then k == 1).
        prev = (k - 1.0) / np.maximum(r - 1.0, 1.0) + (r == 1.0)
        terms = (k / r + prev) / 2.0
    else:
        terms = k / r
    ap_sum = np.bincount(rows, weights=terms, minlength=num_q)
    ap = np.where(num_good > 0, ap_sum / np.maximum(num_good, 1), 0.0)
    first_rank = np.zeros(num_q, dtype=np.int64)
    is_first = k == 1.0
    first_rank[rows[is_first]] = r[is_first].astype(np.int64)
    inp = np.zeros(num_q, dtype=np.float64)
    is_last = k == num_good[rows]
    inp[rows[is_last]] = num_good[rows[is_last]] / r[is_last]
    return ap, first_rank, inp, num_good


def evaluate(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    protocol: str = "official",
    max_rank: int = 50,
    camera_pairs: bool = False,
) -> dict:
    """Compute mAP, CMC (rank-1 first) and mINP of a [Q, G] distance matrix under ``protocol``.

    Returns {"mAP", "cmc", "mINP", "num_valid_queries", "num_queries", "protocol"}; see the module
    docstring for the exact protocol definitions. ``camera_pairs`` (official only) adds the
    official camera-pair matrices (``camera_pairs.from_positions``: "camera_pair_mAP", ...).
    """
    _check_protocol(protocol)
    if camera_pairs and protocol != "official":
        raise ValueError(
            f"camera_pairs=True needs protocol 'official' (gallery = all test tracklets), got "
            f"{protocol!r}"
        )
    q_pids = _as_int_vector("q_pids", q_pids)
    g_pids = _as_int_vector("g_pids", g_pids)
    q_cams = _as_int_vector("q_camids", q_camids)
    g_cams = _as_int_vector("g_camids", g_camids)
    dist = np.asarray(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D [num_query, num_gallery], got shape {dist.shape}")
    if not (np.issubdtype(dist.dtype, np.floating) or np.issubdtype(dist.dtype, np.integer)):
        raise ValueError(f"distmat must be real-valued, got dtype {dist.dtype}")
    num_q, num_g = dist.shape
    if num_q == 0 or num_g == 0:
        raise ValueError(f"distmat needs at least one query and one gallery item, got {dist.shape}")
    if q_pids.shape != (num_q,) or q_cams.shape != (num_q,):
        raise ValueError(
            f"q_pids {q_pids.shape} and q_camids {q_cams.shape} must both have shape ({num_q},) "
            f"to match distmat {dist.shape}"
        )
    if g_pids.shape != (num_g,) or g_cams.shape != (num_g,):
        raise ValueError(
            f"g_pids {g_pids.shape} and g_camids {g_cams.shape} must both have shape ({num_g},) "
            f"to match distmat {dist.shape}"
        )
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    if np.issubdtype(dist.dtype, np.floating) and np.isnan(dist).any():
        raise ValueError("distmat contains NaN; rankings would be undefined")

    pairs = _pair_ranks(dist, q_pids, g_pids, q_cams, g_cams, protocol)
    ap, first_rank, inp, num_good = _scores(pairs, num_q, protocol)
    extra = {}
    if camera_pairs:
        top = np.argmin(dist, axis=1)  # the first minimum: the stable top-ranked item
        num_cams = camera_pairs_lib.num_cameras(q_cams, g_cams)
        extra = camera_pairs_lib.from_positions(
            pairs["rows"], pairs["cols"], pairs["pos"], top, q_cams, g_cams, num_cams
        )
    valid = num_good > 0
    num_valid = int(valid.sum())
    ranks = np.arange(1, int(max_rank) + 1)
    hit_at = valid[:, None] & (first_rank[:, None] <= ranks[None, :])
    denom = num_q if protocol == "official" else num_valid
    if num_valid == 0:
        m_ap, cmc = 0.0, np.zeros(int(max_rank))
    else:
        m_ap = float(ap[valid].sum() / denom)  # invalid official queries add AP 0
        cmc = hit_at.sum(axis=0) / denom
    return {
        "mAP": m_ap,
        "cmc": cmc.astype(np.float64),
        "mINP": float(inp[valid].mean()) if num_valid else 0.0,
        "num_valid_queries": num_valid,
        "num_queries": num_q,
        "protocol": protocol,
        "AP": ap,
        "first_rank": first_rank,
        **extra,
    }


def _row_value(row: dict, key: str, cmc_index: int) -> float:
    if key in row:
        return float(row[key])
    if "cmc" in row:
        cmc = np.asarray(row["cmc"])
        if cmc.ndim == 1 and cmc.size > cmc_index:
            return float(cmc[cmc_index])
    raise ValueError(f"table row {row!r} needs {key!r} or a 'cmc' with > {cmc_index} entries")


def format_epoch(epoch: float, digits: int = 2) -> str:
    """An epoch as printed in tables, plots and messages: ``20`` when integral, else rounded to
    ``digits`` decimals (``2.33``)."""
    return str(int(epoch)) if math.isclose(epoch, round(epoch)) else str(round(epoch, digits))


EXTRA_COLUMNS = {"Rank10": ("rank10", 9), "Rank20": ("rank20", 19), "mINP": ("mINP", None)}


def format_table(
    rows: list[dict], protocol: str, extra: tuple[str, ...] = (), title: str = ""
) -> str:
    """Render evaluation rows as the research note's markdown table plus a line naming the protocol.

    Each row needs "epoch" (printed by ``format_epoch``), "mAP" and either "rank1"/"rank5" or a
    "cmc" array (fractions in [0, 1], e.g. an ``evaluate`` result with an "epoch" key added);
    values print as percentages.
    ``extra`` appends columns of ``EXTRA_COLUMNS`` (Rank10 / Rank20 from "rank10" / "rank20" or
    the cmc, mINP from "mINP"); ``title`` is printed above the protocol line.
    """
    _check_protocol(protocol)
    unknown = [c for c in extra if c not in EXTRA_COLUMNS]
    if unknown:
        raise ValueError(f"unknown table columns {unknown}; expected some of {list(EXTRA_COLUMNS)}")
    names = ["mAP", "Rank1", "Rank5", *extra]
    lines = [title] if title else []
    lines += [
        _PROTOCOL_LINES[protocol],
        "",
        "| epoch | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for row in rows:
        if "epoch" not in row or "mAP" not in row:
            raise ValueError(f"table row {row!r} needs 'epoch' and 'mAP' keys")
        if row.get("protocol", protocol) != protocol:
            raise ValueError(
                f"table row for epoch {row['epoch']} was evaluated with protocol "
                f"{row['protocol']!r}, but the table is for {protocol!r}"
            )
        values = [float(row["mAP"]), _row_value(row, "rank1", 0), _row_value(row, "rank5", 4)]
        for col in extra:
            key, cmc_index = EXTRA_COLUMNS[col]
            if cmc_index is None:
                if key not in row:
                    raise ValueError(f"table row for epoch {row['epoch']} needs {key!r}")
                values.append(float(row[key]))
            else:
                values.append(_row_value(row, key, cmc_index))
        for value in values:
            if not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"table row for epoch {row['epoch']} has {value}; metrics must be fractions "
                    "in [0, 1] (they are printed as percentages)"
                )
        cells = " | ".join(f"{100.0 * v:.1f}%" for v in values)
        lines.append(f"| {format_epoch(row['epoch'])} | {cells} |")
    return "\n".join(lines) + "\n"
