"""The Linen ViT on tiny sizes: grid and shapes (overlapping stride), the patch embedding and the
pre-LN block against numpy, the activations, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from reid_jax.models.vit import VITS, ViT, grid_size, make_vit, quick_gelu

TINY = dict(width=16, depth=1, heads=2, patch=8)


def _init(module: ViT, x: np.ndarray, seed: int = 0) -> dict:
    """Random normal params (x 0.5) of ``module``'s shapes for ``x`` (no init compile)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.asarray(x))["params"]
    return jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32) * 0.5, shapes)


def _layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


@pytest.mark.parametrize("stride, grid", [(0, (4, 2)), (8, (4, 2)), (6, (5, 2)), (4, (7, 3))])
def test_grid_position_rows_and_output_shapes(stride, grid):
    assert grid_size(32, 16, 8, stride or 8) == grid
    x = jax.ShapeDtypeStruct((3, 32, 16, 3), jnp.float32)
    for proj_dim, width in ((0, 16), (5, 5)):
        module = ViT(**TINY, stride=stride, proj_dim=proj_dim)
        variables = jax.eval_shape(module.init, jax.random.key(0), x)
        assert variables["params"]["pos_embed"].shape == (1 + grid[0] * grid[1], 16)
        cls, patches = jax.eval_shape(module.apply, variables, x)
        assert cls.shape == (3, width) and patches.shape == (3, *grid, width)


def test_zero_blocks_is_layer_norm_of_unfolded_patches_plus_positions():
    """depth 0, overlapping stride 4: tokens = LN(patch @ W + b + pos), CLS = LN(cls + pos[0])."""
    module = ViT(width=6, depth=0, heads=1, patch=8, stride=4, ln_eps=1e-5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 16, 12, 3)).astype(np.float32)
    params = _init(module, x)
    cls, patches = jax.jit(module.apply)({"params": params}, x)
    kernel = params["patch_embed"]["kernel"]  # [8, 8, 3, 6]
    h, w = grid_size(16, 12, 8, 4)
    tokens = np.stack(
        [
            np.einsum("nhwc,hwcd->nd", x[:, 4 * i : 4 * i + 8, 4 * j : 4 * j + 8], kernel)
            for i in range(h)
            for j in range(w)
        ],
        axis=1,
    )
    tokens = tokens + params["patch_embed"]["bias"] + params["pos_embed"][1:]
    cls_ref = params["cls_token"] + params["pos_embed"][0]
    ln = params["norm"]
    np.testing.assert_allclose(
        patches.reshape(2, h * w, 6),
        _layer_norm(tokens, ln["scale"], ln["bias"], 1e-5),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        cls, _layer_norm(np.broadcast_to(cls_ref, (2, 6)), ln["scale"], ln["bias"], 1e-5), atol=1e-5
    )


def test_block_is_pre_ln_attention_then_mlp_in_numpy():
    module = ViT(width=8, depth=1, heads=2, patch=4, pre_norm=True, patch_bias=False, ln_eps=1e-5)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 8, 4, 3)).astype(np.float32)
    params = _init(module, x, seed=1)
    _, patches = jax.jit(module.apply)({"params": params}, x)
    p = params
    grid = x.reshape(2, 2, 4, 1, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 2, 4 * 4 * 3)
    kernel = p["patch_embed"]["kernel"].reshape(4 * 4 * 3, 8)
    t = np.concatenate([np.broadcast_to(p["cls_token"], (2, 1, 8)), grid @ kernel], 1)
    t = _layer_norm(t + p["pos_embed"], p["norm_pre"]["scale"], p["norm_pre"]["bias"], 1e-5)
    b = p["blocks_0"]
    y = _layer_norm(t, b["norm1"]["scale"], b["norm1"]["bias"], 1e-5)
    qkv = (y @ b["attn"]["qkv"]["kernel"] + b["attn"]["qkv"]["bias"]).reshape(2, 3, 3, 2, 4)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # [n, heads, L, 4]
    a = q @ k.transpose(0, 1, 3, 2) / 2.0
    a = np.exp(a - a.max(-1, keepdims=True))
    a = a / a.sum(-1, keepdims=True)
    o = (a @ v).transpose(0, 2, 1, 3).reshape(2, 3, 8)
    t = t + o @ b["attn"]["proj"]["kernel"] + b["attn"]["proj"]["bias"]
    y = _layer_norm(t, b["norm2"]["scale"], b["norm2"]["bias"], 1e-5)
    hdn = y @ b["mlp"]["fc1"]["kernel"] + b["mlp"]["fc1"]["bias"]
    hdn = 0.5 * hdn * (1 + scipy.special.erf(hdn / np.sqrt(2)))
    t = t + hdn @ b["mlp"]["fc2"]["kernel"] + b["mlp"]["fc2"]["bias"]
    t = _layer_norm(t, p["norm"]["scale"], p["norm"]["bias"], 1e-5)
    np.testing.assert_allclose(patches.reshape(2, 2, 8), t[:, 1:], rtol=1e-4, atol=1e-4)


def test_quick_gelu_is_x_sigmoid_1702x():
    x = np.linspace(-4, 4, 17, dtype=np.float32)
    np.testing.assert_allclose(quick_gelu(jnp.asarray(x)), x / (1 + np.exp(-1.702 * x)), rtol=1e-6)


def test_registry_and_bad_input():
    assert {"vit_b16", "vit_s16", "clip_vit_b16"} <= set(VITS)
    clip = make_vit("clip_vit_b16", depth=None)
    assert (clip.act, clip.pre_norm, clip.patch_bias, clip.depth) == ("quick_gelu", True, False, 12)
    with pytest.raises(ValueError, match="Unknown ViT arch='vit_x'"):
        make_vit("vit_x")
    x = np.zeros((1, 32, 16, 3), np.float32)
    with pytest.raises(ValueError, match="stride=9"):
        _init(ViT(**TINY, stride=9), x)
    with pytest.raises(ValueError, match="not divisible by heads=3"):
        _init(ViT(width=16, depth=1, heads=3, patch=8), x)
    with pytest.raises(ValueError, match="smaller than the 8x8 patch"):
        _init(ViT(**TINY), np.zeros((1, 4, 16, 3), np.float32))
    with pytest.raises(ValueError, match="act='relu'"):
        _init(ViT(**TINY, act="relu"), x)
