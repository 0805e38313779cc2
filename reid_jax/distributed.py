"""Multi-host start-up: ``jax.distributed.initialize`` when the environment names a cluster.

Single-process runs need nothing. With ``REID_JAX_COORDINATOR`` (host:port),
``REID_JAX_NUM_PROCESSES`` and ``REID_JAX_PROCESS_ID`` set, or under a cluster JAX detects
itself (SLURM, TPU VMs, Kubernetes), the processes join one runtime.
"""

from __future__ import annotations

import os

import jax
from absl import logging


def initialize() -> None:
    """Joins the distributed runtime if this process is one of several; idempotent."""
    env = os.environ
    if "REID_JAX_COORDINATOR" in env:
        if env.get("REID_JAX_CPU_COLLECTIVES"):
            jax.config.update("jax_cpu_collectives_implementation", env["REID_JAX_CPU_COLLECTIVES"])
        jax.distributed.initialize(
            coordinator_address=env["REID_JAX_COORDINATOR"],
            num_processes=int(env["REID_JAX_NUM_PROCESSES"]),
            process_id=int(env["REID_JAX_PROCESS_ID"]),
        )
    elif any(k in env for k in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "JOBSET_NAME")):
        if int(env.get("SLURM_NTASKS", "2")) > 1:
            jax.distributed.initialize()
    logging.info(
        "process %d of %d, %d local / %d global devices (%s)",
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
        jax.default_backend(),
    )
