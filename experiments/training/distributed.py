"""Start-up of a run: `jax.distributed.initialize` over several processes (hosts), the mesh.

An experiment's `main` calls `start_devices(args)` right after parsing its flags and before
anything touches a device: `start_distributed` joins the other processes, so that every
process sees every host's devices, and the mesh (`experiments.training.mesh`) spans them all."""

from __future__ import annotations

import argparse

import jax
from jax.sharding import Mesh

from experiments.training.mesh import check_batch_size, data_mesh

__all__ = ["start_devices", "start_distributed"]


def start_distributed(args: argparse.Namespace) -> bool:
    """Joins the multi-process run that `--distributed` asks for; does nothing without it.

    On SLURM, Open MPI, Kubernetes or Cloud TPU, jax finds the coordinator itself; elsewhere
    `--coordinator-address`, `--num-processes` and `--process-id` say where it is.

    Args:
        args: the parsed shared flags (`distributed`, `coordinator_address`,
            `num_processes`, `process_id`).

    Returns:
        Whether `jax.distributed.initialize` was called.
    """
    if not args.distributed:
        return False
    # CPU processes need a collectives backend to talk to each other (GPU and TPU ignore it).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )
    return True


def start_devices(args: argparse.Namespace) -> Mesh:
    """An experiment's device start-up: `start_distributed`, then the mesh over every device.

    Args:
        args: the parsed shared flags (as `start_distributed`, and `batch_size`).

    Returns:
        The `data_mesh()` the run shards its batches over.

    Raises:
        UsageError: `--batch-size` does not split over the devices.
    """
    start_distributed(args)
    mesh = data_mesh()
    check_batch_size(args.batch_size, mesh)
    return mesh
