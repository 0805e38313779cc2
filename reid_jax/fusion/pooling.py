"""Parameter-free temporal pooling fusions: spatial global average pooling, then mean/max over T.

"mean" is temporal average pooling ("TP") of Gao & Nevatia 2018, the standard video re-ID baseline.
Pooling runs in float32 even when the backbone maps are bfloat16.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax.fusion.ops import uniform_weights


def spatial_average(maps: jax.Array) -> jax.Array:
    """Global average pooling over h, w in float32: [B,T,h,w,C] -> [B,T,C]."""
    if maps.ndim != 5:
        raise ValueError(f"fusion expects maps of shape [B,T,h,w,C]; got shape {maps.shape}")
    return jnp.mean(maps.astype(jnp.float32), axis=(2, 3))


def check_frames(frames: jax.Array) -> jax.Array:
    """Validate vector-level input [B,T,D] and return it in float32."""
    if frames.ndim != 3:
        raise ValueError(f"vector-level fusion expects frames [B,T,D]; got shape {frames.shape}")
    return frames.astype(jnp.float32)


def mean_pool(frames: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Temporal average of frame features [B,T,D] -> ([B,D], {"weights": 1/T [B,T]})."""
    frames = check_frames(frames)
    b, t = frames.shape[:2]
    return jnp.mean(frames, axis=1), {"weights": uniform_weights(b, t)}


def max_pool(frames: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Channel-wise temporal max of [B,T,D]; weights[b,t] = share of channels won by frame t."""
    frames = check_frames(frames)
    t = frames.shape[1]
    winners = jax.nn.one_hot(jnp.argmax(frames, axis=1), t, dtype=jnp.float32)  # [B,D,T]
    weights = jax.lax.stop_gradient(jnp.mean(winners, axis=1))
    return jnp.max(frames, axis=1), {"weights": weights}


class TemporalAvgPool(nn.Module):
    """Temporal average pooling: mean over T of the per-frame GAP features; weights are 1/T."""

    @nn.compact
    def __call__(self, maps: jax.Array, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Fuse [B,T,h,w,C] maps into [B,C] features; aux["weights"] is the uniform [B,T]."""
        del train
        return mean_pool(spatial_average(maps))


class TemporalMaxPool(nn.Module):
    """Temporal max pooling: channel-wise max over T of the per-frame GAP features.

    aux["weights"][b, t] is the fraction of channels whose maximum came from frame t (sums to 1),
    i.e. each frame's share of the fused vector.
    """

    @nn.compact
    def __call__(self, maps: jax.Array, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Fuse [B,T,h,w,C] maps into [B,C] features; aux["weights"] is [B,T]."""
        del train
        return max_pool(spatial_average(maps))
