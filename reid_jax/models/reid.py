"""Video re-ID model: backbone per frame -> temporal fusion -> BNNeck -> bias-free classifier.

Backbones (``BACKBONES``, keyed by ``config.model.arch``): the ResNets give the fusion their last
feature map; the ViTs give either their CLS vectors (as 1x1 maps, ``vit_tokens="cls"``) or their
patch-token maps [h, w, C] (``"patches"``), so vector- and map-level fusions compose with both.

BNNeck follows Luo et al. 2019 ("Bag of Tricks"): the triplet loss uses the fused feature before
the BatchNorm, the ID loss and test-time retrieval use the feature after it.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from reid_jax.fusion import FUSIONS, make_fusion, resolve_options
from reid_jax.models import inflated, pretrained, vit_import
from reid_jax.models.resnet import BN_EPSILON, BN_MOMENTUM, RESNETS, make_resnet
from reid_jax.models.vit import VITS, grid_size, make_vit

DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
SPATIAL_POOLS = ("avg", "max")
VIT_TOKENS = ("cls", "patches")


class ReIDModel(nn.Module):
    """Clip classifier: [B,T,H,W,3] normalised frames -> (logits [B,num_classes] f32, aux).

    aux holds "features" (fused, pre-BNNeck, [B,D] f32), "bn_features" (post-BNNeck, [B,D] f32)
    and the fusion's own aux entries (e.g. "weights" [B,T]). ``fusion_kwargs`` is a tuple of
    (key, value) pairs so the module stays hashable (``fusion.resolve_options`` makes them).
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
    # ResNets: their temporal layers (models.inflated.resnet_fields) as (key, value) pairs.
    # ViT backbones: ViT fields (width, depth, heads, stride, act, proj_dim), what the fusion sees
    # (VIT_TOKENS) and the weight-import options (src_grid, interpolation) as (key, value) pairs.
    backbone_kwargs: tuple[tuple[str, Any], ...] = ()
    vit_tokens: str = "cls"
    import_options: tuple[tuple[str, Any], ...] = ()

    @nn.compact
    def __call__(self, clips: jax.Array, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Run the backbone on all B*T frames, fuse over T, apply BNNeck and the classifier."""
        if clips.ndim != 5:
            raise ValueError(f"ReIDModel expects clips [B,T,H,W,3]; got shape {clips.shape}")
        b, t = clips.shape[:2]
        if self.arch not in BACKBONES:
            raise ValueError(f"arch={self.arch!r}; expected one of {sorted(BACKBONES)}")
        maps = BACKBONES[self.arch](self, clips.reshape((b * t, *clips.shape[2:])), train, t)
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

    def pretrained_backbone(
        self, path: str | Path, expected: dict[str, Any], image_size: tuple[int, int]
    ) -> dict[str, Any]:
        """Backbone {params, batch_stats} as host numpy from a weights file (the family's
        importer), matched to ``expected`` (their shapes) for ``image_size`` (H, W) frames."""
        if self.arch not in VITS:
            return pretrained.load_variables(path, expected)
        vit = VITS[self.arch](**dict(self.backbone_kwargs), parent=None)  # not a child
        grid = grid_size(*image_size, vit.patch, vit.stride or vit.patch)
        params = vit_import.load_params(path, expected["params"], grid, **dict(self.import_options))
        return {"params": params, "batch_stats": {}}


def _resnet_maps(model: ReIDModel, frames: jax.Array, train: bool, seq_len: int) -> jax.Array:
    """The ResNet's last feature map [B*T, h, w, C] (backbone_kwargs: its temporal layers)."""
    return make_resnet(
        model.arch,
        width=model.width,
        last_stride=model.last_stride,
        dtype=model.dtype,
        zero_init_residual=model.zero_init_residual,
        name="backbone",
        **dict(model.backbone_kwargs),
    )(frames, train, seq_len)


def _vit_maps(model: ReIDModel, frames: jax.Array, train: bool, seq_len: int) -> jax.Array:
    """The ViT's CLS vectors as [B*T, 1, 1, C] maps, or its patch-token maps [B*T, h, w, C]."""
    del seq_len
    vit = make_vit(model.arch, dtype=model.dtype, name="backbone", **dict(model.backbone_kwargs))
    cls, patches = vit(frames, train)
    return patches if model.vit_tokens == "patches" else cls[:, None, None, :]


# arch -> fn(model, frames [B*T,H,W,3], train, T) -> maps [B*T, h, w, C]; the backbone submodule
# is named "backbone" (pretrained weights are loaded there).
BACKBONES: dict[str, Callable[[ReIDModel, jax.Array, bool, int], jax.Array]] = {
    **dict.fromkeys(RESNETS, _resnet_maps),
    **dict.fromkeys(VITS, _vit_maps),
}


MODEL_KEYS = ("arch", "width", "last_stride", "fusion", "fusion_kwargs", "dtype", "spatial_pool",
              "zero_init_residual", "temporal", "vit")  # fmt: skip


def make_model(config_model: ml_collections.ConfigDict, num_classes: int) -> ReIDModel:
    """Build a ReIDModel from ``config.model`` (every key of ``config_base.base_config().model``:
    the defaults live only there, so a missing key is an error that names it)."""
    for key in MODEL_KEYS:
        if key not in config_model:
            raise ValueError(f"config.model is missing key {key!r}")
    if config_model.arch not in BACKBONES:
        raise ValueError(
            f"config.model.arch={config_model.arch!r}; expected one of {sorted(BACKBONES)}"
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
    fusion_kwargs = resolve_options(config_model.fusion, config_model.fusion_kwargs)
    return ReIDModel(
        num_classes=int(num_classes),
        arch=config_model.arch,
        width=int(config_model.width),
        last_stride=int(config_model.last_stride),
        fusion=config_model.fusion,
        fusion_kwargs=tuple(sorted(fusion_kwargs.items())),
        dtype=DTYPES[config_model.dtype],
        zero_init_residual=bool(config_model.zero_init_residual),
        spatial_pool=config_model.spatial_pool,
        **(_vit_fields(config_model) or _temporal_fields(config_model)),
    )


def _temporal_fields(config_model: ml_collections.ConfigDict) -> dict[str, Any]:
    """A ResNet's temporal layers from ``config.model.temporal`` (reid_jax.models.inflated)."""
    if config_model.arch not in RESNETS:
        return {}
    stage_sizes = RESNETS[config_model.arch].keywords["stage_sizes"]
    fields = inflated.resnet_fields(config_model.temporal, stage_sizes)
    return {"backbone_kwargs": tuple(sorted(fields.items()))} if fields else {}


def _vit_fields(config_model: ml_collections.ConfigDict) -> dict[str, Any]:
    """ReIDModel's ViT fields from ``config.model.vit`` (unset keys keep the arch's values)."""
    vit = config_model.vit
    if config_model.arch not in VITS:
        return {}
    if vit.tokens not in VIT_TOKENS:
        raise ValueError(f"config.model.vit.tokens={vit.tokens!r}; expected one of {VIT_TOKENS}")
    if vit.pos_interpolation not in vit_import.INTERPOLATIONS:
        raise ValueError(
            f"config.model.vit.pos_interpolation={vit.pos_interpolation!r}; expected one of "
            f"{vit_import.INTERPOLATIONS}"
        )
    fields = ("width", "depth", "heads", "stride", "act", "proj_dim")
    kwargs = {k: vit[k] for k in fields if vit[k] is not None}
    options = {"interpolation": vit.pos_interpolation}
    if vit.pretrained_grid is not None:
        options["src_grid"] = tuple(int(g) for g in vit.pretrained_grid)
    return {
        "backbone_kwargs": tuple(sorted(kwargs.items())),
        "vit_tokens": vit.tokens,
        "import_options": tuple(sorted(options.items())),
    }
