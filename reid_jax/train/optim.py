"""Learning-rate schedules and optimisers; epochs become steps through ``sampling.to_steps``.

Keys of ``config.optim`` (an ml_collections.ConfigDict); defaults in brackets:

* ``name``: "adam" (Adam with L2 weight decay added to the gradient, as
  torch.optim.Adam(weight_decay=...)) or "adamw" (decoupled decay, p -= lr * wd * p). Required.
* ``lr``: peak learning rate, e.g. 3.5e-4. Required.
* ``weight_decay`` [0.0], ``b1`` [0.9], ``b2`` [0.999], ``eps`` [1e-8].
* ``warmup_epochs`` [0]: linear warmup multiplier from ``warmup_factor`` [0.01] to 1.
* ``schedule``: required, one of
    - "step": multiply by ``decay_factor`` [0.1] at each epoch in ``decay_epochs`` (e.g.
      [40, 70]; absolute epochs counted from the start of training);
    - "cosine": cosine from lr at the end of warmup to ``lr * final_factor`` [0.0] at the last
      step: the ``total_steps`` argument if given, else ``epochs * steps_per_epoch``;
    - "constant".
* ``grad_clip_norm`` [0.0]: clip raw gradients to this global norm before anything else; 0 = off.
* ``layer_decay`` [1.0]: layer-wise lr decay for ViT backbones (BEiT, grouped as timm's
  ``param_groups_layer_decay`` groups its ViTs): of L blocks, ``backbone/blocks_i`` gets
  lr * d ** (L - i), the embeddings (patch_embed, cls_token, pos_embed, norm_pre)
  lr * d ** (L + 1), the final norm lr * d (with the last block), everything after the backbone
  (CLIP projection, fusion, BNNeck, classifier) lr. 1.0 = off.

The schedule is lr(step) = warmup(step) * main(step) (as WarmupMultiStepLR of the re-ID "strong
baseline", but per step rather than per epoch); call it with the step to log the current lr.
"""

import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from reid_jax.data.sampling import to_steps

OPTIMIZERS = ("adam", "adamw")
_MainSchedule = Callable[[jnp.ndarray], jnp.ndarray]
_MainFactory = Callable[[ml_collections.ConfigDict, float, int, int | None], _MainSchedule]


def _required(config: ml_collections.ConfigDict, key: str) -> Any:
    """Read a required config key or raise a ValueError naming it."""
    if key not in config:
        raise ValueError(f"config.optim is missing required key {key!r}")
    return config[key]


def _step_main(
    config: ml_collections.ConfigDict, lr: float, spe: int, total_steps: int | None
) -> _MainSchedule:
    """Piecewise-constant decay at absolute epoch milestones."""
    del total_steps
    decay_epochs = list(_required(config, "decay_epochs"))
    if any(e <= 0 for e in decay_epochs) or decay_epochs != sorted(decay_epochs):
        raise ValueError(
            f"config.optim.decay_epochs={decay_epochs}; expected increasing positive epochs"
        )
    boundaries = jnp.asarray([to_steps(e, spe) for e in decay_epochs], jnp.float32)
    factor = float(config.decay_factor)

    def main(step: jnp.ndarray) -> jnp.ndarray:
        passed = jnp.sum(step >= boundaries).astype(jnp.float32)
        return lr * factor**passed

    return main


def _cosine_main(
    config: ml_collections.ConfigDict, lr: float, spe: int, total_steps: int | None
) -> _MainSchedule:
    """Cosine decay from lr at the end of warmup to lr * final_factor at the last step."""
    if total_steps is None:
        if "epochs" not in config:
            raise ValueError(
                "schedule 'cosine' needs its length: pass total_steps= or set config.optim.epochs"
            )
        total_steps = to_steps(config.epochs, spe)
    start, end = to_steps(config.warmup_epochs, spe), int(total_steps)
    if end <= start:
        raise ValueError(
            f"cosine schedule: total steps {end} must exceed the {start} warmup steps "
            "(config.optim.epochs / total_steps vs warmup_epochs)"
        )
    final = lr * float(config.final_factor)

    def main(step: jnp.ndarray) -> jnp.ndarray:
        progress = jnp.clip((step - start) / (end - start), 0.0, 1.0)
        return final + (lr - final) * 0.5 * (1.0 + jnp.cos(math.pi * progress))

    return main


def _constant_main(
    config: ml_collections.ConfigDict, lr: float, spe: int, total_steps: int | None
) -> _MainSchedule:
    """A constant learning rate after warmup."""
    del config, spe, total_steps
    return lambda step: jnp.full_like(step, lr)


