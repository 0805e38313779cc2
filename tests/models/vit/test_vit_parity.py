"""Parity with the reference packages' own modules (random weights, float32): timm's
VisionTransformer and open_clip's visual tower, imported into reid_jax's ViT, agree to 1e-4
relative on the CLS feature and the patch tokens. ViT-B/16 at 256x128 (its 14x14 position grid
resized by the packages' own resample functions on their side, by vit_import on ours); 2-block
ViT-B/16s at 224x224 (the native grid). The references come from the ``refs`` fixture
(conftest.py: why a torchvision stand-in may be needed to import them). ``pytest -s`` prints the
measured differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.models import vit_import
from reid_jax.models.pretrained import write_safetensors

RTOL = 1e-4


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _perturb(torch, module) -> None:
    """Random weights everywhere (also LayerNorm scales / biases, which start at 1 / 0)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.02)


def _ours(state_dict, arch: str, size: tuple[int, int], x: np.ndarray, **vit_kwargs):
    """(CLS, patch tokens [N, hw, C]) of reid_jax's ViT with ``state_dict`` imported."""
    module = vit_import.make_vit(arch, **vit_kwargs)
    params = vit_import.convert_state_dict(
        state_dict,
        vit_import.abstract_params(module, size),
        vit_import.model_grid(module, size),
    )
    cls, patches = jax.jit(module.apply)({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)))
    return np.asarray(cls), np.asarray(patches).reshape(x.shape[0], -1, patches.shape[-1])


def _numpy(state_dict) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in state_dict.items()}


@pytest.mark.parametrize(
    "name, arch, size, depth",
    [
        ("vit_base_patch16_224", "vit_b16", (256, 128), 12),
        ("vit_base_patch16_224", "vit_b16", (224, 224), 2),
        # timm's CLIP layout (norm_pre, bias-free patch conv, eps 1e-5, QuickGELU)
        ("vit_base_patch16_clip_quickgelu_224", "clip_vit_b16", (224, 224), 2),
    ],
)
def test_timm_vit_b16(refs, name, arch, size, depth):
    timm, _ = refs
    import torch
    from timm.layers import resample_abs_pos_embed

    src = timm.create_model(name, pretrained=False, depth=depth).eval()
    _perturb(torch, src)
    ref = timm.create_model(name, pretrained=False, depth=depth, img_size=size)
    sd = dict(src.state_dict())
    sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], [s // 16 for s in size])
    ref.load_state_dict(sd)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref.eval().forward_features(x).numpy()
    cls, patches = _ours(_numpy(src.state_dict()), arch, size, x.numpy(), depth=depth)
    print(f"\nparity timm {name} {depth} blocks {size}: CLS {_rel(cls, want[:, 0]):.1e}, "
          f"patches {_rel(patches, want[:, 1:]):.1e}")  # fmt: skip
    assert _rel(cls, want[:, 0]) < RTOL
    assert _rel(patches, want[:, 1:]) < RTOL


@pytest.mark.parametrize(
    "name, size, depth, act",
    [("ViT-B-16-quickgelu", (256, 128), 12, None), ("ViT-B-16", (224, 224), 2, "gelu")],
)
def test_open_clip_vit_b16(refs, tmp_path, name, size, depth, act):
    """OpenAI-style QuickGELU tower (arch defaults) at 256x128, and open_clip's GELU ViT-B-16 at
    224 read from a .safetensors file (visual.* keys beside a text key), with the projection."""
    _, open_clip = refs
    import types

    import torch
    from open_clip.model import _build_vision_tower, resize_pos_embed

    cfg = open_clip.get_model_config(name)

    def tower(image_size):  # open_clip's visual tower alone (create_model adds the text tower)
        vision = {**cfg["vision_cfg"], "layers": depth, "image_size": image_size}
        return _build_vision_tower(
            cfg["embed_dim"], vision, quick_gelu=cfg.get("quick_gelu", False)
        )

    src = tower(224)
    _perturb(torch, src)
    ref = tower(size)
    sd = {"visual." + k: v for k, v in src.state_dict().items()}
    resize_pos_embed(sd, types.SimpleNamespace(visual=ref))  # its own resize (bicubic, antialias)
    ref.load_state_dict({k[len("visual.") :]: v for k, v in sd.items()})
    ref.eval()
    ref.output_tokens = True
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        pooled, tokens = ref(x)  # pooled = ln_post(CLS) @ proj; tokens = ln_post(patches)
        cls_ref = ref.ln_post(ref.transformer(ref._embeds(x)))[:, 0]
    state = {"visual." + k: v for k, v in _numpy(src.state_dict()).items()}
    if depth == 2:
        state["token_embedding.weight"] = np.zeros((3, 512), np.float32)  # a text tower key
        write_safetensors(tmp_path / "clip.safetensors", state)
        state = vit_import.pretrained.read_state_dict(tmp_path / "clip.safetensors")
    kwargs = dict(depth=depth, act=act)
    cls, patches = _ours(state, "clip_vit_b16", size, x.numpy(), **kwargs)
    print(f"\nparity open_clip {name} {depth} blocks {size}: CLS {_rel(cls, cls_ref.numpy()):.1e}, "
          f"patches {_rel(patches, tokens.numpy()):.1e}")  # fmt: skip
    assert _rel(cls, cls_ref.numpy()) < RTOL
    assert _rel(patches, tokens.numpy()) < RTOL
    if depth == 2:  # one more compile: only on the small tower
        projected, _ = _ours(state, "clip_vit_b16", size, x.numpy(), proj_dim=512, **kwargs)
        assert _rel(projected, pooled.numpy()) < RTOL
