"""One run set-up for every job that needs a model and data: training, the evaluation job, the
inference tools, the experiments and the benchmarks; and the checkpoints of a run.

``setup(config, workdir)`` checks the whole config before any slow work (``config_base``: ranges,
fusion names and options, ImageNet weights on real data), prepares the data, then builds what the
jobs share (``build``): splits, mesh, this process's block of every batch, steps per epoch, the
schedule, model, optimiser and the train state's abstract tree (``jax.eval_shape``: nothing is
initialised). Training initialises that state only when no checkpoint is found
(``initial_state``, which is also the only reader of the ImageNet weights file).

Checkpoints are opened read-only for evaluation (``open_checkpoints``): a training job may be
writing to the same directory (its in-progress ``*.orbax-checkpoint-tmp*`` directories are never
touched, and only finalised steps are listed).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from reid_jax import config_base, parallel
from reid_jax.data import builders, prepare, sampling
from reid_jax.evaluation.metrics import format_epoch
from reid_jax.models.reid import make_model
from reid_jax.train import checkpoints, optim
from reid_jax.train import state as state_lib


@dataclasses.dataclass
class Run:
    """What the jobs of one run share; ``abstract_state`` carries the shardings. The splits are
    None where a job has no dataset (the inference tools)."""

    config: Any
    workdir: Path
    steps_per_epoch: int
    total_steps: int
    eval_steps: list[int]
    log_every: int  # steps between log lines (``interval_steps``)
    checkpoint_every: int  # steps between checkpoints besides the evaluation steps
    model: Any
    tx: Any
    clip_shape: tuple[int, ...]
    abstract_state: Any
    mesh: Any
    process: parallel.ProcessSlice
    train_source: Any = None
    train_index: Any = None
    test_source: Any = None
    test_index: Any = None

    def epoch(self, step: int) -> float:
        """Epoch reached at ``step`` (steps / steps per epoch)."""
        return step / self.steps_per_epoch


def schedule_steps(config: Any, steps_per_epoch: int) -> tuple[int, list[int]]:
    """Total steps and the evaluation steps (every ``eval_every_epochs`` from
    ``eval_start_epochs``, and always at the end); epochs become steps by ``sampling.to_steps``."""
    spe = steps_per_epoch
    total = config.num_steps if config.num_steps > 0 else sampling.to_steps(config.num_epochs, spe)
    every = sampling.to_steps(config.eval_every_epochs, spe) if config.eval_every_epochs > 0 else 0
    first = config.eval_start_epochs * spe
    evals = [s for s in range(every, total + 1, every) if s >= first] if every else []
    if total not in evals:
        evals.append(total)
    return total, evals


def interval_steps(config: Any, epochs_key: str, steps_per_epoch: int) -> int:
    """An interval that may be set in epochs (``epochs_key``, e.g. "checkpoint.every_epochs")
    or in steps (the key ``config_base.INTERVALS_IN_EPOCHS`` pairs with it), as steps: the epoch
    value, when set, through ``sampling.to_steps``. ConfigError if it rounds to no step."""
    steps_key = config_base.INTERVALS_IN_EPOCHS[epochs_key]
    epochs = config_base.get_key(config, epochs_key)
    if epochs is None:
        return int(config_base.get_key(config, steps_key))
    steps = sampling.to_steps(epochs, steps_per_epoch)
    if steps < 1:
        raise config_base.ConfigError(
            f"config.{epochs_key}={epochs!r} is {steps} steps (an epoch is {steps_per_epoch} "
            "steps): expected at least one step"
        )
    return steps


def setup(config: Any, workdir: str | Path) -> Run:
    """Checks the config, prepares the data if needed, and builds the run (nothing initialised)."""
    config_base.check_ranges(config)  # a bad value is named before the data is prepared
    config_base.pretrained_weights(config)  # real data without ImageNet weights: named now
    d = config.data
    prepare.ensure_prepared(d)
    train_source, train_index = builders.load_split(d.name, d.data_dir, "train", trial=d.split)
    test_source, test_index = builders.load_split(d.name, d.data_dir, "test", trial=d.split)
    spe = sampling.epoch_steps(train_index.label, d.p, d.k, d.epoch)
    run = build(config, workdir, train_index.num_classes, spe)
    return dataclasses.replace(
        run, train_source=train_source, train_index=train_index, test_source=test_source,
        test_index=test_index,
    )  # fmt: skip


def build(config: Any, workdir: str | Path, num_classes: int, steps_per_epoch: int) -> Run:
    """The run's mesh, process block, schedule, model, optimiser and abstract state, for a
    dataset of ``num_classes`` training identities and ``steps_per_epoch``."""
    d = config.data
    mesh = parallel.make_mesh(config.mesh)
    total, evals = schedule_steps(config, steps_per_epoch)
    model = make_model(config.model, num_classes)
    tx = optim.make_optimizer(config.optim, steps_per_epoch, total_steps=total)
    clip_shape = (d.p * d.k, d.seq_len, d.height, d.width, 3)
    return Run(
        config=config, workdir=Path(workdir), steps_per_epoch=steps_per_epoch, total_steps=total,
        eval_steps=evals, log_every=interval_steps(config, "log_every_epochs", steps_per_epoch),
        checkpoint_every=interval_steps(config, "checkpoint.every_epochs", steps_per_epoch),
        model=model, tx=tx, clip_shape=clip_shape,
        abstract_state=abstract_state(config.seed, model, tx, clip_shape, mesh),
        mesh=mesh, process=process_slice(mesh, d.p * d.k, d.test_batch_size),
    )  # fmt: skip


def process_slice(mesh: Any, global_batch: int, test_batch: int) -> parallel.ProcessSlice:
    """This process's block of every training and evaluation batch (they must agree)."""
    try:
        process = parallel.process_slice(mesh, global_batch)
    except ValueError as e:
        raise ValueError(f"config.data.p x config.data.k = {global_batch}: {e}") from e
    try:
        test_process = parallel.process_slice(mesh, test_batch)
    except ValueError as e:
        raise ValueError(f"config.data.test_batch_size={test_batch}: {e}") from e
    if test_process != process:
        raise ValueError(
            f"train and test batches map to different process blocks: {process}, {test_process}"
        )
    return process


