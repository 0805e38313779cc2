"""The ``appended`` protocol against a faithful numpy port of the code behind the papers' numbers.

The port below is guxinqian/AP3D at commit 84bd12afc1d9e99c58365559d9ec9269cb19d94f:
``tools/data_manager.py`` (``Mars._process_data`` drops pid -1 tracklets; query = the
``query_IDX`` rows, gallery = the other rows), ``train.py`` ``test()`` (the queries are appended
in front of the gallery; cosine distance = minus the dot product of L2-normalised features) and
``tools/eval_metrics.py`` (``evaluate`` / ``compute_ap_cmc``). WangYQ9/VideoReID-PSTA (commit
3a9fa62b0cf152b11eac50be1af6697e2b2294dc, ``Train.py`` ``test()``, ``eval_metrics.py``) appends the
same way and scores with deep-person-reid's ``eval_func``, which gives the same AP and CMC. The only
change: ``np.argsort(..., kind="stable")`` where AP3D uses numpy's default (unstable) sort; the
features here have no tied distances, so the order is the same.
"""

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from reid_jax.evaluation import metrics
from reid_jax.evaluation.extract import pairwise_distance

MARS_INFO = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mars_info"


def ap3d_compute_ap_cmc(index, good_index, junk_index):
    ap = 0
    cmc = np.zeros(len(index))
    mask = np.isin(index, junk_index, invert=True)  # np.in1d in the anchor (numpy < 2.4)
    index = index[mask]
    ngood = len(good_index)
    mask = np.isin(index, good_index)
    rows_good = np.argwhere(mask == True).flatten()  # noqa: E712 (as in the anchor)
    cmc[rows_good[0] :] = 1.0
    for i in range(ngood):
        d_recall = 1.0 / ngood
        precision = (i + 1) * 1.0 / (rows_good[i] + 1)
        ap = ap + d_recall * precision
    return ap, cmc


def ap3d_evaluate(distmat, q_pids, g_pids, q_camids, g_camids):
    num_q, num_g = distmat.shape
    index = np.argsort(distmat, axis=1, kind="stable")
    num_no_gt = 0
    cmc_sum = np.zeros(len(g_pids))
    ap_sum = 0
    for i in range(num_q):
        query_index = np.argwhere(g_pids == q_pids[i])
        camera_index = np.argwhere(g_camids == q_camids[i])
        good_index = np.setdiff1d(query_index, camera_index, assume_unique=True)
        if good_index.size == 0:
            num_no_gt += 1
            continue
        junk_index = np.intersect1d(query_index, camera_index)
        ap_tmp, cmc_tmp = ap3d_compute_ap_cmc(index[i], good_index, junk_index)
        cmc_sum = cmc_sum + cmc_tmp
        ap_sum += ap_tmp
    return cmc_sum / (num_q - num_no_gt), ap_sum / (num_q - num_no_gt), num_q - num_no_gt


def ap3d_test(feats, pids, cams, query_idx):
    """AP3D's data split + test(): query rows in query_IDX order, gallery = other rows without
    pid -1, queries appended in front, cosine distances."""
    query = [r for r in query_idx if pids[r] != -1]
    qset = set(query_idx)
    gallery = [r for r in range(len(pids)) if r not in qset and pids[r] != -1]
    qf, gf = feats[query], feats[gallery]
    gf = np.concatenate([qf, gf])
    g_rows = np.concatenate([query, gallery])
    qf = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    distmat = -(qf @ gf.T)
    return ap3d_evaluate(distmat, pids[query], pids[g_rows], cams[query], cams[g_rows])


def reid_jax_appended(feats, pids, cams, is_query):
    q, g = metrics.query_gallery_indices(pids, is_query, "appended")
    dist = pairwise_distance(feats[q], feats[g], "cosine")
    return metrics.evaluate(dist, pids[q], pids[g], cams[q], cams[g], "appended")


def _features(pids, cams, rng, dim=32, noise=1.2):
    """Identity centres plus a camera offset plus noise: rankings with matches at many depths."""
    centres = rng.normal(size=(pids.max() + 2, dim))
    cam_offset = rng.normal(size=(cams.max() + 1, dim)) * 0.5
    return centres[pids + 1] + cam_offset[cams] + noise * rng.normal(size=(len(pids), dim))


