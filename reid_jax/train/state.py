"""Train state: an explicit pytree of step, params, batch_stats and optimiser state.

Created the big_vision way: ``jax.eval_shape`` gives the abstract state (shapes, no memory), then
``jax.jit(init, out_shardings=...)`` materialises it directly in its final sharding.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def init_fn(
    rng: jax.Array, *, model: nn.Module, tx: optax.GradientTransformation, clip_shape: tuple
) -> TrainState:
    """Initial state from a dummy uint8-shaped float clip of ``clip_shape`` [B, T, H, W, 3]."""
    variables = model.init(rng, jnp.zeros(clip_shape, jnp.float32), train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
    )


def create(
    rng: jax.Array,
    model: nn.Module,
    tx: optax.GradientTransformation,
    clip_shape: tuple,
    sharding: jax.sharding.Sharding,
) -> tuple[TrainState, TrainState]:
    """Returns (state, abstract_state); the abstract one carries shardings for checkpoint restore."""
    fn = functools.partial(init_fn, model=model, tx=tx, clip_shape=clip_shape)
    abstract = jax.eval_shape(fn, rng)
    shardings = jax.tree.map(lambda _: sharding, abstract)
    state = jax.jit(fn, out_shardings=shardings)(rng)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return state, abstract


def param_count(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
