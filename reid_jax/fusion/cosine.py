"""``cosine_center``: the research note's fusion, frames weighted by their cosine to the centre.

    c = mean_t f_t,   s_t = cos(f_t, c),   w = softmax_t(s_t / tau),   g = sum_t w_t f_t

Weight floor (the note's analysis 1). Scores lie in [-1, 1], so a softmax over n scores can
never push a frame below ``1 / (1 + (n - 1) exp(2 / tau))``. For two scores +1 and -1 and
tau = 1 the weights are e / (e + 1/e) = 0.881 and 0.119: the worst frame keeps 11.9%. The
pairwise mode (T -> T/2 -> ... -> 1) takes every softmax over only two scores, so with T a power
of two this floor holds at every level. A smaller tau lowers it (tau = 0.5: 0.018; tau = 0.25:
3.4e-4; tau = 0.1: 2.1e-9), a larger one raises it towards 1/2; tau -> inf is plain averaging in
both modes and for every T. With ``weighting="angle"`` the scores are minus angles in [-pi, 0]:
the two-frame floor is 1 / (1 + exp(pi / tau)) = 0.041 at tau = 1.

T not a power of two (pairwise): the odd item at a level is carried up, so a level may compare a
node that holds n_a frames with one that holds n_b. Each node is weighted by the frames it holds,
w_a ~ n_a exp(s_a / tau) (equal counts: the plain softmax), so tau -> inf gives every frame 1/T
(without the counts T = 3 would weigh [1/4, 1/4, 1/2]); the floor of such a pair is
n_a / (n_a + n_b exp(2 / tau)).

Zero and near-zero frames. A norm below ``REL_FLOOR`` (1%) of the mean norm of the vectors being
weighed (the clip in flat mode, the pair in pairwise mode; at least ``eps``) is floored there:
such a frame scores ~0 (a zero frame exactly 0) and the gradient of a score with respect to a
frame is at most 1 / floor, i.e. at most 100x the 1 / |f| of a typical frame, where a bare eps
floor gave 1e5-1e11x (one 1/eps from the cosine, a second from the L2 normalisation on the
circle). Above the floor the scores are exact cosines.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from reid_jax.fusion.ops import EPS, check_choice, pairwise_tree, safe_norm
from reid_jax.fusion.pooling import check_frames, spatial_average

MODES = ("flat", "pairwise")
WEIGHTINGS = ("softmax", "angle", "vmf")
ARCCOS_MARGIN = 1e-6  # arccos is evaluated on s clipped to [-1 + m, 1 - m]: finite gradients
LOG_TAU_RANGE = (math.log(1e-2), math.log(1e2))  # a learned tau is clamped to [0.01, 100]
REL_FLOOR = 1e-2  # norm floor, relative to the mean norm of the vectors weighed together


def floor_weight(n: int, tau: float) -> float:
    """The smallest weight a softmax over n cosine scores (in [-1, 1]) at temperature tau allows."""
    return 1.0 / (1.0 + (n - 1) * math.exp(2.0 / tau))


def _norm_floor(x: jax.Array, eps: float) -> jax.Array:
    """[..., 1]: REL_FLOOR x the mean norm of the n vectors of x [..., n, D], at least eps."""
    scale = jnp.mean(safe_norm(x, eps=eps), axis=-1, keepdims=True)
    return jnp.maximum(REL_FLOOR * scale, eps)


def _scores(x: jax.Array, center: jax.Array, floor: jax.Array) -> jax.Array:
    """cos(x_i, center) [..., n] with both norms floored at ``floor`` [..., 1]."""
    nx = jnp.maximum(safe_norm(x), floor)
    nc = jnp.maximum(safe_norm(center), floor[..., 0])
    dot = jnp.einsum("...nd,...d->...n", x, center)
    return jnp.clip(dot / (nx * nc[..., None]), -1.0, 1.0)


def center_weights(
    frames: jax.Array,
    tau: float | jax.Array = 1.0,
    weighting: str = "softmax",
    iterations: int = 0,
    eps: float = EPS,
    counts: jax.Array | np.ndarray | None = None,
) -> jax.Array:
    """Weights [..., n] (summing to 1) of the n vectors of ``frames`` [..., n, D] by their centre.

    ``softmax``: raw features, centre = their mean, w = softmax(cos / tau).
    ``angle`` and ``vmf`` work on the circle: L2-normalised features, so the centre is the mean
    direction (each frame counts once, whatever its norm); ``angle``: w ~ exp(-arccos(cos) / tau),
    ``vmf``: w ~ exp(kappa * cos) with kappa = 1 / tau (von Mises-Fisher). ``iterations`` = k
    re-centres k times on the weighted mean. ``counts`` [..., n] (frames each vector stands for)
    multiply the weights: w ~ counts exp(score / tau). Zero vectors score 0 (module docstring).
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    if iterations < 0:
        raise ValueError(f"fusion option iterations={iterations}; expected an integer >= 0")
    x = frames.astype(jnp.float32)
    floor = _norm_floor(x, eps)
    if weighting != "softmax":
        x = x / jnp.maximum(safe_norm(x), floor)[..., None]  # unit (shorter below the floor)
        floor = _norm_floor(x, eps)
    prior = 0.0 if counts is None else jnp.log(jnp.asarray(counts, jnp.float32))
    center = jnp.mean(x, axis=-2)
    for _ in range(iterations + 1):
        s = _scores(x, center, floor)
        if weighting == "angle":
            s = -jnp.arccos(jnp.clip(s, -1.0 + ARCCOS_MARGIN, 1.0 - ARCCOS_MARGIN))
        w = jax.nn.softmax(s / tau + prior, axis=-1)
        center = jnp.einsum("...n,...nd->...d", w, x)
    return w


