"""Start-up of a run over several processes (hosts): `jax.distributed.initialize`.

An experiment's `main` calls `start_distributed(args)` right after parsing its flags and before
anything touches a device: from then on every process sees every host's devices, and the mesh
(`experiments.training.mesh`) spans them all.
"""

from __future__ import annotations

import argparse

import jax

__all__ = ["start_distributed"]


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
