"""The field's baselines against numpy references: max, temporal attention, temporal conv, LSTM."""

import jax
import jax.numpy as jnp
import numpy as np

from reid_jax.fusion import lstm, max_pool, temporal_attention, temporal_conv
from reid_jax.fusion.conv import TemporalConvFusion


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_max_pool_weights_are_channel_shares():
    frames = jnp.array([[[1.0, 5.0, 0.0, 2.0], [3.0, 1.0, -1.0, 0.0], [0.0, 0.0, 4.0, 1.0]]])
    fused, aux = jax.jit(max_pool)(frames)
    np.testing.assert_allclose(fused[0], [3.0, 5.0, 4.0, 2.0])
    np.testing.assert_allclose(aux["weights"][0], [2 / 4, 1 / 4, 1 / 4])


def test_temporal_attention_without_score_relu_matches_numpy_and_keeps_negative_scores():
    # score_relu=False (our earlier variant); the default, the anchor's head, is in test_attention
    rng = np.random.default_rng(0)
    b, t, h, w, c, d, k = 2, 5, 2, 3, 4, 3, 3
    maps = rng.normal(size=(b, t, h, w, c))
    sk, sb = rng.normal(size=(h, w, c, d)), rng.normal(size=d)
    tk, tb = rng.normal(size=(k, d, 1)), -3.0  # a large negative bias: most scores are < 0
    args = [jnp.asarray(a, jnp.float32) for a in (maps, sk, sb, tk, tb)]
    fused, aux = jax.jit(lambda *a: temporal_attention(*a, score_relu=False))(*args)
    hidden = np.maximum(np.einsum("bthwc,hwcd->btd", maps, sk) + sb, 0.0)
    padded = np.pad(hidden, ((0, 0), (1, 1), (0, 0)))
    scores = np.stack(
        [sum(padded[:, i + j] @ tk[j, :, 0] for j in range(k)) + tb for i in range(t)], axis=1
    )
    assert np.mean(scores < 0) > 0.5
    weights = _softmax(scores)  # no ReLU before the softmax: the weights are not uniform
    np.testing.assert_allclose(aux["weights"], weights, rtol=1e-4, atol=1e-6)
    assert np.ptp(np.asarray(aux["weights"]), axis=1).min() > 1e-3
    expected = np.einsum("bt,btc->bc", weights, maps.mean((2, 3)))
    np.testing.assert_allclose(fused, expected, rtol=1e-4, atol=1e-5)


def test_temporal_conv_starts_as_mean_and_matches_numpy():
    rng = np.random.default_rng(1)
    maps = jnp.asarray(rng.normal(size=(2, 4, 2, 2, 3)), jnp.float32)
    gap = maps.mean((2, 3))
    for k, shares in ((0, [1 / 4] * 4), (2, [1 / 6, 2 / 6, 2 / 6, 1 / 6])):
        module = TemporalConvFusion(kernel_size=k)
        variables = module.init(jax.random.key(0, impl="unsafe_rbg"), maps, False)
        n = k or 4  # documented: k C^2 + C parameters, k = kernel_size or T
        assert sum(p.size for p in jax.tree.leaves(variables)) == n * 3 * 3 + 3
        fused, aux = jax.jit(lambda v, x, m=module: m.apply(v, x, False))(variables, maps)
        # At init (taps I/k): k = T is the mean; k = 2 counts the end frames in 1 window of 3,
        # the middle ones in 2, exactly the tap shares reported as weights.
        np.testing.assert_allclose(aux["weights"][0], shares, rtol=1e-5)
        expected = np.einsum("t,btc->bc", np.asarray(shares), gap)
        np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-6)

    frames = rng.normal(size=(2, 4, 3))
    kernel, bias = rng.normal(size=(2, 3, 5)), rng.normal(size=5)
    args = [jnp.asarray(a, jnp.float32) for a in (frames, kernel, bias)]
    fused, aux = jax.jit(temporal_conv)(*args)
    windows = [frames[:, s] @ kernel[0] + frames[:, s + 1] @ kernel[1] + bias for s in range(3)]
    np.testing.assert_allclose(fused, np.mean(windows, axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(aux["weights"].sum(-1), 1.0, rtol=1e-6)


def test_lstm_matches_numpy():
    rng = np.random.default_rng(2)
    b, t, c, hid = 2, 3, 4, 5
    frames = rng.normal(size=(b, t, c))
    k_in, k_rec = rng.normal(size=(c, 4 * hid)), rng.normal(size=(hid, 4 * hid))
    bias = rng.normal(size=4 * hid)
    args = [jnp.asarray(a, jnp.float32) for a in (frames, k_in, k_rec, bias)]
    fused, aux = jax.jit(lstm)(*args)
    h, cell, outs = np.zeros((b, hid)), np.zeros((b, hid)), []
    for step in range(t):
        i, f, g, o = np.split(frames[:, step] @ k_in + h @ k_rec + bias, 4, axis=-1)
        cell = _sigmoid(f) * cell + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(cell)
        outs.append(h)
    np.testing.assert_allclose(fused, np.mean(outs, axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(aux["weights"], np.full((b, t), 1 / t))