def _compare(feats, pids, cams, query_idx):
    cmc, m_ap, num_valid = ap3d_test(feats, pids, cams, query_idx)
    is_query = np.zeros(len(pids), bool)
    is_query[query_idx] = True
    ours = reid_jax_appended(feats, pids, cams, is_query)
    assert ours["num_valid_queries"] == num_valid
    assert ours["mAP"] == pytest.approx(m_ap, abs=1e-6)
    np.testing.assert_allclose(ours["cmc"], cmc[:50], atol=1e-6)
    return ours


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_split_matches_ap3d_test(seed):
    rng = np.random.default_rng(seed)
    n = 400
    pids = rng.integers(-1, 40, size=n)  # pid -1 junk, pid 0 distractors, repeated ids
    cams = rng.integers(1, 7, size=n)
    query_idx = rng.choice(np.flatnonzero(pids > 0), size=60, replace=False)
    ours = _compare(_features(pids, cams, rng), pids, cams, query_idx)
    assert 0.05 < ours["mAP"] < 0.95  # a ranking with matches at many depths


@pytest.mark.skipif(not MARS_INFO.is_dir(), reason=f"MARS info files not found at {MARS_INFO}")
def test_real_mars_split_matches_ap3d_test():
    info = scipy.io.loadmat(MARS_INFO / "tracks_test_info.mat")["track_test_info"]
    query_idx = scipy.io.loadmat(MARS_INFO / "query_IDX.mat")["query_IDX"].ravel().astype(int) - 1
    pids, cams = info[:, 2].astype(np.int64), info[:, 3].astype(np.int64)
    rng = np.random.default_rng(0)
    # 300 of the 1980 queries keep the port's per-query loop quick; the gallery is the full one.
    sub = rng.choice(query_idx, size=300, replace=False)
    feats = _features(pids, cams, rng, dim=64, noise=0.6)
    is_query = np.zeros(len(pids), bool)
    is_query[query_idx] = True
    q, g = metrics.query_gallery_indices(pids, is_query, "appended")
    assert len(g) == 11310
    # Queries outside ``sub`` stay in the gallery (appended), as in AP3D: compare on ``sub`` with
    # the full appended gallery by giving the port every query's rows as gallery.
    cmc, m_ap, num_valid = _port_on_subset(feats, pids, cams, query_idx, sub)
    dist = pairwise_distance(feats[sub], feats[g], "cosine")
    ours = metrics.evaluate(dist, pids[sub], pids[g], cams[sub], cams[g], "appended")
    assert ours["num_valid_queries"] == num_valid
    assert ours["mAP"] == pytest.approx(m_ap, abs=1e-6)
    np.testing.assert_allclose(ours["cmc"], cmc[:50], atol=1e-6)
    legacy = metrics.evaluate(
        pairwise_distance(feats[sub], feats[_legacy(pids, is_query)], "cosine"),
        pids[sub], pids[_legacy(pids, is_query)], cams[sub], cams[_legacy(pids, is_query)],
        "legacy",
    )  # fmt: skip
    assert legacy["num_valid_queries"] < num_valid  # queries matched only by other queries


def _legacy(pids, is_query):
    return metrics.query_gallery_indices(pids, is_query, "legacy")[1]


def _port_on_subset(feats, pids, cams, query_idx, sub):
    """AP3D's test() for the queries ``sub`` against the full appended gallery."""
    qset = set(query_idx)
    gallery = [r for r in range(len(pids)) if r not in qset and pids[r] != -1]
    g_rows = np.concatenate([query_idx, gallery])
    qf = feats[sub] / np.linalg.norm(feats[sub], axis=1, keepdims=True)
    gf = feats[g_rows] / np.linalg.norm(feats[g_rows], axis=1, keepdims=True)
    return ap3d_evaluate(-(qf @ gf.T), pids[sub], pids[g_rows], cams[sub], cams[g_rows])


def test_appended_gallery_rule_by_hand():
    pids = np.array([5, 5, -1, 0, 7, 5, 7])
    is_query = np.array([True, False, False, False, True, False, False])
    q, g = metrics.query_gallery_indices(pids, is_query, "appended")
    np.testing.assert_array_equal(q, [0, 4])
    np.testing.assert_array_equal(g, [0, 1, 3, 4, 5, 6])  # all but the pid -1 row
