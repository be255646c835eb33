"""The machine and software a run measured on, for the record: versions, device, load,
torch's threads and which recurrence backend jaxlstm's cells used."""

from __future__ import annotations

import datetime
import functools
import os
import platform
from typing import Any

import jax

import jaxlstm

__all__ = [
    "QUIET_LOAD",
    "backend_text",
    "device_text",
    "environment",
    "environment_line",
    "import_torch",
    "load_average",
    "load_warning",
    "torch_default_threads",
]

# A 1-minute load average above this before starting means other work shares the CPU.
QUIET_LOAD = 0.5


def import_torch() -> Any:
    """The `torch` module, or None where it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@functools.cache
def torch_default_threads() -> int | None:
    """torch's intra-op thread count before this benchmark changes it (None: no torch)."""
    torch = import_torch()
    return None if torch is None else torch.get_num_threads()


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def environment(
    precision: str, baseline: Any = None, scan: jaxlstm.ScanOptions | None = None
) -> dict[str, Any]:
    """The machine, the versions, torch's default thread count and the load, for the record.

    `jaxlstm_backend` is the recurrence backend the `jaxlstm` cells run on (`scan` resolved
    by the library's dispatch); `jaxlstm_backend_requested` what `--backend` asked (None:
    the dispatch chose).
    """
    torch = import_torch()
    dev = jax.devices()[0]
    scan = jaxlstm.ScanOptions() if scan is None else scan
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": getattr(dev, "device_kind", str(dev)),
        "backend": jax.default_backend(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlstm": jaxlstm.__version__,
        "jaxlstm_backend": scan.resolve().backend,
        "jaxlstm_backend_requested": scan.backend,
        "baseline": None if baseline is None else {"rev": baseline.rev, "commit": baseline.commit},
        "torch": None if torch is None else torch.__version__,
        "torch_threads": torch_default_threads(),
        "precision": precision,
    }


def device_text(env: dict[str, Any]) -> str:
    """`2 CPU cores (x86_64)` or `NVIDIA H100 (gpu)`."""
    if env["backend"] == "cpu":
        return f"{env['cpu_count']} CPU cores ({env['cpu']})"
    return f"{env['device']} ({env['backend']})"


def backend_text(env: dict[str, Any]) -> str:
    """`xla (the library's dispatch)` or `native (--backend native)`: what ran `jaxlstm`."""
    asked = env.get("jaxlstm_backend_requested")
    how = "the library's dispatch" if asked is None else f"--backend {asked}"
    return f"{env.get('jaxlstm_backend', '?')} ({how})"


def environment_line(env: dict[str, Any]) -> str:
    """The environment in one line (printed first and written above the table)."""
    load = env["load_average"]
    load_text = "unknown" if load is None else "/".join(f"{v:.2f}" for v in load)
    base = env["baseline"]
    return (
        f"device: {device_text(env)}, load average "
        f"{load_text} (1/5/15 min); jax {env['jax']}, torch {env['torch']} "
        f"({env['torch_threads']} threads by default); precision {env['precision']}; "
        f"jaxlstm backend {backend_text(env)}"
        + (f"; baseline {base['rev']} = {base['commit'][:12]}" if base else "")
    )


def load_warning(env: dict[str, Any]) -> str | None:
    """A warning when the machine was not quiet at the start (None when it was)."""
    load = env["load_average"]
    if load is None or load[0] <= QUIET_LOAD:
        return None
    return (
        f"warning: the load average is {load[0]:.2f} (> {QUIET_LOAD}): other work is sharing "
        f"the {env['cpu_count']} CPUs, so times are slower and noisier than on a quiet machine "
        "(the ratios within this run stay comparable)"
    )
