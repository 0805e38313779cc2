"""Query-camera x gallery-camera mAP and Rank-1 matrices of the official MARS code.

Transcribes ``compute_AP_multiCam.m``, ``compute_r1_multiCam.m`` and ``draw_confusion_matrix.m``
of the MARS evaluation release (github.com/liangzheng06/MARS-evaluation), vectorised: for a query
of id ``p`` in camera ``c`` and a gallery camera ``g`` (gallery = all test tracklets, the query
included, as in the official protocol):

* ``g != c``: good = id-``p`` items in camera ``g``; junk = the other id-``p`` items (its own
  camera's, the query itself included, and other cameras'). pid -1 items are NOT junk here
  (the official code passes only the same-id same-camera list to these functions): they are
  ordinary negatives, unlike in the main official mAP.
* ``g == c`` (diagonal): good = id-``p`` items in camera ``c`` other than the top-ranked item;
  junk = id-``p`` items in other cameras plus the top-ranked item. The official code assumes
  the top-ranked item is the query itself (distance 0 to itself) and drops ``index(1)``; we do
  the same. (If something else ranks first, the official code's ``ngood = numel(junk) - 1`` and
  its good list disagree; here good is always "same camera, not top-ranked".)

AP is the trapezoidal AP of ``compute_AP.m`` over the non-junk items; Rank-1 is 1 when the first
non-junk item is good. A (query, camera) with no good item is left out. Matrix entry
``[c - 1, g - 1]`` averages the queries of camera ``c`` over their camera-``g`` values (the
official code divides the AP sum by the count of non-zero APs, which is the same thing since a
query with a good item always has AP > 0); NaN when no query contributes (MATLAB's 0/0). The
official summary line is the mean of the off-diagonal entries ("average of confusion matrix").
"""

from __future__ import annotations

import numpy as np

from reid_jax.evaluation import ranking


def _trapezoid_terms(k: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Per good item: (precision here + precision at the previous kept rank) / 2."""
    prev = (k - 1.0) / np.maximum(r - 1.0, 1.0) + (r == 1.0)
    return (k / r + prev) / 2.0


def from_positions(
    rows: np.ndarray,
    cols: np.ndarray,
    pos: np.ndarray,
    top: np.ndarray,
    q_cams: np.ndarray,
    g_cams: np.ndarray,
    num_cams: int,
) -> dict[str, np.ndarray]:
    """Per-query-per-camera AP / Rank-1 and the matrices, from every (query, same-id gallery
    item) pair with its stable position ``pos`` in the query's ranked list and each query's
    top-ranked gallery column ``top``."""
    num_q = len(q_cams)
    g = g_cams[cols]
    c = q_cams[rows]
    diag = g == c
    is_top = cols == top[rows]
    t_in = np.zeros(num_q, dtype=np.int64)  # the top item is a same-id pair of the query camera
    t_other = np.zeros(num_q, dtype=np.int64)  # ... of another camera
    np.add.at(t_in, rows[is_top & diag], 1)
    np.add.at(t_other, rows[is_top & ~diag], 1)
    group = rows * num_cams + (g - 1)
    before = ranking.rank_within_groups(rows, pos)  # same-id pairs ranked before, any camera
    same_g_before = ranking.rank_within_groups(group, pos)
    excluded_before = before - same_g_before + np.where(diag, 1 - t_other[rows], 0)
    k = same_g_before + 1 - np.where(diag, t_in[rows], 0)
    good = ~(diag & is_top)
    rank = (pos - excluded_before + 1).astype(np.float64)
    size = num_q * num_cams
    num_good = np.bincount(group[good], minlength=size)
    terms = _trapezoid_terms(k[good].astype(np.float64), rank[good])
    ap = np.bincount(group[good], weights=terms, minlength=size) / np.maximum(num_good, 1)
    rank1 = np.zeros(size)
    first = good & (k == 1)
    rank1[group[first]] = rank[first] == 1.0
    valid = (num_good > 0).reshape(num_q, num_cams)
    ap, rank1 = ap.reshape(num_q, num_cams), rank1.reshape(num_q, num_cams)
    onehot = np.eye(num_cams)[q_cams - 1]  # [Q, C]: query camera
    counts = onehot.T @ valid
    with np.errstate(invalid="ignore", divide="ignore"):
        map_matrix = (onehot.T @ np.where(valid, ap, 0.0)) / counts
        r1_matrix = (onehot.T @ np.where(valid, rank1, 0.0)) / counts
    return {
        "camera_pair_mAP": map_matrix,
        "camera_pair_rank1": r1_matrix,
        "camera_pair_queries": counts.astype(np.int64),
        "camera_pair_mAP_offdiag": _offdiag_mean(map_matrix),
        "camera_pair_rank1_offdiag": _offdiag_mean(r1_matrix),
        "per_query_ap": np.where(valid, ap, np.nan),
        "per_query_rank1": np.where(valid, rank1, np.nan),
    }


def _offdiag_mean(matrix: np.ndarray) -> float:
    off = matrix[~np.eye(len(matrix), dtype=bool)]
    off = off[np.isfinite(off)]
    return float(off.mean()) if off.size else float("nan")


def num_cameras(q_cams: np.ndarray, g_cams: np.ndarray) -> int:
    """Cameras are numbered 1..C (MARS 1..6); C is the largest id seen."""
    low = min(int(q_cams.min()), int(g_cams.min()))
    if low < 1:
        raise ValueError(f"camera ids must be 1-based (1..C) for camera-pair matrices, got {low}")
    return max(int(q_cams.max()), int(g_cams.max()))


def camera_pair_matrices(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    num_cams: int | None = None,
) -> dict[str, np.ndarray]:
    """The official [C, C] camera-pair mAP / Rank-1 matrices (rows: query camera, columns:
    gallery camera) of a [Q, G] distance matrix whose gallery holds every test tracklet."""
    dist = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids, np.int64), np.asarray(g_pids, np.int64)
    q_cams, g_cams = np.asarray(q_camids, np.int64), np.asarray(g_camids, np.int64)
    if dist.shape != (len(q_pids), len(g_pids)) or len(q_cams) != len(q_pids):
        raise ValueError(
            f"distmat {dist.shape} must be [len(q_pids)={len(q_pids)}, len(g_pids)="
            f"{len(g_pids)}] and q_camids/g_camids must match the pids"
        )
    cams = num_cameras(q_cams, g_cams)
    if num_cams is not None and num_cams < cams:
        raise ValueError(f"num_cams={num_cams} but camera ids go up to {cams}")
    rows, cols = ranking.same_id_pairs(q_pids, g_pids)
    pos = ranking.stable_positions(dist, rows, cols)
    top = np.argmin(dist, axis=1)  # first minimum: the stable top-ranked item
    return from_positions(rows, cols, pos, top, q_cams, g_cams, num_cams or cams)
