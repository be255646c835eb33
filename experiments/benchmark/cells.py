"""A measured cell and what is derived from it: the ratios against torch, a `--baseline`
revision and `jaxlstm-xla`, and the achieved FLOP rate against the measured peak."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from experiments.benchmark.configs import CONFIGS, TORCH_IMPLS, XLA_IMPL

__all__ = [
    "Cell",
    "achieved_gflops",
    "baseline_speedup",
    "cell_record",
    "gmean",
    "peak_share",
    "ratio",
    "speedup",
    "torch_label",
    "torch_reference",
    "xla_speedup",
]


@dataclasses.dataclass
class Cell:
    """One measured (config, implementation, mode) cell; times in seconds."""

    config: str
    impl: str
    mode: str
    compile_s: float | None = None
    median_s: float | None = None
    times_s: list[float] = dataclasses.field(default_factory=list)
    note: str = ""
    matmul_s: float | None = None


def torch_reference(cells: Sequence[Cell], cell: Cell) -> Cell | None:
    """The faster of torch's measured thread settings for the cell's config and mode."""
    measured = [
        c
        for c in cells
        if c.config == cell.config and c.mode == cell.mode and c.impl in TORCH_IMPLS and c.median_s
    ]
    return min(measured, key=lambda c: c.median_s or math.inf, default=None)


def ratio(reference: Cell | None, cell: Cell) -> float | None:
    """`reference`'s median ÷ `cell`'s (None where either was not measured)."""
    if reference is None or not reference.median_s or not cell.median_s:
        return None
    return reference.median_s / cell.median_s


def speedup(cells: Sequence[Cell], cell: Cell) -> float | None:
    """The reference torch median / this cell's median, same run (> 1: faster than torch)."""
    return ratio(torch_reference(cells, cell), cell)


def _jaxlstm_speedup(cells: Sequence[Cell], cell: Cell, other: str | None) -> float | None:
    """For a `jaxlstm` cell: the `other` impl's median / this one's, same config and mode."""
    if other is None or cell.impl != "jaxlstm":
        return None
    ref = [c for c in cells if (c.config, c.mode, c.impl) == (cell.config, cell.mode, other)]
    return ratio(ref[0] if ref else None, cell)


def baseline_speedup(cells: Sequence[Cell], cell: Cell, baseline: str | None) -> float | None:
    """For a `jaxlstm` cell: the `baseline` impl's median / this one's (> 1: faster now)."""
    return _jaxlstm_speedup(cells, cell, baseline)


def xla_speedup(cells: Sequence[Cell], cell: Cell) -> float | None:
    """For a `jaxlstm` cell: `jaxlstm-xla`'s median / this one's (> 1: the backend that ran
    `jaxlstm` is faster than XLA's scan)."""
    return _jaxlstm_speedup(cells, cell, XLA_IMPL)


def achieved_gflops(cell: Cell) -> float | None:
    """The cell's matmul FLOPs (`BenchConfig.flops`, the recurrence and projection) ÷ its
    median time, in GFLOP/s (None where it has no time)."""
    if not cell.median_s:
        return None
    return CONFIGS[cell.config].flops(cell.mode == "fwd+bwd") / cell.median_s / 1e9


def peak_share(cell: Cell, peak_gflops: float) -> float | None:
    """`achieved_gflops(cell)` as a fraction of the measured peak (None without a time)."""
    rate = achieved_gflops(cell)
    return None if rate is None or not peak_gflops else rate / peak_gflops


def gmean(values: Sequence[float]) -> float:
    """The geometric mean of positive `values`."""
    return math.exp(sum(math.log(v) for v in values) / len(values))


def torch_label(impl: str, threads: int | None) -> str:
    """`2 threads (default)` / `1 thread`: the thread count of a torch impl."""
    if impl == "torch-1t":
        return "1 thread"
    return f"{threads} threads (default)" if threads != 1 else "1 thread (default)"


def cell_record(
    cells: Sequence[Cell], c: Cell, baseline: str | None, peak_gflops: float
) -> dict[str, Any]:
    """One cell of benchmark.json: its times, the ratios, torch's reference impl and the
    achieved FLOP rate with its share of the peak."""
    ref = torch_reference(cells, c)
    steps = CONFIGS[c.config].sequential_steps
    return {
        **dataclasses.asdict(c),
        "speedup_vs_torch": ratio(ref, c),
        "torch_reference": None if ref is None else ref.impl,
        "speedup_vs_baseline": baseline_speedup(cells, c, baseline),
        "speedup_vs_xla": xla_speedup(cells, c),
        "us_per_step": None if c.median_s is None else c.median_s * 1e6 / steps,
        "gflops": achieved_gflops(c),
        "peak_share": peak_share(c, peak_gflops),
    }
