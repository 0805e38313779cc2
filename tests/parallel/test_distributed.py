"""Fast, single-process checks of the scale-out pieces: join plans, mesh sizes, the fsdp rule,
process blocks, the SIGTERM watch, the jsonl records and local.sh's argument checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from reid_jax import distributed, parallel
from reid_jax.jobs import training as loop
from reid_jax.parallel import ProcessSlice

ROOT = Path(__file__).resolve().parents[2]


def test_plan_explicit_from_flags_or_environment():
    env = {
        "REID_JAX_COORDINATOR": "10.0.0.1:1234",
        "REID_JAX_NUM_PROCESSES": "4",
        "REID_JAX_PROCESS_ID": "3",
    }
    assert distributed.plan(env) == distributed.Plan("explicit", "10.0.0.1:1234", 4, 3)
    flags = distributed.plan({}, "h:9", 2, 0)
    assert flags == distributed.Plan("explicit", "h:9", 2, 0)
    # Flags win over the environment; "off" ignores both.
    assert distributed.plan(env, process_id=1).process_id == 1
    assert distributed.plan(env, mode="off") == distributed.Plan("single")
    with pytest.raises(ValueError, match=r"REID_JAX_PROCESS_ID"):
        distributed.plan({"REID_JAX_COORDINATOR": "h:1", "REID_JAX_NUM_PROCESSES": "2"})
    with pytest.raises(ValueError, match=r"REID_JAX_NUM_PROCESSES='two'"):
        distributed.plan({**env, "REID_JAX_NUM_PROCESSES": "two"})
    with pytest.raises(ValueError, match="mode 'mpi'"):
        distributed.plan(env, mode="mpi")


def test_plan_jobset_names_pod_0_of_job_0_as_coordinator():
    env = {
        "JOBSET_NAME": "reid",
        "REPLICATED_JOB_NAME": "workers",
        "JOB_COMPLETION_INDEX": "2",
        "REID_JAX_NUM_PROCESSES": "4",
    }
    assert distributed.plan(env) == distributed.Plan("jobset", "reid-workers-0-0.reid:1234", 4, 2)
    assert distributed.plan({**env, "REID_JAX_COORDINATOR_PORT": "8476"}).coordinator_address == (
        "reid-workers-0-0.reid:8476"
    )
    with pytest.raises(ValueError, match="REID_JAX_NUM_PROCESSES is not"):
        distributed.plan({k: v for k, v in env.items() if k != "REID_JAX_NUM_PROCESSES"})
    with pytest.raises(ValueError, match="JOB_INDEX=1"):
        distributed.plan({**env, "JOB_INDEX": "1"})


def test_plan_leaves_slurm_tpu_and_mpi_to_jax_and_single_runs_alone():
    slurm = {
        "SLURM_JOB_ID": "7",
        "SLURM_STEP_NODELIST": "n[1-2]",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": "1",
    }
    assert distributed.plan(slurm).method == "jax"
    assert distributed.plan({**slurm, "SLURM_NTASKS": "1"}).method == "single"
    # An sbatch script outside srun has no step node list: not a multi-process run.
    assert distributed.plan({k: v for k, v in slurm.items() if "STEP" not in k}).method == "single"
    assert distributed.plan({"TPU_WORKER_HOSTNAMES": "t0,t1"}).method == "jax"
    assert distributed.plan({"TPU_WORKER_HOSTNAMES": "t0"}).method == "single"
    mpi = {"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "2"}
    assert distributed.plan(mpi).method == "jax"
    assert distributed.plan({}).method == "single"
    assert distributed.plan({}, mode="jax").method == "jax"


def test_mesh_shape_resolves_minus_one_and_rejects_bad_meshes():
    assert parallel.mesh_shape({"data": -1, "fsdp": 2}, 8) == {"data": 4, "fsdp": 2}
    assert parallel.mesh_shape({"data": 2, "fsdp": -1}, 8) == {"data": 2, "fsdp": 4}
    assert parallel.mesh_shape({"data": -1}, 1) == {"data": 1}
    for mesh, match in [
        ({"data": -1, "fsdp": -1}, "at most one"),
        ({"data": 2}, "needs 2 devices"),
        ({"data": -1, "fsdp": 3}, "not divisible by 3"),
        ({"data": -1, "model": 2}, "unknown axes"),
        ({"fsdp": -1}, "needs a 'data' axis"),
        ({"data": 0}, "positive or -1"),
    ]:
        with pytest.raises(ValueError, match=match):
            parallel.mesh_shape(mesh, 4)


def test_fsdp_spec_splits_the_largest_divisible_dimension():
    assert parallel.fsdp_spec((3, 3, 32, 64), 4) == P(None, None, None, "fsdp")
    assert parallel.fsdp_spec((64, 30), 4) == P("fsdp", None)
    assert parallel.fsdp_spec((30, 64), 4) == P(None, "fsdp")
    assert parallel.fsdp_spec((6, 4), 4) == P(None, "fsdp")  # 6 is larger but not divisible
    assert parallel.fsdp_spec((8, 8), 2) == P("fsdp", None)  # a tie: the earlier dimension
    assert parallel.fsdp_spec((5, 3), 2) == P()
    assert parallel.fsdp_spec((), 2) == P()
    assert parallel.fsdp_spec((64, 64), 1) == P()


def test_single_device_mesh_shardings_and_process_block():
    mesh = parallel.make_mesh({"data": -1, "fsdp": 1})
    assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1}
    assert parallel.batch_sharding(mesh).spec == P(("data", "fsdp"))
    assert parallel.num_data_shards(mesh) == jax.device_count()
    abstract = {
        "w": jax.ShapeDtypeStruct((4, 6), np.float32),
        "n": jax.ShapeDtypeStruct((), np.int32),
    }
    shardings = parallel.state_shardings(abstract, mesh)
    assert shardings["w"].spec == P() and shardings["n"].spec == P()  # fsdp=1: replicated
    assert parallel.process_slice(mesh, 8 * jax.device_count()) == ProcessSlice(0, 1)
    batch = parallel.global_batch({"x": np.arange(6.0)}, mesh)
    np.testing.assert_array_equal(parallel.to_host(batch["x"]), np.arange(6.0))


FOUR_DEVICES = """
import jax, numpy as np
from jax.sharding import PartitionSpec as P
from reid_jax import parallel
mesh = parallel.make_mesh({"data": -1, "fsdp": 2})
assert dict(mesh.shape) == {"data": 2, "fsdp": 2}, mesh
abstract = {"k": jax.ShapeDtypeStruct((3, 3, 8, 16), np.float32),
            "b": jax.ShapeDtypeStruct((5,), np.float32)}
