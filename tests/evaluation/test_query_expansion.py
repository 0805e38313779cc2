"""Both query expansions: fast-reid's alpha-weighted ``aqe`` against a numpy port of its code, and
how it differs from the plain average query expansion on one case."""

import numpy as np
import pytest

from reid_jax.evaluation import metrics, rerank


def fastreid_aqe(query_feat, gallery_feat, qe_times=1, qe_k=10, alpha=3.0):
    """JDAI-CV/fast-reid ``fastreid/evaluation/query_expansion.py`` ``aqe`` at commit
    c9bc3ceb2f7a6438b62fb515ea3df6d1e999e95d, with torch replaced by numpy (``F.normalize`` =
    x / max(|x|, 1e-12); ``torch.mm`` = ``@`` in float32)."""

    def normalize(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    num_query = query_feat.shape[0]
    all_feat = np.concatenate((query_feat, gallery_feat), axis=0).astype(np.float32)
    norm_feat = normalize(all_feat)
    for _ in range(qe_times):
        all_feat_list = []
        sims = norm_feat @ norm_feat.T
        for sim in sims:
            init_rank = np.argpartition(-sim, range(1, qe_k + 1))
            weights = sim[init_rank[:qe_k]].reshape((-1, 1))
            weights = np.power(weights, alpha)
            all_feat_list.append(np.mean(all_feat[init_rank[:qe_k], :] * weights, axis=0))
        all_feat = np.stack(all_feat_list, axis=0)
        norm_feat = normalize(all_feat)
    return all_feat[:num_query], all_feat[num_query:]


def _case(seed, n_ids=12, per_id=6, dim=16):
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(1, n_ids + 1), per_id)
    cams = np.tile(np.arange(1, per_id + 1), n_ids)
    centres = rng.normal(size=(n_ids + 1, dim))
    feats = (centres[pids] + 1.1 * rng.normal(size=(len(pids), dim))).astype(np.float32)
    is_query = cams == 1
    return feats, pids, cams, is_query


@pytest.mark.parametrize("k,alpha,times", [(5, 3.0, 1), (3, 1.0, 2), (10, 3.0, 1)])
def test_alpha_query_expansion_matches_fastreid(k, alpha, times):
    feats, _, _, is_query = _case(0)
    q, g = feats[is_query], feats[~is_query]
    exp_q, exp_g = fastreid_aqe(q, g, times, k, alpha)
    got_q, got_g = rerank.alpha_query_expansion(q, g, k, alpha, times, block=7)
    np.testing.assert_allclose(got_q, exp_q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_g, exp_g, rtol=1e-5, atol=1e-6)


def test_k1_alpha0_is_identity_and_bad_k_is_named():
    feats, _, _, is_query = _case(1)
    q, g = rerank.alpha_query_expansion(feats[is_query], feats[~is_query], k=1, alpha=0.0)
    expected = np.concatenate([feats[is_query], feats[~is_query]])
    np.testing.assert_allclose(np.concatenate([q, g]), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="k=100"):
        rerank.alpha_query_expansion(feats[:40], feats[40:], k=100)


def test_the_two_expansions_differ_and_alpha_touches_the_gallery():
    feats, pids, cams, is_query = _case(2)
    q_rows, g_rows = metrics.query_gallery_indices(pids, is_query, "legacy")
    q, g = feats[q_rows], feats[g_rows]

    def cos_map(qf, gf):
        qf = qf / np.linalg.norm(qf, axis=1, keepdims=True)
        gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
        return metrics.evaluate(1 - qf @ gf.T, pids[q_rows], pids[g_rows], cams[q_rows],
                                cams[g_rows], "legacy")["mAP"]  # fmt: skip

    nq = q / np.linalg.norm(q, axis=1, keepdims=True)
    ng = g / np.linalg.norm(g, axis=1, keepdims=True)
    avg_q = rerank.average_query_expansion(nq, ng, 5)
    alpha_q, alpha_g = rerank.alpha_query_expansion(q, g, 5, 3.0)
    assert not np.allclose(alpha_g, g)  # the database side is expanded too
    plain, avg, alpha = cos_map(q, g), cos_map(avg_q, ng), cos_map(alpha_q, alpha_g)
    assert alpha != pytest.approx(avg, abs=1e-3) and plain != pytest.approx(alpha, abs=1e-3)
