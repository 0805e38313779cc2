"""``train_and_evaluate``: data, mesh, state, the jitted step, logging, evaluation, checkpoints.

Phases: the shared set-up (``reid_jax.run.setup``: config checked, data prepared, model and
abstract state), restore-or-init (a checkpoint first; only without one is the state initialised
and the ImageNet file read), the loop, and the finish (history, table). Epochs become steps
through ``sampling.to_steps``; an epoch is one pass of the sampler ``config.data.epoch`` names
(``sampling.epoch_steps``): every training identity once (P x K) or every tracklet once (AP3D).

Every process of a multi-host run executes this same function: it loads its block of each global
batch, the jitted step sees global arrays laid out by ``parallel`` (data / fsdp mesh), all
processes save and restore checkpoints together, and only process 0 writes files. A preemption
notice (SIGTERM) stops all processes at a common step boundary after saving (docs/scaling.md).
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from reid_jax import distributed, files, parallel
from reid_jax import run as run_lib
from reid_jax.data import pipeline
from reid_jax.evaluation import metrics as metrics_lib
from reid_jax.evaluation import records
from reid_jax.evaluation.evaluators import make_evaluators
from reid_jax.train import checkpoints, optim
from reid_jax.train import state as state_lib
from reid_jax.train import step as step_lib
from reid_jax.train.writer import MetricWriter

TRAIN_METRICS = "train_metrics.jsonl"  # process 0: {"step", loss, ...} at every log step
DATA_ORDER = "data_order.jsonl"  # process 0, with config.log_data_order: {"step", "tracklets"}
PREEMPTED = "PREEMPTED"  # written (with the step) when a run stops on a preemption notice
LEGACY_HISTORY = "eval_history.json"  # the evaluations of runs from before eval/train_step_*.json


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss, gradient or parameter; nothing of it was saved."""


GUARDED = ("loss", "grad_norm", "params_finite")  # finite, and params_finite == 1


def check_finite(unchecked: list[tuple[int, dict]], manager: Any) -> None:
    """Raises NonFiniteError naming the first step whose loss, gradient norm or parameter norm is
    not finite, and the newest (finite) checkpoint a rerun resumes from; call it before any
    evaluation or save, so no checkpoint with non-finite values is ever written."""
    fetched = jax.device_get([{k: m[k] for k in GUARDED} for _, m in unchecked])  # one transfer
    for (step, _), got in zip(unchecked, fetched):
        values = {k: float(v) for k, v in got.items()}
        if all(math.isfinite(v) for v in values.values()) and values["params_finite"] == 1.0:
            continue
        manager.wait_until_finished()
        last = manager.latest_step()
        where = (
            f"the last checkpoint, step {last} in {manager.directory}, holds finite values and a "
            f"rerun resumes there"
            if last is not None
            else "no checkpoint was saved before it"
        )
        shown = f"loss={values['loss']:.4g}, grad_norm={values['grad_norm']:.4g}, " + (
            "parameters finite" if values["params_finite"] == 1.0 else "parameters NOT finite"
        )
        raise NonFiniteError(
            f"training diverged at step {step} ({shown}); stopped without saving it: {where}. "
            f"Lower config.optim.lr or set config.optim.grad_clip_norm before resuming"
        )


