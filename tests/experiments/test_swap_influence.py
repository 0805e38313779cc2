"""Test-time swaps and influence measures on constructed chunks with known answers."""

import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.data.tracklets import TrackletIndex
from reid_jax.experiments import influence, swap
from reid_jax.fusion.cosine import center_weights


def test_oracle_and_mean_weights():
    labels = np.array([["clean", "blur", "clean", "clean"], ["switch"] * 4])
    gap = np.ones((2, 4, 3))
    zeros = np.zeros(3)
    w = swap.swap_weights(swap.SWAPS[1], gap, labels, zeros, zeros + 1)
    np.testing.assert_allclose(w, [[1 / 3, 0, 1 / 3, 1 / 3], [0, 0, 0, 0]])
    np.testing.assert_allclose(swap.swap_weights(swap.SWAPS[0], gap, labels, zeros, zeros), 0.25)


def test_cosine_swaps_weigh_the_view_and_match_cosine_center():
    rng = np.random.default_rng(0)
    gap = np.abs(rng.normal(size=(3, 4, 8))) + 5.0  # a shared offset, as post-ReLU features
    mean, var = gap.reshape(-1, 8).mean(0), gap.reshape(-1, 8).var(0)
    s = swap.Swap("x", "cosine", "flat", 0.1, view="centred")
    w = swap.swap_weights(s, gap, None, mean, var)
    centred = gap - gap.reshape(-1, 8).mean(0)
    want = np.asarray(center_weights(jnp.asarray(centred, jnp.float32), 0.1))
    np.testing.assert_allclose(w, want, rtol=1e-5)
    raw = swap.swap_weights(swap.Swap("y", "cosine", "flat", 0.1), gap, None, mean, var)
    assert np.ptp(w, axis=1).min() > 10 * np.ptp(raw, axis=1).max()  # centring spreads them
    bn = swap.view_features(gap, "bn", mean, var)
    np.testing.assert_allclose(bn.reshape(-1, 8).std(0), 1.0, rtol=1e-3)
    with pytest.raises(ValueError, match="view 'nope'"):
        swap.view_features(gap, "nope", mean, var)


def test_tracklet_features_skip_empty_chunks_and_fall_back():
    feats = np.array([[1.0], [3.0], [10.0], [20.0]])
    weights = np.array([[1.0], [0.0], [0.0], [0.0]])
    out = swap.tracklet_features(feats, weights, np.array([0, 0, 1, 1]), 2)
    np.testing.assert_allclose(out[:, 0], [1.0, 15.0])  # tracklet 1 has no weighted chunk


def test_score_of_perfect_features_is_one():
    # 2 ids x 2 cameras; queries in camera 1, galleries in camera 2: every query finds its id
    index = TrackletIndex(
        start=np.arange(4), length=np.ones(4, np.int64), pid=np.array([1, 2, 1, 2]),
        camid=np.array([1, 1, 2, 2]), is_query=np.array([True, True, False, False]),
        label=np.full(4, -1),
    )  # fmt: skip
    feats = np.eye(2)[[0, 1, 0, 1]]
    out = swap.score(feats, index, "euclidean", normalize=False)
    assert out == {"mAP": 1.0, "Rank1": 1.0}


def test_weight_and_leave_one_out_shares_hand_computed():
    np.testing.assert_allclose(influence.weight_share(np.array([[0.1, 0.2, 0.3, 0.4]])),
                               [[0.4, 0.8, 1.2, 1.6]])  # fmt: skip
    # mean of 1-D frames [0, 0, 0, 4] = 1; without frame t the mean moves by (f_t - 1) / 3
    f = np.array([[[0.0], [0.0], [0.0], [4.0]]])
    full = f.mean(1)
    loo = np.stack([np.delete(f, t, axis=1).mean(1) for t in range(4)], axis=1)
    np.testing.assert_allclose(influence.loo_share(full, loo), [[2 / 3, 2 / 3, 2 / 3, 2.0]])
    same = np.ones((1, 4, 2))
    np.testing.assert_allclose(
        influence.loo_share(same.mean(1), np.stack([same.mean(1)] * 4, 1)), 1.0
    )


def test_measures_by_kind_and_auc():
    labels = np.array([["clean", "clean", "clean", "occlusion"]])
    first = np.ones((1, 4), bool)
    maps = np.zeros((1, 4, 1, 1, 2))
    maps[0, :, 0, 0, 0] = [1.0, 1.0, 1.0, 9.0]  # the occluded frame is far from the others

    def mean_fuse(x):
        t = x.shape[1]
        return x.mean(axis=(1, 2, 3)), np.full((len(x), t), 1.0 / t)

    out = influence.measures(mean_fuse, maps, maps.mean((2, 3)), labels, first)
    assert out["weight_share"]["by_kind"]["occlusion"] == pytest.approx(1.0)
    assert out["weight_share"]["auc"]["any"] == 0.5  # averaging: every pair ties
    # mean pooling (g = 3): removing frame t moves g by |f_t - 3| / 3: shares 4 x [2,2,2,6] / 12
    assert out["loo_share"]["by_kind"]["occlusion"] == pytest.approx(4 * 6 / 12)
    assert out["loo_share"]["by_kind"]["clean"] == pytest.approx(4 * 2 / 12)
    assert out["loo_share"]["auc"]["any"] == 0.0  # the corrupted frame is the most influential
    assert out["feature_norm"]["auc"]["any"] == 0.0  # and the largest
    assert np.isnan(out["feature_norm"]["by_kind"]["blur"])
