"""Ablation variant strings: parsing, typing, and errors naming what is wrong."""

import pytest

from reid_jax.config_base import base_config
from reid_jax.experiments.variants import apply_variant, parse_variant, parse_variants
from reid_jax.models.reid import make_model


def test_parse_plain_and_options():
    assert parse_variant("mean").fusion == "mean"
    assert parse_variant("mean").options == ()
    v = parse_variant("cosine_center:tau=0.1:learn_tau=true:mode=flat")
    assert v.fusion == "cosine_center"
    assert dict(v.options) == {"tau": 0.1, "learn_tau": True, "mode": "flat"}
    assert isinstance(dict(v.options)["tau"], float)
    assert v.dirname == "cosine_center-tau=0.1-learn_tau=true-mode=flat"
    assert dict(parse_variant("templet:alpha_max=4").options)["alpha_max"] == 4.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("nope", "Unknown fusion 'nope'"),
        ("mean:tau=0.1", "has no option 'tau'"),
        ("cosine_center:tau", "expected option=value"),
        ("cosine_center:tau=abc", "tau='abc' is not a valid float"),
        ("cosine_center:learn_tau=maybe", "not a boolean"),
        ("cosine_center:tau=1:tau=2", "given twice"),
    ],
)
def test_parse_errors_name_the_variant(text, message):
    with pytest.raises(ValueError, match=message) as e:
        parse_variant(text)
    assert repr(text) in str(e.value)


def test_parse_list_rejects_duplicates_and_empty():
    assert [v.label for v in parse_variants("mean, templet")] == ["mean", "templet"]
    with pytest.raises(ValueError, match="more than once"):
        parse_variants("mean,mean")
    with pytest.raises(ValueError, match="names no variant"):
        parse_variants(" , ")


def test_apply_variant_sets_only_its_options():
    c = base_config()
    apply_variant(c, parse_variant("cosine_center:tau=0.1"))
    assert c.model.fusion == "cosine_center"
    assert c.model.fusion_kwargs.tau == 0.1
    assert c.model.fusion_kwargs.mode is None


def test_branch_options_are_dotted_typed_and_set_in_their_sub_dict():
    v = parse_variant("two_branch:appearance.tau=0.1:motion.rescale=true:combine=sum")
    assert dict(v.options) == {"appearance.tau": 0.1, "motion.rescale": True, "combine": "sum"}
    c = base_config()
    c.lock()
    apply_variant(c, v)
    assert c.model.fusion_kwargs.appearance.tau == 0.1
    assert c.model.fusion_kwargs.motion.rescale is True
    assert c.model.fusion_kwargs.tau is None and c.model.fusion_kwargs.rescale is None
    assert make_model(c.model, num_classes=3).fusion_kwargs == (
        ("appearance", (("tau", 0.1),)),
        ("combine", "sum"),
        ("motion", (("rescale", True),)),
    )


@pytest.mark.parametrize("text", ["two_branch:tau=0.1", "two_branch:appearance=1"])
def test_branch_options_need_their_branch(text):
    with pytest.raises(ValueError, match="its options are \\['appearance.iterations'"):
        parse_variant(text)
