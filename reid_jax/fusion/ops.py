"""Numerically safe building blocks shared by the fusions: norms, cosines, the pairwise tree.

Everything here is pure ``jnp`` and runs in float32; the fusions cast backbone maps (possibly
bfloat16) to float32 before using these helpers.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-6  # norm floor: vectors shorter than this count as zero vectors

# A fusion module field holding another fusion's options (a "branch"): its metadata names the
# branch's module class, from which the registry derives the branch's options (fusion.option_types).
BRANCH = "fusion_branch"
# A branch's options: a dict, or (key, value) pairs (hashable, as config-built models hold them).
Options = Mapping[str, Any] | tuple[tuple[str, Any], ...]


def branch(module: type) -> Any:
    """A module field for the options of the sub-fusion ``module`` (unset: its defaults); a config
    gives them as a sub-dict, e.g. ``fusion_kwargs.appearance.tau``."""
    return dataclasses.field(default=(), metadata={BRANCH: module})


def make_branch(parent: Any, field: str) -> Any:
    """The sub-fusion of ``parent``'s branch field ``field``, named ``field`` (call it inside
    ``parent``'s compact method): the field's declared module with the field's options."""
    module = parent.__dataclass_fields__[field].metadata[BRANCH]
    return module(**dict(getattr(parent, field)), name=field)


def safe_norm(x: jax.Array, axis: int = -1, eps: float = EPS) -> jax.Array:
    """L2 norm over ``axis`` floored at ``eps``: finite value and gradient at the zero vector."""
    return jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=axis), eps * eps))


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = EPS) -> jax.Array:
    """``x / max(|x|, eps)``: unit vectors, and the zero vector stays zero."""
    return x / jnp.expand_dims(safe_norm(x, axis, eps), axis)


def safe_cosine(a: jax.Array, b: jax.Array, axis: int = -1, eps: float = EPS) -> jax.Array:
    """Cosine similarity over ``axis``, clipped to [-1, 1]; 0 when either vector is (near) zero."""
    dot = jnp.sum(a * b, axis=axis)
    return jnp.clip(dot / (safe_norm(a, axis, eps) * safe_norm(b, axis, eps)), -1.0, 1.0)


def uniform_weights(batch: int, t: int) -> jax.Array:
    """[batch, t] weights of 1/t: the aux of fusions that average over time."""
    return jnp.full((batch, t), 1.0 / t, dtype=jnp.float32)


PairCombine = Callable[..., tuple[jax.Array, jax.Array]]


def pairwise_tree(
    x: jax.Array, combine: PairCombine, counted: bool = False
) -> tuple[jax.Array, tuple[jax.Array, ...], jax.Array]:
    """Fuse the n items of ``x`` [B, n, ...] pairwise, level by level, until one remains.

    ``combine(a, b)`` takes two [B, m, ...] stacks (items 0,2,4.. and 1,3,5..) and returns the
    fused [B, m, ...] stack and the pair weights [B, m, 2]. When a level has an odd number of
    items, the last one is carried unchanged to the next level (T=3: (0,1) -> g, then (g, 2)).
    ``counted=True`` calls ``combine(a, b, na, nb)`` with the number of frames each item holds
    (numpy int arrays [m]; 1 for a frame, the sum of its two inputs for a fused item).
    Returns (the fused item [B, ...], the per-level pair weights, the frame weights [B, n]: for
    each frame, the product of its pair weights along its path to the root, summing to 1).
    """
    b, n = x.shape[:2]
    frame_w = jnp.broadcast_to(jnp.eye(n, dtype=jnp.float32), (b, n, n))
    counts = np.ones(n, np.int64)
    levels = []
    while x.shape[1] > 1:
        m = x.shape[1] // 2
        a, c = x[:, 0 : 2 * m : 2], x[:, 1 : 2 * m : 2]
        na, nc = counts[0 : 2 * m : 2], counts[1 : 2 * m : 2]
        fused, w = combine(a, c, na, nc) if counted else combine(a, c)
        levels.append(w)
        fw = w[..., 0:1] * frame_w[:, 0 : 2 * m : 2] + w[..., 1:2] * frame_w[:, 1 : 2 * m : 2]
        x = jnp.concatenate([fused.astype(x.dtype), x[:, 2 * m :]], axis=1)
        frame_w = jnp.concatenate([fw, frame_w[:, 2 * m :]], axis=1)
        counts = np.concatenate([na + nc, counts[2 * m :]])
    return x[:, 0], tuple(levels), frame_w[:, 0]


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ValueError naming the fusion option when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"fusion option {name}={value!r}; expected one of {list(choices)}")
