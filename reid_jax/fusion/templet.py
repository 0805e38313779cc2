"""``templet``: the note's next experiment, pairwise template attention between frame maps.

For two maps a, b [h, w, C] at one level: template A = (a + b) / 2; at each position p
``alpha_p = 1 / cos(A_p, a_p)``, ``beta_p = 1 / cos(A_p, b_p)``;
``F_ab = (alpha a + beta b)^2 + gamma a + delta b`` (element-wise square), then a small residual
convolutional refinement block. Applied pairwise, level by level, until one map remains; the
fused feature is its global average, D = C.

Numerical safety (all in float32):
- ``1/cos`` is bounded: ``alpha = 1 / max(cos, 1 / alpha_max)``, so 1 <= alpha <= alpha_max.
  cos <= 1/alpha_max (including cos <= 0, e.g. opposite frames whose template is zero) gives
  alpha = alpha_max; a zero vector (a_p = 0 or A_p = 0) has cos = 0, hence alpha = alpha_max
  (harmless where a_p = 0: alpha multiplies a zero vector). The clamp has zero gradient.
- the square is normalised: with z = alpha a + beta b, the term is ``z * z / rms_C(z)`` (rms over
  channels at each position; 0 where z = 0). It is homogeneous of degree 1 (scaling the inputs
  by s scales it by s), so values do not grow as x^(2^levels) down the tree, and it is bounded,
  |z_c^2 / rms(z)| <= sqrt(C) |z_c|; it is computed as z * u / rms(u) with u = z / max_c |z_c|,
  so no intermediate (not even z^2) exceeds |z|: no overflow in bfloat16 or float16.
- ``rescale`` (off by default, not in the note): each pair's F_ab is rescaled, per position, to
  the rms over channels of its template (a + b) / 2. Without it F_ab is several times larger
  than its inputs (1/cos >= 1 on both frames, the heavy-tailed normalised square) and the factor
  compounds over levels: on post-ReLU maps with T = 4 the fused feature is 13-50x the norm of
  the mean pooled one, which stalls the triplet loss (docs/experiments.md). Its rms is floored
  (``_rms``), so gradients are finite where a position is zero in both frames of a pair (ReLU
  maps have such positions) and for an all-zero clip.
- T not a power of two: an odd map out at a level is carried unchanged to the next level
  (T=3: (0,1) -> g, then (g, 2); T=5: frame 4 joins only at the last level).
Weights: at each level ``aux["weights"]`` holds [B, pairs, 2] = the spatial mean of
alpha / (alpha + beta) and beta / (alpha + beta) (each frame's emphasis, summing to 1);
``aux["frame_weights"]`` [B,T] is their product along each frame's path (a diagnostic: F_ab is not
a convex combination of the frames).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax.fusion.ops import EPS, pairwise_tree, safe_cosine

GAMMA_INIT = 0.5  # gamma = delta = 0.5: the linear part starts as the template A


def templet_coefficients(
    a: jax.Array, b: jax.Array, alpha_max: float = 10.0, eps: float = EPS
) -> tuple[jax.Array, jax.Array]:
    """Per-position alpha, beta [..., h, w] of maps a, b [..., h, w, C], both in [1, alpha_max]."""
    if not alpha_max >= 1.0:
        raise ValueError(f"fusion option alpha_max={alpha_max}; expected a number >= 1")
    template = 0.5 * (a + b)
    floor = 1.0 / alpha_max
    alpha = 1.0 / jnp.maximum(safe_cosine(template, a, eps=eps), floor)
    beta = 1.0 / jnp.maximum(safe_cosine(template, b, eps=eps), floor)
    return alpha, beta


def templet_pair(
    a: jax.Array,
    b: jax.Array,
    gamma: jax.Array | float,
    delta: jax.Array | float,
    alpha_max: float = 10.0,
    eps: float = EPS,
    rescale: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Fuse maps a, b [..., h, w, C] into F_ab [..., h, w, C]; also the pair weights [..., 2].

    ``rescale``: give F_ab, at each position, the rms over channels of the template (a + b) / 2
    (its direction is the note's formula, its size the inputs')."""
    alpha, beta = templet_coefficients(a, b, alpha_max, eps)
    z = alpha[..., None] * a + beta[..., None] * b
    # z^2 / rms(z) computed as z * u / rms(u), u = z / max|z|: no intermediate exceeds |z|.
    u = z / jnp.maximum(jnp.max(jnp.abs(z), axis=-1, keepdims=True), eps)
    rms_u = jnp.sqrt(jnp.maximum(jnp.mean(u * u, axis=-1, keepdims=True), eps * eps))
    fused = z * (u / rms_u) + gamma * a + delta * b
    if rescale:
        fused = fused * (_rms(0.5 * (a + b)) / jnp.maximum(_rms(fused), eps))
    share = jnp.stack([alpha, beta], axis=-1) / (alpha + beta)[..., None]
    return fused, jnp.mean(share, axis=(-3, -2))


