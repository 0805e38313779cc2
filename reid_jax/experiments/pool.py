"""Training jobs run one after another in this process or several at once in spawned processes
(the ablation's ``--workers``)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable
from typing import Any

import jax
from absl import logging

from reid_jax import logs


class JobPool:
    """Runs training jobs (``ablate.run_job`` calls) in this process (``workers`` = 1) or in
    ``workers`` spawned processes, each training one job at a time: on 2 CPU cores two jobs at
    once train ~1.4x the steps per second of one (XLA leaves part of the second core idle).
    Every job writes its own folder, so where a job ran changes nothing in its result."""

    def __init__(self, workers: int = 1, cache: str = "none"):
        if workers < 1:
            raise ValueError(f"--workers={workers}: need at least 1")
        self._pool = None
        if workers > 1:
            context = multiprocessing.get_context("spawn")  # JAX is not fork-safe
            self._pool = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=context, initializer=_init_worker, initargs=(cache,)
            )

    def run(self, fn: Callable[..., Any], tasks: list[tuple]) -> list[Any]:
        """``fn(*task)`` for every task, in order: its result or the Exception it raised
        (KeyboardInterrupt / SystemExit, e.g. a preempted job, propagate). ``fn`` must be
        importable (a module-level function) for the spawned processes."""
        if self._pool is None:
            return [_outcome(lambda t=t: fn(*t)) for t in tasks]
        futures = [self._pool.submit(fn, *t) for t in tasks]
        return [_outcome(f.result) for f in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def _outcome(call: Any) -> Any:
    try:
        return call()
    except Exception as e:  # one broken job must not lose the others' hours
        return e


def _init_worker(cache: str) -> None:
    """A pool process: the runner's compilation cache and log lines."""
    logs.quiet_libraries()
    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO)
    use_cache(cache)


def use_cache(cache: str) -> None:
    """JAX's persistent compilation cache in ``cache`` ("none": off): seeds and rates share
    shapes, so only the first job of a variant compiles."""
    if cache != "none":
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
