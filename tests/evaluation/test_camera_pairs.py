"""Camera-pair mAP / Rank-1 matrices and mINP: hand-computed cases and a MATLAB transcription."""

import numpy as np
import pytest

from reid_jax.evaluation import camera_pairs, metrics

# Gallery = every test tracklet, queries included: column -> (pid, camera).
PIDS = np.array([1, 1, 1, 1, 2, 2, -1, 0])
CAMS = np.array([1, 1, 2, 3, 2, 1, 2, 3])
QUERY_COLS = np.array([0, 4, 1])  # A = col 0 (pid 1 cam 1), B = col 4 (pid 2 cam 2), C = col 1
DIST = np.array(
    [
        # A ranks 0, 6, 2, 7, 1, 5, 3, 4
        [0.0, 0.4, 0.2, 0.6, 0.7, 0.5, 0.1, 0.3],
        # B ranks 4, 5, 0, 6, 1, 2, 3, 7
        [0.2, 0.4, 0.5, 0.6, 0.0, 0.1, 0.3, 0.7],
        # C ranks 1, 3, 0, 2, 4, 5, 6, 7
        [0.1, 0.0, 0.15, 0.05, 0.2, 0.3, 0.4, 0.5],
    ]
)


def test_hand_camera_pair_matrices():
    # A (cam 1): diagonal: good {1} (col 0 = A itself ranks first and is dropped), junk {2, 3};
    #   kept order 6, 7, 1 -> hit at rank 3: AP = (1/3 + 0)/2 = 1/6, Rank-1 0.
    #   cam 2: good {2}, junk {0, 1, 3}; pid -1 col 6 is a NEGATIVE here: kept 6, 2 ->
    #   AP = (1/2 + 0)/2 = 1/4. cam 3: good {3}; kept 6, 7, 5, 3 -> AP = (1/4 + 0)/2 = 1/8.
    # B (cam 2): diagonal has no good item (only B itself) -> left out; cam 1: good {5} first
    #   -> AP 1, Rank-1 1; cam 3: no item of id 2 -> left out.
    # C (cam 1): diagonal good {0} first after the dropped top (C itself) -> AP 1; cam 2: good {2}
    #   ranks after junk 3, 0 only -> AP 1; cam 3: good {3} right after C itself -> AP 1.
    res = camera_pairs.camera_pair_matrices(DIST, PIDS[QUERY_COLS], PIDS, CAMS[QUERY_COLS], CAMS)
    nan = np.nan
    expected_map = [[7 / 12, 5 / 8, 9 / 16], [1.0, nan, nan], [nan, nan, nan]]
    expected_r1 = [[0.5, 0.5, 0.5], [1.0, nan, nan], [nan, nan, nan]]
    np.testing.assert_allclose(res["camera_pair_mAP"], expected_map, atol=1e-12)
    np.testing.assert_allclose(res["camera_pair_rank1"], expected_r1, atol=1e-12)
    np.testing.assert_array_equal(res["camera_pair_queries"], [[2, 2, 2], [1, 0, 0], [0, 0, 0]])
    assert res["camera_pair_mAP_offdiag"] == pytest.approx((5 / 8 + 9 / 16 + 1.0) / 3)
    np.testing.assert_allclose(res["per_query_ap"][0], [1 / 6, 1 / 4, 1 / 8], atol=1e-12)
    # The same numbers come out of evaluate(..., camera_pairs=True).
    full = metrics.evaluate(
        DIST, PIDS[QUERY_COLS], PIDS, CAMS[QUERY_COLS], CAMS, "official", camera_pairs=True
    )
    np.testing.assert_allclose(full["camera_pair_mAP"], expected_map, atol=1e-12)
    with pytest.raises(ValueError, match="official"):
        metrics.evaluate(DIST, PIDS[QUERY_COLS], PIDS, CAMS[QUERY_COLS], CAMS, "legacy", 5, True)


def test_hand_minp_two_queries():
    # Official, A: kept items (junk = pid -1 col 6, same-id same-camera cols 0, 1): 2, 7, 5, 3, 4
    #   goods 2 and 3 at kept ranks 1 and 4 -> INP = 2/4. B: kept 0, 1, 2, 3, 7 ... goods: col 5
    #   (cam 1) at kept rank 1 (col 4 = B itself is junk) -> INP 1. C: kept 3, 2, ... goods 3, 2
    #   at ranks 1, 2 -> INP 1. mINP = (0.5 + 1 + 1)/3.
    res = metrics.evaluate(DIST, PIDS[QUERY_COLS], PIDS, CAMS[QUERY_COLS], CAMS, "official")
    assert res["mINP"] == pytest.approx(2.5 / 3, abs=1e-12)
    np.testing.assert_array_equal(res["first_rank"], [1, 1, 1])
    # A's AP: hits at kept ranks 1 and 4 of 2: .5*(1+1)/2 + .5*(1/3 + 2/4)/2 = 0.5 + 0.208333
    assert res["AP"][0] == pytest.approx(0.5 + 0.5 * (1 / 3 + 1 / 2) / 2, abs=1e-12)


