"""The device mesh of data parallelism: one axis, `data`, over every device of every host.

Each batch is split along its first axis over the mesh; parameters and optimizer state are
replicated. So one code path serves 1 CPU, 8 GPUs or many hosts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from experiments.training.cli import UsageError

__all__ = ["DATA_AXIS", "check_batch_size", "data_mesh", "replicate", "shard_batch"]

DATA_AXIS = "data"


def data_mesh(devices: Any = None) -> Mesh:
    """A 1-D `Mesh` over `devices` (default: every device of every host), axis `data`."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh, *, copy: bool = False) -> Any:
    """Places every array of `tree` on every device of `mesh` (the parameters' layout).

    Args:
        tree: a pytree of arrays.
        mesh: the mesh.
        copy: give every leaf a buffer of its own, even where the input is already in place
            (e.g. two leaves holding one array): needed before the leaves are donated.
    """
    return jax.device_put(tree, NamedSharding(mesh, P()), may_alias=False if copy else None)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Checks before training that `--batch-size` splits evenly over the mesh's devices.

    Raises:
        UsageError: it does not (the message names the flag and the device count).
    """
    n = mesh.shape[DATA_AXIS]
    if batch_size % n:
        raise UsageError(
            f"--batch-size must be divisible by the number of devices ({n}), got {batch_size}"
        )


def shard_batch(
    batch: Mapping[str, np.ndarray], mesh: Mesh, *, require_divisible: bool = True
) -> dict[str, jax.Array]:
    """Splits every array of a global host batch along axis 0 over the mesh's `data` axis.

    Every process holds the same global batch (it is a function of seed and step) and each
    device takes only its slice, so this works unchanged on several hosts.

    Args:
        batch: `{name: [B, ...] array}`, the same B for every entry.
        mesh: the mesh from `data_mesh`.
        require_divisible: if False, a batch that does not split evenly is replicated instead
            (used for evaluation sets of arbitrary size).

    Returns:
        `{name: global jax.Array}` sharded as `PartitionSpec("data")`.

    Raises:
        ValueError: B is not divisible by the number of devices (when required).
    """
    n = mesh.shape[DATA_AXIS]
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        if value.shape[0] % n:
            if require_divisible:
                raise ValueError(
                    f"batch size must be divisible by the number of devices ({n}) to shard "
                    f"'{name}' over the '{DATA_AXIS}' axis, got batch size {value.shape[0]}"
                )
            spec = P()
        else:
            spec = P(DATA_AXIS)
        sharding = NamedSharding(mesh, spec)
        out[name] = jax.make_array_from_callback(value.shape, sharding, lambda idx, v=value: v[idx])
    return out
