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

Temporal layers (docs/models.md): ``temporal`` ("c3d" | "i3d" | "ap3d") in ``temporal_blocks``
changes each named block's first 3x3 conv (conv2 of a bottleneck, conv1 of a basic block):
"c3d"/"ap3d" add a ``<conv>_temporal`` residual after it, "i3d" inflates it to a 3x3x3 kernel
[3,kh,kw,I,O]; ``nonlocal_blocks`` adds ``layer{i}_{j}_nonlocal`` after a block. None of these
has a torchvision counterpart except the inflated kernel (loaded at its centre frame). With them,
the backbone needs ``seq_len`` (T) to see clips in its [B*T,H,W,3] input.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax.models.ap3d import TEMPORAL_KINDS, InflatedConv, TemporalResidual
from reid_jax.models.inflated import Placement
from reid_jax.models.nonlocal_block import NonLocalBlock

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
    temporal: tuple[tuple[str, Any], ...] = ()  # TemporalResidual/InflatedConv options, or ()
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, seq_len: int = 1) -> jax.Array:
        """Apply the block to an NHWC map (frames of clips of ``seq_len``)."""
        out = _first_3x3(self, x, seq_len, "conv1")
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
    temporal: tuple[tuple[str, Any], ...] = ()  # TemporalResidual/InflatedConv options, or ()
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, seq_len: int = 1) -> jax.Array:
        """Apply the block to an NHWC map (frames of clips of ``seq_len``)."""
        out = _conv(self.features, 1, 1, self.dtype, "conv1")(x)
        out = nn.relu(_bn(train, self.dtype, "bn1")(out))
        out = _first_3x3(self, out, seq_len, "conv2")
        out = nn.relu(_bn(train, self.dtype, "bn2")(out))
        out = _conv(self.features * 4, 1, 1, self.dtype, "conv3")(out)
        out = _bn(train, self.dtype, "bn3", self.zero_init_residual)(out)
        return nn.relu(out + _shortcut(self, x, train))


def _first_3x3(block: BasicBlock | Bottleneck, x: jax.Array, seq_len: int, name: str) -> jax.Array:
    """The block's (strided) 3x3 conv: 2-D, or with the block's temporal layer (models.ap3d)."""
    options = dict(block.temporal)
    kind = options.pop("kind", "none")
    if kind == "i3d":
        conv = InflatedConv(
            block.features, 3, block.stride, options["time_dim"], block.dtype, name=name
        )
        return conv(x, seq_len)
    out = _conv(block.features, 3, block.stride, block.dtype, name)(x)
    if kind in ("c3d", "ap3d"):
        out = TemporalResidual(kind, **options, dtype=block.dtype, name=f"{name}_temporal")(
            out, seq_len
        )
    return out


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
    the computation dtype (e.g. jnp.bfloat16). ``temporal`` / ``temporal_blocks`` /
    ``nonlocal_blocks`` (placements from reid_jax.models.inflated, (stage 1-4, block) pairs) and
    time_dim / temperature / contrastive_att (AP3D's) make it an inflated video ResNet.
    """

    stage_sizes: tuple[int, ...]
    block: str
    width: int = 64
    last_stride: int = 1
    dtype: Any = jnp.float32
    zero_init_residual: bool = False
    temporal: str = "none"
    temporal_blocks: Placement = ()
    nonlocal_blocks: Placement = ()
    time_dim: int = 3
    temperature: float = 4.0
    contrastive_att: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, seq_len: int | None = None) -> jax.Array:
        """Return the last stage's feature map in ``dtype``; x holds clips of ``seq_len`` frames
        ([B*T,H,W,3], clip-major; None: every frame its own clip)."""
        seq_len = seq_len or 1
        self._check_placement()
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
                    temporal=self._block_temporal(i + 1, j),
                    name=f"layer{i + 1}_{j}",
                )(x, train, seq_len)
                if (i + 1, j) in self.nonlocal_blocks:
                    x = NonLocalBlock(dtype=self.dtype, name=f"layer{i + 1}_{j}_nonlocal")(
                        x, seq_len, train
                    )
        return x

    def _block_temporal(self, stage: int, block: int) -> tuple[tuple[str, Any], ...]:
        """The temporal options of block (stage, block): () unless it is in temporal_blocks."""
        if self.temporal == "none" or (stage, block) not in self.temporal_blocks:
            return ()
        options = {"kind": self.temporal, "time_dim": self.time_dim}
        if self.temporal == "ap3d":
            options.update(temperature=self.temperature, contrastive_att=self.contrastive_att)
        return tuple(options.items())

    def _check_placement(self) -> None:
        """ValueError for an unknown temporal kind or a block the trunk does not have."""
        if self.temporal not in TEMPORAL_KINDS:
            raise ValueError(f"ResNet temporal={self.temporal!r}; expected one of {TEMPORAL_KINDS}")
        for field in ("temporal_blocks", "nonlocal_blocks"):
            for stage, block in getattr(self, field):
                if not 1 <= stage <= len(self.stage_sizes) or block >= self.stage_sizes[stage - 1]:
                    raise ValueError(
                        f"ResNet {field} has block {stage}.{block}; stages have "
                        f"{list(self.stage_sizes)} blocks"
                    )


RESNETS: dict[str, Callable[..., ResNet]] = {
    # One basic block per stage: the test configs' backbone (half ResNet-18's compile and
    # step time on CPU), and a small model for quick experiments. No torchvision weights.
    "resnet10": functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), block="basic"),
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
