"""Entry point: ``python -m reid_jax.main --config configs/<x>.py --workdir DIR [--config.k=v]``.

Trains and periodically evaluates; rerunning the same command resumes from the workdir. Several
processes (hosts) join one run through ``reid_jax.distributed`` (flags below, or the environment:
see docs/scaling.md and launch/). Exit codes: 0 done, or stopped by a preemption notice
(``--preempted_exit_code``) after saving; non-zero on an error or when another process was lost.
"""

from __future__ import annotations

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from reid_jax import config_base, distributed, logs
from reid_jax.jobs import training
from reid_jax.train import checkpoints

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (else $REID_JAX_COORDINATOR / cluster)."
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes in the run (else $REID_JAX_NUM_PROCESSES / cluster)."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index (else $REID_JAX_PROCESS_ID / cluster)."
)
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed",
    None,
    list(distributed.MODES),
    "auto: join when the flags/environment name a run (default, or $REID_JAX_DISTRIBUTED); "
    "jax: always call jax.distributed.initialize() with JAX's detection (TPU VM pods); off.",
)
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_s",
    None,
    "Seconds without heartbeats before a process counts as lost and the others abort "
    f"(else $REID_JAX_HEARTBEAT_TIMEOUT, default {distributed.DEFAULT_HEARTBEAT_TIMEOUT_S}).",
)
_PREEMPTED_EXIT = flags.DEFINE_integer(
    "preempted_exit_code",
    0,
    "Exit code after saving on a preemption notice (non-zero lets e.g. a Kubernetes Job restart).",
)
flags.mark_flags_as_required(["config", "workdir"])
# Failures with a message that says it all (no traceback): training diverged, a checkpoint that
# cannot be restored, too many undecodable frames, a file or disk problem.
EXPECTED = (training.NonFiniteError, checkpoints.CheckpointError, RuntimeError, OSError)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logs.quiet_libraries()
    distributed.initialize(
        _COORDINATOR.value,
        _NUM_PROCESSES.value,
        _PROCESS_ID.value,
        mode=_DISTRIBUTED.value,
        heartbeat_timeout_s=_HEARTBEAT.value,
    )
    if jax.process_index() > 0:  # process 0 logs for the run; the others only warn
        logging.set_verbosity(logging.WARNING)
    logging.info("config:\n%s", _CONFIG.value)
    try:
        out = training.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except config_base.ConfigError as e:  # a bad value: one line, nothing started
        logs.fail(str(e), 2)
    except EXPECTED as e:  # divergence, damaged checkpoints, bad frames, disk full: one line
        if jax.process_count() > 1:
            distributed.abort(f"training failed ({type(e).__name__}: {e})")
        logs.fail(str(e), 1)
    except Exception as e:
        if jax.process_count() > 1:
            logging.exception("training failed")
            distributed.abort(f"training failed ({type(e).__name__}: {e})")
        raise
    if out["preempted"]:
        sys.exit(_PREEMPTED_EXIT.value)


if __name__ == "__main__":
    app.run(main, flags_parser=logs.parse_flags)
