"""Flax Linen ResNet-18/34/50/101 backbones (NHWC, torchvision v1.5 layout, no classifier).

Submodule names map 1:1 onto torchvision state-dict keys so that importing ImageNet weights is a
plain rename. The rule, for a torchvision key ``<module path>.<tensor>``:

* ``layer{i}.{j}.`` becomes the submodule ``layer{i}_{j}`` (e.g. ``layer1.0.conv1`` ->
  ``layer1_0/conv1``); ``downsample.0`` -> ``downsample_conv``, ``downsample.1`` ->
  ``downsample_bn``; the stem keeps ``conv1`` / ``bn1``. (Inside ReIDModel all of this sits under
  the ``backbone`` submodule.)
* Conv ``weight`` [O,I,kh,kw] -> ``params/.../kernel`` transposed to [kh,kw,I,O].
* BN ``weight`` -> ``params/.../scale``, ``bias`` -> ``params/.../bias``, ``running_mean`` ->
  ``batch_stats/.../mean``, ``running_var`` -> ``batch_stats/.../var``; ``num_batches_tracked``
  is dropped. The ``fc`` layer has no counterpart.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), an untruncated normal.
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
BN_MOMENTUM = 0.9  # flax convention; equals torch momentum 0.1
BN_EPSILON = 1e-5


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str) -> nn.Conv:
    """Bias-free conv with torchvision's symmetric padding (kernel // 2) and init."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=CONV_INIT,
        name=name,
    )


def _bn(train: bool, dtype: Any, name: str, zero_scale: bool = False) -> nn.BatchNorm:
    """BatchNorm with torch's default momentum/epsilon; float32 params and statistics."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
        name=name,
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with identity (or 1x1 projection) shortcut; used by ResNet-18/34."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32
    zero_init_residual: bool = False
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """Apply the block to an NHWC map."""
        out = _conv(self.features, 3, self.stride, self.dtype, "conv1")(x)
        out = nn.relu(_bn(train, self.dtype, "bn1")(out))
        out = _conv(self.features, 3, 1, self.dtype, "conv2")(out)
        out = _bn(train, self.dtype, "bn2", self.zero_init_residual)(out)
        return nn.relu(out + _shortcut(self, x, train))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, v1.5) -> 1x1 x4 bottleneck block; used by ResNet-50/101."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32
    zero_init_residual: bool = False
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """Apply the block to an NHWC map."""
        out = _conv(self.features, 1, 1, self.dtype, "conv1")(x)
        out = nn.relu(_bn(train, self.dtype, "bn1")(out))
        out = _conv(self.features, 3, self.stride, self.dtype, "conv2")(out)
        out = nn.relu(_bn(train, self.dtype, "bn2")(out))
        out = _conv(self.features * 4, 1, 1, self.dtype, "conv3")(out)
        out = _bn(train, self.dtype, "bn3", self.zero_init_residual)(out)
        return nn.relu(out + _shortcut(self, x, train))


def _shortcut(block: BasicBlock | Bottleneck, x: jax.Array, train: bool) -> jax.Array:
    """Identity, or 1x1 strided conv + BN when the shape changes (torchvision 'downsample')."""
    out_features = block.features * block.expansion
    if block.stride == 1 and x.shape[-1] == out_features:
        return x
    # Called inside the block's compact __call__, so these submodules are named under the block.
    y = _conv(out_features, 1, block.stride, block.dtype, "downsample_conv")(x)
    return _bn(train, block.dtype, "downsample_bn")(y)


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """ResNet trunk without pooling/classifier: [N,H,W,3] -> feature map [N,h,w,C].

    ``last_stride`` is the stride of stage 4 (1 for re-ID, giving 1/16 resolution; 2 as ImageNet).
    ``width`` is the stem/stage-1 channel count (64 in the paper). Params stay float32; ``dtype`` is
    the computation dtype (e.g. jnp.bfloat16).
    """

    stage_sizes: tuple[int, ...]
    block: str
    width: int = 64
    last_stride: int = 1
    dtype: Any = jnp.float32
    zero_init_residual: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """Return the last stage's feature map in ``dtype``."""
        if self.block not in BLOCKS:
            raise ValueError(f"ResNet block={self.block!r}; expected one of {sorted(BLOCKS)}")
        if self.last_stride not in (1, 2):
            raise ValueError(f"ResNet last_stride={self.last_stride}; expected 1 or 2")
        block_cls = BLOCKS[self.block]
        x = jnp.asarray(x, self.dtype)
        x = _conv(self.width, 7, 2, self.dtype, "conv1")(x)
        x = nn.relu(_bn(train, self.dtype, "bn1")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, num_blocks in enumerate(self.stage_sizes):
            stage_stride = 1 if i == 0 else (self.last_stride if i == 3 else 2)
            for j in range(num_blocks):
                x = block_cls(
                    features=self.width * 2**i,
                    stride=stage_stride if j == 0 else 1,
                    dtype=self.dtype,
                    zero_init_residual=self.zero_init_residual,
                    name=f"layer{i + 1}_{j}",
                )(x, train)
        return x


RESNETS: dict[str, Callable[..., ResNet]] = {
    "resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block="basic"),
    "resnet34": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="basic"),
    "resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck"),
    "resnet101": functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block="bottleneck"),
}


def make_resnet(arch: str, **kwargs: Any) -> ResNet:
    """Build a registered ResNet by name; kwargs are ResNet fields (width, last_stride, ...)."""
    if arch not in RESNETS:
        raise ValueError(f"Unknown backbone arch={arch!r}; expected one of {sorted(RESNETS)}")
    return RESNETS[arch](**kwargs)


def out_channels(arch: str, width: int = 64) -> int:
    """Channels of the final feature map: 8*width (basic blocks) or 32*width (bottleneck)."""
    if arch not in RESNETS:
        raise ValueError(f"Unknown backbone arch={arch!r}; expected one of {sorted(RESNETS)}")
    block = RESNETS[arch].keywords["block"]
    return width * 8 * BLOCKS[block].expansion
