"""Ablation variants that change the backbone: ``fusion:backbone=<preset>`` (issue 17)."""

import pytest

from reid_jax.config_base import base_config
from reid_jax.experiments.variants import apply_variant, parse_variant, parse_variants
from reid_jax.models.reid import make_model


def test_backbone_preset_sets_config_model_temporal_for_the_arch():
    c2d, ap3d, ap3d_nl = parse_variants("mean,mean:backbone=ap3d,mean:backbone=ap3d_nl")
    assert (c2d.backbone, ap3d.backbone, ap3d_nl.backbone) == ("", "ap3d", "ap3d_nl")
    assert ap3d.fusion == "mean" and ap3d.options == ()
    assert ap3d_nl.dirname == "mean-backbone=ap3d_nl"
    config = base_config()  # resnet50: AP3D's own placement
    apply_variant(config, ap3d_nl)
    assert (config.model.temporal.kind, config.model.temporal.blocks) == (
        "ap3d",
        "2.0,2.2,3.0,3.2,3.4",
    )
    assert config.model.temporal.nonlocal_blocks == "2.1,2.3,3.1,3.3,3.5"
    small = base_config()
    small.model.arch = "resnet18"
    apply_variant(small, parse_variant("temporal_attention:hidden=8:backbone=c3d"))
    assert small.model.fusion_kwargs.hidden == 8
    fields = dict(make_model(small.model, 4).backbone_kwargs)
    assert fields["temporal"] == "c3d" and fields["temporal_blocks"] == ((2, 0), (3, 0))
    plain = base_config()
    apply_variant(plain, c2d)  # no preset: the base config's backbone is left alone
    assert plain.model.temporal.kind == "none" and make_model(plain.model, 4).backbone_kwargs == ()


@pytest.mark.parametrize("text", ["mean:backbone=p3d", "mean:backbone=ap3d:backbone=c3d"])
def test_bad_backbone_preset_is_named(text):
    with pytest.raises(ValueError, match=rf"variant '{text}': backbone="):
        parse_variant(text)
