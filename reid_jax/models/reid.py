"""Video re-ID model: ResNet per frame -> temporal fusion -> BNNeck -> bias-free classifier.

BNNeck follows Luo et al. 2019 ("Bag of Tricks"): the triplet loss uses the fused feature before
the BatchNorm, the ID loss and test-time retrieval use the feature after it.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from reid_jax.fusion import FUSIONS, make_fusion
from reid_jax.models.resnet import BN_EPSILON, BN_MOMENTUM, RESNETS, make_resnet

DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
SPATIAL_POOLS = ("avg", "max")


class ReIDModel(nn.Module):
    """Clip classifier: [B,T,H,W,3] normalised frames -> (logits [B,num_classes] f32, aux).

    aux holds "features" (fused, pre-BNNeck, [B,D] f32), "bn_features" (post-BNNeck, [B,D] f32)
    and the fusion's own aux entries (e.g. "weights" [B,T]). ``fusion_kwargs`` is a tuple of
    (key, value) pairs so the module stays hashable.
    """

    num_classes: int
    arch: str = "resnet50"
    width: int = 64
    last_stride: int = 1
    fusion: str = "mean"
    fusion_kwargs: tuple[tuple[str, Any], ...] = ()
    dtype: Any = jnp.float32
    zero_init_residual: bool = False
    # "avg": the fusions pool each frame's map spatially by averaging (their own rule); "max":
    # each map is max-pooled to 1x1 first (AP3D's ``F.max_pool2d(x, x.size()[2:])``), so vector
    # fusions see max-pooled frames and map-level fusions (templet) a 1x1 map.
    spatial_pool: str = "avg"

    @nn.compact
    def __call__(self, clips: jax.Array, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Run the backbone on all B*T frames, fuse over T, apply BNNeck and the classifier."""
        if clips.ndim != 5:
            raise ValueError(f"ReIDModel expects clips [B,T,H,W,3]; got shape {clips.shape}")
        b, t = clips.shape[:2]
        backbone = make_resnet(
            self.arch,
            width=self.width,
            last_stride=self.last_stride,
            dtype=self.dtype,
            zero_init_residual=self.zero_init_residual,
            name="backbone",
        )
        maps = backbone(clips.reshape((b * t, *clips.shape[2:])), train)
        maps = maps.reshape((b, t, *maps.shape[1:]))
        if self.spatial_pool == "max":
            maps = jnp.max(maps, axis=(2, 3), keepdims=True)
        fusion = make_fusion(self.fusion, name="fusion", **dict(self.fusion_kwargs))
        fused, fusion_aux = fusion(maps, train)
        features = fused.astype(jnp.float32)
        # BNNeck: BatchNorm1d with the shift frozen at zero (scale only), kept in float32.
        bn_features = nn.BatchNorm(
            use_running_average=not train,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            use_bias=False,
            dtype=jnp.float32,
            name="bnneck",
        )(features)
        logits = nn.Dense(
            self.num_classes,
            use_bias=False,
            dtype=jnp.float32,
            kernel_init=nn.initializers.normal(stddev=0.001),
            name="classifier",
        )(bn_features)
        aux = {**fusion_aux, "features": features, "bn_features": bn_features}
        return logits, aux


def make_model(config_model: ml_collections.ConfigDict, num_classes: int) -> ReIDModel:
    """Build a ReIDModel from config keys arch, width, last_stride, fusion, dtype, spatial_pool.

    Optional keys: fusion_kwargs (dict of fusion options), zero_init_residual (bool).
    """
    for key in ("arch", "width", "last_stride", "fusion", "dtype", "spatial_pool"):
        if key not in config_model:
            raise ValueError(f"config.model is missing key {key!r}")
    if config_model.arch not in RESNETS:
        raise ValueError(
            f"config.model.arch={config_model.arch!r}; expected one of {sorted(RESNETS)}"
        )
    if config_model.fusion not in FUSIONS:
        raise ValueError(
            f"config.model.fusion={config_model.fusion!r}; expected one of {sorted(FUSIONS)}"
        )
    if config_model.dtype not in DTYPES:
        raise ValueError(
            f"config.model.dtype={config_model.dtype!r}; expected one of {sorted(DTYPES)}"
        )
    if config_model.spatial_pool not in SPATIAL_POOLS:
        raise ValueError(
            f"config.model.spatial_pool={config_model.spatial_pool!r}; expected one of "
            f"{SPATIAL_POOLS}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes}; expected a positive integer")
    fusion_kwargs = config_model.get("fusion_kwargs", None) or {}
    if isinstance(fusion_kwargs, ml_collections.ConfigDict):
        fusion_kwargs = fusion_kwargs.to_dict()
    return ReIDModel(
        num_classes=int(num_classes),
        arch=config_model.arch,
        width=int(config_model.width),
        last_stride=int(config_model.last_stride),
        fusion=config_model.fusion,
        fusion_kwargs=tuple(sorted(_freeze(fusion_kwargs).items())),
        dtype=DTYPES[config_model.dtype],
        zero_init_residual=bool(config_model.get("zero_init_residual", False)),
        spatial_pool=config_model.spatial_pool,
    )


def _freeze(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Turn list values (from configs) into tuples so the module fields stay hashable."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
