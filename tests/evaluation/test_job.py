"""The checkpoint evaluation job: records, restart, --watch, bad inputs, trials."""

from __future__ import annotations

import copy
import gc
import json
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from reid_jax import run as run_lib
from reid_jax.evaluation import records
from reid_jax.jobs import evaluation as job_lib
from reid_jax.jobs import trials
from reid_jax.train import checkpoints

from .conftest import ROOT, tiny_config

# Orbax's background readers report their closed event loops when garbage-collected, in
# whichever test happens to run then: noise, not a failure of these tests.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _count_evaluations(monkeypatch) -> list[int]:
    seen: list[int] = []
    original = job_lib.Job.evaluate_step

    def counting(self, step):
        seen.append(step)
        return original(self, step)

    monkeypatch.setattr(job_lib.Job, "evaluate_step", counting)
    return seen


def test_job_writes_records_then_a_restart_skips_them(trained, monkeypatch, capsys):
    cfg, workdir, out = trained
    seen = _count_evaluations(monkeypatch)
    opts = job_lib.Options(epochs=[1.0, 1.5], export_features=True, ranked_queries="auto")
    done = job_lib.evaluate_run(cfg, workdir, opts)
    assert seen == [2, 3] and [r["step"] for r in done] == [2, 3]
    # The restored step-3 checkpoint scores what the training loop measured in memory.
    final = out["history"][-1]
    for protocol in ("official", "legacy", "appended"):
        for key in ("mAP", "Rank1", "Rank5", "mINP"):
            got = done[-1]["metrics"][f"retrieval/{protocol}"][key]
            assert got == pytest.approx(final[f"retrieval/{protocol}/{key}"], abs=1e-9)
    assert done[-1]["epoch"] == 1.5 and len(done[-1]["cmc"]["retrieval/official"]) == 50
    assert len(done[-1]["camera_pairs"]["mAP"]) == 6  # SynthMARS has MARS's 6 cameras
    ev = workdir / "eval"
    csv_lines = (ev / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("step,epoch,retrieval/official/mAP")
    printed = capsys.readouterr().out
    assert "| epoch | mAP | Rank1 | Rank5 | Rank10 | Rank20 | mINP |" in printed
    assert "Protocol: official" in printed and "| 1.5 |" in printed
    for name in ("cmc_official.png", "cmc_legacy.png", "metrics_vs_epoch.png",
                 "camera_pairs_step3.png", "ranked/step_3/index.html"):  # fmt: skip
        assert (ev / name).stat().st_size > 1000, name
    assert len(list((ev / "ranked" / "step_3").glob("query_*.png"))) >= 2
    feats = np.load(ev / "features_step3.npz")
    n = len(feats["pids"])
    assert feats["features"].shape[0] == n and feats["query_features"].shape[0] > 0
    np.testing.assert_array_equal(feats["query_features"], feats["features"][feats["query_index"]])
    assert (
        not np.any(feats["gallery_pids"] == -1)
        and not feats["is_query"][feats["gallery_index"]].any()
    )
    # One TensorBoard directory per run: the job's scalars go beside the training's.
    assert not (ev / "tensorboard").exists()
    tags = _tensorboard_tags(workdir / "tensorboard")
    assert any(p.name.endswith(".evaluate") for p in (workdir / "tensorboard").iterdir())
    assert {"evaluate/retrieval/official/mAP", "eval/retrieval/official/mAP"} <= tags
    stamp = (ev / "step_2.json").stat().st_mtime_ns

    # Restarted with --all: only the checkpoint not yet evaluated (step 1) is evaluated.
    seen.clear()
    done = job_lib.evaluate_run(cfg, workdir, job_lib.Options(ranked_queries="", plots=False))
    assert seen == [1] and [r["step"] for r in done] == [1, 2, 3]
    assert (ev / "step_2.json").stat().st_mtime_ns == stamp
    assert len((ev / "results.csv").read_text().splitlines()) == 4
    # Changed test-time settings make the old records stale: everything is evaluated again
    # (normalised features: a change after extraction, so no new program to compile).
    seen.clear()
    normalised = copy.deepcopy(cfg)
    normalised.evals.retrieval.normalize = True
    job_lib.evaluate_run(
        normalised, workdir, job_lib.Options(steps=[3], ranked_queries="", plots=False)
    )
    assert seen == [3]
    settings = json.loads((ev / "step_3.json").read_text())["settings"]
    assert settings["evals"]["retrieval"]["normalize"] is True


def _tensorboard_tags(directory) -> set[str]:
    """Scalar tags of every event file in ``directory`` (TFRecord framing: length, its CRC, the
    Event proto, its CRC)."""
    from tensorboardX.proto import event_pb2  # noqa: PLC0415

    tags = set()
    for events in directory.glob("events.out.tfevents.*"):
        data, i = events.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
            tags |= {v.tag for v in event.summary.value}
            i += 12 + n + 4
    return tags


def test_a_record_of_the_first_format_reads_as_the_current_one(tmp_path):
    """The evaluation job's records from before the training wrote this format (metrics, CMC
    and settings of its one evaluator, keyed by variant) still count as done: read as format 2."""
    cfg = tiny_config((str(tmp_path / "raw"), str(tmp_path / "tfds")))
    current = records.settings(cfg, ["retrieval"])
    old = {"step": 3, "epoch": 1.5, "settings": {**current, "evals": current["evals"]["retrieval"]},
           "metrics": {"official": {"mAP": 0.5, "Rank1": 0.25}}, "cmc": {"official": [0.25, 1.0]},
           "seconds": {"extract": 1.0}}  # fmt: skip
    records.eval_dir(tmp_path)
    (tmp_path / "eval" / "step_3.json").write_text(json.dumps(old))
    (got,) = records.load(tmp_path, current).values()
    assert (got["format"], got["source"], got["step"]) == (2, "evaluate", 3)
    assert got["metrics"] == {"retrieval/official": {"mAP": 0.5, "Rank1": 0.25}}
    assert got["cmc"] == {"retrieval/official": [0.25, 1.0]}
    assert records.flat_metrics(got) == {"retrieval/official/mAP": 0.5,
                                         "retrieval/official/Rank1": 0.25}  # fmt: skip
    assert records.load(tmp_path, current, source="training") == {}  # not the training's


def test_unsaved_epoch_is_named_with_the_saved_ones(trained):
    cfg, workdir, _ = trained
    saved = r"saved epochs: 0\.5 \(step 1\), 1 \(step 2\), 1\.5 \(step 3\)"
    with pytest.raises(ValueError, match=r"epoch\(s\) 0.75 not saved .*2 steps.*" + saved):
        job_lib.evaluate_run(cfg, workdir, job_lib.Options(epochs=[0.75, 1.0]))
    with pytest.raises(ValueError, match=r"step\(s\) \[7\] not saved"):
        run_lib.select_steps([1, 2, 3], 2, steps=[2, 7])
    assert run_lib.select_steps([1, 2, 3], 2, epochs=[1.5, 0.5]) == [1, 3]


def test_workdir_without_checkpoints_is_named(trained, tmp_path):
    cfg = trained[0]
    with pytest.raises(FileNotFoundError, match=f"no checkpoints directory {tmp_path}"):
        job_lib.evaluate_run(cfg, tmp_path, job_lib.Options())
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match="no finalised checkpoint in .*checkpoints"):
        job_lib.evaluate_run(cfg, tmp_path, job_lib.Options())


