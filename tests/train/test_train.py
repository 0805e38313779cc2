"""End to end: train_and_evaluate on a tiny SynthMARS, stop on SIGTERM and resume exactly, and the
CLI's config lock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from reid_jax import parallel
from reid_jax.config_base import ConfigError, check_ranges, load_config_file
from reid_jax.data.pipeline import BadFrames
from reid_jax.jobs.training import load_history, read_jsonl, train_and_evaluate
from reid_jax.run import build, interval_steps, load_config, schedule_steps

ROOT = Path(__file__).resolve().parents[2]


def _config():
    return load_config_file(ROOT / "configs" / "synth_mars_demo.py", "tiny")


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny_data")
    return str(base / "raw"), str(base / "tfds")


def _tiny(data_dirs, num_steps):
    cfg = _config()
    cfg.data.raw_dir, cfg.data.data_dir = data_dirs
    cfg.num_steps = num_steps
    cfg.eval_every_epochs = 0  # evaluate only at the end
    cfg.optim.schedule = "constant"  # the LR must not depend on the run length here
    cfg.checkpoint.every_steps = 2
    return cfg


@pytest.fixture(scope="module")
def straight(data_dirs, tmp_path_factory):
    """An uninterrupted 4-step run (shared: each run costs a compile)."""
    workdir = tmp_path_factory.mktemp("straight")
    return workdir, train_and_evaluate(_tiny(data_dirs, 4), workdir)


def test_train_and_evaluate_reports_both_protocols(straight):
    workdir, out = straight
    (final,) = out["history"]
    assert final["step"] == 4 and not out["preempted"] and out["start_step"] == 0
    for protocol in ("official", "legacy", "appended"):
        for key in ("mAP", "Rank1", "Rank5", "mINP"):
            assert 0.0 <= final[f"retrieval/{protocol}/{key}"] <= 1.0
        assert final[f"retrieval/{protocol}/Rank1"] <= final[f"retrieval/{protocol}/Rank5"]
    table = (workdir / "results.md").read_text()
    assert "| epoch | mAP | Rank1 | Rank5 |" in table and "official" in table and "legacy" in table
    # One results format: the evaluation is eval/train_step_4.json, a record as the evaluation
    # job writes, under the names best_metric and TensorBoard use.
    record = json.loads((workdir / "eval" / "train_step_4.json").read_text())
    assert (record["format"], record["source"], record["step"]) == (2, "training", 4)
    assert record["metrics"]["retrieval/official"]["mAP"] == final["retrieval/official/mAP"]
    assert record["settings"]["evals"]["retrieval"]["protocols"] == ["official", "legacy",
                                                                      "appended"]  # fmt: skip
    assert load_history(workdir) == out["history"] and not (workdir / "eval_history.json").exists()
    assert {p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()} >= {"4"}
    assert any((workdir / "tensorboard").iterdir())
    assert [r["step"] for r in read_jsonl(workdir / "train_metrics.jsonl")] == [1, 2, 3, 4]


def test_sigterm_stop_and_resume_equals_an_uninterrupted_run(
    data_dirs, straight, tmp_path, monkeypatch
):
    straight_dir, straight = straight
    # A SIGTERM arrives while step 2 is being prepared: the run finishes step 2, saves it and
    # returns (no Python handler is left behind); rerunning the same command continues.
    calls = []
    global_batch = parallel.global_batch

    def sigterm_on_second_train_batch(local, mesh):
        if "label" in local:
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
        return global_batch(local, mesh)

    handler = signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as m:
        m.setattr(parallel, "global_batch", sigterm_on_second_train_batch)
        first = train_and_evaluate(_tiny(data_dirs, 4), tmp_path / "resumed")
    assert signal.getsignal(signal.SIGTERM) is handler
    assert first["preempted"] and int(first["state"].step) == 2 and not first["history"]
    assert (tmp_path / "resumed" / "PREEMPTED").read_text().strip() == "2"
    second = train_and_evaluate(_tiny(data_dirs, 4), tmp_path / "resumed")
    assert second["start_step"] == 2 and int(second["state"].step) == 4
    assert not second["preempted"] and not (tmp_path / "resumed" / "PREEMPTED").exists()
    # Same data order and same arithmetic: the parameters agree bit for bit on CPU.
    for a, b in zip(
        jax.tree.leaves(straight["state"].params), jax.tree.leaves(second["state"].params)
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert straight["history"][-1] == pytest.approx(
        {**second["history"][-1], "eval_seconds": straight["history"][-1]["eval_seconds"]}
    )
    # Per-step records: the resumed run's losses continue the first run's, bit for bit.
    records = [read_jsonl(d / "train_metrics.jsonl") for d in (straight_dir, tmp_path / "resumed")]
    assert [r["step"] for r in records[1]] == [1, 2, 3, 4]
    assert [r["loss"] for r in records[1]] == [r["loss"] for r in records[0]]


def test_schedule_steps_converts_epochs_once():
    cfg = _config()
    cfg.num_steps, cfg.num_epochs = -1, 10
    cfg.eval_every_epochs, cfg.eval_start_epochs = 4, 5
    assert schedule_steps(cfg, steps_per_epoch=3) == (30, [24, 30])


def test_log_and_checkpoint_intervals_can_be_given_in_epochs():
    cfg = _config()
    assert interval_steps(cfg, "checkpoint.every_epochs", 5) == cfg.checkpoint.every_steps  # unset
    cfg.checkpoint.every_epochs, cfg.log_every_epochs = 2.0, 0.4
    assert interval_steps(cfg, "checkpoint.every_epochs", 5) == 10  # overrides every_steps
    assert interval_steps(cfg, "log_every_epochs", 5) == 2  # round(0.4 * 5)
    assert interval_steps(cfg, "checkpoint.every_epochs", 7) == 14
    cfg.log_every_epochs = 0.05  # 0.25 steps
    with pytest.raises(ConfigError, match=r"log_every_epochs=0.05 is 0 steps \(an epoch is 5 "):
        interval_steps(cfg, "log_every_epochs", 5)
    cfg.checkpoint.every_epochs = 0.0
    with pytest.raises(ConfigError, match=r"checkpoint.every_epochs=0.0: expected > 0 epochs"):
        check_ranges(cfg)
    cfg.checkpoint.every_epochs, cfg.log_every_epochs = 3.0, None
    run = build(cfg, "unused", num_classes=4, steps_per_epoch=5)  # what the loop reads
    assert (run.checkpoint_every, run.log_every) == (15, cfg.log_every_steps)


def test_a_run_from_before_the_records_keeps_its_history(straight, tmp_path):
    """A workdir written before eval/train_step_<N>.json (its evaluations in eval_history.json,
    the same flat entries) still reads, merged with the records written since."""
    _, out = straight
    (new,) = out["history"]
    old = {**new, "step": 2, "epoch": new["epoch"] / 2, "retrieval/official/mAP": 0.25}
    (tmp_path / "eval_history.json").write_text(json.dumps([old]))
    assert load_history(tmp_path) == [old]
    shutil.copytree(straight[0] / "eval", tmp_path / "eval")
    assert load_history(tmp_path) == [old, new]


def test_a_run_saved_before_a_key_existed_loads_with_its_default(tmp_path):
    """``run.load_config`` fills keys a run's config.json lacks from config_base (the only
    place defaults live), keeping every value the run saved."""
    saved = json.loads(_config().to_json_best_effort())
    del saved["optim"]["eps"], saved["model"]["zero_init_residual"], saved["log_every_epochs"]
    saved["optim"]["lr"] = 0.125
    (tmp_path / "config.json").write_text(json.dumps(saved))
    cfg = load_config(tmp_path)
    added = (cfg.optim.eps, cfg.model.zero_init_residual, cfg.log_every_epochs)
    assert added == (1e-8, False, None)
    assert cfg.optim.lr == 0.125 and cfg.model.arch == _config().model.arch


def test_bad_frames_are_counted_then_stop_the_run_with_their_names():
    source = [{"name": f"bbox_train/0001/0001C1T0001F00{i}.jpg".encode()} for i in range(5)]
    bad = BadFrames(source, limit=2)
    bad.update({"bad_frames": np.array([[1, -1], [1, 3]])})
    assert sorted(bad.seen) == [1, 3]
    with pytest.raises(RuntimeError, match=r"(?s)3 frames failed.*F001.*F003.*F004"):
        bad.update({"bad_frames": np.array([[4, -1]])})


def test_cli_rejects_an_unknown_config_key(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reid_jax.main",
            "--config",
            "configs/synth_mars_demo.py",
            "--workdir",
            str(tmp_path),
            "--config.data.no_such_key=1",
        ],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "no_such_key" in proc.stderr


def test_resume_looks_for_a_checkpoint_before_reading_imagenet_weights(trained, tmp_path):
    """A resumed run restores its checkpoint and never opens config.model.pretrained (big_vision's
    order), so a run can resume where the ImageNet file no longer reads; the learning rate is
    logged with the other scalars (here the constant schedule's lr at every step)."""
    cfg, workdir, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    unreadable = tmp_path / "resnet18.safetensors"
    unreadable.write_bytes(b"not weights")  # exists (checked up front) but cannot be read
    resumed = cfg.copy_and_resolve_references()
    resumed.model.pretrained = str(unreadable)
    out = train_and_evaluate(resumed, copy)
    assert out["start_step"] == 3 and int(out["state"].step) == 3
    records = read_jsonl(copy / "train_metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["lr"] == pytest.approx(cfg.optim.lr) for r in records)
    from reid_jax import run as run_lib

    with pytest.raises(ValueError, match="not a readable safetensors file"):  # a new run reads it
        run_lib.initial_state(run_lib.setup(resumed, tmp_path / "fresh"))
