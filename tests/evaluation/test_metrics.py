"""Tests of reid_jax.evaluation.metrics: hand-computed values and per-query loop references."""

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from reid_jax.evaluation import metrics, ranking
from reid_jax.evaluation.metrics import PROTOCOLS, evaluate, format_table, query_gallery_indices

MARS_INFO = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mars_info"


# ---------------------------------------------------------------- loop references, query by query
def ref_official(distmat, q_pids, g_pids, q_cams, g_cams, max_rank):
    """Plain transcription of MARS compute_AP.m (pseudo-code in the metrics module docstring)."""
    aps, cmcs, inps = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        junk = set()
        good = set()
        for j in range(distmat.shape[1]):
            if g_pids[j] == -1 or (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i]):
                junk.add(j)
            elif g_pids[j] == q_pids[i]:
                good.add(j)
        ngood = len(good)
        cmc = np.zeros(max_rank)
        if ngood == 0:
            aps.append(0.0)
            cmcs.append(cmc)
            continue
        old_recall, old_precision, ap, hits, pos, first, last = 0.0, 1.0, 0.0, 0, 0, None, None
        for idx in order:
            if idx in junk:
                continue
            if idx in good:
                hits += 1
                first = pos + 1 if first is None else first
                last = pos + 1
            recall = hits / ngood
            precision = hits / (pos + 1)
            ap += (recall - old_recall) * (old_precision + precision) / 2
            old_recall, old_precision = recall, precision
            pos += 1
            if hits == ngood:
                break
        aps.append(ap)
        cmc[first - 1 :] = 1.0
        cmcs.append(cmc)
        inps.append(ngood / last)
    return {
        "mAP": float(np.mean(aps)),
        "cmc": np.mean(cmcs, axis=0),
        "mINP": float(np.mean(inps)) if inps else 0.0,
        "num_valid_queries": len(inps),
    }


def ref_legacy(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """deep-person-reid eval_func (+ mINP of Ye et al.), with a stable argsort and padded CMC."""
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_AP, all_INP = [], [], []
    for q_idx in range(distmat.shape[0]):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        max_pos_idx = np.max(np.where(raw_cmc == 1))
        all_INP.append(cmc[max_pos_idx] / (max_pos_idx + 1.0))
        cmc[cmc > 1] = 1
        cmc = np.concatenate([cmc, np.full(max(0, max_rank - cmc.size), cmc[-1])])
        all_cmc.append(cmc[:max_rank])
        num_rel = raw_cmc.sum()
        tmp_cmc = [x / (i + 1.0) for i, x in enumerate(raw_cmc.cumsum())]
        all_AP.append((np.asarray(tmp_cmc) * raw_cmc).sum() / num_rel)
    return {
        "mAP": float(np.mean(all_AP)),
        "cmc": np.asarray(all_cmc, dtype=np.float64).mean(axis=0),
        "mINP": float(np.mean(all_INP)),
        "num_valid_queries": len(all_AP),
    }


# ``appended`` scores the gallery it is given as ``legacy`` does (its own gallery rule is tested
# against a port of AP3D's test() in test_appended.py).
REFERENCES = {"official": ref_official, "legacy": ref_legacy, "appended": ref_legacy}


def _assert_close(result, expected, tol=1e-9):
    assert result["num_valid_queries"] == expected["num_valid_queries"]
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=tol)
    assert result["mINP"] == pytest.approx(expected["mINP"], abs=tol)
    np.testing.assert_allclose(result["cmc"], expected["cmc"], atol=tol, rtol=0)


# ---------------------------------------------------------------- hand-computed cases
# Gallery shared by the hand cases: (pid, camera). Query A = pid 1 cam 1 (row 0 is A itself),
# query B = pid 4 cam 2 (row 8 is B itself; its only other tracklet, row 9, is in camera 2 too).
HAND_PIDS = np.array([1, -1, 0, 1, 1, 2, 1, 3, 4, 4])
HAND_CAMS = np.array([1, 2, 2, 2, 1, 3, 3, 1, 2, 2])
HAND_DIST_A = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
HAND_DIST_B = np.array([0.5, 0.6, 0.1, 0.7, 0.8, 0.2, 0.9, 0.3, 0.0, 0.4])


