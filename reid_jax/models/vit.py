"""Vision transformer backbones (ViT, Dosovitskiy et al. ICLR 2021) in Flax Linen: patch embedding,
CLS token, learned position embeddings, pre-LN blocks; no dropout, no classifier.

``ViT(x [N,H,W,3], train) -> (cls [N,C], patches [N,h,w,C])``: the CLS token and the patch-token
map after the final LayerNorm (and the optional CLIP projection), in ``dtype``, so that vector-level
fusions can take the CLS vectors and map-level ones the patch maps. The grid is
``h = (H - patch) // stride + 1`` (``stride`` < ``patch`` gives TransReID / CLIP-ReID overlapping
patches); ``pos_embed`` holds 1 + h * w rows, sized by the input at init: weights for another
grid are interpolated on import (reid_jax.models.vit_import).

Variable names (the import maps timm / open_clip keys onto them): ``patch_embed`` (conv),
``cls_token`` [C], ``pos_embed`` [1+hw, C], ``norm_pre`` (CLIP's ln_pre, ``pre_norm``),
``blocks_{i}/{norm1, attn/{qkv, proj}, norm2, mlp/{fc1, fc2}}``, ``norm``, ``proj`` (CLIP's
visual projection, ``proj_dim`` > 0). Params are float32; ``dtype`` is the compute dtype: LayerNorm
statistics and the attention softmax run in float32 under bfloat16.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# timm's ViT init: truncated normal 0.02 for weights and position embeddings, zero biases.
_DENSE_INIT = nn.initializers.truncated_normal(0.02)


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's GELU approximation x * sigmoid(1.702 x) (its ViT-B/16 weights expect it)."""
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(nn.gelu, approximate=False),  # torch nn.GELU() (timm, open_clip)
    "quick_gelu": quick_gelu,
}


def _dense(features: int, dtype: Any, name: str, use_bias: bool = True) -> nn.Dense:
    """Dense layer with float32 params, compute in ``dtype``."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=_DENSE_INIT,
        name=name,
    )


def _norm(eps: float, dtype: Any, name: str) -> nn.LayerNorm:
    """LayerNorm with float32 params (Flax reduces in float32 under bfloat16)."""
    return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=jnp.float32, name=name)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (timm's ``qkv`` = torch
    MultiheadAttention's ``in_proj``: rows q, k, v, each split into heads in order)."""

    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[N, L, C] tokens -> [N, L, C]."""
        n, length, c = x.shape
        if c % self.heads:
            raise ValueError(f"ViT width {c} is not divisible by heads={self.heads}")
        qkv = _dense(3 * c, self.dtype, "qkv")(x).reshape(n, length, 3, self.heads, c // self.heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q = q * jnp.asarray((c // self.heads) ** -0.5, q.dtype)
        logits = jnp.einsum("nqhd,nkhd->nhqk", q, k, preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("nhqk,nkhd->nqhd", weights, v).reshape(n, length, c)
        return _dense(c, self.dtype, "proj")(out)


class Mlp(nn.Module):
    """fc1 -> activation -> fc2."""

    hidden: int
    act: str = "gelu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[..., C] -> [..., C]."""
        y = ACTIVATIONS[self.act](_dense(self.hidden, self.dtype, "fc1")(x))
        return _dense(x.shape[-1], self.dtype, "fc2")(y)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    heads: int
    mlp_ratio: float = 4.0
    act: str = "gelu"
    ln_eps: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[N, L, C] -> [N, L, C]."""
        x = x + Attention(self.heads, self.dtype, name="attn")(
            _norm(self.ln_eps, self.dtype, "norm1")(x)
        )
        y = _norm(self.ln_eps, self.dtype, "norm2")(x)
        hidden = int(x.shape[-1] * self.mlp_ratio)
        return x + Mlp(hidden, self.act, self.dtype, name="mlp")(y)


def grid_size(height: int, width: int, patch: int, stride: int) -> tuple[int, int]:
    """Patch grid (h, w) of a ``height`` x ``width`` input: (H - patch) // stride + 1 per axis."""
    if height < patch or width < patch:
        raise ValueError(f"input {height}x{width} is smaller than the {patch}x{patch} patch")
    return (height - patch) // stride + 1, (width - patch) // stride + 1


