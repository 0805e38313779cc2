"""Non-local block (embedded Gaussian) over (T, h, w), placed after chosen ResNet blocks.

Wang et al., "Non-local Neural Networks", CVPR 2018, as used by AP3D (Gu et al., ECCV 2020):
reproduces guxinqian/AP3D ``models/NonLocal.py`` (commit 84bd12a) ``NonLocalBlockND`` with
dimension=3, sub_sample=True, bn_layer=True: theta/phi/g 1x1x1 convs to C/2 channels (phi and g
max-pooled (1,2,2)), attention softmax(theta . phi) over all T*h*w positions of a clip, then W
(1x1x1 conv + BatchNorm with zero scale and shift) added to the input, so the block is the
identity at init.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax.models.ap3d import CONV_INIT, to_clips

BN_MOMENTUM = 0.9  # torch momentum 0.1 (as reid_jax.models.resnet)
BN_EPSILON = 1e-5


def torch_bias_init(fan_in: int) -> Any:
    """torch's default conv bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in)); AP3D keeps it."""
    bound = 1.0 / fan_in**0.5

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block on frames [B*T,h,w,C] with clips of ``seq_len`` frames.

    ``inter_channels`` defaults to C//2 (at least 1). The 1x1x1 convs have a fan-out normal
    kernel (the reference's normal(0, sqrt(2/n)), n = out channels) and torch's default bias.
    """

    inter_channels: int | None = None
    sub_sample: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, seq_len: int, train: bool) -> jax.Array:
        """x + W(softmax(theta(x) phi(x)^T) g(x)) over each clip's T*h*w positions."""
        c = x.shape[-1]
        inner = self.inter_channels or max(c // 2, 1)

        def conv(features: int, fan_in: int, name: str) -> nn.Dense:
            return nn.Dense(
                features, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=CONV_INIT,
                bias_init=torch_bias_init(fan_in), name=name,
            )  # fmt: skip

        def pool(y: jax.Array) -> jax.Array:  # MaxPool3d((1, 2, 2)) on each frame
            return nn.max_pool(y, (2, 2), strides=(2, 2)) if self.sub_sample else y

        b = x.shape[0] // seq_len
        theta = to_clips(conv(inner, c, "theta")(x), seq_len).reshape(b, -1, inner)
        phi = to_clips(pool(conv(inner, c, "phi")(x)), seq_len).reshape(b, -1, inner)
        g = to_clips(pool(conv(inner, c, "g")(x)), seq_len).reshape(b, -1, inner)
        f = jnp.einsum("bqc,bkc->bqk", theta.astype(jnp.float32), phi.astype(jnp.float32))
        f = jax.nn.softmax(f, axis=-1)
        y = jnp.einsum("bqk,bkc->bqc", f, g.astype(jnp.float32)).astype(self.dtype)
        y = conv(c, inner, "W_conv")(y.reshape((*x.shape[:-1], inner)))
        y = nn.BatchNorm(
            use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
            dtype=self.dtype, param_dtype=jnp.float32, scale_init=nn.initializers.zeros,
            name="W_bn",
        )(y)  # fmt: skip
        return y + jnp.asarray(x, y.dtype)
