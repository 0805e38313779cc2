"""``temporal_attention``: the "TA" baseline of Gao & Nevatia 2018 (Revisiting Temporal Modeling).

Each frame map [h, w, C] goes through a spatial convolution whose kernel covers the whole map
(valid padding, C -> hidden, ReLU), then a 1-D temporal convolution over the frames (hidden -> 1,
zero "same" padding) and a ReLU give one score per frame; w = softmax_t(score); the fused feature
is sum_t w_t GAP(map_t), D = C. This is ResNet50TA of jiyanggao/Video-Person-ReID (commit
dfe9a02e9dcae1a7aef66d9fd6a7896f015c6394, ``models/ResNet.py``: ``attention_conv``,
``F.relu``, ``attention_tconv``, ``F.relu``, ``F.softmax``), including PyTorch's default
initialisation of both convolutions (kernel and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
``score_relu=False`` is our earlier variant: the scores reach the softmax un-clipped (the ReLU
makes every negative score 0, so clips whose scores are all negative are averaged uniformly).
"""

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax.fusion.pooling import spatial_average


def temporal_scores(
    maps: jax.Array,
    spatial_kernel: jax.Array,
    spatial_bias: jax.Array,
    temporal_kernel: jax.Array,
    temporal_bias: jax.Array,
    score_relu: bool = True,
) -> jax.Array:
    """Attention logits [B,T] of maps [B,T,h,w,C]: full-map conv [h,w,C,d] + ReLU, temporal conv
    [k,d,1] -> 1 (+ ReLU with ``score_relu``). The full-map valid convolution is a contraction
    over (h, w, C)."""
    maps = maps.astype(jnp.float32)
    hidden = jnp.einsum("bthwc,hwcd->btd", maps, spatial_kernel) + spatial_bias
    hidden = jax.nn.relu(hidden)
    k, t = temporal_kernel.shape[0], maps.shape[1]
    left = (k - 1) // 2
    padded = jnp.pad(hidden, ((0, 0), (left, k - 1 - left), (0, 0)))
    windows = jnp.stack([padded[:, j : j + t] for j in range(k)], axis=2)  # [B,T,k,d]
    scores = jnp.einsum("btkd,kdo->bto", windows, temporal_kernel)[..., 0] + temporal_bias
    return jax.nn.relu(scores) if score_relu else scores


def temporal_attention(
    maps: jax.Array,
    spatial_kernel: jax.Array,
    spatial_bias: jax.Array,
    temporal_kernel: jax.Array,
    temporal_bias: jax.Array,
    score_relu: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """TA fusion of maps [B,T,h,w,C] -> ([B,C] float32, {"weights": softmax of the scores})."""
    if maps.ndim != 5:
        raise ValueError(f"temporal_attention expects maps [B,T,h,w,C]; got shape {maps.shape}")
    scores = temporal_scores(
        maps, spatial_kernel, spatial_bias, temporal_kernel, temporal_bias, score_relu
    )
    w = jax.nn.softmax(scores, axis=1)
    return jnp.einsum("bt,btc->bc", w, spatial_average(maps)), {"weights": w}


class TemporalAttentionFusion(nn.Module):
    """TA over frame maps; output dim D = C.

    Parameters for maps [h, w, C]: spatial kernel h w C hidden + hidden (bias), temporal kernel
    temporal_kernel x hidden + 1 (bias): h w C hidden + hidden + temporal_kernel hidden + 1.
    The spatial kernel's size follows the map size at init (Flax refuses other sizes later).
    Initialisation: PyTorch's Conv default, as the anchor (module docstring). ``score_relu``:
    the anchor's ReLU on the scores (default); False lets them reach the softmax un-clipped.
    """

    hidden: int = 256
    temporal_kernel: int = 3
    score_relu: bool = True

    @nn.compact
    def __call__(self, maps: jax.Array, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Fuse [B,T,h,w,C] maps into [B,C]; aux["weights"] is the [B,T] softmax."""
        del train
        if maps.ndim != 5:
            raise ValueError(f"temporal_attention expects maps [B,T,h,w,C]; got shape {maps.shape}")
        if self.hidden < 1 or self.temporal_kernel < 1:
            raise ValueError(
                f"fusion options hidden={self.hidden}, temporal_kernel={self.temporal_kernel};"
                " expected positive integers"
            )
        h, w, c = maps.shape[2:]
        spatial_init = torch_default_init(h * w * c)
        temporal_init = torch_default_init(self.temporal_kernel * self.hidden)
        spatial_kernel = self.param("spatial_kernel", spatial_init, (h, w, c, self.hidden))
        spatial_bias = self.param("spatial_bias", spatial_init, (self.hidden,))
        temporal_kernel = self.param(
            "temporal_kernel", temporal_init, (self.temporal_kernel, self.hidden, 1)
        )
        temporal_bias = self.param("temporal_bias", temporal_init, ())
        return temporal_attention(
            maps, spatial_kernel, spatial_bias, temporal_kernel, temporal_bias, self.score_relu
        )


def torch_default_init(fan_in: int) -> Callable[..., jax.Array]:
    """PyTorch's default Conv/Linear initialiser for kernel and bias: U(-1/sqrt(fan_in), +...).

    (``kaiming_uniform_(a=sqrt(5))`` gives bound sqrt(6 / ((1 + 5) fan_in)) = 1/sqrt(fan_in) for
    the kernel; the bias uses the same bound.)"""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init
