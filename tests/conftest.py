"""Fixtures shared by the test folders: the tiny SynthMARS config and data, and one short
training run with a checkpoint at every step (steps 1, 2, 3 = epochs 0.5, 1, 1.5), trained once
per session for every folder that uses it (evaluation, inference)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(data_dirs: tuple[str, str]):
    """The demo config's "tiny" variant on ``data_dirs`` (raw, tfds): 3 steps, a checkpoint at
    every step (all kept), one evaluation at the end, constant LR."""
    spec = importlib.util.spec_from_file_location("demo", ROOT / "configs" / "synth_mars_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config("tiny")
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
    from reid_jax.train.loop import train_and_evaluate

    cfg = tiny_config(tiny_data)
    workdir = tmp_path_factory.mktemp("trained_run")
    out = train_and_evaluate(cfg, workdir)
    return cfg, workdir, out
