"""Pure step functions: jitted once by the loop (with donation and shardings), never re-traced.

Clips arrive as uint8 [B, T, H, W, 3] and are normalised here, on the device: the host ships
4x fewer bytes and the normalisation fuses into the first convolution.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from reid_jax.data.transforms import normalize
from reid_jax.models.embed import weight_stats
from reid_jax.train import losses
from reid_jax.train.state import TrainState

TRIPLET_FEATURES = {"raw": "features", "bn": "bn_features"}  # config value -> model aux key


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The loss settings as plain hashable values (``config.loss``)."""

    label_smoothing: float = 0.1
    ce_weight: float = 1.0
    triplet_weight: float = 1.0
    triplet_margin: float = 0.3
    triplet_distance: str = "euclidean"
    triplet_soft: bool = False
    # "raw": the fused feature before the BNNeck (BoT, the default); "bn": after it (AP3D's
    # train.py feeds the BN feature ``f`` to its TripletLoss).
    triplet_feature: str = "raw"

    @classmethod
    def from_config(cls, cfg: Any) -> LossConfig:
        if cfg.triplet_feature not in TRIPLET_FEATURES:
            raise ValueError(
                f"config.loss.triplet_feature={cfg.triplet_feature!r}: expected one of "
                f"{sorted(TRIPLET_FEATURES)}"
            )
        return cls(**{f.name: cfg[f.name] for f in dataclasses.fields(cls)})


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    loss_cfg: LossConfig,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step on a global batch; returns the new state and scalar metrics."""
    clips = normalize(batch["clip"], xp=jnp)
    labels = batch["label"]

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        (logits, aux), updates = model.apply(variables, clips, train=True, mutable=["batch_stats"])
        ce = losses.cross_entropy_label_smoothing(logits, labels, loss_cfg.label_smoothing)
        tri, tri_aux = losses.batch_hard_triplet(
            aux[TRIPLET_FEATURES[loss_cfg.triplet_feature]],
            labels,
            margin=loss_cfg.triplet_margin,
            distance=loss_cfg.triplet_distance,
            soft=loss_cfg.triplet_soft,
        )
        loss = loss_cfg.ce_weight * ce + loss_cfg.triplet_weight * tri
        metrics = {
            "loss": loss,
            "loss/ce": ce,
            "loss/triplet": tri,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
            "triplet/frac_active": tri_aux["frac_active"],
        }
        if "weights" in aux:
            metrics.update(weight_stats(aux["weights"], aux.get("frame_weights")))
        return loss, (updates["batch_stats"], metrics)

    grads, (batch_stats, metrics) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    # The non-finite guard reads loss, grad_norm and this (the loss can stay finite while the
    # rest is not: BatchNorm squashes overflowing activations in the forward pass, not in the
    # backward). A per-leaf test, not a norm: a norm of huge finite values overflows to inf.
    finite = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]
    metrics["params_finite"] = jnp.all(jnp.stack(finite)).astype(jnp.float32)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    return new_state, metrics