def train_and_evaluate(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns final metrics.

    On a preemption notice (SIGTERM) it saves at the next step boundary and returns with
    ``preempted=True`` (and a ``PREEMPTED`` marker file); rerunning continues exactly.
    """
    run = run_lib.setup(config, workdir)  # config checked, data prepared, nothing initialised
    workdir, data_cfg, mesh = run.workdir, config.data, run.mesh
    workdir.mkdir(parents=True, exist_ok=True)
    lead = jax.process_index() == 0
    spe, total_steps, eval_steps = run.steps_per_epoch, run.total_steps, run.eval_steps
    train_iter = pipeline.train_iterator(
        run.train_source, run.train_index, data_cfg, num_steps=total_steps, seed=config.seed,
        process=run.process,
    )  # fmt: skip
    manager = checkpoints.make_manager(workdir, config.checkpoint, eval_steps)
    state, start = _restore_or_init(run, manager, train_iter)
    if lead:
        # The resolved config beside the run, for tools that need only the workdir (analyze).
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=1, sort_keys=True))
        (workdir / PREEMPTED).unlink(missing_ok=True)
        for name in (TRAIN_METRICS, DATA_ORDER):  # records past the restored step are redone
            _truncate_jsonl(workdir / name, start)
        for step in records.load(workdir, source="training"):
            if step > start:
                records.record_path(workdir, step, "training").unlink()

    abstract, model, tx = run.abstract_state, run.model, run.tx
    schedule = optim.make_schedule(config.optim, spe, total_steps)  # the logged learning rate
    state_sh = jax.tree.map(lambda a: a.sharding, abstract)
    rep, bat = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    train_step = jax.jit(
        functools.partial(
            step_lib.train_step,
            model=model,
            tx=tx,
            loss_cfg=step_lib.LossConfig.from_config(config.loss),
        ),
        in_shardings=(state_sh, bat),
        out_shardings=(state_sh, rep),
        donate_argnums=(0,),
    )
    evaluators = make_evaluators(
        config.evals,
        model=model,
        source=run.test_source,
        index=run.test_index,
        data_cfg=data_cfg,
        mesh=mesh,
        process=run.process,
        workdir=workdir,
    )
    writer = MetricWriter(workdir, total_steps)
    bad = pipeline.BadFrames(run.train_source, data_cfg.max_bad_frames)
    watch = distributed.PreemptionWatch()
    settings = records.settings(config, list(config.evals))
    evaluate = functools.partial(
        _evaluate, evaluators, workdir=workdir, spe=spe, writer=writer, settings=settings
    )
    # Evaluations past the restored step are redone, so drop them from the record.
    history = [h for h in load_history(workdir) if h["step"] <= start]
    if _agree(start in eval_steps and all(h["step"] != start for h in history)):
        # The previous run was preempted at an evaluation step before evaluating it.
        history.append(evaluate(state, start))
        _write_results(workdir, history, config)
    step_metrics: list[dict[str, jax.Array]] = []
    unchecked: list[tuple[int, dict[str, jax.Array]]] = []  # steps not yet checked finite
    preempted = False
    try:
        for step in range(start + 1, total_steps + 1):
            local = next(train_iter)
            bad.update(local)
            batch = parallel.global_batch({"clip": local["clip"], "label": local["label"]}, mesh)
            state, m = train_step(state, batch)
            step_metrics.append(m)
            unchecked.append((step, m))
            log_due = step % run.log_every == 0 or step == total_steps
            save_due = step in eval_steps or step % run.checkpoint_every == 0
            preempt = watch.reached(step)
            if log_due or save_due or preempt:
                check_finite(unchecked, manager)  # before anything is logged, evaluated or saved
                unchecked = []
            if config.log_data_order:
                _log_data_order(workdir, step, local["tracklet"], mesh)
            if log_due:
                avg = jax.tree.map(lambda *x: float(np.mean(jax.device_get(x))), *step_metrics)
                step_metrics = []
                avg["lr"] = optim.current_lr(schedule, step - 1)  # the step's update (count - 1)
                writer.progress(step, avg, epoch=step / spe)
                if lead:
                    _append_jsonl(workdir / TRAIN_METRICS, {"step": step, **avg})
            if preempt:
                logging.warning("preemption notice: saving step %d and stopping", step)
                checkpoints.save(manager, step, state, train_iter)
                preempted = True
                break
            metrics = None
            if step in eval_steps:
                metrics = evaluate(state, step)
                history.append(metrics)
                _write_results(workdir, history, config)
            if metrics is not None or step % run.checkpoint_every == 0:
                best = {"mAP": metrics[config.checkpoint.best_metric]} if metrics else None
                checkpoints.save(manager, step, state, train_iter, best)
        manager.wait_until_finished()
    finally:
        watch.close()
        writer.close()
        manager.close()
        close = getattr(train_iter, "close", None)
        if close is not None:
            close()
    if preempted:
        if lead:
            (workdir / PREEMPTED).write_text(f"{step}\n")
        logging.warning(
            "preempted at step %d of %d: rerun the same command to resume", step, total_steps
        )
    elif lead and history:
        print(results_table(history, config))
    return {
        "history": history,
        "state": state,
        "steps_per_epoch": spe,
        "start_step": start,
        "preempted": preempted,
    }


def _restore_or_init(run: run_lib.Run, manager: Any, train_iter: Any) -> tuple[Any, int]:
    """(state, step): the newest intact checkpoint if there is one, else a new state (the only
    time the ImageNet weights file is read), as big_vision: look for a checkpoint first."""
    if manager.latest_step() is not None:
        state, start = checkpoints.restore(manager, run.abstract_state, train_iter)
        logging.info("resuming at step %d", start)
        return state, start
    state = run_lib.initial_state(run)
    d, index = run.config.data, run.train_index
    logging.info(
        "%s: %d train tracklets of %d ids, %d steps/epoch, %d steps, %.2fM parameters, mesh %s",
        d.name, len(index.pid), index.num_classes, run.steps_per_epoch, run.total_steps,
        state_lib.param_count(state.params) / 1e6, dict(run.mesh.shape),
    )  # fmt: skip
    return state, 0


def _agree(value: bool) -> bool:
    """Process 0's decision on every process (they read files that only it may trust)."""
    if jax.process_count() == 1:
        return value
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(value)))


