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
from etils import epath
from jax.experimental import multihost_utils
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


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored here; the message says which and what to do."""


# Files every finalised step has (orbax's and grain's own layout, checked by tests).
_REQUIRED = ("_CHECKPOINT_METADATA", "state/_METADATA", "state/manifest.ocdbt")


def _writers(step_dir: Path) -> set[int]:
    """Process counts named by the step's data-iterator files (``process_<i>-of-<n>.json``)."""
    counts = set()
    for f in (step_dir / "data").glob("process_*-of-*.json"):
        try:
            counts.add(int(f.stem.rpartition("-of-")[2]))
        except ValueError:
            continue
    return counts


def damage(step_dir: Path, with_data: bool) -> list[str]:
    """What is missing from a step directory (empty when it looks intact)."""
    missing = [str(step_dir / name) for name in _REQUIRED if not (step_dir / name).exists()]
    if with_data:
        own = step_dir / "data" / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if not own.exists() and not (_writers(step_dir) - {jax.process_count()}):
            missing.append(str(own))
    return missing


def _check_process_count(step_dir: Path) -> None:
    writers = _writers(step_dir)
    if writers and jax.process_count() not in writers:
        (n,) = sorted(writers)[-1:]
        raise CheckpointError(
            f"checkpoint {step_dir} was written by {n} processes, this run has "
            f"{jax.process_count()}: resume with {n} processes (e.g. launch/local.sh -n {n}, or "
            f"the same launcher settings as the first run); the data-iterator position is per "
            f"process, so another count cannot continue the same data order"
        )


def _path(path: tuple) -> str:
    """A pytree path as ``params.backbone.conv1.kernel`` (dataclass fields, dict keys, indices)."""
    return ".".join(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path)


def _shape_mismatch(step_dir: Path, abstract_state: TrainState) -> str | None:
    """What differs between the step's saved array shapes (its metadata, no array is read) and
    the abstract state's, or None. Checked before restoring: a failed read of another model's
    arrays leaves orbax's reader threads printing tracebacks after the error."""
    saved_tree = ocp.StandardCheckpointHandler().metadata(epath.Path(step_dir / "state"))
    flat = jax.tree_util.tree_flatten_with_path
    saved = {_path(p): tuple(m.shape) for p, m in flat(saved_tree)[0]}
    wanted = {_path(p): tuple(a.shape) for p, a in flat(abstract_state)[0]}
    diffs = [f"{k} is {saved[k]} there, {wanted[k]} here" for k in wanted if k in saved
             and saved[k] != wanted[k]]  # fmt: skip
    diffs += [f"{k} is not in the checkpoint" for k in wanted if k not in saved]
    diffs += [f"{k} is only in the checkpoint" for k in saved if k not in wanted]
    if not diffs:
        return None
    return f"{len(diffs)} array(s) differ, first {diffs[0]}"


def _restore_step(manager, abstract_state, data_iter, step: int) -> TrainState:
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
        args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    return manager.restore(step, args=ocp.args.Composite(**args))["state"]


def _set_aside(manager: ocp.CheckpointManager, step: int, why: str) -> None:
    """Renames a damaged step to ``<step>.damaged`` (kept for inspection, no longer a step), so
    the run that falls back can save that step again."""
    if jax.process_index() == 0:
        src = Path(manager.directory) / str(step)
        dst = src.with_name(f"{step}.damaged")
        if dst.exists():
            dst = src.with_name(f"{step}.damaged.{len(list(src.parent.glob(f'{step}.damaged*')))}")
        src.rename(dst)
        logging.warning("checkpoint step %d is damaged (%s): moved to %s", step, why, dst)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"set aside damaged checkpoint {step}")
    manager.reload()


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:500] if str(e) else ''}"


def restore(
    manager: ocp.CheckpointManager,
    abstract_state: TrainState,
    data_iter: grain.DatasetIterator | None,
    step: int | None = None,
) -> tuple[TrainState, int]:
    """Restores ``step`` into the abstract state's shardings, and the iterator.

    With ``step=None`` (resuming) it takes the newest step that restores: a damaged newer step
    (a file missing or unreadable while an older step reads) is reported by path, renamed
    ``<step>.damaged`` and the run continues from the newest intact step; it never restarts from
    scratch silently. A checkpoint written by another number of processes, or for another model
    (its saved array shapes, read from the metadata, differ from the config's; or every step
    fails alike), is a ``CheckpointError`` that says so. A given ``step`` is restored
    or fails with its reason (FileNotFoundError if it does not exist, e.g. deleted meanwhile).
    """
    directory = Path(manager.directory)
    saved = sorted(int(s) for s in manager.all_steps())
    if step is not None and (step not in saved or not (directory / str(step)).is_dir()):
        raise FileNotFoundError(
            f"no checkpoint at step {step} in {directory} (saved steps: {saved})"
        )
    candidates = [step] if step is not None else saved[::-1]
    damaged: list[tuple[int, str]] = []  # (step, what is wrong), newest first
    errors: list[Exception] = []  # restore errors of steps whose files are all there
    for s in candidates:
        step_dir = directory / str(s)
        _check_process_count(step_dir)
        missing = damage(step_dir, data_iter is not None)
        if missing:
            damaged.append((s, "missing " + ", ".join(missing)))
            continue
        try:
            mismatch = _shape_mismatch(step_dir, abstract_state)
        except Exception as e:  # noqa: BLE001 (unreadable metadata: damage, as below)
            damaged.append((s, _why(e)))
            continue
        if mismatch is not None:
            raise CheckpointError(
                f"checkpoint {step_dir} does not match this config's model (use the run's own "
                f"config and overrides): {mismatch}"
            )
        try:
            state = _restore_step(manager, abstract_state, data_iter, s)
        except Exception as e:  # noqa: BLE001 (damage if an older step reads, else mismatch)
            if step is not None and isinstance(e, FileNotFoundError) and not step_dir.exists():
                raise  # deleted while we read it (the evaluation job's --watch expects this)
            errors.append(e)
            damaged.append((s, _why(e)))
            continue
        for bad_step, why in damaged:
            _set_aside(manager, bad_step, why)
        if damaged:
            logging.warning(
                "resuming from step %d, the newest intact checkpoint in %s", s, directory
            )
        logging.info("restored step %d from %s", s, directory)
        return state, int(s)
    if errors and len(errors) == len(damaged):  # files all there, nothing reads: another model
        raise CheckpointError(
            f"checkpoint {directory}/{candidates[0]} does not match this config's model "
            f"(use the run's own config and overrides; every saved step fails alike): "
            f"{_why(errors[0])}"
        ) from errors[0]
    listing = "; ".join(f"step {s}: {why}" for s, why in damaged)
    raise CheckpointError(
        f"no intact checkpoint in {directory} ({listing}); nothing was deleted: move the damaged "
        f"step directories away to start over, or put back a copy"
    )
