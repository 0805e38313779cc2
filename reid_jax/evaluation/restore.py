"""What the evaluation job needs from a training run: its model, abstract state and checkpoints.

Everything is rebuilt from the config exactly as ``train.loop.train_and_evaluate`` builds it
(same model, optimiser and state structure), but abstractly (``jax.eval_shape``: no
initialisation, no memory), and checkpoints are opened READ-ONLY: a training job may be writing
to the same directory (its in-progress ``*.orbax-checkpoint-tmp*`` directories are never touched,
and only finalised steps are listed).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from reid_jax import config_base, parallel
from reid_jax.data import builders, pipeline, prepare, sampling
from reid_jax.evaluation.metrics import format_epoch
from reid_jax.models.reid import make_model
from reid_jax.train import checkpoints, optim
from reid_jax.train import state as state_lib
from reid_jax.train.loop import schedule_steps


@dataclasses.dataclass
class Run:
    """A training run seen by the evaluation job."""

    config: Any
    workdir: Path
    steps_per_epoch: int
    total_steps: int
    model: Any
    abstract_state: Any
    test_source: Any
    test_index: Any
    mesh: Any
    process: pipeline.ProcessSlice

    def epoch(self, step: int) -> float:
        """Epoch reached at ``step`` (steps / steps per epoch)."""
        return step / self.steps_per_epoch


def abstract_state(config: Any, model: Any, spe: int, total_steps: int, mesh: Any) -> Any:
    """The train state's abstract tree (shapes, dtypes, shardings), as the training loop's
    ``state_lib.create`` makes it, without initialising anything."""
    d = config.data
    tx = optim.make_optimizer(config.optim, spe, total_steps=total_steps)
    clip_shape = (d.p * d.k, d.seq_len, d.height, d.width, 3)
    fn = functools.partial(state_lib.init_fn, model=model, tx=tx, clip_shape=clip_shape)
    shapes = jax.eval_shape(fn, jax.random.key(config.seed))
    shardings = parallel.state_shardings(shapes, mesh)
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings
    )


def load_run(config: Any, workdir: str | Path) -> Run:
    """Prepares the data if needed and rebuilds the run's model and abstract state."""
    config_base.check_ranges(config)  # a bad value is named before the data is prepared
    d = config.data
    prepare.ensure_prepared(d)
    _, train_index = builders.load_split(d.name, d.data_dir, "train", trial=d.split)
    test_source, test_index = builders.load_split(d.name, d.data_dir, "test", trial=d.split)
    spe = sampling.epoch_steps(train_index.label, d.p, d.k, d.epoch)
    total, _ = schedule_steps(config, spe)
    mesh = parallel.make_mesh(config.mesh)
    try:
        process = parallel.process_slice(mesh, d.test_batch_size)
    except ValueError as e:
        raise ValueError(f"config.data.test_batch_size={d.test_batch_size}: {e}") from e
    model = make_model(config.model, train_index.num_classes)
    return Run(
        config=config,
        workdir=Path(workdir),
        steps_per_epoch=spe,
        total_steps=total,
        model=model,
        abstract_state=abstract_state(config, model, spe, total, mesh),
        test_source=test_source,
        test_index=test_index,
        mesh=mesh,
        process=process,
    )


def open_checkpoints(workdir: str | Path) -> ocp.CheckpointManager:
    """A read-only manager of ``WORKDIR/checkpoints``; FileNotFoundError if there is none."""
    directory = Path(workdir).absolute() / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(
            f"no checkpoints directory {directory}: train first "
            f"(python -m reid_jax.main --config ... --workdir {workdir})"
        )
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "data"))


def saved_steps(manager: ocp.CheckpointManager) -> list[int]:
    """The finalised checkpoint steps on disk now (re-read, so new saves are seen)."""
    manager.reload()
    return sorted(int(s) for s in manager.all_steps())


def restore(manager: ocp.CheckpointManager, run: Run, step: int) -> Any:
    """The train state of ``step`` (ValueError naming the checkpoint if it is from another
    model; FileNotFoundError if it was deleted meanwhile)."""
    state, _ = checkpoints.restore(manager, run.abstract_state, None, step)
    return state


def select_steps(
    saved: list[int], spe: int, epochs: list[float] | None = None, steps: list[int] | None = None
) -> list[int]:
    """The saved steps to evaluate: those of ``epochs`` (step = epoch * steps per epoch), of
    ``steps``, or all. ValueError naming any requested one that was not saved."""
    if epochs:
        wanted = {e: round(e * spe) for e in epochs}
        missing = [e for e, s in wanted.items() if s not in saved or not math.isclose(s, e * spe)]
        if missing:
            listed = ", ".join(f"{format_epoch(s / spe, 4)} (step {s})" for s in saved) or "none"
            raise ValueError(
                f"epoch(s) {', '.join(format_epoch(e, 4) for e in missing)} not saved (an epoch is "
                f"{spe} steps); saved epochs: {listed}"
            )
        return sorted(set(wanted.values()))
    if steps:
        missing = [s for s in steps if s not in saved]
        if missing:
            raise ValueError(f"step(s) {missing} not saved; saved steps: {saved or 'none'}")
        return sorted(set(steps))
    return list(saved)
