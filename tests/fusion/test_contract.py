"""Every fusion in the registry, float32 and bfloat16 under jit: shapes, dtypes, weights, finite
values and gradients on degenerate inputs, parameter counts, permutation invariance, config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.config_base import base_config
from reid_jax.fusion import FUSIONS, fusion_options, make_fusion, option_table
from reid_jax.fusion.two_branch import combine_branches
from reid_jax.models.embed import weight_stats
from reid_jax.models.reid import make_model

B, T, H, W, C = 4, 4, 3, 2, 8  # the degenerate maps' shape (conftest.degenerate_maps)
M = C // 4  # templet refinement width at the default reduction 4
TEMPLET = 2 * C * M + 9 * M * M + 2 * M + C  # the refinement block's documented count

# name -> (kwargs, output dim D, documented parameter count for maps [H, W, C] and T frames).
# Other option variants' counts are checked in test_cosine / test_templet / test_baselines.
CASES = {
    "mean": ({}, C, 0),
    "max": ({}, C, 0),
    "temporal_attention": ({"hidden": 16}, C, H * W * C * 16 + 16 + 3 * 16 + 1),
    "temporal_conv": ({}, C, T * C * C + C),
    "lstm": ({"hidden": 6}, 6, 4 * 6 * (C + 6 + 1)),
    "cosine_center": ({}, C, 0),
    "cosine_center_angle_it2": ({"weighting": "angle", "iterations": 2}, C, 0),
    "templet": ({}, C, 2 + TEMPLET),
    "two_branch": ({}, 2 * C, 2 + TEMPLET),
}


def _fusion_name(case: str) -> str:
    return next(n for n in sorted(FUSIONS, key=len, reverse=True) if case.startswith(n))


def test_cases_cover_the_registry():
    assert {_fusion_name(c) for c in CASES} == set(FUSIONS)


def _check_weights(aux: dict, b: int, t: int) -> None:
    w = aux["weights"]
    if isinstance(w, tuple):  # pairwise: one [B, pairs, 2] per level, T=4 -> 2, 1 pairs
        assert [lvl.shape for lvl in w] == [(b, 2, 2), (b, 1, 2)]
        levels = [np.asarray(lvl) for lvl in w] + [np.asarray(aux["frame_weights"])]
        assert aux["frame_weights"].shape == (b, t)
    else:
        assert w.shape == (b, t)
        levels = [np.asarray(w)]
    for lvl in levels:
        assert np.all(lvl >= 0)
        np.testing.assert_allclose(lvl.sum(-1), 1.0, rtol=1e-5)


# Every registered method in both dtypes; the option variants in float32 only (time budget).
RUNS = [(case, dt) for case in sorted(CASES) for dt in ("f32", "bf16") if case in FUSIONS] + [
    (case, "f32") for case in sorted(CASES) if case not in FUSIONS
]


@pytest.mark.parametrize("case,dtype", RUNS)
def test_shapes_weights_params_and_finite_gradients(case, dtype, degenerate):
    kwargs, d, n_params = CASES[case]
    module = make_fusion(_fusion_name(case), **kwargs)
    maps = degenerate.astype({"f32": jnp.float32, "bf16": jnp.bfloat16}[dtype])
    probe = jnp.asarray(np.random.default_rng(3).normal(size=(B, d)), jnp.float32)

    @jax.jit
    def init_forward_and_grads(key, maps):  # one compilation per case
        variables = module.init(key, maps, False)

        def loss(v, x):
            out, aux = module.apply(v, x, False)
            w = aux.get("frame_weights", aux["weights"])
            return jnp.sum(out * probe) + jnp.sum(w * jnp.arange(T, dtype=jnp.float32)), (out, aux)

        return variables, jax.grad(loss, argnums=(0, 1), has_aux=True)(variables, maps)

    key = jax.random.key(0, impl="unsafe_rbg")
    variables, ((g_vars, g_maps), (fused, aux)) = init_forward_and_grads(key, maps)
    assert sum(p.size for p in jax.tree.leaves(variables)) == n_params
    assert fused.shape == (B, d) and fused.dtype == jnp.float32
    assert np.all(np.isfinite(fused))
    _check_weights(aux, B, T)
    assert g_maps.shape == maps.shape and g_maps.dtype == maps.dtype
    for g in [g_maps, *jax.tree.leaves(g_vars)]:
        assert np.all(np.isfinite(np.asarray(g, np.float32))), case


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"fusion": "cosine_center", "mode": "flat"},
        {"fusion": "cosine_center", "mode": "flat", "weighting": "angle", "iterations": 2},
        {"fusion": "cosine_center", "mode": "flat", "weighting": "vmf", "tau": 0.3},
    ],
    ids=["mean", "cosine_flat", "cosine_flat_angle_it2", "cosine_flat_vmf"],
)
def test_mean_and_flat_cosine_are_permutation_invariant(kwargs, dtype, init_apply):
    kwargs = dict(kwargs)
    module = make_fusion(kwargs.pop("fusion", "mean"), **kwargs)
    maps = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 2, 2, 6)), dtype)
    variables, apply = init_apply(module, maps)
    fused, aux = apply(variables, maps)
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(5)
        fused_p, aux_p = apply(variables, maps[:, perm])
        np.testing.assert_allclose(fused_p, fused, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(aux_p["weights"], aux["weights"][:, perm], rtol=1e-5)


def test_config_options_match_the_fusions_and_override_when_locked():
    union = set().union(*(fusion_options(name) for name in FUSIONS))
    assert set(option_table()) == union
    c = base_config()
    c.lock()
    c.model.fusion = "cosine_center"
    c.model.fusion_kwargs.tau = 0.1  # placeholders exist, so a locked config takes them
    c.model.fusion_kwargs.mode = "flat"
    model = make_model(c.model, num_classes=3)
    fusion = make_fusion(model.fusion, **dict(model.fusion_kwargs))
    assert (fusion.tau, fusion.mode, fusion.weighting) == (0.1, "flat", "softmax")
    with pytest.raises(AttributeError):
        c.model.fusion_kwargs.not_an_option = 1


def test_make_fusion_rejects_foreign_options_and_unknown_names():
    with pytest.raises(ValueError, match="'mean' does not take"):
        make_fusion("mean", tau=0.5)
    with pytest.raises(ValueError, match="Unknown fusion"):
        make_fusion("average")
    assert make_fusion("lstm", tau=None).hidden == 512  # None = unset placeholder, dropped


def test_bad_option_values_raise(init_apply):
    maps = jnp.ones((1, 2, 2, 2, 4))
    for name, kwargs in [
        ("cosine_center", {"mode": "tree"}),
        ("cosine_center", {"weighting": "cos"}),
        ("cosine_center", {"tau": 0.0}),
        ("templet", {"alpha_max": 0.5}),
        ("two_branch", {"combine": "mix"}),
        ("temporal_conv", {"kernel_size": 3}),
    ]:
        with pytest.raises(ValueError):
            init_apply(make_fusion(name, **kwargs), maps)


def test_two_branch_combines_by_concat_or_sum():
    app, mot = jnp.array([[1.0, 2.0]]), jnp.array([[10.0, 20.0]])
    np.testing.assert_array_equal(combine_branches(app, mot, "concat"), [[1, 2, 10, 20]])
    np.testing.assert_array_equal(combine_branches(app, mot, "sum"), [[11, 22]])


def test_weight_stats_flat_and_per_level():
    flat = jnp.array([[0.5, 0.5], [0.9, 0.1]])
    s = weight_stats(flat)
    np.testing.assert_allclose(s["weights/min"], (0.5 + 0.1) / 2, rtol=1e-6)
    np.testing.assert_allclose(s["weights/max"], (0.5 + 0.9) / 2, rtol=1e-6)
    h = [-2 * 0.5 * np.log(0.5), -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))]
    np.testing.assert_allclose(s["weights/entropy"], np.mean(h), rtol=1e-5)
    levels = (jnp.array([[[0.8, 0.2], [0.5, 0.5]]]), jnp.array([[[0.6, 0.4]]]))
    frame = jnp.array([[0.48, 0.12, 0.2, 0.2]])
    s = weight_stats(levels, frame)
    np.testing.assert_allclose(s["weights/level0/min"], (0.2 + 0.5) / 2, rtol=1e-6)
    np.testing.assert_allclose(s["weights/level1/max"], 0.6, rtol=1e-6)
    np.testing.assert_allclose(s["weights/min"], 0.12, rtol=1e-6)
    np.testing.assert_allclose(s["weights/max"], 0.48, rtol=1e-6)
    assert weight_stats(levels)["weights/min"] == s["weights/level0/min"]
