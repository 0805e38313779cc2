"""Every config file builds, only sets keys that exist in the base config, keeps their types,
accepts exactly its arguments, and every config command in the docs and docstrings loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reid_jax.config_base import ConfigError, base_config, check_ranges, load_config_file

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.py"))
# model.fusion and the set options of model.fusion_kwargs of each former
# configs/mars_r50_<name>.py, copied by hand from those files at commit 6ad1f50 (mars_r50_tp.py set
# none; two_branch as item 4 of issue 14 nested it), before they became mars_r50.py:fusion=<name>.
COSINE_CENTER = {"tau": 1.0, "learn_tau": False, "mode": "pairwise", "weighting": "softmax",
                 "iterations": 0}  # fmt: skip
TEMPLET = {"alpha_max": 10.0, "per_channel": False, "refine": True, "reduction": 4}
FORMER_FILES = {
    "tp": ("mean", {}),
    "max": ("max", {}),
    "temporal_attention": ("temporal_attention", {"hidden": 256, "temporal_kernel": 3}),
    "temporal_conv": ("temporal_conv", {"kernel_size": 0}),
    "lstm": ("lstm", {"hidden": 512}),
    "cosine_center": ("cosine_center", COSINE_CENTER),
    "templet": ("templet", TEMPLET),
    "two_branch": ("two_branch", {"combine": "concat",
                                  **{f"appearance.{k}": v for k, v in COSINE_CENTER.items()},
                                  **{f"motion.{k}": v for k, v in TEMPLET.items()}}),
}  # fmt: skip
# The arguments each config accepts besides "" (hand-listed); configs not named take "tiny".
ARGS = {
    "duke_video_r50_tp": [],
    "ilidsvid_r50_tp": [],
    "prid2011_r50_tp": [],
    "mars_r50": ["tiny", *(f"fusion={f}" for f in FORMER_FILES), "fusion=two_branch,tiny"],
}
# A config file (and argument) named in the docs, launchers, benchmarks or a config docstring;
# templates such as configs/mars_r50.py:fusion=<name> do not match.
CONFIG_REF = re.compile(r"(?<![\w/.-])configs/([a-z0-9_]+)\.py(?::([\w=,.]++))?+(?![<\w])")


def _flat(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        if hasattr(v, "items"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_sets_only_known_keys(path):
    base = _flat(base_config())
    for arg in ["", *ARGS.get(path.stem, ["tiny"])]:
        cfg = _flat(load_config_file(path, arg))
        unknown = set(cfg) - set(base)
        assert not unknown, f"{path.name}:{arg}: keys not in config_base: {sorted(unknown)}"
        for key, value in cfg.items():
            if base[key] is not None and value is not None:
                assert isinstance(value, type(base[key])) or (
                    isinstance(base[key], float) and isinstance(value, int)
                ), f"{path.name}:{arg}: {key}={value!r} has another type than {base[key]!r}"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_rejects_unknown_arguments(path):
    """A typo never runs the default recipe silently: one line naming the file and the key."""
    for bad in ["tiyn", "tiny,tiyn"] if ARGS.get(path.stem) != [] else ["tiny"]:
        with pytest.raises(ConfigError, match=rf"^{path.name}\b.*'{bad.split(',')[-1]}'"):
            load_config_file(path, bad)


def test_docstrings_and_docs_name_configs_that_load():
    """Every ``configs/<x>.py[:arg]`` in the README, docs/, launch/, bench/ and the config files'
    docstrings exists and its argument parses; each config's docstring shows its run command."""
    texts = {p: p.read_text() for d in ("docs", "launch", "bench") for p in (ROOT / d).iterdir()
             if p.is_file() and p.suffix in (".md", ".sh", ".sbatch", ".yaml", ".py")}  # fmt: skip
    texts[ROOT / "README.md"] = (ROOT / "README.md").read_text()
    for path in CONFIGS:
        module_doc = re.match(r'\s*"""(.*?)"""', path.read_text(), re.S)
        assert module_doc and "python -m reid_jax." in module_doc.group(1), path.name
        texts[path] = module_doc.group(1)
    refs = {(p.name, m.group(0)) for p, text in texts.items() for m in CONFIG_REF.finditer(text)}
    assert ("mars_r50.py", "configs/mars_r50.py:fusion=templet") in refs
    for where, ref in sorted(refs):
        path, _, arg = ref.partition(":")
        assert (ROOT / path).is_file(), f"{where} names {path}, which does not exist"
        load_config_file(ROOT / path, arg.rstrip(".,"))  # not a sentence's full stop


