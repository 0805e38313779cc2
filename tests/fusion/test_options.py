"""Fusion options declared once, on the modules: the derived tables, the config placeholders built
from them, the one-line errors for a misspelt fusion or option, and two_branch's sub-dicts."""

import ast
import inspect
import math
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax import fusion
from reid_jax.config_base import ConfigError, base_config, check_ranges, load_config_file
from reid_jax.fusion import (
    FUSIONS,
    CosineCenterFusion,
    TempletFusion,
    TwoBranchFusion,
    make_fusion,
    option_paths,
    option_table,
    option_types,
)
from reid_jax.models.reid import make_model

ROOT = Path(__file__).resolve().parents[2]


def _signature(module: type) -> dict[str, inspect.Parameter]:
    """The module constructor's keyword parameters other than Linen's parent / name."""
    params = inspect.signature(module).parameters
    return {k: p for k, p in params.items() if k not in ("parent", "name")}


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_option_types_are_the_module_constructor_fields(name):
    """Read another way (the constructor's signature): same names, each default of its type."""
    table, params = option_types(name), _signature(FUSIONS[name])
    assert set(table) == set(params)
    for key, kind in table.items():
        default = params[key].default
        if isinstance(kind, dict):  # a branch: unset by default, its own module's table
            assert default == ()
        else:
            assert type(default) is kind, (name, key, default, kind)


def test_two_branch_options_are_combine_and_one_sub_dict_per_branch():
    assert option_types("two_branch") == {
        "combine": str,
        "appearance": option_types("cosine_center"),
        "motion": option_types("templet"),
    }
    assert option_types("cosine_center") == {
        "tau": float,
        "learn_tau": bool,
        "mode": str,
        "weighting": str,
        "iterations": int,
    }


def test_config_placeholders_are_the_option_table_and_typed():
    c = base_config()
    flat = {}

    def walk(node, prefix):
        for k in node.keys():
            if hasattr(node[k], "keys"):
                walk(node[k], f"{prefix}{k}.")
            else:
                flat[prefix + k] = node[k]

    walk(c.model.fusion_kwargs, "")
    union = {}
    for name in FUSIONS:
        union.update(option_paths(option_types(name)))
    assert set(flat) == set(union) == set(option_paths(option_table()))
    assert all(v is None for v in flat.values())  # unset: the module's defaults
    c.lock()
    c.model.fusion_kwargs.appearance.tau = 0.1
    with pytest.raises(TypeError):
        c.model.fusion_kwargs.motion.rescale = "yes"
    with pytest.raises(AttributeError):
        c.model.fusion_kwargs.appearance.alpha_max = 4.0


def test_option_table_rejects_a_name_with_two_types_and_untyped_fields(monkeypatch):
    class IntTau(nn.Module):
        tau: int = 1

    class Listy(nn.Module):
        sizes: tuple = ()

    monkeypatch.setitem(FUSIONS, "int_tau", IntTau)
    with pytest.raises(TypeError, match="'tau' has two types"):
        option_table()
    monkeypatch.delitem(FUSIONS, "int_tau")
    monkeypatch.setitem(FUSIONS, "listy", Listy)
    with pytest.raises(TypeError, match=r"Listy\.sizes"):
        option_table()


def _config(name: str, **options):
    c = base_config()  # unlocked, as a config file builds it: a misspelt key is accepted here
    c.model.fusion = name
    for key, value in options.items():
        *branches, option = key.split("__")
        node = c.model.fusion_kwargs
        for b in branches:
            node = node[b]
        node[option] = value
    return c


CC = "['iterations', 'learn_tau', 'mode', 'tau', 'weighting']"
TWO = (
    "['appearance.iterations', 'appearance.learn_tau', 'appearance.mode', 'appearance.tau', "
    "'appearance.weighting', 'combine', 'motion.alpha_max', 'motion.per_channel', "
    "'motion.reduction', 'motion.refine', 'motion.rescale']"
)


@pytest.mark.parametrize(
    "config, message",
    [
        (
            _config("meen"),
            "config.model.fusion='meen': expected one of ['cosine_center', 'lstm', 'max', "
            "'mean', 'templet', 'temporal_attention', 'temporal_conv', 'two_branch']",
        ),
        (
            _config("cosine_center", taux=0.1),
            f"config.model.fusion_kwargs.taux=0.1: fusion 'cosine_center' does not take option "
            f"'taux'; its options are {CC}",
        ),
        (
            _config("mean", tau=0.1),
            "config.model.fusion_kwargs.tau=0.1: fusion 'mean' does not take option 'tau'; its "
            "options are []",
        ),
        (
            _config("mean", appearance__tau=0.1),
            "config.model.fusion_kwargs.appearance.tau=0.1: fusion 'mean' does not take option "
            "'appearance'; its options are []",
        ),
        (
            _config("two_branch", tau=0.1),
            f"config.model.fusion_kwargs.tau=0.1: fusion 'two_branch' does not take option 'tau'; "
            f"its options are {TWO} (an option of its branch: set "
            f"config.model.fusion_kwargs.appearance.tau)",
        ),
        (
            _config("two_branch", appearance__alpha_max=4.0),
            f"config.model.fusion_kwargs.appearance.alpha_max=4.0: branch 'appearance' of fusion "
            f"'two_branch' does not take option 'alpha_max'; its options are {CC}",
        ),
    ],
)
def test_misspelt_fusion_or_option_is_one_config_error_line(config, message):
    with pytest.raises(ConfigError) as e:
        check_ranges(config)  # what training and the evaluation job run before anything else
    assert str(e.value) == message