def _hand(protocol, columns=slice(None), max_rank=5):
    dist = np.stack([HAND_DIST_A, HAND_DIST_B])[:, columns]
    g_pids, g_cams = HAND_PIDS[columns], HAND_CAMS[columns]
    return evaluate(dist, np.array([1, 4]), g_pids, np.array([1, 2]), g_cams, protocol, max_rank)


def test_hand_official_junk_distractor_same_camera_self_and_invalid_query():
    # Query A: row 0 (itself) and row 4 (pid 1, cam 1) are same-id same-cam junk, row 1 is pid -1
    # junk; row 2 (pid 0 distractor, ranked above every match) is a negative. Non-junk ranks:
    # row2=1, row3=2 (good), row5=3, row6=4 (good). Trapezoid, precision starting at 1:
    #   rank1 miss: recall 0, precision 0      -> +0             (old precision becomes 0)
    #   rank2 hit:  recall .5, precision 1/2   -> .5*(0+1/2)/2 = .125
    #   rank3 miss: precision 1/3              -> +0
    #   rank4 hit:  recall 1, precision 2/4    -> .5*(1/3+1/2)/2 = .208333
    #   AP_A = 1/3; first good at rank 2; INP_A = 2/4 = 0.5.
    # Query B: its only same-id tracklet (row 9) is in its own camera -> no good: AP 0, CMC 0,
    # not valid. mAP = (1/3 + 0)/2 = 1/6; CMC over both queries; mINP over valid queries only.
    res = _hand("official")
    assert res["mAP"] == pytest.approx(1 / 6, abs=1e-12)
    np.testing.assert_allclose(res["cmc"], [0.0, 0.5, 0.5, 0.5, 0.5])
    assert res["mINP"] == pytest.approx(0.5, abs=1e-12)
    assert (res["num_valid_queries"], res["num_queries"], res["protocol"]) == (1, 2, "official")
    # Removing the pid -1 row, or shuffling gallery columns (no ties), changes nothing.
    no_junk = _hand("official", columns=HAND_PIDS != -1)
    perm = _hand("official", columns=np.array([7, 3, 9, 0, 5, 1, 8, 2, 6, 4]))
    for other in (no_junk, perm):
        assert other["mAP"] == res["mAP"] and other["mINP"] == res["mINP"]
        np.testing.assert_array_equal(other["cmc"], res["cmc"])


def test_hand_legacy_same_gallery_and_legacy_split():
    # Same gallery passed as is: for A, rows 0 and 4 (same pid, same cam) are removed; the pid -1
    # row 1 is NOT junk in legacy, just a negative. Ranks: row1=1, row2=2, row3=3 (hit),
    # row5=4, row6=5 (hit): AP_A = (1/3 + 2/5)/2 = 11/30; first hit rank 3; INP = 2/5.
    # B has no match after removing row 9 -> skipped; everything averages over A alone.
    res = _hand("legacy")
    assert res["mAP"] == pytest.approx(11 / 30, abs=1e-12)
    np.testing.assert_allclose(res["cmc"], [0.0, 0.0, 1.0, 1.0, 1.0])
    assert res["mINP"] == pytest.approx(0.4, abs=1e-12)
    assert (res["num_valid_queries"], res["num_queries"]) == (1, 2)
    # Proper legacy split (queries = rows 0 and 8): gallery drops rows 0, 8 and pid -1 row 1.
    _, gallery = query_gallery_indices(HAND_PIDS, np.isin(np.arange(10), [0, 8]), "legacy")
    np.testing.assert_array_equal(gallery, [2, 3, 4, 5, 6, 7, 9])
    # A: row2=1, row3=2 (hit), row4 removed, row5=3, row6=4 (hit): AP = (1/2 + 2/4)/2 = 0.5.
    res = _hand("legacy", columns=gallery)
    assert res["mAP"] == pytest.approx(0.5, abs=1e-12)
    np.testing.assert_allclose(res["cmc"], [0.0, 1.0, 1.0, 1.0, 1.0])
    assert res["mINP"] == pytest.approx(0.5, abs=1e-12)
    assert res["num_valid_queries"] == 1


