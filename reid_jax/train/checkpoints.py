"""Orbax checkpoints of the train state together with the grain data-iterator state.

One ``CheckpointManager`` under ``WORKDIR/checkpoints`` keeps the last ``keep_last`` steps, the
best step by evaluation mAP (when ``keep_best``), and every evaluation step when
``keep_eval_steps`` (what the checkpoint evaluation job walks). Saves are asynchronous; the data
iterator's state is captured synchronously at the save call so it matches the saved step exactly.

Multi-host: every process calls ``save`` / ``restore`` (orbax coordinates; process 0 writes the
metadata, each process its shards and its own ``data/process_<i>-of-<n>.json`` iterator state),
so the workdir must be on a filesystem all hosts share. A save interrupted by ``kill -9`` leaves
only a ``*.orbax-checkpoint-tmp*`` directory, which never counts as a step and is removed when the
next run creates its manager; the run resumes from the last *finalised* step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies

from reid_jax.train.state import TrainState


def make_manager(
    workdir: str | Path, ckpt_cfg: Any, eval_steps: list[int]
) -> ocp.CheckpointManager:
    """The run's checkpoint manager, with its preservation policy from ``config.checkpoint``."""
    keep: list[Any] = [policies.LatestN(n=ckpt_cfg.keep_last)]
    if ckpt_cfg.keep_best:
        keep.append(
            policies.BestN(
                get_metric_fn=lambda m: m["mAP"], n=1, keep_checkpoints_without_metrics=False
            )
        )
    if ckpt_cfg.keep_eval_steps and eval_steps:
        keep.append(policies.CustomSteps(steps=eval_steps))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(keep),
        enable_async_checkpointing=ckpt_cfg.async_save,
        create=True,
        cleanup_tmp_directories=True,
    )
    directory = Path(workdir).absolute() / "checkpoints"
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "data"))


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state: TrainState,
    data_iter: grain.DatasetIterator | None,
    metrics: dict[str, float] | None = None,
) -> None:
    """Saves the state (async) and the iterator position at ``step``; no-op if already saved."""
    if step in manager.all_steps():
        return
    args = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
        args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    manager.save(step, args=ocp.args.Composite(**args), metrics=metrics, force=True)


def restore(
    manager: ocp.CheckpointManager,
    abstract_state: TrainState,
    data_iter: grain.DatasetIterator | None,
    step: int | None = None,
) -> tuple[TrainState, int]:
    """Restores ``step`` (default: latest) into the abstract state's shardings, and the iterator."""
    step = manager.latest_step() if step is None else step
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
        args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**args))
    except ValueError as e:  # shape/structure mismatch: a checkpoint from another config
        raise ValueError(
            f"checkpoint {manager.directory}/{step} does not match this config's model: {e}"
        ) from e
    except FileNotFoundError as e:
        saved = sorted(int(s) for s in manager.all_steps())
        if step not in saved or data_iter is None:  # the checkpoint itself is missing
            raise FileNotFoundError(
                f"no checkpoint at step {step} in {manager.directory} (saved steps: {saved}): {e}"
            ) from e
        raise FileNotFoundError(  # the iterator state of this process was never written
            f"checkpoint {manager.directory}/{step} has no data-iterator state for process "
            f"{jax.process_index()} of {jax.process_count()}: it was written by a run with a "
            f"different number of processes; resume with that many ({e})"
        ) from e
    logging.info("restored step %d from %s", step, manager.directory)
    return restored["state"], int(step)