def _rms(x: jax.Array) -> jax.Array:
    """rms over channels [..., 1], computed on x / max|x| so x^2 cannot overflow.

    The mean square of u = x / max|x| is floored at EPS^2 before the square root: the value is
    unchanged (mean(u^2) >= 1 / C wherever x != 0, and 0 * anything where x = 0), and the
    gradient stays finite at a zero position (sqrt has an infinite slope at 0)."""
    peak = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    u = x / jnp.maximum(peak, EPS)
    return peak * jnp.sqrt(jnp.maximum(jnp.mean(u * u, axis=-1, keepdims=True), EPS * EPS))


def refine_block(x: jax.Array, params: dict[str, jax.Array]) -> jax.Array:
    """Residual bottleneck on maps [N, h, w, C]: x + conv1x1(relu(conv3x3(relu(conv1x1(x)))))."""

    def conv(y: jax.Array, name: str) -> jax.Array:
        kernel = params[f"{name}_kernel"]
        if kernel.shape[:2] == (1, 1):  # a 1x1 convolution is a matmul over channels
            return y @ kernel[0, 0] + params[f"{name}_bias"]
        out = jax.lax.conv_general_dilated(
            y, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return out + params[f"{name}_bias"]

    y = jax.nn.relu(conv(x, "reduce"))
    y = jax.nn.relu(conv(y, "spatial"))
    return x + conv(y, "expand")


def templet(
    maps: jax.Array,
    gamma: jax.Array | float = GAMMA_INIT,
    delta: jax.Array | float = GAMMA_INIT,
    refine_params: dict[str, jax.Array] | None = None,
    alpha_max: float = 10.0,
    eps: float = EPS,
    rescale: bool = False,
) -> tuple[jax.Array, dict]:
    """Fuse maps [B,T,h,w,C] pairwise with the templet rule -> ([B,C] float32, aux).

    ``refine_params`` (see ``TempletFusion``) applies the refinement block after every pair
    fusion (shared across levels); None skips it. aux: per-level "weights", "frame_weights".
    """
    if maps.ndim != 5:
        raise ValueError(f"templet expects maps of shape [B,T,h,w,C]; got shape {maps.shape}")
    maps = maps.astype(jnp.float32)

    def combine(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
        fused, w = templet_pair(a, b, gamma, delta, alpha_max, eps, rescale)
        if refine_params is not None:
            fused = refine_block(fused.reshape((-1, *fused.shape[2:])), refine_params)
            fused = fused.reshape((*w.shape[:2], *fused.shape[1:]))
        return fused, w

    final, levels, frame_w = pairwise_tree(maps, combine)
    return jnp.mean(final, axis=(1, 2)), {"weights": levels, "frame_weights": frame_w}


def refine_param_count(c: int, reduction: int) -> int:
    """Parameters of the refinement block for C channels: 2 C m + 9 m^2 + 2 m + C, m = C // r."""
    m = max(1, c // reduction)
    return 2 * c * m + 9 * m * m + 2 * m + c


class TempletFusion(nn.Module):
    """Map-level templet fusion (see the module docstring); output dim D = C.

    Parameters: gamma and delta (1 each, or C each with ``per_channel``), plus, with ``refine``,
    the shared refinement block: 1x1 C->m, 3x3 m->m, 1x1 m->C convolutions with biases,
    m = max(1, C // reduction): 2 C m + 9 m^2 + 2 m + C. Total 2 (or 2 C) + that.
    The block's last convolution starts at zero, so at init it is the identity.
    """

    alpha_max: float = 10.0
    per_channel: bool = False
    refine: bool = True
    reduction: int = 4
    rescale: bool = False

    @nn.compact
    def __call__(self, maps: jax.Array, train: bool) -> tuple[jax.Array, dict]:
        """Fuse [B,T,h,w,C] maps into [B,C]; aux as in ``templet``."""
        del train
        if maps.ndim != 5:
            raise ValueError(f"templet expects maps of shape [B,T,h,w,C]; got shape {maps.shape}")
        if self.reduction < 1:
            raise ValueError(f"fusion option reduction={self.reduction}; expected an integer >= 1")
        c = maps.shape[-1]
        shape = (c,) if self.per_channel else ()
        init = nn.initializers.constant(GAMMA_INIT)
        gamma = self.param("gamma", init, shape, jnp.float32)
        delta = self.param("delta", init, shape, jnp.float32)
        refine_params = None
        if self.refine:
            m = max(1, c // self.reduction)
            conv_init = nn.initializers.lecun_normal()
            zeros = nn.initializers.zeros
            shapes = {
                "reduce": ((1, 1, c, m), conv_init),
                "spatial": ((3, 3, m, m), conv_init),
                "expand": ((1, 1, m, c), zeros),
            }
            refine_params = {}
            for name, (kshape, kinit) in shapes.items():
                refine_params[f"{name}_kernel"] = self.param(f"{name}_kernel", kinit, kshape)
                refine_params[f"{name}_bias"] = self.param(f"{name}_bias", zeros, kshape[-1:])
        return templet(maps, gamma, delta, refine_params, self.alpha_max, rescale=self.rescale)
