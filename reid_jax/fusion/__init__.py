"""Temporal fusion registry: modules mapping per-frame maps [B,T,h,w,C] to a clip feature [B,D].

Contract for every entry: ``module(maps, train) -> (fused [B,D] float32, aux)`` where
``aux["weights"]`` is the [B,T] temporal weighting that was used (uniform 1/T for "mean").
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn

from reid_jax.fusion.pooling import TemporalAvgPool, TemporalMaxPool

FUSIONS: dict[str, Callable[..., nn.Module]] = {
    "mean": TemporalAvgPool,
    "max": TemporalMaxPool,
}


def make_fusion(fusion: str, /, **kwargs: Any) -> nn.Module:
    """Instantiate the fusion registered as ``fusion``; kwargs (incl. Flax ``name``) go to it."""
    if fusion not in FUSIONS:
        raise ValueError(f"Unknown fusion {fusion!r}; expected one of {sorted(FUSIONS)}")
    return FUSIONS[fusion](**kwargs)


__all__ = ["FUSIONS", "TemporalAvgPool", "TemporalMaxPool", "make_fusion"]