def abstract_state(seed: int, model: Any, tx: Any, clip_shape: tuple, mesh: Any) -> Any:
    """The train state's abstract tree (shapes, dtypes, shardings), without initialising."""
    fn = functools.partial(state_lib.init_fn, model=model, tx=tx, clip_shape=clip_shape)
    shapes = jax.eval_shape(fn, jax.random.key(seed))
    shardings = parallel.state_shardings(shapes, mesh)
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings
    )


def initial_state(run: Run) -> Any:
    """The initialised train state, laid out as ``run.abstract_state``; the backbone from
    ``config.model.pretrained`` (read here only, so a resumed run never needs the file)."""
    return state_lib.initialise(
        jax.random.key(run.config.seed), run.model, run.tx, run.clip_shape, run.abstract_state,
        pretrained=config_base.pretrained_weights(run.config),
    )  # fmt: skip


def load_config(workdir: Path, config_path: str | None = None) -> ml_collections.ConfigDict:
    """The run's config: ``config_path`` (a config .py) if given, else ``RUN/config.json``."""
    if config_path:
        return config_base.load_config_file(config_path)
    path = workdir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass --config (the run's config file)")
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    _add_missing(config, config_base.base_config())  # a run saved before a key was added
    return config


def _add_missing(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> None:
    """Gives ``config`` every key of ``defaults`` it lacks (recursively), keeping its values."""
    for key, value in defaults.items():
        if key not in config:
            config[key] = value
        elif isinstance(value, ml_collections.ConfigDict) and isinstance(
            config[key], ml_collections.ConfigDict
        ):
            _add_missing(config[key], value)


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


def restore_latest(
    workdir: str | Path, config_path: str | None = None, step: int | None = None
) -> tuple[Run, Any, int]:
    """(run, state, step) of the run in ``workdir`` (its config.json, or the config file
    ``config_path``) at checkpoint ``step`` (default: its last), for the diagnostics."""
    workdir = Path(workdir)
    run = setup(load_config(workdir, config_path), workdir)
    manager = open_checkpoints(workdir)
    try:
        steps = saved_steps(manager)
        if not steps:
            raise FileNotFoundError(f"{workdir}/checkpoints holds no finished checkpoint")
        if step is not None and step not in steps:
            raise ValueError(f"{workdir}: no checkpoint at step {step}; saved steps are {steps}")
        step = steps[-1] if step is None else step
        return run, restore(manager, run, step), step
    finally:
        manager.close()


def select_steps(
    saved: list[int], spe: int, epochs: list[float] | None = None, steps: list[int] | None = None
) -> list[int]:
    """The saved steps to evaluate: those of ``epochs`` (step = epoch * steps per epoch), of
    ``steps``, or all. ValueError naming any requested one that was not saved."""
    if epochs:
        wanted = {e: sampling.to_steps(e, spe) for e in epochs}
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
