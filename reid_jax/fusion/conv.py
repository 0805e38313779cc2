"""``temporal_conv``: a 1-D temporal convolution in place of averaging (the note's item 2).

Temporal average pooling is a fixed 1-D kernel of size T with taps 1/T; this method learns that
kernel instead: a valid convolution over the frames of GAP features (C -> C, kernel_size k,
default k = T: one window, the clip), outputs averaged over the T - k + 1 windows. Every tap
starts at I / k (bias 0): with k = T that is exactly temporal average pooling; with k < T each
frame counts in proportion to the windows covering it. Not a weighting method: aux["weights"] is
each frame's share of the kernel's tap norms (||K_j||_F summed over the windows that cover the
frame, normalised), the same for every clip, i.e. which clip positions the convolution favours.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax.fusion.pooling import check_frames, spatial_average


def tap_shares(kernel: jax.Array, t: int) -> jax.Array:
    """[t] shares (sum 1) of each frame in the tap norms of ``kernel`` [k, C, D] slid over t."""
    k = kernel.shape[0]
    norms = jnp.sqrt(jnp.sum(kernel.astype(jnp.float32) ** 2, axis=(1, 2)))  # [k]
    per_frame = jnp.zeros((t,), jnp.float32)
    for start in range(t - k + 1):
        per_frame = per_frame.at[start : start + k].add(norms)
    return per_frame / jnp.maximum(jnp.sum(per_frame), 1e-12)


def temporal_conv(
    frames: jax.Array, kernel: jax.Array, bias: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Fuse frame features [B,T,C] with a valid temporal conv ``kernel`` [k,C,D] + ``bias`` [D],
    averaged over windows -> ([B,D] float32, {"weights": tap shares [B,T]})."""
    frames = check_frames(frames)
    b, t = frames.shape[:2]
    k = kernel.shape[0]
    if not 1 <= k <= t:
        raise ValueError(f"temporal_conv kernel size {k} must be in [1, T={t}]")
    windows = jnp.stack([frames[:, j : j + t - k + 1] for j in range(k)], axis=2)  # [B,W,k,C]
    out = jnp.einsum("bwkc,kcd->bwd", windows, kernel.astype(jnp.float32)) + bias
    weights = jnp.broadcast_to(jax.lax.stop_gradient(tap_shares(kernel, t)), (b, t))
    return jnp.mean(out, axis=1), {"weights": weights}


class TemporalConvFusion(nn.Module):
    """Learned 1-D temporal convolution over GAP frame features; output dim D = C.

    ``kernel_size`` 0 means T (the clip length at init). Parameters: k C^2 + C (kernel [k,C,C]
    and bias [C]), k = kernel_size or T. Taps start at I / k (k = T: temporal average pooling).
    """

    kernel_size: int = 0

    @nn.compact
    def __call__(self, maps: jax.Array, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Fuse [B,T,h,w,C] maps (GAP first) into [B,C]."""
        del train
        frames = spatial_average(maps)
        t, c = frames.shape[1:]
        k = self.kernel_size or t
        if not 1 <= k <= t:
            raise ValueError(
                f"fusion option kernel_size={self.kernel_size}; expected 0 (= T) or 1..T={t}"
            )

        def identity_over_k(key: jax.Array, shape: tuple) -> jax.Array:
            del key
            return jnp.broadcast_to(jnp.eye(c, dtype=jnp.float32) / shape[0], shape)

        kernel = self.param("kernel", identity_over_k, (k, c, c))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return temporal_conv(frames, kernel, bias)