def test_misspelt_fusion_fails_before_data_preparation(tmp_path):
    from reid_jax.jobs.training import train_and_evaluate  # noqa: PLC0415 (heavy)

    c = load_config_file(ROOT / "configs" / "synth_mars_demo.py", "tiny")
    c.model.fusion = "meen"
    c.data.raw_dir, c.data.data_dir = str(tmp_path / "raw"), str(tmp_path / "tfds")
    with pytest.raises(ConfigError, match="config.model.fusion='meen'"):
        train_and_evaluate(c, tmp_path / "run")
    assert not (tmp_path / "raw").exists() and not (tmp_path / "tfds").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.py")), ids=lambda p: p.stem)
def test_every_config_file_sets_only_its_fusions_options(path):
    check_ranges(load_config_file(path))


def test_two_branch_sub_dicts_reach_their_branch(init_apply):
    """Each sub-dict configures its own branch: the fused output is the sum of a CosineCenterFusion
    and a TempletFusion built directly with those options, on the two_branch's own parameters."""
    appearance = {"tau": 0.1, "mode": "flat", "learn_tau": True}
    motion = {"alpha_max": 4.0, "rescale": True, "reduction": 2}
    module = make_fusion("two_branch", combine="sum", appearance=appearance, motion=motion)
    maps = jnp.asarray(np.random.default_rng(0).normal(size=(2, 2, 2, 2, 4)), jnp.float32)
    variables, apply = init_apply(module, maps)
    params = variables["params"]
    np.testing.assert_allclose(params["appearance"]["log_tau"], math.log(0.1), rtol=1e-6)
    assert params["motion"]["reduce_kernel"].shape == (1, 1, 4, 4 // 2)  # reduction 2
    # The same parameters under the branches' default options must fuse differently.
    defaults = TwoBranchFusion(
        combine="sum", appearance={"learn_tau": True}, motion={"reduction": 2}
    )

    @jax.jit
    def references(params, maps):
        app, app_aux = CosineCenterFusion(**appearance).apply(
            {"params": params["appearance"]}, maps, False
        )
        mot, _ = TempletFusion(**motion).apply({"params": params["motion"]}, maps, False)
        return app + mot, app_aux["weights"], defaults.apply({"params": params}, maps, False)[0]

    fused, aux = apply(variables, maps)
    expected, weights, default_fused = references(params, maps)
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aux["weights"], weights, rtol=1e-5)
    assert not np.allclose(default_fused, fused, atol=1e-4)


def test_config_sub_dicts_become_the_models_hashable_fusion_kwargs():
    c = _config("two_branch", combine="sum", appearance__tau=0.1, motion__rescale=True)
    model = make_model(c.model, num_classes=3)
    assert model.fusion_kwargs == (
        ("appearance", (("tau", 0.1),)),
        ("combine", "sum"),
        ("motion", (("rescale", True),)),
    )
    hash(model)
    assert make_model(_config("mean").model, num_classes=3).fusion_kwargs == ()


def test_docs_option_table_matches_the_modules():
    """docs/fusion.md's Options table: each row's type, methods and defaults are the modules'."""
    text = (ROOT / "docs" / "fusion.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([\w-]+) \| ([\w ,/]+) \| (.+) \|$", text, re.M)
    assert {r[0] for r in rows} == set(option_table())
    for key, kind, methods, defaults in rows:
        names = [m.strip() for m in re.split("[,/]", methods)]
        assert set(names) == {f for f in FUSIONS if key in option_types(f)}, key
        table = option_types(names[0])[key]
        assert kind == ("sub-dict" if isinstance(table, dict) else table.__name__), key
        if isinstance(table, dict):
            continue
        for name, default in zip(names, defaults.split(" / "), strict=True):
            written = ast.literal_eval(default.split(" (")[0])
            assert _signature(FUSIONS[name])[key].default == written, (key, name)


def test_unset_and_resolved_options_round_trip():
    resolved = fusion.resolve_options("two_branch", {"appearance": {"tau": 0.1, "mode": None}})
    assert resolved == {"appearance": (("tau", 0.1),)}
    assert fusion.resolve_options("two_branch", resolved) == resolved  # idempotent
    assert fusion.resolve_options("two_branch", {"appearance": {"tau": None}}) == {}
