"""Train state: an explicit pytree of step, params, batch_stats and optimiser state.

Created the big_vision way: ``jax.eval_shape`` gives the abstract state (shapes, no memory), then
``jax.jit(init, out_shardings=...)`` materialises it directly in its final sharding (replicated,
or fsdp-split per leaf by ``parallel.state_shardings``), so no device ever holds a full copy it
should not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from reid_jax.models import pretrained as pretrained_lib


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def init_fn(
    rng: jax.Array,
    backbone: dict[str, Any] | None = None,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    clip_shape: tuple,
) -> TrainState:
    """Initial state from a dummy uint8-shaped float clip of ``clip_shape`` [B, T, H, W, 3].

    ``backbone`` ({params, batch_stats}, e.g. ImageNet weights) replaces the random backbone
    before the optimiser state is built; variables it lacks (an inflated ResNet's temporal and
    non-local layers) keep their init.
    """
    variables = model.init(rng, jnp.zeros(clip_shape, jnp.float32), train=False)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    if backbone is not None:
        params = _overlay(params, {"backbone": backbone["params"]})
        if backbone["batch_stats"]:  # ViTs have none
            batch_stats = _overlay(batch_stats, {"backbone": backbone["batch_stats"]})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
    )


def _overlay(tree: Any, update: Any) -> Any:
    """``tree`` with every leaf of ``update`` (a nested dict covering part of it) written over."""
    flat = traverse_util.flatten_dict(dict(tree))
    flat.update(traverse_util.flatten_dict(dict(update)))
    return traverse_util.unflatten_dict(flat)


def create(
    rng: jax.Array,
    model: nn.Module,
    tx: optax.GradientTransformation,
    clip_shape: tuple,
    sharding: jax.sharding.Sharding | Callable[[TrainState], Any],
    pretrained: str = "",
) -> tuple[TrainState, TrainState]:
    """Returns (state, abstract_state); the abstract one carries shardings for checkpoint restore.

    ``sharding``: one sharding for every leaf, or a function of the abstract state returning a
    sharding per leaf (``parallel.state_shardings`` for fsdp). ``pretrained``
    (config.model.pretrained): a weights file or import_weights dir whose backbone params and
    batch_stats replace the random ones; "" keeps the random init.
    """
    abstract = jax.eval_shape(
        functools.partial(init_fn, model=model, tx=tx, clip_shape=clip_shape), rng
    )
    if callable(sharding):
        shardings = sharding(abstract)
    else:
        shardings = jax.tree.map(lambda _: sharding, abstract)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return initialise(rng, model, tx, clip_shape, abstract, pretrained), abstract


def initialise(
    rng: jax.Array,
    model: nn.Module,
    tx: optax.GradientTransformation,
    clip_shape: tuple,
    abstract: TrainState,
    pretrained: str = "",
) -> TrainState:
    """The state laid out as ``abstract`` (whose leaves carry their shardings), initialised by
    ``jax.jit(init, out_shardings=...)``; the backbone from ``pretrained`` if given."""
    fn = functools.partial(init_fn, model=model, tx=tx, clip_shape=clip_shape)
    shardings = jax.tree.map(lambda a: a.sharding, abstract)
    if pretrained:
        backbone = load_pretrained_backbone(
            pretrained, abstract, shardings, model=model, image_size=tuple(clip_shape[2:4])
        )
        return jax.jit(fn, out_shardings=shardings)(rng, backbone)
    return jax.jit(fn, out_shardings=shardings)(rng)


def load_pretrained_backbone(
    path: str,
    abstract: TrainState,
    sharding: jax.sharding.Sharding | TrainState,
    *,
    model: nn.Module | None = None,
    image_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Backbone {params, batch_stats} from ``path`` on host, checked against the abstract state
    (ValueError listing every difference), placed as global arrays with ``sharding`` (one for
    all, or the state's tree of shardings, whose backbone entries are used). A ``model`` with a
    ``pretrained_backbone`` method (ReIDModel: ViT import, which needs the frames' ``image_size``)
    reads the file; otherwise the ResNet importer does."""
    if "backbone" not in abstract.params:
        raise ValueError(
            f"pretrained={path!r}, but the model has no 'backbone' submodule to load it into"
        )
    expected = {
        "params": abstract.params["backbone"],
        "batch_stats": abstract.batch_stats.get("backbone", {}),
    }
    if isinstance(sharding, TrainState):
        targets = {
            "params": sharding.params["backbone"],
            "batch_stats": sharding.batch_stats.get("backbone", {}),
        }
    else:
        targets = jax.tree.map(lambda _: sharding, expected)
    if hasattr(model, "pretrained_backbone") and image_size is not None:
        host = model.pretrained_backbone(path, expected, image_size)
    else:
        host = pretrained_lib.load_variables(path, expected)
    # From the same host array in every process: works for any sharding, multi-host included.
    # ``host`` may cover part of ``expected`` (an inflated ResNet's new layers keep their init).
    out = {}
    for collection, tree in host.items():
        flat_targets = traverse_util.flatten_dict(targets[collection])
        out[collection] = traverse_util.unflatten_dict(
            {
                path: jax.make_array_from_callback(
                    a.shape, flat_targets[path], lambda idx, a=a: a[idx]
                )
                for path, a in traverse_util.flatten_dict(tree).items()
            }
        )
    return out


def param_count(params: Any) -> int:
    """Number of scalars in a parameter tree."""
    return sum(int(x.size) for x in jax.tree.leaves(params))
