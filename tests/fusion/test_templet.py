"""templet: the bounded 1/cos, the normalised square, odd T, the refinement block."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.fusion.templet import (
    TempletFusion,
    refine_block,
    templet,
    templet_coefficients,
    templet_pair,
)


def test_alpha_hand_values():
    a = jnp.array([1.0, 0.0])
    b = jnp.array([0.0, 1.0])
    alpha, beta = templet_coefficients(a, b)  # template (.5, .5): cos 1/sqrt(2)
    np.testing.assert_allclose([alpha, beta], [math.sqrt(2), math.sqrt(2)], rtol=1e-6)
    alpha, beta = templet_coefficients(jnp.array([3.0, 0.0]), jnp.array([3.0, 0.0]))
    np.testing.assert_allclose([alpha, beta], [1.0, 1.0], rtol=1e-6)  # identical frames
    alpha, beta = templet_coefficients(a, -a, alpha_max=7.0)  # template 0: cos 0
    np.testing.assert_allclose([alpha, beta], [7.0, 7.0])
    alpha, beta = templet_coefficients(a, jnp.zeros(2), alpha_max=7.0)  # zero frame b
    np.testing.assert_allclose([alpha, beta], [1.0, 7.0])
    # cos(A, a) < 0: b = -3a gives A = -a, cos(A, a) = -1, clamped to alpha_max.
    alpha, beta = templet_coefficients(a, -3.0 * a, alpha_max=7.0)
    np.testing.assert_allclose([alpha, beta], [7.0, 1.0])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_alpha_stays_in_its_bound(degenerate, dtype):
    x = np.random.default_rng(0).normal(size=(64, 2, 3, 2, 8)).astype(np.float32)
    x[:8, 1] = -x[:8, 0] * np.float32(0.99)  # nearly opposite pairs
    x[8:16, 1] = 0.0
    x[16:24] = np.maximum(x[16:24], 0.0)
    maps = jnp.concatenate([jnp.asarray(x), degenerate[:, :2]]).astype(dtype)
    for alpha_max in (1.0, 2.5, 10.0):
        alpha, beta = jax.jit(templet_coefficients, static_argnums=2)(
            maps[:, 0].astype(jnp.float32), maps[:, 1].astype(jnp.float32), alpha_max
        )
        for coef in (alpha, beta):
            assert np.all(np.isfinite(coef))
            assert np.all(coef >= 1.0 - 1e-6) and np.all(coef <= alpha_max * (1 + 1e-6))
        assert np.any(np.isclose(alpha, alpha_max))


def test_pair_rule_matches_numpy_reference():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 3, 2, 5))
    gamma, delta = 0.3, -0.7
    fused, w = templet_pair(jnp.asarray(a), jnp.asarray(b), gamma, delta, alpha_max=10.0)
    t = (a + b) / 2

    def cos(u, v):
        return (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))

    alpha = 1 / np.maximum(cos(t, a), 0.1)
    beta = 1 / np.maximum(cos(t, b), 0.1)
    z = alpha[..., None] * a + beta[..., None] * b
    rms = np.sqrt((z * z).mean(-1, keepdims=True))
    np.testing.assert_allclose(fused, z * z / rms + gamma * a + delta * b, rtol=1e-5, atol=1e-6)
    share = np.stack([alpha, beta], -1) / (alpha + beta)[..., None]
    np.testing.assert_allclose(w, share.mean((0, 1)), rtol=1e-6)


def test_square_term_is_degree_one_so_large_inputs_stay_finite_in_bf16():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 8, 2, 2, 16)), jnp.float32)
    fuse = jax.jit(templet)
    small, _ = fuse(x)
    big, _ = fuse(x * 1e4)
    np.testing.assert_allclose(big, small * 1e4, rtol=1e-4)  # homogeneous of degree 1
    # Unnormalised, 1e6 would grow as 1e6^(2^3) = 1e48 over the 3 levels of T=8: overflow.
    out, aux = fuse((x * 1e6).astype(jnp.bfloat16))
    assert np.all(np.isfinite(out)) and np.all(np.abs(out) < 1e6 * 1e3)
    np.testing.assert_allclose(out, small * 1e6, rtol=0.1, atol=1e6 * 0.05)
    assert np.all(np.isfinite(aux["frame_weights"]))


@pytest.mark.parametrize("t,levels", [(3, [1, 1]), (6, [3, 1, 1])])
def test_t_not_a_power_of_two(t, levels):
    maps = jnp.asarray(np.random.default_rng(1).normal(size=(2, t, 2, 2, 4)), jnp.float32)
    out, aux = jax.jit(templet)(maps)
    assert out.shape == (2, 4)
    assert [lvl.shape[1] for lvl in aux["weights"]] == levels
    np.testing.assert_allclose(np.sum(aux["frame_weights"], -1), 1.0, rtol=1e-6)
    if t == 3:  # (0,1) -> g, then (g, 2) with gamma = delta = 0.5 and no refinement
        pair = jax.jit(templet_pair)
        g, _ = pair(maps[:, 0], maps[:, 1], 0.5, 0.5)
        expected, _ = pair(g, maps[:, 2], 0.5, 0.5)
        np.testing.assert_allclose(out, expected.mean((1, 2)), rtol=1e-5, atol=1e-6)


def test_refinement_block_starts_as_identity_and_params_match_docstring():
    maps = jnp.asarray(np.random.default_rng(2).normal(size=(2, 4, 3, 3, 12)), jnp.float32)
    module = TempletFusion(per_channel=True, reduction=3)
    key = jax.random.key(0, impl="unsafe_rbg")
    spec = jax.ShapeDtypeStruct(maps.shape, maps.dtype)  # lazy_init: only the initialisers run
    variables = jax.jit(lambda k: module.lazy_init(k, spec, False))(key)
    c, m = 12, 4
    expected = 2 * c + (2 * c * m + 9 * m * m + 2 * m + c)
    assert sum(p.size for p in jax.tree.leaves(variables)) == expected
    bare = TempletFusion(refine=False)  # gamma and delta only: 2 scalars
    shapes = jax.eval_shape(lambda x: bare.init(jax.random.key(0), x, False), maps)
    assert jax.tree.map(lambda p: p.shape, shapes) == {"params": {"gamma": (), "delta": ()}}

    params = {k: v for k, v in variables["params"].items() if k not in ("gamma", "delta")}
    x = maps[:, 0]
    refine = jax.jit(refine_block)
    np.testing.assert_allclose(refine(x, params), x, rtol=1e-6)  # expand conv starts at zero
    params["expand_kernel"] = params["expand_kernel"] + 0.1
    assert not np.allclose(refine(x, params), x, atol=1e-3)


def test_rescale_keeps_the_direction_and_gives_the_template_rms():
    rng = np.random.default_rng(3)
    a, b = np.abs(rng.normal(size=(2, 3, 2, 16)))  # post-ReLU-like maps
    plain, w0 = templet_pair(jnp.asarray(a), jnp.asarray(b), 0.5, 0.5)
    scaled, w1 = templet_pair(jnp.asarray(a), jnp.asarray(b), 0.5, 0.5, rescale=True)
    plain, scaled = np.asarray(plain, np.float64), np.asarray(scaled, np.float64)
    rms = lambda x: np.sqrt((x * x).mean(-1))  # noqa: E731
    np.testing.assert_allclose(rms(scaled), rms((a + b) / 2), rtol=1e-5)
    cos = (plain * scaled).sum(-1) / (
        np.linalg.norm(plain, axis=-1) * np.linalg.norm(scaled, axis=-1)
    )
    np.testing.assert_allclose(cos, 1.0, rtol=1e-6)
    np.testing.assert_array_equal(w0, w1)  # the weights are the note's either way
    assert np.all(rms(plain) > 1.5 * rms((a + b) / 2))  # what rescale is for


def test_rescaled_fusion_stays_at_the_input_scale_over_levels():
    x = jnp.asarray(np.abs(np.random.default_rng(4).normal(size=(4, 8, 2, 2, 32))), jnp.float32)
    mean_norm = float(jnp.linalg.norm(x.mean(axis=(1, 2, 3)), axis=-1).mean())
    plain, _ = jax.jit(templet)(x)
    scaled, _ = jax.jit(functools.partial(templet, rescale=True))(x)
    assert float(jnp.linalg.norm(plain, axis=-1).mean()) > 5 * mean_norm
    assert 0.3 * mean_norm < float(jnp.linalg.norm(scaled, axis=-1).mean()) < 1.5 * mean_norm
    # degree 1 like the plain rule, so bfloat16 inputs of 1e6 stay finite
    big, _ = jax.jit(functools.partial(templet, rescale=True))((x * 1e6).astype(jnp.bfloat16))
    assert np.all(np.isfinite(big))
    np.testing.assert_allclose(big, scaled * 1e6, rtol=0.1, atol=1e6 * 0.05)


def test_rescale_gradients_are_finite_at_zero_positions_and_zero_clips():
    # the reproducer: an all-zero clip gave NaN gradients with rescale=True
    grad = jax.jit(jax.grad(lambda x: templet(x, rescale=True)[0].sum()))
    grad = grad(jnp.zeros((1, 2, 1, 1, 4)))
    assert np.all(np.isfinite(grad))
    # post-ReLU maps: some positions zero in both frames of a pair; gradients for the inputs,
    # gamma / delta and the refinement kernels
    x = np.maximum(np.random.default_rng(5).normal(size=(2, 4, 3, 2, 8)), 0.0).astype(np.float32)
    x[:, :, 0, 0] = 0.0
    maps = jnp.asarray(x)
    module = TempletFusion(rescale=True, reduction=2)
    key = jax.random.key(0, impl="unsafe_rbg")
    variables = jax.jit(lambda k: module.init(k, maps, False))(key)
    variables = jax.tree.map(lambda p: p + 0.05, variables)  # expand kernel off zero

    def loss(v, m):
        return jnp.sum(module.apply(v, m, False)[0] ** 2)

    for inputs in (maps, jnp.zeros_like(maps)):
        gv, gm = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, inputs)
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(gv)), "parameter gradients"
        assert np.all(np.isfinite(gm))
    # the floor leaves the value alone: rms of a non-zero vector is exact
    from reid_jax.fusion.templet import _rms

    v = np.array([3.0, -4.0, 0.0, 0.0], np.float32)
    np.testing.assert_allclose(_rms(jnp.asarray(v)), [np.sqrt(25 / 4)], rtol=1e-6)
    assert float(_rms(jnp.zeros(4))[0]) == 0.0


def test_normalised_square_is_bounded_by_sqrt_c_times_z():
    # |z_c^2 / rms(z)| <= sqrt(C) |z_c| (module docstring); equality for a one-hot z
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(2, 5, 10, 16))
    fused, _ = templet_pair(jnp.asarray(a), jnp.asarray(b), 0.0, 0.0)  # the square term only
    alpha, beta = templet_coefficients(jnp.asarray(a), jnp.asarray(b))
    z = np.asarray(alpha)[..., None] * a + np.asarray(beta)[..., None] * b
    assert np.all(np.abs(np.asarray(fused)) <= 4.0 * np.abs(z) * (1 + 1e-5) + 1e-6)
    onehot = np.zeros((1, 1, 16))
    onehot[0, 0, 3] = 2.0
    sq, _ = templet_pair(jnp.asarray(onehot), jnp.asarray(onehot), 0.0, 0.0)
    # a = b = 2 e_3: z = 4 e_3, rms(z) = 1, z^2 / rms = 16 = sqrt(16) x 4
    np.testing.assert_allclose(np.asarray(sq)[0, 0, 3], 16.0, rtol=1e-5)
