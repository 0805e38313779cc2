"""k-reciprocal re-ranking and average query expansion against slow numpy references."""

import numpy as np
import pytest

from reid_jax.evaluation import metrics, rerank


def ref_re_ranking(probFea, galFea, k1, k2, lambda_value):
    """The authors' re_ranking() (github.com/zhunzhong07/person-re-ranking, python version),
    line by line, except: float64 everywhere (the code stores V and the Jaccard distances in
    float16), a stable argsort (theirs is quicksort: ties in any order), exact distances."""
    query_num = probFea.shape[0]
    feat = np.concatenate([probFea, galFea]).astype(np.float64)
    all_num = feat.shape[0]
    original_dist = ((feat[:, None, :] - feat[None, :, :]) ** 2).sum(-1)
    gallery_num = original_dist.shape[0]
    original_dist = np.transpose(original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist)
    initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, : k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, : k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            half = int(np.around(k1 / 2)) + 1
            candidate_forward_k_neigh_index = initial_rank[candidate, :half]
            candidate_backward_k_neigh_index = initial_rank[candidate_forward_k_neigh_index, :half]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)) > 2 / 3 * len(
                candidate_k_reciprocal_index
            ):
                k_reciprocal_expansion_index = np.append(
                    k_reciprocal_expansion_index, candidate_k_reciprocal_index
                )
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = weight / np.sum(weight)
    original_dist = original_dist[:query_num,]
    if k2 != 1:
        V_qe = np.zeros_like(V)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    invIndex = [np.where(V[:, i] != 0)[0] for i in range(gallery_num)]
    jaccard_dist = np.zeros_like(original_dist)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num])
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
                V[i, indNonZero[j]], V[indImages[j], indNonZero[j]]
            )
        jaccard_dist[i] = 1 - temp_min / (2 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


def _features(seed, n, dim, ids=12, spread=0.7):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(ids, dim))
    return (centers[rng.integers(0, ids, n)] + spread * rng.normal(size=(n, dim))).astype(
        np.float32
    )


@pytest.mark.parametrize(
    "q,g,dim,k1,k2,lam",
    [
        (15, 60, 8, 20, 6, 0.3),  # the paper's setting
        (10, 40, 4, 6, 3, 0.5),  # round(6/2) = 3
        (20, 70, 16, 5, 1, 0.3),  # k2 = 1: no query expansion; round(2.5) = 2 (half to even)
        (4, 9, 3, 20, 6, 0.3),  # fewer items than k1 + 1: every item is a forward neighbour
        (6, 30, 5, 20, 6, 0.0),  # lambda 0: Jaccard only
    ],
)
def test_re_ranking_equals_reference(q, g, dim, k1, k2, lam):
    feats = _features(q + g + k1, q + g, dim)
    expected = ref_re_ranking(feats[:q], feats[q:], k1, k2, lam)
    got = rerank.re_ranking(feats[:q], feats[q:], k1, k2, lam)
    assert got.shape == (q, g) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.ptp(expected) > 0.1  # a non-degenerate case


def test_k_reciprocal_is_order_free_and_takes_any_query_and_gallery_rows():
    # Items stored in any order, queries and gallery given as row lists, a small row block:
    # the same distances as the reference on [queries; gallery].
    q, g = 12, 50
    feats = _features(7, q + g, 6)
    expected = ref_re_ranking(feats[:q], feats[q:], 20, 6, 0.3)
    perm = np.random.default_rng(0).permutation(q + g)
    inverse = np.argsort(perm)
    got = rerank.k_reciprocal(feats[perm], inverse[:q], inverse[q:], block=16)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_rerank_improves_map_on_clustered_identities():
    # Identities as noisy clusters (the setting re-ranking was designed for): mAP goes up.
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 25, size=300)
    centers = rng.normal(size=(25, 16))
    feats = (centers[ids] + 0.9 * rng.normal(size=(300, 16))).astype(np.float32)
    q, g = slice(0, 60), slice(60, 300)
    plain = ((feats[q, None] - feats[None, g]) ** 2).sum(-1)
    args = (ids[q], ids[g], np.ones(60, int), np.full(240, 2))
    before = metrics.evaluate(plain, *args, protocol="legacy")["mAP"]
    after = metrics.evaluate(rerank.re_ranking(feats[q], feats[g]), *args, protocol="legacy")["mAP"]
    assert 0.2 < before < after - 0.02


def test_average_query_expansion_equals_loop():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(9, 5)).astype(np.float32)
    g = rng.normal(size=(30, 5)).astype(np.float32)
    got = rerank.average_query_expansion(q, g, k=3, block=4)  # several blocks, the last partial
    for i in range(9):
        d = ((g - q[i]) ** 2).sum(1)
        top = np.argsort(d, kind="stable")[:3]
        np.testing.assert_allclose(got[i], (q[i] + g[top].sum(0)) / 4, atol=1e-6)
    with pytest.raises(ValueError, match="query expansion k=31"):
        rerank.average_query_expansion(q, g, k=31)


def test_bad_parameters_are_refused():
    feats = _features(0, 10, 3)
    with pytest.raises(ValueError, match="k1 >= 1"):
        rerank.k_reciprocal(feats, [0], [1, 2], k1=0)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        rerank.k_reciprocal(feats[0], [0], [1])
