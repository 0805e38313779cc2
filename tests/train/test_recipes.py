"""The recipe options of the published MARS recipes: ImageNet weights required on real data, the
triplet loss on the BN feature, and AP3D's C2D recipe end to end on a tiny SynthMARS."""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from reid_jax import config_base
from reid_jax.config_base import ConfigError, load_config_file, pretrained_weights
from reid_jax.models.reid import ReIDModel
from reid_jax.train import losses
from reid_jax.train import step as step_lib
from reid_jax.train.state import TrainState

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.py"))
REAL = [p for p in CONFIGS if not p.stem.startswith("synth_")]


@pytest.mark.parametrize("path", REAL, ids=[p.stem for p in REAL])
def test_real_dataset_configs_need_weights_and_their_commands_pass_them(path, tmp_path):
    module_doc = path.read_text().split('"""')[1]
    assert "--config.model.pretrained=" in module_doc, f"{path.name}: run command without weights"
    cfg = load_config_file(path)
    with pytest.raises(ConfigError, match=r"--config\.model\.pretrained=PATH.*=scratch"):
        pretrained_weights(cfg)
    cfg.model.pretrained = config_base.SCRATCH
    assert pretrained_weights(cfg) == ""  # explicit random init
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    cfg.model.pretrained = str(weights)
    assert pretrained_weights(cfg) == str(weights)
    cfg.model.pretrained = str(tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="missing.pth"):
        pretrained_weights(cfg)


def test_synthmars_keeps_random_init():
    assert pretrained_weights(load_config_file(ROOT / "configs" / "synth_mars_demo.py")) == ""


def test_cli_refuses_before_preparing_data(tmp_path):
    data_dir = tmp_path / "tfds"
    proc = subprocess.run(
        [sys.executable, "-m", "reid_jax.main", "--config", str(ROOT / "configs/mars_r50.py"),
         "--workdir", str(tmp_path / "run"), f"--config.data.raw_dir={tmp_path / 'MARS'}",
         f"--config.data.data_dir={data_dir}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--config.model.pretrained=PATH" in proc.stderr and "Traceback" not in proc.stderr
    assert not data_dir.exists()  # nothing was prepared


def test_triplet_on_the_bn_feature():
    """loss.triplet_feature="bn" feeds the BNNeck output to the triplet loss (AP3D's train.py)."""
    model = ReIDModel(num_classes=3, arch="resnet10", width=8)
    clips = jax.random.uniform(jax.random.key(0), (6, 2, 32, 16, 3), maxval=255.0)
    variables = jax.jit(lambda x: model.init(jax.random.key(1), x, train=False))(clips)
    tx = optax.sgd(0.0)
    state = TrainState(jnp.zeros((), jnp.int32), variables["params"], variables["batch_stats"],
                       tx.init(variables["params"]))  # fmt: skip
    batch = {"clip": clips.astype(jnp.uint8), "label": jnp.array([0, 0, 1, 1, 2, 2])}
    normed = step_lib.normalize(batch["clip"], xp=jnp)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    (_, aux), _ = apply(variables, normed)
    cfg = step_lib.LossConfig(triplet_feature="bn", triplet_distance="cosine")
    step = jax.jit(functools.partial(step_lib.train_step, model=model, tx=tx, loss_cfg=cfg))
    _, metrics = step(state, batch)
    expected, _ = losses.batch_hard_triplet(aux["bn_features"], batch["label"], 0.3, "cosine")
    raw, _ = losses.batch_hard_triplet(aux["features"], batch["label"], 0.3, "cosine")
    np.testing.assert_allclose(metrics["loss/triplet"], expected, rtol=1e-5)
    assert abs(float(raw) - float(expected)) > 1e-4  # the two features give other losses
    with pytest.raises(ValueError, match="triplet_feature='post'"):
        bad = config_base.base_config().loss
        bad.triplet_feature = "post"
        step_lib.LossConfig.from_config(bad)


def test_ap3d_c2d_recipe_trains_on_tiny_synthmars(tmp_path):
    """AP3D's recipe options together (strided frames, tracklet epochs, max pooling, plain CE,
    cosine triplet on the BN feature, cosine test) train and report the appended protocol."""
    from reid_jax.jobs.training import train_and_evaluate

    cfg = load_config_file(ROOT / "configs" / "mars_ap3d_c2d_r50.py", "tiny")
    tiny = load_config_file(ROOT / "configs" / "synth_mars_demo.py", "tiny")
    cfg.data = tiny.data  # the tiny SynthMARS, with the recipe's data options on top
    cfg.data.raw_dir, cfg.data.data_dir = str(tmp_path / "raw"), str(tmp_path / "tfds")
    cfg.data.frame_sampler, cfg.data.sample_stride, cfg.data.epoch = "strided", 2, "tracklets"
    cfg.data.erase_p, cfg.data.pad = 0.0, 0
    cfg.model.pretrained = ""
    cfg.num_steps, cfg.eval_every_epochs, cfg.checkpoint.async_save = 3, 0.0, False
    out = train_and_evaluate(cfg, tmp_path / "run")
    (final,) = out["history"]
    assert math.isfinite(final["retrieval/appended/mAP"]) and 0 <= final["retrieval/appended/mAP"]
    assert out["steps_per_epoch"] > 8 // cfg.data.p  # tracklet epochs: more than one per id pass