def cosine_center(
    frames: jax.Array,
    *,
    tau: float | jax.Array = 1.0,
    mode: str = "pairwise",
    weighting: str = "softmax",
    iterations: int = 0,
    eps: float = EPS,
) -> tuple[jax.Array, dict]:
    """Fuse frame features [B,T,D] -> ([B,D] float32, aux) by cosine-to-centre weighting.

    ``mode="flat"``: one softmax over all T frames, aux["weights"] is [B,T].
    ``mode="pairwise"``: frames fused two at a time, level by level (an odd one out is carried to
    the next level, and every node is weighted by the frames it holds); aux["weights"] is a tuple
    with one [B, pairs, 2] array per level and aux["frame_weights"] [B,T] is each frame's
    effective weight (the product along its path), so the fused vector is
    sum_t frame_weights[:, t] * f_t in both modes.
    """
    check_choice("mode", mode, MODES)
    frames = check_frames(frames)

    def weigh(x: jax.Array, counts: np.ndarray | None = None) -> jax.Array:
        return center_weights(x, tau, weighting, iterations, eps, counts)

    if mode == "flat":
        w = weigh(frames)
        return jnp.einsum("bt,btd->bd", w, frames), {"weights": w}

    def combine(
        a: jax.Array, b: jax.Array, na: np.ndarray, nb: np.ndarray
    ) -> tuple[jax.Array, jax.Array]:
        pair = jnp.stack([a, b], axis=2)  # [B, m, 2, D]
        counts = None if np.all(na == nb) else np.stack([na, nb], axis=-1)  # [m, 2]
        w = weigh(pair, counts)
        return jnp.einsum("bmk,bmkd->bmd", w, pair), w

    fused, levels, frame_w = pairwise_tree(frames, combine, counted=True)
    return fused, {"weights": levels, "frame_weights": frame_w}


class CosineCenterFusion(nn.Module):
    """The note's fusion on GAP frame features; output dim D = C.

    Options: ``tau`` (temperature; for ``vmf`` kappa = 1/tau), ``learn_tau`` (tau becomes a
    parameter ``log_tau``, initialised at log(tau) and clamped to [0.01, 100]), ``mode``
    ("flat" | "pairwise"), ``weighting`` ("softmax" | "angle" | "vmf"), ``iterations``.
    Parameters: 1 if learn_tau else 0. Weight floor: see the module docstring
    (two scores +1 / -1 at tau = 1 give 0.881 / 0.119).
    """

    tau: float = 1.0
    learn_tau: bool = False
    mode: str = "pairwise"
    weighting: str = "softmax"
    iterations: int = 0

    @nn.compact
    def __call__(self, maps: jax.Array, train: bool) -> tuple[jax.Array, dict]:
        """Fuse [B,T,h,w,C] maps (GAP first) into [B,C]; see ``cosine_center`` for the aux."""
        del train
        if not self.tau > 0:
            raise ValueError(f"fusion option tau={self.tau}; expected a positive number")
        tau = self.tau
        if self.learn_tau:
            log_tau = self.param("log_tau", lambda _: jnp.asarray(math.log(self.tau), jnp.float32))
            tau = jnp.exp(jnp.clip(log_tau, *LOG_TAU_RANGE))
        return cosine_center(
            spatial_average(maps),
            tau=tau,
            mode=self.mode,
            weighting=self.weighting,
            iterations=self.iterations,
        )
