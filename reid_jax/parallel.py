"""Device mesh and shardings: one place that decides how arrays are laid out across devices.

Training is data-parallel over a mesh axis ``data``: the batch is split along it and the train
state is replicated, so BatchNorm statistics and the triplet loss see the *global* batch (XLA
inserts the all-reduces). Per-process batches become global arrays with
``jax.make_array_from_process_local_data``, which is what makes multi-host input work.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(mesh_cfg: Any) -> Mesh:
    """Mesh over all devices from ``config.mesh`` (axis name -> size, -1 = the rest)."""
    axes = dict(mesh_cfg)
    devices = jax.devices()
    sizes = list(axes.values())
    if sizes.count(-1) > 1:
        raise ValueError(f"config.mesh={axes}: at most one axis may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if len(devices) % known:
        raise ValueError(f"config.mesh={axes}: {len(devices)} devices not divisible by {known}")
    sizes = [len(devices) // known if s == -1 else s for s in sizes]
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"config.mesh={axes} needs {np.prod(sizes)} devices, have {len(devices)}")
    return Mesh(np.asarray(devices).reshape(sizes), tuple(axes))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's local batch into one global array per key."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()
    }


def num_data_shards(mesh: Mesh) -> int:
    return mesh.shape[DATA_AXIS]
