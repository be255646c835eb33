"""How a call is timed, and the machine's peak matmul rate that the cells are compared with."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import jaxlstm
from experiments.benchmark.environment import import_torch

__all__ = ["CompiledCall", "Peak", "jax_sync", "measure_peak", "measure_sgemm", "time_calls"]


def time_calls(
    run: Callable[[], Any],
    sync: Callable[[Any], Any],
    *,
    warmup: int,
    repeats: int,
    budget_s: float,
) -> tuple[float, list[float]]:
    """Times `run` (first call separately), then warm-up calls, then up to `repeats` calls.

    Stops early once `budget_s` of timed calls have elapsed (at least one timed call), so a
    huge config costs a bounded time; the median of the few calls taken is still reported.

    Returns:
        `(first_call_s, timed_calls_s)`.
    """
    t0 = time.perf_counter()
    sync(run())
    first = time.perf_counter() - t0
    for _ in range(warmup):
        if first > budget_s:
            break
        sync(run())
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (not times or spent < budget_s):
        t0 = time.perf_counter()
        sync(run())
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return first, times


def jax_sync(out: Any) -> Any:
    """Waits for a JAX result (`jax.block_until_ready`)."""
    return jax.block_until_ready(out)


@dataclasses.dataclass(frozen=True)
class CompiledCall:
    """A JAX cell's run: its compiled executable and arguments; calling it runs one call."""

    executable: Any
    args: tuple

    def __call__(self) -> Any:
        return self.executable(*self.args)


def measure_sgemm(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Measures float32 `n×n @ n×n` GFLOP/s through XLA (at fp32 precision) and torch.

    Returns:
        `{"jax": gflops, "torch": gflops (if installed), "best": max}`.
    """
    flops = 2.0 * n**3
    rates: dict[str, float] = {}
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: jnp.matmul(a, b, precision="highest"))
    _, times = time_calls(lambda: mm(a, a), jax_sync, warmup=1, repeats=repeats, budget_s=10.0)
    rates["jax"] = flops / statistics.median(times) / 1e9
    torch = import_torch()
    if torch is not None:
        t = torch.randn(n, n)
        _, times = time_calls(lambda: t @ t, lambda o: o, warmup=1, repeats=repeats, budget_s=10.0)
        rates["torch"] = flops / statistics.median(times) / 1e9
    rates["best"] = max(rates.values())
    return rates


@dataclasses.dataclass(frozen=True)
class Peak:
    """The FLOP rate the cells' achieved GFLOP/s are a share of.

    Attributes:
        label: what was measured, as the output names it (e.g. `sgemm peak`).
        gflops: the rate, GFLOP/s.
        detail: how it was measured, one phrase.
        rates: the individual measurements behind it, `{name: GFLOP/s}`.
    """

    label: str
    gflops: float
    detail: str
    rates: dict[str, float]

    def text(self) -> str:
        """`sgemm peak: 197 GFLOP/s (2048³ float32 matmul, best of jax 190, torch 197)`."""
        return f"{self.label}: {self.gflops:.0f} GFLOP/s ({self.detail})"


def measure_peak(quick: bool = False) -> Peak:
    """The machine's peak FLOP rate as this benchmark measures it.

    With jaxlstm's native kernel built: its FMA probe (`jaxlstm.native.fma_peak_gflops`:
    independent chains of vector multiply-adds on every core at once, the most the cores can
    do), labelled `FMA peak`. Without it: the best float32 rate of a large square matmul
    through XLA and torch (`measure_sgemm`), labelled `sgemm peak`. The sgemm rates are
    measured either way and kept in `rates`.

    Args:
        quick: a smaller matmul and fewer calls (`--quick`): a rougher, lower figure.

    Returns:
        The `Peak`.
    """
    n = 512 if quick else 2048
    sgemm = measure_sgemm(n, repeats=3 if quick else 5)
    rates = {k: v for k, v in sgemm.items() if k != "best"}
    listed = ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
    info = jaxlstm.native_backend()
    if not info.available:
        return Peak("sgemm peak", sgemm["best"], f"{n}³ float32 matmul, best of {listed}", rates)
    threads = jaxlstm.native.cpu_count()
    fma = jaxlstm.native.fma_peak_gflops(threads, seconds=0.1 if quick else 0.5)
    detail = (
        f"{info.instruction_set} multiply-add chains on {threads} threads; "
        f"{n}³ float32 matmul: {listed}"
    )
    return Peak("FMA peak", fma, detail, {"fma": fma, **rates})
