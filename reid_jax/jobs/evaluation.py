"""The checkpoint evaluation job (``python -m reid_jax.evaluate``): restartable, and able to
follow a running training (``watch``).

For each selected checkpoint not yet evaluated with the current settings it restores the
weights (read-only), extracts every test tracklet's feature, scores every variant and writes
``WORKDIR/eval/step_<N>.json`` (``evaluation.records``: the format the training's evaluations
use too), ``results.csv``, TensorBoard scalars (``evaluate/<evaluator>/<variant>/<metric>`` in
the run's ``WORKDIR/tensorboard``), the PNGs and, on request, the features
(``features_step<N>.npz``) and ranked lists (``ranked/step_<N>/index.html``). See
docs/evaluation.md.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from reid_jax import files
from reid_jax import run as run_lib
from reid_jax.data import sampling
from reid_jax.evaluation import plots, ranked_lists, records
from reid_jax.evaluation.evaluators import RetrievalEvaluator
from reid_jax.evaluation.metrics import format_epoch
from reid_jax.train.writer import MetricWriter


@dataclasses.dataclass
class Options:
    """What to evaluate and what to write (the CLI flags)."""

    epochs: list[float] | None = None  # evaluate these epochs (else ``steps``, else all saved)
    steps: list[int] | None = None
    watch: bool = False  # poll for new checkpoints until the final one is evaluated
    poll_s: float = 30.0
    idle_timeout_s: float = 0.0  # watch: give up after this long without a new checkpoint
    export_features: bool = False
    ranked_queries: str = "auto"  # "" none, "auto", or "0,17,42" (query positions)
    plots: bool = True
    force: bool = False  # re-evaluate checkpoints that already have a record


def retrieval_config(config: Any) -> tuple[str, Any]:
    """(name, entry) of the first retrieval entry of ``config.evals``: what the job evaluates."""
    for name, cfg in config.evals.items():
        if cfg.type == "retrieval":
            return name, cfg
    raise ValueError("config.evals has no entry of type 'retrieval' for the evaluation job")


class Job:
    """Evaluates the checkpoints of one training workdir."""

    def __init__(self, config: Any, workdir: str | Path, options: Options):
        self.options = options
        self.workdir = Path(workdir)
        self.manager = run_lib.open_checkpoints(self.workdir)
        self.run = run_lib.setup(config, self.workdir)
        self.name, cfg = retrieval_config(config)
        self.evaluator = RetrievalEvaluator(
            cfg, model=self.run.model, source=self.run.test_source,
            index=self.run.test_index, data_cfg=config.data, mesh=self.run.mesh,
            process=self.run.process, workdir=self.workdir,
        )  # fmt: skip
        self.settings = records.settings(config, [self.name])
        self.lead = jax.process_index() == 0
        # The run's one TensorBoard directory, in an event file of its own beside the training's.
        self.writer = MetricWriter(self.workdir, self.run.total_steps, suffix=".evaluate")

    def done(self) -> dict[int, dict]:
        """Records made with the current settings (what a restarted job skips)."""
        return records.load(self.workdir, self.settings, evaluator=self.name)

    def targets(self, saved: list[int]) -> list[int]:
        """The saved steps selected by the options (ValueError naming unsaved epochs/steps)."""
        o, spe = self.options, self.run.steps_per_epoch
        return run_lib.select_steps(saved, spe, o.epochs, o.steps)

    def evaluate_step(self, step: int) -> dict[str, Any] | None:
        """Evaluates one checkpoint; None if it vanished (deleted by the training's policy)."""
        t0 = time.perf_counter()
        try:
            state = run_lib.restore(self.manager, self.run, step)
        except FileNotFoundError as e:
            logging.warning("checkpoint step %d disappeared before it was read: %s", step, e)
            return None
        t1 = time.perf_counter()
        feats = self.evaluator.features(state)
        t2 = time.perf_counter()
        results = self.evaluator.score(feats, camera_pairs=True, keep_distances=True)
        t3 = time.perf_counter()
        epoch = self.run.epoch(step)
        seconds = {"restore": t1 - t0, "extract": t2 - t1, "score": t3 - t2}
        record = records.make_record(step, epoch, results, self.settings, seconds, self.name)
        if self.lead:
            self._write(step, record, feats, results)
        logging.info(
            "evaluated step %d (epoch %g): %s; extract %.1f s, score %.1f s", step, epoch,
            ", ".join(f"{v} mAP {100 * m['mAP']:.1f}% R1 {100 * m['Rank1']:.1f}%"
                      for v, m in record["metrics"].items()), t2 - t1, t3 - t2,
        )  # fmt: skip
        return record

    def _write(self, step: int, record: dict, feats: np.ndarray, results: dict) -> None:
        out = records.eval_dir(self.workdir)
        if self.options.export_features:
            self._export(out / f"features_step{step}.npz", feats)
        records.save(self.workdir, record)
        flat = records.flat_metrics(record)
        self.writer.scalars(step, {"epoch": record["epoch"], **flat}, prefix="evaluate/")
        if self.options.plots and "camera_pairs" in record:
            plots.camera_pair_plot(record, out / f"camera_pairs_step{step}.png")
        self._ranked(step, results)

    def _export(self, path: Path, feats: np.ndarray) -> None:
        """Features of every test tracklet, ids, cameras, and the query / gallery split
        (``query_*`` and ``gallery_*`` use the legacy gallery: no queries, no pid -1)."""
        idx = self.run.test_index
        q = np.flatnonzero(idx.is_query)
        g = np.flatnonzero(~idx.is_query & (idx.pid != -1))
        arrays = dict(
            features=feats, pids=idx.pid, camids=idx.camid, is_query=idx.is_query,
            query_features=feats[q], query_pids=idx.pid[q], query_camids=idx.camid[q],
            gallery_features=feats[g], gallery_pids=idx.pid[g], gallery_camids=idx.camid[g],
            query_index=q, gallery_index=g,
        )  # fmt: skip
        files.atomic_write(path, lambda tmp: np.savez(tmp, **arrays))

    def _ranked(self, step: int, results: dict[str, dict]) -> None:
        variant = next(iter(results))
        positions = ranked_lists.choose_queries(self.options.ranked_queries, results[variant])
        if positions:
            out = records.eval_dir(self.workdir) / "ranked" / f"step_{step}"
            epoch = format_epoch(self.run.epoch(step))
            title = f"Ranked lists, step {step} (epoch {epoch}), {variant}"
            ranked_lists.write(self.run.test_source, self.run.test_index, results[variant],
                               positions, variant.partition("+")[0], out, title)  # fmt: skip

    def summarise(self) -> str:
        """Rewrites results.csv and the PNGs from every record; returns the printed tables."""
        done = sorted(self.done().values(), key=lambda r: r["step"])
        if not done or not self.lead:
            return ""
        out = records.eval_dir(self.workdir)
        records.write_csv(self.workdir, done)
        if self.options.plots:
            for variant in done[-1]["cmc"]:
                name = variant.rpartition("/")[2].replace("+", "_")
                plots.cmc_plot(done, variant, out / f"cmc_{name}.png")
            plots.metrics_plot(done, out / "metrics_vs_epoch.png")
        c = self.evaluator.cfg
        text = records.tables(done, f" (k1={c.rerank_k1}, k2={c.rerank_k2}, "
                                    f"lambda={c.rerank_lambda})")  # fmt: skip
        files.atomic_write_text(out / "results.md", text)
        return text

    def pending(self, saved: list[int]) -> list[int]:
        """Selected saved steps still to evaluate."""
        done = set() if self.options.force else set(self.done())
        return [s for s in self.targets(saved) if s not in done]

    def close(self) -> None:
        self.writer.close()
        self.manager.close()


def evaluate_run(config: Any, workdir: str | Path, options: Options) -> list[dict[str, Any]]:
    """Evaluates the selected checkpoints of ``workdir`` (all records, sorted by step)."""
    if options.watch:
        _wait_for(Path(workdir) / "checkpoints", options)
    job = Job(config, workdir, options)
    try:
        if options.watch:
            _watch(job)
        else:
            saved = run_lib.saved_steps(job.manager)
            if not saved:
                raise FileNotFoundError(
                    f"no finalised checkpoint in {job.manager.directory}: nothing to evaluate "
                    "(use --watch to wait for a running training)"
                )
            todo = job.pending(saved)
            skipped = sorted(set(job.targets(saved)) - set(todo))
            if skipped:
                logging.info("already evaluated, skipping steps %s", skipped)
            for step in todo:
                job.evaluate_step(step)
        text = job.summarise()
        if text:
            print(text)
        return sorted(job.done().values(), key=lambda r: r["step"])
    finally:
        job.close()


def _wait_for(directory: Path, options: Options) -> None:
    """--watch started before the training: wait for its checkpoint directory."""
    start = time.monotonic()
    while not directory.is_dir():
        if options.idle_timeout_s and time.monotonic() - start > options.idle_timeout_s:
            raise TimeoutError(
                f"--watch: {directory} did not appear in {options.idle_timeout_s:g} s"
            )
        logging.info("waiting for %s to appear", directory)
        time.sleep(options.poll_s)


def _watch(job: Job) -> None:
    """Evaluates checkpoints as training saves them; returns once the final one (or every
    requested epoch/step) is evaluated. With ``epochs``/``steps`` the requested steps must be
    reachable; TimeoutError after ``idle_timeout_s`` without a new checkpoint."""
    o, spe, final = job.options, job.run.steps_per_epoch, job.run.total_steps
    wanted = None
    if o.epochs:
        wanted = {sampling.to_steps(e, spe) for e in o.epochs}
    elif o.steps:
        wanted = set(o.steps)
    if wanted and max(wanted) > final:
        raise ValueError(
            f"--watch for step(s) {sorted(s for s in wanted if s > final)}: the training ends at "
            f"step {final} (epoch {format_epoch(final / spe, 4)})"
        )
    last_new = time.monotonic()
    seen: set[int] = set()
    while True:
        saved = run_lib.saved_steps(job.manager)
        done = set(job.done())
        todo = [s for s in saved if s not in done and (wanted is None or s in wanted)]
        for step in todo:
            job.evaluate_step(step)
        done = set(job.done())
        if set(saved) - seen:
            last_new, seen = time.monotonic(), seen | set(saved)
        if wanted is None and final in done:
            return
        if wanted is not None and wanted <= done:
            return
        if wanted is not None and final in saved:  # the training is over
            raise ValueError(
                f"the training finished but step(s) {sorted(wanted - done)} (epochs "
                f"{sorted(s / spe for s in wanted - done)}) were not kept; saved: {saved}"
            )
        if o.idle_timeout_s and time.monotonic() - last_new > o.idle_timeout_s:
            raise TimeoutError(
                f"--watch: no new checkpoint in {job.manager.directory} for "
                f"{o.idle_timeout_s:g} s (last saved: {saved[-1] if saved else 'none'}, final "
                f"step {final})"
            )
        logging.info("watching %s: %d evaluated, waiting for step %d", job.manager.directory,
                     len(done), final)  # fmt: skip
        time.sleep(o.poll_s)
