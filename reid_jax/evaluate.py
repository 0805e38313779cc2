"""Evaluation job: ``python -m reid_jax.evaluate --config C --workdir W [--epochs 360,400 |
--steps 1200,1300 | --all] [--watch] [--export_features] [--trials] [--config.k=v]``.

Evaluates each checkpoint of ``W/checkpoints`` once (a restarted job skips what ``W/eval/``
records), prints the research note's table, and writes ``W/eval/``: results.csv, results.md,
step_<N>.json, TensorBoard scalars, PNGs, ranked lists. ``--trials`` evaluates every trial
``W/split_<i>`` of iLIDS-VID / PRID-2011 and reports mean +- std. See docs/evaluation.md.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from reid_jax import logs
from reid_jax.jobs import evaluation as job_lib
from reid_jax.jobs import trials as trials_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.")
_EPOCHS = flags.DEFINE_list("epochs", None, "Epochs to evaluate, e.g. 360,400,440.")
_STEPS = flags.DEFINE_list("steps", None, "Steps to evaluate (instead of --epochs).")
_ALL = flags.DEFINE_bool("all", False, "Evaluate every saved checkpoint (the default).")
_WATCH = flags.DEFINE_bool(
    "watch", False, "Poll for new checkpoints while training runs; exit after the final one."
)
_POLL = flags.DEFINE_float("poll_s", 60.0, "--watch: seconds between polls.")
_IDLE = flags.DEFINE_float(
    "idle_timeout_s", 0.0, "--watch: fail after this long without a new checkpoint (0 = never)."
)
_EXPORT = flags.DEFINE_bool(
    "export_features", False, "Write W/eval/features_step<N>.npz (features, ids, cameras)."
)
_TRIALS = flags.DEFINE_bool(
    "trials", False, "Evaluate W/split_<i> for every trial and report mean +- std per metric."
)
_TRIAL_IDS = flags.DEFINE_list("trial_ids", None, "--trials: only these trials (default all).")
_RANKED = flags.DEFINE_string(
    "ranked_queries",
    "auto",
    "Ranked-list PNG/HTML for these query positions ('0,17'), "
    "'auto' (best, two middle, worst by AP) or '' (none).",
)
_PLOTS = flags.DEFINE_bool("plots", True, "Write the CMC, metric-vs-epoch and camera PNGs.")
_FORCE = flags.DEFINE_bool("force", False, "Re-evaluate checkpoints that have a record.")
flags.mark_flags_as_required(["config", "workdir"])


def _numbers(name: str, values: list[str] | None, kind: type) -> list | None:
    if not values:
        return None
    try:
        return [kind(v) for v in values]
    except ValueError as e:
        raise app.UsageError(f"--{name}={','.join(values)}: expected {kind.__name__}s") from e


def options() -> job_lib.Options:
    """The job options from the flags (``--epochs``, ``--steps`` and ``--all`` exclusive)."""
    epochs = _numbers("epochs", _EPOCHS.value, float)
    steps = _numbers("steps", _STEPS.value, int)
    if sum(bool(x) for x in (epochs, steps, _ALL.value)) > 1:
        raise app.UsageError("give at most one of --epochs, --steps, --all")
    return job_lib.Options(
        epochs=epochs, steps=steps, watch=_WATCH.value, poll_s=_POLL.value,
        idle_timeout_s=_IDLE.value, export_features=_EXPORT.value,
        ranked_queries=_RANKED.value, plots=_PLOTS.value, force=_FORCE.value,
    )  # fmt: skip


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logs.quiet_libraries()
    opts = options()
    try:
        if _TRIALS.value:
            ids = _numbers("trial_ids", _TRIAL_IDS.value, int)
            trials_lib.evaluate_trials(_CONFIG.value, _WORKDIR.value, opts, ids)
        else:
            job_lib.evaluate_run(_CONFIG.value, _WORKDIR.value, opts)
    except (ValueError, FileNotFoundError, TimeoutError) as e:  # bad input: one line, exit 2
        logs.fail(str(e), 2)
    except RuntimeError as e:  # e.g. more undecodable frames than config.data.max_bad_frames
        logs.fail(str(e), 1)


if __name__ == "__main__":
    app.run(main, flags_parser=logs.parse_flags)
