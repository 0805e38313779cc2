"""Temporal fusion registry: modules mapping per-frame maps [B,T,h,w,C] to a clip feature [B,D].

Contract for every entry: ``module(maps, train) -> (fused [B,D] float32, aux)``. ``aux["weights"]``
is the temporal weighting used: [B,T] for flat methods (uniform 1/T for "mean"), a tuple with one
[B, pairs, 2] array per level for pairwise methods, which then also give ``aux["frame_weights"]``
[B,T] (each frame's effective weight). Each method is also a pure ``jnp`` function
(``mean_pool``, ``max_pool``, ``temporal_attention``, ``temporal_conv``, ``lstm``,
``cosine_center``, ``templet``); the modules only hold the parameters. See docs/fusion.md.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from reid_jax.fusion.attention import TemporalAttentionFusion, temporal_attention
from reid_jax.fusion.conv import TemporalConvFusion, temporal_conv
from reid_jax.fusion.cosine import CosineCenterFusion, cosine_center
from reid_jax.fusion.pooling import TemporalAvgPool, TemporalMaxPool, max_pool, mean_pool
from reid_jax.fusion.recurrent import LSTMFusion, lstm
from reid_jax.fusion.templet import TempletFusion, templet
from reid_jax.fusion.two_branch import TwoBranchFusion

FUSIONS: dict[str, Callable[..., nn.Module]] = {
    "mean": TemporalAvgPool,
    "max": TemporalMaxPool,
    "temporal_attention": TemporalAttentionFusion,
    "temporal_conv": TemporalConvFusion,
    "lstm": LSTMFusion,
    "cosine_center": CosineCenterFusion,
    "templet": TempletFusion,
    "two_branch": TwoBranchFusion,
}


def fusion_options(fusion: str) -> list[str]:
    """The option names (module fields) the fusion registered as ``fusion`` accepts."""
    if fusion not in FUSIONS:
        raise ValueError(f"Unknown fusion {fusion!r}; expected one of {sorted(FUSIONS)}")
    fields = dataclasses.fields(FUSIONS[fusion])
    return sorted(f.name for f in fields if f.name not in ("parent", "name"))


def make_fusion(fusion: str, /, **kwargs: Any) -> nn.Module:
    """Instantiate the fusion registered as ``fusion``; kwargs (incl. Flax ``name``) go to it.

    Options whose value is None (unset ``config.model.fusion_kwargs`` placeholders) are dropped,
    so the module's default applies; an option the fusion does not have raises ValueError.
    """
    options = fusion_options(fusion)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    unknown = sorted(set(kwargs) - set(options) - {"name", "parent"})
    if unknown:
        raise ValueError(
            f"config.model.fusion_kwargs sets {unknown}, which fusion {fusion!r} does not take; "
            f"its options are {options}"
        )
    return FUSIONS[fusion](**kwargs)


__all__ = [
    "FUSIONS",
    "CosineCenterFusion",
    "LSTMFusion",
    "TemporalAttentionFusion",
    "TemporalAvgPool",
    "TemporalConvFusion",
    "TemporalMaxPool",
    "TempletFusion",
    "TwoBranchFusion",
    "cosine_center",
    "fusion_options",
    "lstm",
    "make_fusion",
    "max_pool",
    "mean_pool",
    "temporal_attention",
    "temporal_conv",
    "templet",
]