def test_hand_hits_at_ranks_one_and_three():
    # Query pid 7 cam 1. Gallery by distance: good (cam 2), pid -1, negative, good (cam 3).
    # Official (pid -1 skipped): hits at non-junk ranks 1 and 3 of 2 goods:
    #   rank1: .5*(1+1)/2 = .5; rank2 miss: precision 1/2; rank3: .5*(1/2+2/3)/2 = .291667
    #   AP = 0.791667 (the previous precision at rank 3 is 1/2, not 1).  INP = 2/3.
    # Legacy on the legacy gallery (pid -1 removed): AP = (1 + 2/3)/2 = 0.833333, INP 2/3;
    # legacy with the pid -1 row left in: hits at ranks 1 and 4 -> AP = (1 + 2/4)/2 = 0.75.
    pids, cams = np.array([7, -1, 3, 7]), np.array([2, 1, 1, 3])
    dist = np.array([[0.1, 0.15, 0.2, 0.3]])
    args = (np.array([7]), pids, np.array([1]))
    off = evaluate(dist, *args, cams, "official", max_rank=3)
    assert off["mAP"] == pytest.approx(0.5 + 0.5 * (1 / 2 + 2 / 3) / 2, abs=1e-12)
    assert off["mAP"] == pytest.approx(0.791667, abs=1e-6)
    assert off["mINP"] == pytest.approx(2 / 3, abs=1e-12)
    np.testing.assert_allclose(off["cmc"], [1.0, 1.0, 1.0])
    keep = pids != -1
    leg = evaluate(dist[:, keep], args[0], pids[keep], args[2], cams[keep], "legacy", max_rank=3)
    assert leg["mAP"] == pytest.approx(0.833333, abs=1e-6)
    assert leg["mINP"] == pytest.approx(2 / 3, abs=1e-12)
    assert evaluate(dist, *args, cams, "legacy")["mAP"] == pytest.approx(0.75, abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hand_ties_follow_gallery_order(dtype):
    # Query pid 5 cam 1; a negative (pid 9) and the only good item tie at distance 0.5.
    # Negative first in gallery order -> good at rank 2: official AP = 1*(0 + 1/2)/2 = 0.25
    # (precision after the rank-1 miss is 0), legacy AP = 1/2, rank-1 = 0, INP = 1/2.
    # Good first -> rank 1: AP 1 in both protocols.
    q = (np.array([5]), np.array([9, 5, 8]), np.array([1]), np.array([2, 2, 3]))
    for dist in ([[0.5, 0.5, 0.9]], [[0.0, -0.0, 0.9]]):  # -0.0 ties with 0.0 as in np.argsort
        dist = np.array(dist, dtype=dtype)
        for protocol, expected_ap in (("official", 0.25), ("legacy", 0.5)):
            res = evaluate(dist, q[0], q[1], q[2], q[3], protocol, max_rank=2)
            assert res["mAP"] == pytest.approx(expected_ap, abs=1e-12)
            np.testing.assert_allclose(res["cmc"], [0.0, 1.0])
            assert res["mINP"] == pytest.approx(0.5, abs=1e-12)
    swapped = np.array([[0.5, 0.5, 0.9]], dtype=dtype)
    for protocol in PROTOCOLS:
        res = evaluate(swapped, q[0], np.array([5, 9, 8]), q[2], q[3], protocol, max_rank=2)
        assert res["mAP"] == 1.0 and res["cmc"][0] == 1.0


# ---------------------------------------------------------------- random cases vs loop references
def _random_case(seed, num_q=40, num_g=300, ties=True):
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(-1, 12, size=num_g)  # repeated ids, pid -1 junk and pid 0 distractors
    g_cams = rng.integers(1, 4, size=num_g)
    q_pids = np.concatenate([rng.choice(g_pids, num_q - 3), [20, 21, 0]])  # 20, 21: no match
    q_cams = rng.integers(1, 4, size=num_q)
    if ties:
        dist = rng.integers(0, 15, size=(num_q, num_g)) / 10.0
    else:
        dist = rng.normal(size=(num_q, num_g))
    return dist, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("seed,ties", [(0, True), (1, True), (2, False), (3, True), (4, False)])
def test_random_matches_loop_reference(protocol, seed, ties, monkeypatch):
    monkeypatch.setattr(metrics, "_BLOCK", 7)  # several query blocks, the last one partial
    dist, q_pids, g_pids, q_cams, g_cams = _random_case(seed, ties=ties)
    for d in (dist, dist.astype(np.float32)):  # float32 takes the packed-key sort path
        expected = REFERENCES[protocol](d, q_pids, g_pids, q_cams, g_cams, 50)
        res = evaluate(d, q_pids, g_pids, q_cams, g_cams, protocol, max_rank=50)
        _assert_close(res, expected)
        assert res["num_queries"] == 40 and res["cmc"].shape == (50,)
        assert 0 < expected["num_valid_queries"] < 40


@pytest.mark.parametrize("seed", [0, 2])
def test_official_identical_without_junk_rows(seed):
    dist, q_pids, g_pids, q_cams, g_cams = _random_case(seed, ties=seed == 0)
    keep = g_pids != -1
    assert (~keep).sum() > 5
    full = evaluate(dist, q_pids, g_pids, q_cams, g_cams, "official")
    less = evaluate(dist[:, keep], q_pids, g_pids[keep], q_cams, g_cams[keep], "official")
    assert full["mAP"] == less["mAP"] and full["mINP"] == less["mINP"]
    assert full["num_valid_queries"] == less["num_valid_queries"]
    np.testing.assert_array_equal(full["cmc"], less["cmc"])


@pytest.mark.parametrize("block", [2, 256])
def test_stable_positions_equal_numpy_stable_argsort(block):
    rng = np.random.default_rng(0)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, -1.5, 1e-30, -1e-30, 3.0])
    d = rng.choice(np.concatenate([specials, rng.normal(size=4)]), size=(6, 200))
    near = rng.normal(size=(5, 300)) * np.where(rng.random((5, 300)) < 0.05, 1.0, 100.0)
    arrays = (d, d.astype(np.float32), d.astype(np.float16), rng.normal(size=(3, 50)),
              rng.integers(0, 4, size=(4, 30)), near)  # fmt: skip
    for arr in arrays:
        inverse = np.argsort(np.argsort(arr, axis=1, kind="stable"), axis=1, kind="stable")
        rows = rng.integers(0, arr.shape[0], size=40)
        cols = rng.integers(0, arr.shape[1], size=40)
        pos = ranking.stable_positions(arr, rows, cols, block=block, workers=2)
        np.testing.assert_array_equal(pos, inverse[rows, cols])
        # Restricted to a column subset: count the subset's entries ranked before the pair.
        sub = np.sort(rng.choice(arr.shape[1], size=arr.shape[1] // 3, replace=False))
        got = ranking.stable_positions(arr, rows, cols, sub_cols=sub, block=block)
        expected = [np.sum(inverse[r, sub] < inverse[r, c]) for r, c in zip(rows, cols)]
        np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------- validation
def test_invalid_inputs_raise_clear_errors():
    dist, q_pids, g_pids, q_cams, g_cams = _random_case(0, num_q=5, num_g=8)
    with pytest.raises(ValueError, match="protocol"):
        evaluate(dist, q_pids, g_pids, q_cams, g_cams, protocol="matlab")
    with pytest.raises(ValueError, match="g_pids"):
        evaluate(dist, q_pids, g_pids[:-1], q_cams, g_cams)
    with pytest.raises(ValueError, match="q_pids"):
        evaluate(dist.T, q_pids, g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(np.where(dist > 1.0, np.nan, dist), q_pids, g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="max_rank"):
        evaluate(dist, q_pids, g_pids, q_cams, g_cams, max_rank=0)
    with pytest.raises(ValueError, match="boolean"):
        query_gallery_indices(g_pids, np.array([1, 3]), "official")
    with pytest.raises(ValueError, match="protocol"):
        query_gallery_indices(g_pids, np.zeros(8, bool), "new")


# ---------------------------------------------------------------- real MARS split
@pytest.mark.skipif(not MARS_INFO.is_dir(), reason=f"MARS info files not found at {MARS_INFO}")
def test_real_mars_split_sizes_and_perfect_distances():
    info = scipy.io.loadmat(MARS_INFO / "tracks_test_info.mat")["track_test_info"]
    query_rows = scipy.io.loadmat(MARS_INFO / "query_IDX.mat")["query_IDX"].ravel().astype(int) - 1
    pids, cams = info[:, 2].astype(np.int64), info[:, 3].astype(np.int64)
    assert pids.size == 12180 and query_rows.size == 1980
    is_query = np.zeros(pids.size, dtype=bool)
    is_query[query_rows] = True

    q_off, g_off = query_gallery_indices(pids, is_query, "official")
    np.testing.assert_array_equal(q_off, sorted(query_rows))
    assert g_off.size == 12180
    q_leg, g_leg = query_gallery_indices(pids, is_query, "legacy")
    expected_leg = sorted(set(range(pids.size)) - set(query_rows) - set(np.flatnonzero(pids == -1)))
    np.testing.assert_array_equal(q_leg, q_off)
    np.testing.assert_array_equal(g_leg, expected_leg)
    assert g_leg.size == 12180 - 1980 - 870 == 9330  # no query is a pid -1 tracklet
    q_app, g_app = query_gallery_indices(pids, is_query, "appended")
    np.testing.assert_array_equal(q_app, q_off)
    np.testing.assert_array_equal(g_app, sorted(set(expected_leg) | set(query_rows)))
    assert g_app.size == 9330 + 1980 == 11310  # the papers' "11,310 gallery tracklets"

    # Independent count of queries with a same-id tracklet in another camera, per gallery.
    def count_valid(gallery):
        cams_of = defaultdict(set)
        for row in gallery:
            cams_of[pids[row]].add(cams[row])
        return sum(bool(cams_of[pids[r]] - {cams[r]}) for r in q_off)

    assert count_valid(g_off) == 1980

    rng = np.random.default_rng(0)
    assert count_valid(g_leg) == 1840 and count_valid(g_app) == 1980
    for protocol, gallery in (("official", g_off), ("legacy", g_leg), ("appended", g_app)):
        qp, gp = pids[q_off], pids[gallery]
        dist = (qp[:, None] != gp[None, :]).astype(np.float32)
        dist += rng.uniform(0.0, 1e-3, size=dist.shape).astype(np.float32)
        res = evaluate(dist, qp, gp, cams[q_off], cams[gallery], protocol)
        assert res["mAP"] == pytest.approx(1.0, abs=1e-12)
        assert res["cmc"][0] == pytest.approx(1.0, abs=1e-12)
        assert res["mINP"] == pytest.approx(1.0, abs=1e-12)
        assert res["num_queries"] == 1980
        assert res["num_valid_queries"] == count_valid(gallery)


# ---------------------------------------------------------------- table
def test_format_table_two_rows():
    cmc = np.array([0.8812, 0.90, 0.92, 0.94, 0.9512, 0.96])
    rows = [
        {"epoch": 10, "mAP": 0.7834, "cmc": cmc, "protocol": "official"},
        {"epoch": 20, "mAP": 0.8, "rank1": 0.9049, "rank5": 1.0},
    ]
    text = format_table(rows, "official")
    lines = text.strip().splitlines()
    assert lines[0].startswith("Protocol: official")
    assert lines[2:] == [
        "| epoch | mAP | Rank1 | Rank5 |",
        "|---|---|---|---|",
        "| 10 | 78.3% | 88.1% | 95.1% |",
        "| 20 | 80.0% | 90.5% | 100.0% |",
    ]
    assert format_table(rows[1:], "legacy").startswith("Protocol: legacy")
    with pytest.raises(ValueError, match="protocol"):
        format_table(rows, "legacy")  # row 0 was evaluated with the official protocol
    with pytest.raises(ValueError, match="fractions"):
        format_table([{"epoch": 1, "mAP": 78.3, "rank1": 0.9, "rank5": 0.95}], "official")


def test_format_epoch_integral_or_rounded():
    shown = [metrics.format_epoch(e) for e in (20.0, 40, 520 / 13, 7 / 3, 0.5)]
    assert shown == ["20", "40", "40", "2.33", "0.5"]
    assert metrics.format_epoch(1 / 3, 4) == "0.3333"
    row = {"epoch": 7 / 3, "mAP": 0.5, "rank1": 0.5, "rank5": 0.5}
    assert "| 2.33 | 50.0% | 50.0% | 50.0% |" in format_table([row], "official")