class ViT(nn.Module):
    """ViT trunk: [N,H,W,3] normalised images -> (CLS [N,C'], patch tokens [N,h,w,C']).

    ``width`` C, ``depth`` blocks of ``heads`` heads, ``patch`` size and ``stride`` (0 = patch);
    ``pre_norm`` (LayerNorm before the blocks, CLIP), ``patch_bias`` (timm), ``ln_eps``, ``act``
    ("gelu" | "quick_gelu") follow the weights' source; ``proj_dim`` > 0 applies CLIP's bias-free
    visual projection to every output token (C' = proj_dim), else C' = C. ``train`` is unused (no
    dropout): it keeps the backbone call signature of the ResNets.
    """

    width: int = 768
    depth: int = 12
    heads: int = 12
    patch: int = 16
    stride: int = 0
    mlp_ratio: float = 4.0
    pre_norm: bool = False
    patch_bias: bool = True
    ln_eps: float = 1e-6
    act: str = "gelu"
    proj_dim: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """Return (CLS feature, patch-token map) in ``dtype``."""
        del train
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"ViT expects images [N,H,W,3]; got shape {x.shape}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"ViT act={self.act!r}; expected one of {sorted(ACTIVATIONS)}")
        stride = self.stride or self.patch
        if not 0 < stride <= self.patch:
            raise ValueError(f"ViT stride={self.stride}; expected 0 (= patch) or 1..{self.patch}")
        gh, gw = grid_size(x.shape[1], x.shape[2], self.patch, stride)
        x = nn.Conv(
            self.width,
            (self.patch, self.patch),
            strides=(stride, stride),
            padding="VALID",
            use_bias=self.patch_bias,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.lecun_normal(),
            name="patch_embed",
        )(jnp.asarray(x, self.dtype))
        n = x.shape[0]
        cls = self.param("cls_token", nn.initializers.normal(1e-6), (self.width,), jnp.float32)
        pos = self.param("pos_embed", _DENSE_INIT, (1 + gh * gw, self.width), jnp.float32)
        tokens = jnp.concatenate(
            [
                jnp.broadcast_to(cls.astype(self.dtype), (n, 1, self.width)),
                x.reshape(n, gh * gw, -1),
            ],
            axis=1,
        )
        tokens = tokens + pos.astype(self.dtype)
        if self.pre_norm:
            tokens = _norm(self.ln_eps, self.dtype, "norm_pre")(tokens)
        for i in range(self.depth):
            tokens = Block(
                self.heads, self.mlp_ratio, self.act, self.ln_eps, self.dtype, name=f"blocks_{i}"
            )(tokens)
        tokens = _norm(self.ln_eps, self.dtype, "norm")(tokens)
        if self.proj_dim:
            tokens = _dense(self.proj_dim, self.dtype, "proj", use_bias=False)(tokens)
        return tokens[:, 0], tokens[:, 1:].reshape(n, gh, gw, tokens.shape[-1])


# The layouts of the weights they import (reid_jax.models.vit_import): timm ``vit_*_patch16_*``
# (exact GELU, LayerNorm eps 1e-6, patch bias) and OpenAI CLIP's ViT-B/16 visual tower (QuickGELU,
# ln_pre, eps 1e-5, bias-free patch conv). open_clip's "ViT-B-16" (LAION weights) is the CLIP
# layout with exact GELU: arch "clip_vit_b16" with act "gelu".
VITS: dict[str, Callable[..., ViT]] = {
    "vit_b16": functools.partial(ViT, width=768, depth=12, heads=12, patch=16),
    "vit_s16": functools.partial(ViT, width=384, depth=12, heads=6, patch=16),
    "clip_vit_b16": functools.partial(
        ViT, width=768, depth=12, heads=12, patch=16, pre_norm=True, patch_bias=False,
        ln_eps=1e-5, act="quick_gelu",
    ),
}  # fmt: skip


def make_vit(arch: str, **kwargs: Any) -> ViT:
    """Build a registered ViT by name; kwargs are ViT fields, None values keep the arch's own."""
    if arch not in VITS:
        raise ValueError(f"Unknown ViT arch={arch!r}; expected one of {sorted(VITS)}")
    return VITS[arch](**{k: v for k, v in kwargs.items() if v is not None})
