"""Every config file builds, only sets keys that exist in the base config, and keeps their types."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from reid_jax.config_base import base_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


def _flat(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        if hasattr(v, "items"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_sets_only_known_keys(path):
    base = _flat(base_config())
    module = _load(path)
    assert module.__doc__ and "python -m reid_jax.main" in module.__doc__
    for arg in ("", "tiny"):
        cfg = _flat(module.get_config(arg))
        unknown = set(cfg) - set(base)
        assert not unknown, f"{path.name}: keys not in config_base: {sorted(unknown)}"
        for key, value in cfg.items():
            if base[key] is not None and value is not None:
                assert isinstance(value, type(base[key])) or (
                    isinstance(base[key], float) and isinstance(value, int)
                ), f"{path.name}: {key}={value!r} has another type than {base[key]!r}"


def test_there_is_a_demo_and_the_research_recipe():
    names = {p.stem for p in CONFIGS}
    assert {"synth_mars_demo", "mars_r50_tp"} <= names


def test_load_config_file_reads_path_and_arg_like_the_config_flag(tmp_path):
    import pytest

    from reid_jax.config_base import load_config_file

    root = Path(__file__).resolve().parents[1] / "configs"
    tiny = load_config_file(f"{root / 'mars_r50_max.py'}:tiny")
    assert tiny.model.fusion == "max"
    assert tiny.to_dict() == load_config_file(root / "mars_r50_max.py", "tiny").to_dict()
    assert tiny.to_dict() != load_config_file(root / "mars_r50_max.py").to_dict()
    with pytest.raises(FileNotFoundError, match="nope.py not found"):
        load_config_file(tmp_path / "nope.py")
