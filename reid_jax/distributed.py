"""Multi-host start-up (``jax.distributed.initialize`` from the environment) and preemption.

``plan`` decides how this process joins a run, first match wins:

1. explicit: ``--coordinator_address/--num_processes/--process_id`` (or the environment variables
   ``REID_JAX_COORDINATOR`` = host:port, ``REID_JAX_NUM_PROCESSES``, ``REID_JAX_PROCESS_ID``);
2. Kubernetes JobSet: ``JOBSET_NAME``, ``REPLICATED_JOB_NAME`` and ``JOB_COMPLETION_INDEX`` (set by
   JobSet / indexed Jobs) with ``REID_JAX_NUM_PROCESSES``; the coordinator is pod 0 of job 0,
   ``<jobset>-<replicated job>-0-0.<jobset>:<REID_JAX_COORDINATOR_PORT or 1234>``;
3. JAX's own detection: SLURM inside ``srun`` with more than one task, Open MPI, GKE TPU
   (``TPU_WORKER_HOSTNAMES``), or anywhere with ``--distributed=jax`` (TPU VM pods, where JAX asks
   the metadata server);
4. otherwise one process, no distributed runtime.

A lost process makes the others fail fast: the coordination service aborts every surviving
process when one stops sending heartbeats (``heartbeat_timeout_s``, default 30 s), and when
process 0 (which hosts the service) dies the others abort at once. ``abort`` exits a failing
process without the shutdown barrier so that its peers are not kept waiting.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Mapping

import jax
from absl import logging
from jax.experimental import multihost_utils

MODES = ("auto", "jax", "off")
DEFAULT_HEARTBEAT_TIMEOUT_S = 30
DEFAULT_SHUTDOWN_TIMEOUT_S = 120
DEFAULT_JOBSET_PORT = 1234


@dataclasses.dataclass(frozen=True)
class Plan:
    """How this process joins the run: ``method`` is single, explicit, jobset or jax (JAX's
    own cluster detection fills the unset fields)."""

    method: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError as e:
        raise ValueError(f"environment variable {key}={env[key]!r}: expected an integer") from e


def plan(
    env: Mapping[str, str],
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    mode: str = "auto",
) -> Plan:
    """The join plan from explicit values (flags) and the environment; see the module doc."""
    if mode not in MODES:
        raise ValueError(f"distributed mode {mode!r}: expected one of {MODES}")
    if mode == "off":
        return Plan("single")
    given = {
        "REID_JAX_COORDINATOR": coordinator_address,
        "REID_JAX_NUM_PROCESSES": num_processes,
        "REID_JAX_PROCESS_ID": process_id,
    }
    explicit = {k: env.get(k) if v is None or v == "" else v for k, v in given.items()}
    if explicit["REID_JAX_COORDINATOR"]:
        missing = [k for k, v in explicit.items() if v is None or v == ""]
        if missing:
            raise ValueError(
                f"coordinator {explicit['REID_JAX_COORDINATOR']!r} is set but {missing} are not "
                "(flags --num_processes/--process_id or those environment variables)"
            )
        values = {k: str(v) for k, v in explicit.items()}
        return Plan(
            "explicit",
            values["REID_JAX_COORDINATOR"],
            _int(values, "REID_JAX_NUM_PROCESSES"),
            _int(values, "REID_JAX_PROCESS_ID"),
        )
    if mode == "jax":
        return Plan("jax")
    if all(k in env for k in ("JOBSET_NAME", "REPLICATED_JOB_NAME", "JOB_COMPLETION_INDEX")):
        if "REID_JAX_NUM_PROCESSES" not in env:
            raise ValueError(
                "JobSet detected (JOBSET_NAME is set) but REID_JAX_NUM_PROCESSES is not: set it to "
                "the Job's parallelism in the manifest"
            )
        if env.get("JOB_INDEX", "0") != "0":
            raise ValueError(
                f"JobSet replicated job index JOB_INDEX={env['JOB_INDEX']}: use one replicated "
                "job (replicas: 1) whose parallelism is the number of processes"
            )
        port = env.get("REID_JAX_COORDINATOR_PORT", str(DEFAULT_JOBSET_PORT))
        name, job = env["JOBSET_NAME"], env["REPLICATED_JOB_NAME"]
        return Plan(
            "jobset",
            f"{name}-{job}-0-0.{name}:{port}",
            _int(env, "REID_JAX_NUM_PROCESSES"),
            _int(env, "JOB_COMPLETION_INDEX"),
        )
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID")
    if all(k in env for k in slurm) and _int(env, "SLURM_NTASKS") > 1:
        return Plan("jax")
    if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return Plan("jax")
    hosts = env.get("TPU_WORKER_HOSTNAMES") or env.get("TPU_PROCESS_ADDRESSES") or ""
    if len([h for h in hosts.split(",") if h]) > 1:
        return Plan("jax")
    return Plan("single")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    mode: str | None = None,
    heartbeat_timeout_s: int | None = None,
    shutdown_timeout_s: int | None = None,
) -> Plan:
    """Joins the distributed runtime if this process is one of several; idempotent.

    Unset arguments come from ``REID_JAX_DISTRIBUTED`` (mode), ``REID_JAX_HEARTBEAT_TIMEOUT``,
    ``REID_JAX_SHUTDOWN_TIMEOUT`` and ``plan``'s variables. ``REID_JAX_CPU_COLLECTIVES`` (or
    ``JAX_PLATFORMS=cpu`` with several processes) picks the CPU collectives, e.g. ``gloo``.
    """
    env = os.environ
    mode = mode or env.get("REID_JAX_DISTRIBUTED", "auto")
    p = plan(env, coordinator_address, num_processes, process_id, mode)
    heartbeat = heartbeat_timeout_s or int(
        env.get("REID_JAX_HEARTBEAT_TIMEOUT", DEFAULT_HEARTBEAT_TIMEOUT_S)
    )
    shutdown = shutdown_timeout_s or int(
        env.get("REID_JAX_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT_S)
    )
    if p.method != "single" and not jax.distributed.is_initialized():
        collectives = env.get("REID_JAX_CPU_COLLECTIVES")
        if not collectives and env.get("JAX_PLATFORMS") == "cpu":
            collectives = "gloo"
        if collectives:
            jax.config.update("jax_cpu_collectives_implementation", collectives)
        jax.distributed.initialize(
            coordinator_address=p.coordinator_address,
            num_processes=p.num_processes,
            process_id=p.process_id,
            heartbeat_timeout_seconds=heartbeat,
            shutdown_timeout_seconds=shutdown,
        )
        logging.info(
            "joined %s run as process %d of %d; a lost process makes the others abort within "
            "~%d s (heartbeat timeout)",
            p.method,
            jax.process_index(),
            jax.process_count(),
            heartbeat,
        )
    logging.info(
        "process %d of %d, %d local / %d global devices (%s)",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.default_backend(),
    )
    return p


def abort(message: str, code: int = 1) -> None:
    """Exits this process now, skipping the distributed shutdown barrier: the other processes
    then see it stop heartbeating and abort too, instead of waiting in a collective."""
    logging.error("process %d: %s; exiting with code %d", jax.process_index(), message, code)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.flush()
    os._exit(code)


class PreemptionWatch:
    """Tells the training loop at which step boundary to save and stop after a SIGTERM.

    With the distributed runtime, JAX's preemption service catches SIGTERM (on any process) and
    ``reached(step)`` turns True at the *same* step on every process. Without it, a Python
    SIGTERM handler sets a flag that ``reached`` reports; ``close`` restores the old handler.
    """

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._previous = None
        self._service = bool(
            jax.distributed.is_initialized() and jax.config.jax_enable_preemption_service
        )
        if jax.process_count() > 1 and not self._service:
            logging.warning(
                "JAX's preemption service is disabled (jax_enable_preemption_service): a SIGTERM "
                "will not stop the processes at a common step"
            )
        if not self._service and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        logging.warning("SIGTERM: saving at the next step boundary, then exiting")
        self._flag.set()

    def reached(self, step: int) -> bool:
        """True once a preemption notice arrived and ``step`` is the agreed step to stop at."""
        if self._service:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self._flag.is_set()

    def close(self) -> None:
        """Restores the SIGTERM handler that was installed before."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
