"""What a trained model gives at test time, shared by the evaluators, the inference tools and the
training step: ``embed_step`` (a batch of uint8 clips -> features and per-frame fusion weights)
and ``weight_stats`` (summaries of the fusion weights). Below train/ and evaluation/, so both use
it without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax.data.transforms import normalize


def weight_stats(
    weights: jax.Array | Sequence[jax.Array], frame_weights: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Mean over clips of the min / max temporal weight and of the weight entropy.

    Pairwise fusions give one [B, pairs, 2] array per level: stats per level go to
    ``weights/level<i>/...``; the headline ``weights/...`` use ``frame_weights`` [B, T] if given,
    else the first level.
    """
    if isinstance(weights, (list, tuple)):
        out = {}
        for i, level in enumerate(weights):
            for key, value in weight_stats(level).items():
                out[key.replace("weights/", f"weights/level{i}/", 1)] = value
        if frame_weights is None and weights:
            frame_weights = weights[0]
        if frame_weights is not None:
            out.update(weight_stats(frame_weights))
        return out
    w = weights.astype(jnp.float32)
    entropy = -jnp.sum(w * jnp.log(jnp.clip(w, 1e-12)), axis=-1)
    return {
        "weights/min": jnp.mean(jnp.min(w, axis=-1)),
        "weights/max": jnp.mean(jnp.max(w, axis=-1)),
        "weights/entropy": jnp.mean(entropy),
    }


def embed_step(
    state: Any, batch: dict[str, jax.Array], *, model: nn.Module, feature: str
) -> dict[str, jax.Array]:
    """Inference features of a batch of clips: ``feature`` is ``bn`` (after BNNeck) or ``raw``."""
    clips = normalize(batch["clip"], xp=jnp)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    _, aux = model.apply(variables, clips, train=False)
    key = {"bn": "bn_features", "raw": "features"}[feature]
    out = {"features": aux[key].astype(jnp.float32)}
    if "weights" in aux:  # per-frame [B,T]: pairwise fusions give it as "frame_weights"
        out["weights"] = aux.get("frame_weights", aux["weights"]).astype(jnp.float32)
    return out
