"""Tests for label-smoothed cross entropy and the batch-hard triplet loss."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.train.losses import (
    batch_hard_triplet,
    cross_entropy_label_smoothing,
    pairwise_distance,
)


def _np_triplet(features, labels, margin, distance, soft):
    """Explicit-loop reference of Hermans et al.'s batch-hard loss."""
    x = np.asarray(features, np.float64)
    n = len(x)
    if distance == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    losses, pos, neg = [], [], []
    for a in range(n):
        d = [
            1 - x[a] @ x[j] if distance == "cosine" else np.linalg.norm(x[a] - x[j])
            for j in range(n)
        ]
        dp = [d[j] for j in range(n) if j != a and labels[j] == labels[a]]
        dn = [d[j] for j in range(n) if labels[j] != labels[a]]
        if not dp or not dn:
            continue
        gap = max(dp) - min(dn)
        losses.append(math.log1p(math.exp(gap)) if soft else max(0.0, gap + margin))
        pos.append(max(dp))
        neg.append(min(dn))
    return np.mean(losses), np.mean(pos), np.mean(neg)


def test_label_smoothing_hand_computed():
    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    labels = jnp.array([0, 2])
    eps = 0.3
    z = 2 * math.e**0 + math.e**2
    lp_true, lp_other = 2 - math.log(z), -math.log(z)
    # targets: true class 1 - eps + eps/3 = 0.8, others eps/3 = 0.1
    loss0 = -(0.8 * lp_true + 0.1 * lp_other * 2)
    loss1 = math.log(3.0)  # uniform logits: every log-prob is -log 3, targets sum to 1
    got = cross_entropy_label_smoothing(logits, labels, epsilon=eps)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), (loss0 + loss1) / 2, rtol=1e-6)
    plain = cross_entropy_label_smoothing(logits, labels, epsilon=0.0)
    np.testing.assert_allclose(float(plain), (-lp_true + math.log(3.0)) / 2, rtol=1e-6)
    half = cross_entropy_label_smoothing(logits.astype(jnp.bfloat16), labels, epsilon=eps)
    assert half.dtype == jnp.float32


def test_triplet_hand_computed_1d():
    # 1-D features: A:{0, 1}, B:{3, 7}. Distances are |xi - xj|.
    feats = jnp.array([[0.0], [1.0], [3.0], [7.0]])
    labels = jnp.array([0, 0, 1, 1])
    # anchor 0: dp=1, dn=3 -> max(0, 1-3+0.3)=0;  anchor 1: dp=1, dn=2 -> 0
    # anchor 2: dp=4, dn=2 -> 2.3;               anchor 3: dp=4, dn=6 -> 0
    loss, aux = batch_hard_triplet(feats, labels, margin=0.3)
    np.testing.assert_allclose(float(loss), 2.3 / 4, rtol=1e-5)
    np.testing.assert_allclose(float(aux["frac_active"]), 0.25)
    np.testing.assert_allclose(float(aux["hardest_pos"]), (1 + 1 + 4 + 4) / 4, rtol=1e-5)
    np.testing.assert_allclose(float(aux["hardest_neg"]), (3 + 2 + 2 + 6) / 4, rtol=1e-5)
    soft, _ = batch_hard_triplet(feats, labels, soft=True)
    expected = np.mean([np.log1p(np.exp(g)) for g in (-2.0, -1.0, 2.0, -2.0)])
    np.testing.assert_allclose(float(soft), expected, rtol=1e-5)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("soft", [False, True])
def test_triplet_matches_numpy_reference(distance, soft):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 3)  # P=3, K=3
    feats = rng.normal(size=(9, 6)).astype(np.float32)
    margin = 0.3 if distance == "euclidean" else 0.1
    loss, aux = batch_hard_triplet(jnp.asarray(feats), jnp.asarray(labels), margin, distance, soft)
    ref_loss, ref_pos, ref_neg = _np_triplet(feats, labels, margin, distance, soft)
    assert float(loss) > 0
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-4)
    np.testing.assert_allclose(float(aux["hardest_pos"]), ref_pos, rtol=1e-4)
    np.testing.assert_allclose(float(aux["hardest_neg"]), ref_neg, rtol=1e-4)


def test_anchors_without_positive_or_negative_are_masked():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(5, 4)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2])  # anchor 4 has no positive
    loss, _ = batch_hard_triplet(jnp.asarray(feats), jnp.asarray(labels), margin=0.5)
    ref, _, _ = _np_triplet(feats, labels, 0.5, "euclidean", False)
    np.testing.assert_allclose(float(loss), ref, rtol=1e-4)
    # A single identity: no anchor has a negative, so the loss is exactly 0 with zero grads.
    single = jnp.asarray(feats[:3])

    def fn(f):
        return batch_hard_triplet(f, jnp.zeros(3, jnp.int32))[0]

    assert float(fn(single)) == 0.0
    assert float(jnp.abs(jax.grad(fn)(single)).max()) == 0.0


def test_finite_gradients_with_duplicate_features():
    feats = jnp.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [0.0, 1.0]])
    labels = jnp.array([0, 0, 1, 1])
    for distance in ("euclidean", "cosine"):
        grads = jax.grad(lambda f: batch_hard_triplet(f, labels, distance=distance)[0])(feats)
        assert bool(jnp.all(jnp.isfinite(grads))), distance
    d = pairwise_distance(feats)
    assert float(d[0, 1]) == pytest.approx(1e-6, abs=1e-6)  # clamp at sqrt(1e-12)
    np.testing.assert_allclose(float(d[0, 3]), math.sqrt(2), rtol=1e-6)


def test_cosine_is_scale_invariant_and_bad_distance_raises():
    rng = np.random.default_rng(2)
    feats = jnp.asarray(rng.normal(size=(6, 5)).astype(np.float32))
    labels = jnp.array([0, 0, 1, 1, 2, 2])
    a, _ = batch_hard_triplet(feats, labels, distance="cosine")
    b, _ = batch_hard_triplet(feats * 7.5, labels, distance="cosine")
    e1, _ = batch_hard_triplet(feats, labels)
    e2, _ = batch_hard_triplet(feats * 7.5, labels)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-5)
    assert not np.isclose(float(e1), float(e2))
    with pytest.raises(ValueError, match="manhattan"):
        batch_hard_triplet(feats, labels, distance="manhattan")
