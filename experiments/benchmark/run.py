"""Measuring: every requested (config, implementation, mode) cell in turn, skipping what
cannot run here, with a progress line per cell."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax

from experiments.benchmark.cells import Cell, torch_label
from experiments.benchmark.configs import CONFIGS, TORCH_IMPLS, BenchConfig
from experiments.benchmark.environment import import_torch, torch_default_threads
from experiments.benchmark.implementations import make_builders, unsupported
from experiments.benchmark.profile import matmul_seconds
from experiments.benchmark.timing import CompiledCall, time_calls

__all__ = ["measure_cell", "run_benchmark", "skip_reason", "work_list"]


def skip_reason(impl: str, precision: str, on_gpu: bool, cfg: BenchConfig | None = None) -> str:
    """Why a cell cannot run here ("" if it can)."""
    if impl == "jax.experimental.rnn" and not on_gpu:
        return "GPU only"
    if impl == "torch-1t" and on_gpu:
        return "CPU only"
    if impl in TORCH_IMPLS and import_torch() is None:
        return "torch not installed"
    if precision == "tf32" and not on_gpu:
        return "tf32 needs a GPU"
    return "" if cfg is None else unsupported(impl, cfg)


# Before each cell's calls: long enough for thread pools that the previous cell's library
# left spinning (torch's OpenMP threads, XLA's pool) to go to sleep, so they take no core
# from this cell's first calls. Measured: without it the tiny sine cell right after torch's
# sgemm ran 2x slower than alone.
SETTLE_S = 0.25


def measure_cell(
    cell: Cell, builder: Callable, args: argparse.Namespace, threads: int | None
) -> None:
    """Builds and times one cell, filling in its times and notes."""
    try:
        run, compile_s, sync = builder(CONFIGS[cell.config], args.precision, cell.mode)
        time.sleep(SETTLE_S)
        first, times = time_calls(
            run, sync, warmup=args.warmup, repeats=args.repeats, budget_s=args.budget
        )
    except (NotImplementedError, RuntimeError, ModuleNotFoundError) as e:
        cell.note = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
        return
    # JAX: the AOT compile time; torch compiles nothing, so its first call is shown.
    cell.compile_s = first if compile_s is None else compile_s
    cell.times_s = times
    cell.median_s = statistics.median(times)
    if args.profile and isinstance(run, CompiledCall) and jax.default_backend() == "cpu":
        cell.matmul_s = matmul_seconds(run, sync)
    notes = []
    if cell.impl in TORCH_IMPLS:
        notes.append(f"{torch_label(cell.impl, threads)}; compile s = first call")
    if len(times) < args.repeats:
        notes.append(f"{len(times)} timed calls (budget)")
    cell.note = "; ".join(notes)


def work_list(args: argparse.Namespace, baseline: str | None) -> list[tuple[str, str, str]]:
    """`(config, impl, mode)` in running order: per config and mode, every impl in turn, the
    baseline right after the current jaxlstm."""
    impls = list(args.impls)
    if baseline is not None:
        impls.insert(impls.index("jaxlstm") + 1 if "jaxlstm" in impls else 0, baseline)
    return [(c, i, m) for c in args.configs for m in args.modes for i in impls]


def run_benchmark(
    args: argparse.Namespace, log: Callable[[str], None], baseline: Any = None
) -> list[Cell]:
    """Measures every requested cell; logs a progress line per cell."""
    on_gpu = jax.default_backend() == "gpu"
    builders = make_builders(args.scan, baseline)
    threads = torch_default_threads()
    cells: list[Cell] = []
    work = work_list(args, None if baseline is None else baseline.name)
    for n, (cname, impl, mode) in enumerate(work, 1):
        note = skip_reason(impl, args.precision, on_gpu, CONFIGS[cname])
        cell = Cell(cname, impl, mode, note=note)
        if not cell.note:
            measure_cell(cell, builders[impl], args, threads)
        cells.append(cell)
        took = ""
        if cell.median_s is not None:
            took = f"{cell.median_s * 1e3:.2f} ms (median of {len(cell.times_s)})"
        comp = "" if cell.compile_s is None else f", compile {cell.compile_s:.2f} s"
        log(f"[{n}/{len(work)}] {cname:9s} {impl:20s} {mode:7s} {took}{comp} {cell.note}".rstrip())
    return cells