# ---------------------------------------------------------------- MATLAB transcription
def _ap_loop(index, good, junk, ngood):
    old_recall, old_precision, ap, hits, j, good_now = 0.0, 1.0, 0.0, 0, 0, 0
    for n in index:
        flag = n in good
        good_now += flag
        if n in junk:
            continue
        hits += flag
        if ngood == 0:
            return 0.0
        recall, precision = hits / ngood, hits / (j + 1)
        ap += (recall - old_recall) * (old_precision + precision) / 2
        old_recall, old_precision = recall, precision
        j += 1
        if good_now == ngood:
            return ap
    return 0.0


def _r1_loop(index, good, junk, ngood):
    for n in index:
        if ngood == 0:
            return -1
        flag = n in good
        if n in junk:
            continue
        return 1 if flag else 0
    return -2


def ref_camera_pairs(dist, q_pids, g_pids, q_cams, g_cams, cams):
    """compute_AP_multiCam.m / compute_r1_multiCam.m / draw_confusion_matrix.m, line by line."""
    ap_pw = np.zeros((len(q_pids), cams))
    r1_pw = np.full((len(q_pids), cams), -2.0)
    for k in range(len(q_pids)):
        index = list(np.argsort(dist[k], kind="stable"))
        pos = np.flatnonzero(g_pids == q_pids[k])
        good_image = set(pos[g_cams[pos] != q_cams[k]])
        junk = set(pos[g_cams[pos] == q_cams[k]])
        c = q_cams[k] - 1
        good_now, junk_now = junk - {index[0]}, good_image | {index[0]}
        ap_pw[k, c] = _ap_loop(index, good_now, junk_now, len(junk) - 1)
        r1_pw[k, c] = _r1_loop(index, good_now, junk_now, len(junk) - 1)
        for cam in np.unique(g_cams[list(good_image)]) if good_image else []:
            good_now = {i for i in good_image if g_cams[i] == cam}
            junk_now = junk | (good_image - good_now)
            ap_pw[k, cam - 1] = _ap_loop(index, good_now, junk_now, len(good_now))
            r1_pw[k, cam - 1] = _r1_loop(index, good_now, junk_now, len(good_now))
    ap_mat, r1_mat = np.zeros((cams, cams)), np.zeros((cams, cams))
    count1, count2 = np.zeros((cams, cams)), np.zeros((cams, cams))
    for n in range(len(q_pids)):
        for k in range(cams):
            ap_mat[q_cams[n] - 1, k] += ap_pw[n, k]
            count1[q_cams[n] - 1, k] += ap_pw[n, k] != 0
            if r1_pw[n, k] >= 0:
                r1_mat[q_cams[n] - 1, k] += r1_pw[n, k]
                count2[q_cams[n] - 1, k] += 1
    with np.errstate(invalid="ignore"):
        return ap_mat / count1, r1_mat / count2


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_camera_pairs_match_matlab_transcription(seed):
    rng = np.random.default_rng(seed)
    num_g, cams = 120, 4
    g_pids = rng.integers(-1, 15, size=num_g)
    g_cams = rng.integers(1, cams + 1, size=num_g)
    query_cols = rng.choice(np.flatnonzero(g_pids > 0), size=30, replace=False)
    if seed % 2:
        dist = rng.integers(1, 6, size=(30, num_g)) / 5.0  # many ties: gallery order decides
    else:
        dist = rng.random((30, num_g)) + 0.01
    dist[np.arange(30), query_cols] = 0.0  # each query ranks itself first, as on MARS
    q_pids, q_cams = g_pids[query_cols], g_cams[query_cols]
    res = camera_pairs.camera_pair_matrices(dist, q_pids, g_pids, q_cams, g_cams)
    exp_ap, exp_r1 = ref_camera_pairs(dist, q_pids, g_pids, q_cams, g_cams, cams)
    np.testing.assert_allclose(res["camera_pair_mAP"], exp_ap, atol=1e-12)
    np.testing.assert_allclose(res["camera_pair_rank1"], exp_r1, atol=1e-12)
    assert np.isfinite(res["camera_pair_mAP"]).sum() >= cams  # the case exercises real entries


def test_camera_ids_must_be_one_based():
    with pytest.raises(ValueError, match="1-based"):
        camera_pairs.camera_pair_matrices(DIST, PIDS[QUERY_COLS], PIDS, [0, 2, 1], CAMS)


def test_ranked_list_labels_and_query_choice():
    from reid_jax.evaluation import ranked_lists

    # Query id 3 camera 1: same id other camera = match, same camera = junk, pid -1 junk only
    # for the official protocol (legacy galleries never hold pid -1, so there it is a negative).
    assert ranked_lists.label("official", 3, 1, 3, 2) == "match"
    assert ranked_lists.label("legacy", 3, 1, 3, 1) == "junk"
    assert ranked_lists.label("official", 3, 1, -1, 2) == "junk"
    assert ranked_lists.label("legacy", 3, 1, -1, 2) == "non-match"
    assert ranked_lists.label("official", 3, 1, 0, 2) == "non-match"
    res = {"AP": np.array([0.2, 0.9, 0.5, 0.1, 0.7, 0.3])}
    # auto: best (1), the ones a third and two thirds down the AP order (4, 5... ), worst (3).
    order = [1, 4, 2, 5, 0, 3]
    assert ranked_lists.choose_queries("auto", res) == [order[0], order[2], order[4], order[5]]
    assert ranked_lists.choose_queries("4,0", res) == [4, 0]
    assert ranked_lists.choose_queries("", res) == []
    with pytest.raises(ValueError, match=r"\[6\] out of range: there are 6 queries"):
        ranked_lists.choose_queries("6", res)