def _log_data_order(workdir: Path, step: int, tracklets: np.ndarray, mesh: Any) -> None:
    """Appends the step's global tracklet ids (all processes, batch order) to data_order.jsonl."""
    ids = parallel.to_host(parallel.global_batch({"t": tracklets}, mesh)["t"])
    if jax.process_index() == 0:
        _append_jsonl(workdir / DATA_ORDER, {"step": step, "tracklets": ids.tolist()})


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_jsonl(path: Path, last_step: int) -> None:
    """Keeps the records up to ``last_step`` (and drops a line cut short by a kill)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= last_step:
            kept.append(line + "\n")
    path.write_text("".join(kept))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``train_metrics.jsonl`` / ``data_order.jsonl`` file, in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _evaluate(evaluators, state, step: int, *, workdir: Path, spe: int, writer: MetricWriter,
              settings: dict) -> dict[str, Any]:  # fmt: skip
    """Runs every evaluator; writes the step's record (process 0) and TensorBoard scalars, and
    returns the history entry (``history_entry``)."""
    t0 = time.perf_counter()
    scalars: dict[str, float] = {}
    for name, evaluator in evaluators.items():
        for key, value in evaluator.run(state):
            scalars[f"{name}/{key}"] = value
    seconds = {"evaluate": time.perf_counter() - t0}
    record = records.scalars_record(step, step / spe, scalars, settings, seconds)
    if jax.process_index() == 0:
        records.save(workdir, record)
    out = history_entry(record)
    writer.scalars(step, {k: v for k, v in out.items() if k not in ("step",)}, prefix="eval/")
    shown = ", ".join(f"{k}={v:.4f}" for k, v in out.items() if "mAP" in k or "Rank1" in k)
    logging.info("eval at step %d (epoch %.1f): %s", step, step / spe, shown)
    return out


def history_entry(record: dict[str, Any]) -> dict[str, Any]:
    """A training record as the flat dict ``train_and_evaluate`` returns: step, epoch, every
    ``<evaluator>/<variant>/<metric>`` and ``eval_seconds``."""
    return {
        "step": record["step"], "epoch": record["epoch"], **records.flat_metrics(record),
        "eval_seconds": record["seconds"]["evaluate"],
    }  # fmt: skip


def results_table(history: list[dict[str, float]], config: Any) -> str:
    """The research note's table for the first retrieval evaluator, one block per protocol."""
    name = next(iter(config.evals))
    blocks = []
    for protocol in config.evals[name].protocols:
        rows = [
            {
                "epoch": h["epoch"],
                "mAP": h[f"{name}/{protocol}/mAP"],
                "rank1": h[f"{name}/{protocol}/Rank1"],
                "rank5": h[f"{name}/{protocol}/Rank5"],
            }
            for h in history
        ]
        blocks.append(metrics_lib.format_table(rows, protocol))
    return "\n\n".join(blocks)


def load_history(workdir: str | Path) -> list[dict[str, Any]]:
    """The training's evaluations (``eval/train_step_<N>.json``) as history entries, in step
    order, with those of a run written before these records (its ``eval_history.json`` of the
    same entries)."""
    workdir = Path(workdir)
    entries = {s: history_entry(r) for s, r in records.load(workdir, source="training").items()}
    legacy = workdir / LEGACY_HISTORY
    if legacy.is_file():  # its steps that have no record (a record is newer)
        logging.info("reading %s (a run from before eval/train_step_<N>.json)", legacy)
        for entry in json.loads(legacy.read_text()):
            entries.setdefault(int(entry["step"]), entry)
    return [entries[s] for s in sorted(entries)]


def _write_results(workdir: Path, history: list[dict[str, Any]], config: Any) -> None:
    """results.md: the research note's table of every evaluation so far (process 0)."""
    if jax.process_index() == 0:
        files.atomic_write_text(workdir / "results.md", results_table(history, config) + "\n")
