"""Fixtures shared by the test folders: the tiny SynthMARS config and data, and one short
training run with a checkpoint at every step (steps 1, 2, 3 = epochs 0.5, 1, 1.5), trained once
per session for every folder that uses it (evaluation, inference)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# One persistent XLA compilation cache for the whole session, set before anything imports jax, so
# that the subprocesses and xdist workers the suite starts inherit it: the many runs of the same
# tiny models (the shared run, the CLI jobs on it, the layouts of the multi-host tests) compile
# each program once. Programs are keyed by their HLO and flags: results are unchanged.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="reid_jax_xla_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# LLVM's optimisation passes off: the tests check values, not speed, and most of their time is
# compiling (-14% on the model tests, measured side by side). Runs without it (`make demo`, the
# benchmarks) are unaffected; the multi-host tests' processes inherit it.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if _FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):  # xdist workers inherit it
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

ROOT = Path(__file__).resolve().parents[1]

# The longest files first (seconds on 2 CPU cores with 2 xdist workers, `make test`'s
# --durations): with `--dist loadfile` each file goes whole to the next free worker, so starting
# with the long ones keeps both workers busy to the end instead of one finishing alone.
SLOW_FIRST = (
    "parallel/test_multihost.py",  # 254
    "experiments/test_ablate.py",  # 114
    "fusion/test_training.py",  # 111
    "inference/test_export.py",  # 92
    "models/test_temporal_backbone.py",  # 92
    "evaluation/test_job.py",  # 70
    "train/test_recipes.py",  # 50
)


def pytest_collection_modifyitems(config, items):
    """Runs the files of SLOW_FIRST first, in that order; the rest keep pytest's order."""
    del config
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}

    def key(item):
        rel = Path(str(item.path)).relative_to(ROOT / "tests").as_posix()
        return rank.get(rel, len(rank))

    items.sort(key=key)  # stable: a file's tests keep their order


def tiny_config(data_dirs: tuple[str, str]):
    """The demo config's "tiny" variant on ``data_dirs`` (raw, tfds): 3 steps, a checkpoint at
    every step (all kept), one evaluation at the end, constant LR."""
    from reid_jax.config_base import load_config_file  # noqa: PLC0415 (jax after the flags above)

    cfg = load_config_file(ROOT / "configs" / "synth_mars_demo.py", "tiny")
    cfg.data.raw_dir, cfg.data.data_dir = data_dirs
    cfg.num_steps = 3
    cfg.eval_every_epochs = 0
    cfg.optim.schedule = "constant"
    cfg.checkpoint.every_steps = 1
    cfg.checkpoint.keep_last = 5
    cfg.checkpoint.async_save = False
    return cfg


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> tuple[str, str]:
    """(raw_dir, data_dir) of the tiny SynthMARS; generated and prepared by the first user."""
    base = tmp_path_factory.mktemp("tiny_synth")
    return str(base / "raw"), str(base / "tfds")


@pytest.fixture(scope="session")
def trained(tiny_data, tmp_path_factory):
    """(config, workdir, train_and_evaluate output) of a 3-step run, trained once."""
    from reid_jax.jobs.training import train_and_evaluate

    cfg = tiny_config(tiny_data)
    workdir = tmp_path_factory.mktemp("trained_run")
    out = train_and_evaluate(cfg, workdir)
    return cfg, workdir, out
