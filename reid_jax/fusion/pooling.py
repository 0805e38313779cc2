"""Parameter-free temporal pooling fusions: spatial global average pooling, then mean/max over T.

"mean" is temporal average pooling ("TP") of Gao & Nevatia 2018, the standard video re-ID baseline.
Pooling runs in float32 even when the backbone maps are bfloat16.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def spatial_average(maps: jax.Array) -> jax.Array:
    """Global average pooling over h, w in float32: [B,T,h,w,C] -> [B,T,C]."""
    if maps.ndim != 5:
        raise ValueError(f"fusion expects maps of shape [B,T,h,w,C]; got shape {maps.shape}")
    return jnp.mean(maps.astype(jnp.float32), axis=(2, 3))


class TemporalAvgPool(nn.Module):
    """Temporal average pooling: mean over T of the per-frame GAP features; weights are 1/T."""

    @nn.compact
    def __call__(self, maps: jax.Array, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Fuse [B,T,h,w,C] maps into [B,C] features; aux["weights"] is the uniform [B,T]."""
        del train
        frames = spatial_average(maps)
        b, t = frames.shape[:2]
        weights = jnp.full((b, t), 1.0 / t, dtype=jnp.float32)
        return jnp.mean(frames, axis=1), {"weights": weights}


class TemporalMaxPool(nn.Module):
    """Temporal max pooling: channel-wise max over T of the per-frame GAP features.

    aux["weights"][b, t] is the fraction of channels whose maximum came from frame t (sums to 1),
    i.e. each frame's share of the fused vector.
    """

    @nn.compact
    def __call__(self, maps: jax.Array, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Fuse [B,T,h,w,C] maps into [B,C] features; aux["weights"] is [B,T]."""
        del train
        frames = spatial_average(maps)
        t = frames.shape[1]
        winners = jax.nn.one_hot(jnp.argmax(frames, axis=1), t, dtype=jnp.float32)  # [B,C,T]
        weights = jax.lax.stop_gradient(jnp.mean(winners, axis=1))
        return jnp.max(frames, axis=1), {"weights": weights}