def test_checkpoint_of_another_model_is_named(trained):
    cfg, workdir, _ = trained
    other = copy.deepcopy(cfg)
    other.model.width = 16  # twice the channels of the trained model
    with pytest.raises(ValueError, match=r"checkpoints/3 does not match this config's model"):
        job_lib.evaluate_run(other, workdir, job_lib.Options(steps=[3]))
    gc.collect()  # orbax's abandoned reads are reported when collected: here, not later


def test_cli_watch_follows_a_training_that_writes_checkpoints(trained, tiny_data, tmp_path):
    cfg, src, _ = trained
    run = run_lib.setup(cfg, src)
    source = run_lib.open_checkpoints(src)
    states = {s: run_lib.restore(source, run, s) for s in (1, 2, 3)}
    source.close()
    writer = checkpoints.make_manager(tmp_path, cfg.checkpoint, [3])  # the "training" side
    raw, data = tiny_data
    proc = subprocess.Popen(
        [sys.executable, "-m", "reid_jax.evaluate", "--config",
         f"{ROOT}/configs/synth_mars_demo.py:tiny", "--workdir", str(tmp_path),
         f"--config.data.raw_dir={raw}", f"--config.data.data_dir={data}",
         "--config.num_steps=3", "--config.eval_every_epochs=0",
         "--config.optim.schedule=constant", "--watch", "--poll_s=0.3",
         "--idle_timeout_s=200", "--ranked_queries=", "--noplots"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        checkpoints.save(writer, 1, states[1], None)
        writer.wait_until_finished()
        deadline = time.monotonic() + 150
        while not (tmp_path / "eval" / "step_1.json").exists():  # the watcher saw step 1 ...
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the watcher never evaluated step 1"
            time.sleep(0.3)
        for step in (2, 3):  # ... then training goes on; the watcher exits after the final step
            checkpoints.save(writer, step, states[step], None)
        writer.wait_until_finished()
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        proc.kill()
        writer.close()
    gc.collect()  # orbax's finished readers report their closed event loops here, not later
    assert proc.returncode == 0, stderr[-3000:]
    assert sorted(records.load(tmp_path)) == [1, 2, 3]
    assert "| 1.5 |" in stdout and "Protocol: legacy" in stdout


def test_cli_another_models_config_is_one_line(trained, tiny_data):
    """A clear error and nothing after it: no tracebacks from orbax's background threads."""
    _, workdir, _ = trained
    raw, data = tiny_data
    proc = subprocess.run(
        [sys.executable, "-m", "reid_jax.evaluate", "--config",
         f"{ROOT}/configs/synth_mars_demo.py:tiny", "--workdir", str(workdir),
         f"--config.data.raw_dir={raw}", f"--config.data.data_dir={data}",
         "--config.num_steps=3", "--config.model.width=16", "--steps=3", "--noplots"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "does not match this config's model" in errors[0], proc.stderr
    assert "params.backbone.bn1.bias is (8,) there, (16,) here" in errors[0]  # width 8 vs 16
    assert "Traceback" not in proc.stderr, proc.stderr


def test_trials_report_mean_and_std(trained, tmp_path):
    cfg, workdir, _ = trained
    with pytest.raises(FileNotFoundError, match=r"trial\(s\) \[0\] have no checkpoints"):
        trials.evaluate_trials(cfg, tmp_path, job_lib.Options())
    (tmp_path / "split_0").symlink_to(workdir)  # SynthMARS has one fixed split: trial 0
    rows = trials.evaluate_trials(cfg, tmp_path, job_lib.Options(steps=[3], ranked_queries=""))
    mean, std = rows[-1]["retrieval/official/mAP"]
    expected = json.loads((workdir / "eval" / "step_3.json").read_text())
    assert (mean, std) == (pytest.approx(expected["metrics"]["retrieval/official"]["mAP"]), 0.0)
    assert "± 0.0%" in (tmp_path / "eval" / "trials.md").read_text()
    with pytest.raises(ValueError, match="trials 0..0"):
        trials.evaluate_trials(cfg, tmp_path, job_lib.Options(), trial_ids=[3])


def test_trial_aggregation_by_hand():
    def rec(epoch, m):
        return {"epoch": epoch, "metrics": {"retrieval/official": {"mAP": m, "Rank1": m / 2}}}

    per_trial = {0: [rec(1.0, 0.2), rec(2.0, 0.5)], 1: [rec(2.0, 0.7)], 2: [rec(2.0, 0.6)]}
    rows = trials.aggregate(per_trial)
    assert [r["epoch"] for r in rows] == [2.0]  # epoch 1 is missing from trials 1 and 2
    assert rows[0]["retrieval/official/mAP"] == pytest.approx((0.6, 0.1))  # std of .5, .7, .6
    assert rows[0]["retrieval/official/Rank1"] == pytest.approx((0.3, 0.05))
    assert "| 2 | 60.0 ± 10.0% | 30.0 ± 5.0% |" in trials.table(rows, [0, 1, 2])
