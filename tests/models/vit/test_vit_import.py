"""ViT weight import without the reference packages: key layouts and prefixes, the position-grid
interpolation against torch's F.interpolate, .pth through torch, one error naming every key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.models import vit_import
from reid_jax.models.pretrained import write_safetensors
from reid_jax.models.vit import make_vit

SMALL = dict(width=16, depth=2, heads=2)


def _timm_state_dict(rng, n_grid=16, width=16, depth=2) -> dict[str, np.ndarray]:
    """A timm vit_*_patch16 state dict (random values) with an n_grid-row position grid."""
    r = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    sd = {
        "patch_embed.proj.weight": r(width, 3, 16, 16),
        "patch_embed.proj.bias": r(width),
        "cls_token": r(1, 1, width),
        "pos_embed": r(1, 1 + n_grid, width),
        "norm.weight": r(width),
        "norm.bias": r(width),
        "head.weight": r(10, width),
        "head.bias": r(10),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        for name, shape in [
            ("norm1", (width,)), ("norm2", (width,)), ("attn.qkv", (3 * width, width)),
            ("attn.proj", (width, width)), ("mlp.fc1", (4 * width, width)),
            ("mlp.fc2", (width, 4 * width)),
        ]:  # fmt: skip
            sd[b + name + ".weight"] = r(*shape)
            sd[b + name + ".bias"] = r(shape[0])
    return sd


def _clip_state_dict(rng, n_grid=16, width=16, depth=2, out=8) -> dict[str, np.ndarray]:
    """The same in OpenAI CLIP names under ``visual.``, beside a text-tower key."""
    t = _timm_state_dict(rng, n_grid, width, depth)
    sd = {
        "conv1.weight": t["patch_embed.proj.weight"],
        "class_embedding": t["cls_token"][0, 0],
        "positional_embedding": t["pos_embed"][0],
        "ln_pre.weight": t["norm.weight"] + 1,
        "ln_pre.bias": t["norm.bias"],
        "ln_post.weight": t["norm.weight"],
        "ln_post.bias": t["norm.bias"],
        "proj": rng.normal(size=(width, out)).astype(np.float32),
    }
    names = {"norm1": "ln_1", "norm2": "ln_2", "attn.proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc"}
    names["mlp.fc2"] = "mlp.c_proj"
    for i in range(depth):
        for a, b in names.items():
            for leaf in ("weight", "bias"):
                sd[f"transformer.resblocks.{i}.{b}.{leaf}"] = t[f"blocks.{i}.{a}.{leaf}"]
        sd[f"transformer.resblocks.{i}.attn.in_proj_weight"] = t[f"blocks.{i}.attn.qkv.weight"]
        sd[f"transformer.resblocks.{i}.attn.in_proj_bias"] = t[f"blocks.{i}.attn.qkv.bias"]
    return {**{"visual." + k: v for k, v in sd.items()}, "token_embedding.weight": np.zeros(3)}


def test_timm_keys_land_transposed_and_head_is_dropped(tmp_path):
    sd = _timm_state_dict(np.random.default_rng(0))
    write_safetensors(tmp_path / "vit.safetensors", {"module." + k: v for k, v in sd.items()})
    module, variables = vit_import.load_backbone(
        tmp_path / "vit.safetensors", "vit_b16", (64, 64), **SMALL
    )
    p = jax.tree.map(np.asarray, variables["params"])
    np.testing.assert_array_equal(
        p["blocks_1"]["attn"]["qkv"]["kernel"], sd["blocks.1.attn.qkv.weight"].T
    )
    np.testing.assert_array_equal(
        p["patch_embed"]["kernel"], sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(p["cls_token"], sd["cls_token"][0, 0])
    np.testing.assert_array_equal(p["pos_embed"], sd["pos_embed"][0])  # 4x4 grid: no resize
    np.testing.assert_array_equal(p["norm"]["scale"], sd["norm.weight"])


def test_clip_layout_under_visual_prefix_with_projection(tmp_path):
    sd = _clip_state_dict(np.random.default_rng(1))
    write_safetensors(tmp_path / "clip.safetensors", sd)
    path = tmp_path / "clip.safetensors"
    _, variables = vit_import.load_backbone(path, "clip_vit_b16", (64, 64), proj_dim=8, **SMALL)
    p = jax.tree.map(np.asarray, variables["params"])
    np.testing.assert_array_equal(p["proj"]["kernel"], sd["visual.proj"])  # x @ proj: no transpose
    np.testing.assert_array_equal(p["norm_pre"]["scale"], sd["visual.ln_pre.weight"])
    np.testing.assert_array_equal(
        p["blocks_0"]["mlp"]["fc2"]["kernel"],
        sd["visual.transformer.resblocks.0.mlp.c_proj.weight"].T,
    )
    _, no_proj = vit_import.load_backbone(path, "clip_vit_b16", (64, 64), **SMALL)
    assert "proj" not in no_proj["params"]  # dropped without complaint


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
@pytest.mark.parametrize("src, dst", [((14, 14), (16, 8)), ((14, 14), (21, 10)), ((4, 4), (3, 9))])
def test_interpolation_matches_torch(method, src, dst):
    """bicubic = torch bicubic antialias=True (timm / open_clip); bilinear = no antialias."""
    torch = pytest.importorskip("torch", reason="torch is the reference of the interpolation")
    rng = np.random.default_rng(2)
    pos = rng.normal(size=(1 + src[0] * src[1], 5)).astype(np.float32)
    grid = torch.from_numpy(pos[1:].reshape(1, *src, 5)).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(
        grid, size=dst, mode=method, antialias=method == "bicubic", align_corners=False
    )
    ref = ref.permute(0, 2, 3, 1).reshape(-1, 5).numpy()
    out = vit_import.resize_pos_embed(pos, src, dst, method)
    np.testing.assert_array_equal(out[0], pos[0])  # the CLS row is kept
    np.testing.assert_allclose(out[1:], ref, rtol=1e-5, atol=1e-5)
    same = vit_import.resize_pos_embed(pos, src, src, method)
    np.testing.assert_allclose(same, pos, atol=1e-6)  # same grid: identity


def test_pth_through_torch_equals_safetensors(tmp_path):
    torch = pytest.importorskip("torch", reason="reading .pth needs torch")
    sd = _timm_state_dict(np.random.default_rng(3))
    write_safetensors(tmp_path / "a.safetensors", sd)
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in sd.items()}}, tmp_path / "a.pth")
    a = vit_import.load_backbone(tmp_path / "a.safetensors", "vit_b16", (64, 32), **SMALL)[1]
    b = vit_import.load_backbone(tmp_path / "a.pth", "vit_b16", (64, 32), **SMALL)[1]
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert a["params"]["pos_embed"].shape == (1 + 4 * 2, 16)  # 4x4 -> 4x2


def test_one_error_names_every_mismatched_key(tmp_path):
    sd = _timm_state_dict(np.random.default_rng(4))
    del sd["blocks.1.mlp.fc1.bias"]
    sd["blocks.0.attn.proj.weight"] = np.zeros((16, 15), np.float32)
    sd["blocks.0.ls1.gamma"] = np.ones(16, np.float32)  # a LayerScale ViT
    sd["norm.bias"] = np.zeros(16, np.int64)
    write_safetensors(tmp_path / "bad.safetensors", sd)
    with pytest.raises(ValueError) as info:
        vit_import.load_backbone(tmp_path / "bad.safetensors", "vit_b16", (64, 32), **SMALL)
    msg = str(info.value)
    assert "4 differences" in msg and "bad.safetensors" in msg
    assert "missing    blocks.1.mlp.fc1.bias [64]" in msg
    assert "shape      blocks.0.attn.proj.weight: file [16, 15], model [16, 16]" in msg
    assert "unexpected blocks.0.ls1.gamma [16]" in msg
    assert "dtype      norm.bias: file int64" in msg
    clip = _clip_state_dict(np.random.default_rng(5))
    write_safetensors(tmp_path / "clip.safetensors", clip)
    with pytest.raises(ValueError, match="use arch clip_vit_b16") as info:
        vit_import.load_backbone(tmp_path / "clip.safetensors", "vit_b16", (64, 32), **SMALL)
    assert "missing    visual.conv1.bias" in str(info.value)  # vit_b16 has a patch bias
    assert "unexpected visual.ln_pre.weight" in str(info.value)


def test_non_square_file_grid_needs_src_grid(tmp_path):
    sd = _timm_state_dict(np.random.default_rng(6), n_grid=8)  # a 4x2 grid, as a 64x32 model
    write_safetensors(tmp_path / "rect.safetensors", sd)
    with pytest.raises(ValueError, match="8 grid rows are not a square grid"):
        vit_import.load_backbone(tmp_path / "rect.safetensors", "vit_b16", (32, 32), **SMALL)
    _, v = vit_import.load_backbone(
        tmp_path / "rect.safetensors", "vit_b16", (64, 32), src_grid=(4, 2), **SMALL
    )
    np.testing.assert_array_equal(v["params"]["pos_embed"], sd["pos_embed"][0])
    _, v = vit_import.load_backbone(
        tmp_path / "rect.safetensors", "vit_b16", (32, 64), src_grid=(4, 2), **SMALL
    )
    want = vit_import.resize_pos_embed(sd["pos_embed"][0], (4, 2), (2, 4))
    np.testing.assert_allclose(v["params"]["pos_embed"], want, rtol=1e-6)


def test_no_vit_in_file_and_directories_are_refused(tmp_path):
    write_safetensors(tmp_path / "r.safetensors", {"conv1.weight": np.zeros((4, 3, 7, 7), "f4")})
    with pytest.raises(ValueError, match="no ViT found"):
        vit_import.load_backbone(tmp_path / "r.safetensors", "vit_b16", (64, 32), **SMALL)
    with pytest.raises(ValueError, match="is a directory"):
        module = make_vit("vit_b16", **SMALL)
        x = jnp.zeros((1, 64, 32, 3))
        shapes = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
        vit_import.load_params(tmp_path, shapes, (4, 2))