def test_there_is_a_demo_and_the_research_recipe():
    names = {p.stem for p in CONFIGS}
    assert {"synth_mars_demo", "mars_r50"} <= names


def test_the_tiny_test_config_trains_a_resnet10():
    """README's Tests section: the tiny configs train a ResNet-10 (the demo itself a ResNet-18)."""
    demo = ROOT / "configs" / "synth_mars_demo.py"
    assert load_config_file(demo, "tiny").model.arch == "resnet10"
    assert load_config_file(demo).model.arch == "resnet18"


def test_mars_r50_default_is_the_research_recipe():
    """The values configs/mars_r50_tp.py set (hand-copied), now mars_r50.py's default."""
    c = load_config_file(ROOT / "configs" / "mars_r50.py")
    assert (c.data.name, c.data.raw_dir, c.data.data_dir) == ("mars", "data/MARS", "data/tfds")
    assert (c.data.num_workers, c.data.num_threads, c.data.test_batch_size) == (8, 8, 256)
    assert (c.model.arch, c.model.dtype, c.model.fusion) == ("resnet50", "bfloat16", "mean")
    assert (c.num_epochs, c.eval_every_epochs, c.eval_start_epochs) == (520, 40, 360)
    assert (c.optim.lr, list(c.optim.decay_epochs)) == (3e-4, [200, 400])
    assert c.evals.retrieval.distance == "cosine"
    tiny = load_config_file(ROOT / "configs" / "mars_r50.py", "tiny")
    assert (tiny.model.arch, tiny.model.width, tiny.model.dtype) == ("resnet18", 8, "float32")
    assert (tiny.data.height, tiny.data.width, tiny.data.num_workers, tiny.num_steps) == (
        64, 32, 0, 2)  # fmt: skip


@pytest.mark.parametrize("name", FORMER_FILES)
def test_mars_r50_fusion_argument_reproduces_the_former_file(name):
    """``fusion=<name>`` sets what configs/mars_r50_<name>.py set, options the fusion takes (the
    config check passes), and nothing else differs from the default (``tiny``: the tiny) recipe."""
    path = ROOT / "configs" / "mars_r50.py"

    def rest(c):
        return {k: v for k, v in _flat(c).items() if not k.startswith("model.fusion")}

    fusion, kwargs = FORMER_FILES[name]
    for tiny in ("", ",tiny"):
        cfg = load_config_file(path, f"fusion={name}{tiny}")
        assert cfg.model.fusion == fusion
        assert {k: v for k, v in _flat(cfg.model.fusion_kwargs).items() if v is not None} == kwargs
        assert rest(cfg) == rest(load_config_file(path, tiny.lstrip(",")))
        check_ranges(cfg)


def test_load_config_file_reads_path_and_arg_like_the_config_flag(tmp_path):
    root = ROOT / "configs"
    tiny = load_config_file(f"{root / 'mars_r50.py'}:fusion=max,tiny")
    assert (tiny.model.fusion, tiny.model.arch) == ("max", "resnet18")
    assert tiny.to_dict() == load_config_file(root / "mars_r50.py", "fusion=max,tiny").to_dict()
    assert tiny.to_dict() != load_config_file(root / "mars_r50.py", "fusion=max").to_dict()
    with pytest.raises(FileNotFoundError, match="nope.py not found"):
        load_config_file(tmp_path / "nope.py")