sh = parallel.state_shardings(abstract, mesh)
assert sh["k"].spec == P(None, None, None, "fsdp") and sh["b"].spec == P(), sh
assert sh["k"].shard_shape((3, 3, 8, 16)) == (3, 3, 8, 8)
x = parallel.global_batch({"x": np.arange(8.0)}, mesh)["x"]
assert x.sharding.shard_shape(x.shape) == (2,)  # the batch is split 4 ways: data x fsdp
np.testing.assert_array_equal(parallel.to_host(x), np.arange(8.0))
try:
    parallel.process_slice(mesh, 6)
except ValueError as e:
    assert "not divisible by the 4 data shards" in str(e), e
else:
    raise AssertionError("a batch of 6 on 4 shards was accepted")
print("OK")
"""


def test_four_devices_fsdp_shardings_and_batch_split():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", FOUR_DEVICES],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


def test_sigterm_watch_without_the_distributed_runtime():
    previous = signal.getsignal(signal.SIGTERM)
    watch = distributed.PreemptionWatch()
    try:
        assert not watch.reached(1)
        os.kill(os.getpid(), signal.SIGTERM)  # handled: sets the flag, the process lives on
        assert watch.reached(2) and watch.reached(3)
    finally:
        watch.close()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_jsonl_records_are_truncated_to_the_restored_step(tmp_path):
    path = tmp_path / "train_metrics.jsonl"
    for step in (1, 2, 3):
        loop._append_jsonl(path, {"step": step, "loss": float(step)})
    path.write_text(path.read_text() + '{"step": 4, "lo')  # a line cut short by kill -9
    loop._truncate_jsonl(path, 2)
    assert loop.read_jsonl(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}]
    loop._truncate_jsonl(tmp_path / "missing.jsonl", 2)  # nothing to do
    assert not (tmp_path / "missing.jsonl").exists()


@pytest.mark.parametrize("args", [["-n", "0"], ["-d", "x"], ["-q"]])
def test_local_sh_rejects_bad_arguments(args):
    proc = subprocess.run(
        ["bash", str(ROOT / "launch" / "local.sh"), *args, "--", "--workdir", "w"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert "local.sh" in proc.stderr