SCHEDULES: dict[str, _MainFactory] = {
    "step": _step_main,
    "cosine": _cosine_main,
    "constant": _constant_main,
}


def make_schedule(
    config_optim: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int | None = None
) -> optax.Schedule:
    """Build lr(step) = warmup(step) * main(step) from epoch-based config (see module doc).

    ``total_steps`` (the run's length) is only used by "cosine".
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch={steps_per_epoch}; expected a positive integer")
    lr = float(_required(config_optim, "lr"))
    if lr <= 0:
        raise ValueError(f"config.optim.lr={lr}; expected a positive learning rate")
    name = _required(config_optim, "schedule")
    if name not in SCHEDULES:
        raise ValueError(f"config.optim.schedule={name!r}; expected one of {sorted(SCHEDULES)}")
    main = SCHEDULES[name](config_optim, lr, steps_per_epoch, total_steps)
    warmup_steps = to_steps(config_optim.warmup_epochs, steps_per_epoch)
    warmup_factor = float(config_optim.warmup_factor)

    def schedule(step: jnp.ndarray) -> jnp.ndarray:
        step = jnp.asarray(step, jnp.float32)
        if warmup_steps > 0:
            ramp = warmup_factor + (1.0 - warmup_factor) * step / warmup_steps
            mult = jnp.where(step < warmup_steps, ramp, 1.0)
        else:
            mult = 1.0
        return mult * main(step)

    return schedule


def current_lr(schedule: optax.Schedule, step: int) -> float:
    """The learning rate the schedule gives at ``step``, as a Python float for logging."""
    return float(schedule(step))


def make_optimizer(
    config_optim: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int | None = None
) -> optax.GradientTransformation:
    """Adam (L2 in the gradient) or AdamW (decoupled decay) with clipping and the schedule."""
    name = _required(config_optim, "name")
    if name not in OPTIMIZERS:
        raise ValueError(f"config.optim.name={name!r}; expected one of {OPTIMIZERS}")
    schedule = make_schedule(config_optim, steps_per_epoch, total_steps)
    weight_decay = float(config_optim.weight_decay)
    clip = float(config_optim.grad_clip_norm)
    adam = optax.scale_by_adam(
        b1=float(config_optim.b1),
        b2=float(config_optim.b2),
        eps=float(config_optim.eps),
    )
    chain = [optax.clip_by_global_norm(clip)] if clip > 0 else []
    if name == "adam":
        chain += [optax.add_decayed_weights(weight_decay), adam]
    else:
        chain += [adam, optax.add_decayed_weights(weight_decay)]
    chain.append(optax.scale_by_learning_rate(schedule))
    layer_decay = float(config_optim.layer_decay)
    if layer_decay != 1.0:
        chain.append(scale_by_layer_decay(layer_decay))
    return optax.chain(*chain)


_EMBEDDINGS = ("patch_embed", "cls_token", "pos_embed", "norm_pre")
_BLOCK = re.compile(r"^blocks_(\d+)$")


def _key_names(path: tuple) -> list[str]:
    """Plain names of a pytree key path (dict keys / attribute names)."""
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def layer_decay_scales(params: Any, decay: float) -> Any:
    """The lr multiplier of every parameter (a tree like ``params``), as in the module doc."""
    names = [_key_names(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    blocks = {
        int(m[1]) for n in names if len(n) > 1 and n[0] == "backbone" and (m := _BLOCK.match(n[1]))
    }
    if not blocks:
        raise ValueError(
            f"config.optim.layer_decay={decay} needs a ViT backbone (params backbone/blocks_*); "
            "this model has none: set layer_decay=1.0"
        )
    depth = max(blocks) + 1

    def scale(path: tuple, leaf: Any) -> float:
        del leaf
        n = _key_names(path)
        layer = depth + 1
        if len(n) > 1 and n[0] == "backbone":
            if m := _BLOCK.match(n[1]):
                layer = int(m[1]) + 1
            elif n[1] in _EMBEDDINGS:
                layer = 0
            elif n[1] == "norm":
                layer = depth
        return decay ** (depth + 1 - layer)

    return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_layer_decay(decay: float) -> optax.GradientTransformation:
    """Multiply each update by its parameter's ``layer_decay_scales`` factor (static per leaf)."""
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"config.optim.layer_decay={decay}; expected a value in (0, 1]")

    def init(params: Any) -> optax.EmptyState:
        layer_decay_scales(params, decay)  # fail at state creation, not at the first step
        return optax.EmptyState()

    def update(updates: Any, state: optax.EmptyState, params: Any = None) -> tuple[Any, Any]:
        del params
        scales = layer_decay_scales(updates, decay)
        return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

    return optax.GradientTransformation(init, update)
