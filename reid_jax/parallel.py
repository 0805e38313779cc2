"""Device mesh and shardings: one place that decides how arrays are laid out across devices.

The mesh has up to two named axes from ``config.mesh`` (axis -> size, ``-1`` = the rest):

- ``data``: data parallelism. The batch is split along it; the train state is replicated.
- ``fsdp``: fully sharded data parallelism (big_vision / maxtext style). The batch is split over
  ``data`` and ``fsdp`` together, and every parameter and optimiser-state array is split along
  its largest dimension divisible by the ``fsdp`` size (replicated when none is).

Either way BatchNorm statistics and the triplet loss see the *global* batch: under ``jax.jit``
XLA inserts the all-reduces / all-gathers. Per-process batches become global arrays with
``jax.make_array_from_process_local_data``. With several processes the devices are laid out
process-major, so each process feeds one contiguous block of every global batch
(``process_slice``, a ``ProcessSlice``), which is what the data pipeline loads.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils, multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
AXES = (DATA_AXIS, FSDP_AXIS)


@dataclasses.dataclass(frozen=True)
class ProcessSlice:
    """This process's share of every global batch."""

    index: int = 0
    count: int = 1

    def local_batch(self, global_batch: int) -> int:
        if global_batch % self.count:
            raise ValueError(
                f"global batch {global_batch} is not divisible by the process count {self.count}"
            )
        return global_batch // self.count

    def global_item(self, local_item: int, global_batch: int) -> int:
        """Maps the j-th item this process loads to its index in the global stream."""
        local = self.local_batch(global_batch)
        step, offset = divmod(local_item, local)
        return step * global_batch + self.index * local + offset


def mesh_shape(mesh_cfg: Any, num_devices: int) -> dict[str, int]:
    """Resolves ``config.mesh`` (axis -> size, at most one ``-1``) against ``num_devices``."""
    axes = {str(k): int(v) for k, v in dict(mesh_cfg).items()}
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise ValueError(f"config.mesh={axes}: unknown axes {unknown}; expected a subset of {AXES}")
    if DATA_AXIS not in axes:
        raise ValueError(f"config.mesh={axes}: needs a '{DATA_AXIS}' axis")
    sizes = list(axes.values())
    if sizes.count(-1) > 1:
        raise ValueError(f"config.mesh={axes}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"config.mesh={axes}: sizes must be positive or -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if num_devices % known:
        raise ValueError(f"config.mesh={axes}: {num_devices} devices not divisible by {known}")
    resolved = {k: num_devices // known if v == -1 else v for k, v in axes.items()}
    if int(np.prod(list(resolved.values()))) != num_devices:
        raise ValueError(
            f"config.mesh={axes} needs {int(np.prod(list(resolved.values())))} devices, "
            f"have {num_devices}"
        )
    return resolved


def make_mesh(mesh_cfg: Any, devices: list[Any] | None = None) -> Mesh:
    """Mesh over all devices from ``config.mesh``.

    One process: ``mesh_utils.create_device_mesh`` (topology-aware on TPU / NVLink). Several:
    devices sorted by (process, id), so each process's devices are contiguous along the batch.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    sizes = list(shape.values())
    if len({d.process_index for d in devices}) == 1:
        grid = mesh_utils.create_device_mesh(sizes, devices)
    else:
        ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
        grid = np.asarray(ordered, dtype=object).reshape(sizes)
    return Mesh(grid, tuple(shape))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes the batch dimension is split over: ``data`` then ``fsdp`` when present."""
    return tuple(a for a in AXES if a in mesh.shape)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data (and fsdp) axes."""
    return NamedSharding(mesh, PartitionSpec(batch_axes(mesh)))


def num_data_shards(mesh: Mesh) -> int:
    """How many ways the batch is split: the product of the batch axes' sizes."""
    return int(np.prod([mesh.shape[a] for a in batch_axes(mesh)]))


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int) -> PartitionSpec:
    """Splits the largest dimension divisible by ``fsdp_size`` over ``fsdp`` (ties: the
    earlier dimension); replicated when ``fsdp_size`` is 1 or no dimension divides."""
    if fsdp_size <= 1:
        return PartitionSpec()
    for dim in sorted(range(len(shape)), key=lambda i: (-shape[i], i)):
        if shape[dim] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[dim] = FSDP_AXIS
            return PartitionSpec(*spec)
    return PartitionSpec()


def state_shardings(abstract_state: Any, mesh: Mesh) -> Any:
    """A NamedSharding for every leaf of the (abstract) train state: fsdp-split where
    ``fsdp_spec`` allows, replicated otherwise (everything when the mesh has no fsdp axis)."""
    size = mesh.shape.get(FSDP_AXIS, 1)
    return jax.tree.map(
        lambda a: NamedSharding(mesh, fsdp_spec(tuple(a.shape), size)), abstract_state
    )


def process_slice(mesh: Mesh, global_batch: int) -> ProcessSlice:
    """This process's contiguous block of a global batch under ``batch_sharding(mesh)``.

    Raises ValueError if the batch does not split evenly or this process's rows are not one
    contiguous block (a mesh whose device order interleaves processes along the batch).
    """
    shards = num_data_shards(mesh)
    if global_batch % shards:
        raise ValueError(
            f"global batch {global_batch} is not divisible by the {shards} data shards of the "
            f"mesh {dict(mesh.shape)}"
        )
    count = jax.process_count()
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
    rows = sorted({r for idx in index_map.values() for r in range(global_batch)[idx[0]]})
    local = global_batch // count
    if len(rows) != local or rows != list(range(rows[0], rows[0] + local)) or rows[0] % local:
        raise ValueError(
            f"process {jax.process_index()} owns batch rows {rows[:8]}... of {global_batch}: "
            f"expected one contiguous block of {local}; order the mesh devices process-major"
        )
    return ProcessSlice(rows[0] // local, count)


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's local batch into one global array per key."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()
    }


def to_host(x: jax.Array) -> np.ndarray:
    """The whole global array as numpy on every process (an all-gather when multi-host)."""
    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
