"""Side-by-side LSTM benchmark: jaxlstm vs torch `nn.LSTM`, flax `RNN`, `jax.experimental.rnn`.

Run `python -m experiments.benchmark` (`--help` for options). Every implementation runs in
this one process on the same shapes and the same explicit precision, so the ratios against
torch are like for like even when the machine is noisy. For each (config, implementation,
mode) cell it reports:

- compile: seconds of `jit(f).lower(...).compile()` for JAX (tracing + XLA compilation,
  no execution); torch compiles nothing, so its first call is shown there instead;
- ms: the median of the timed calls after warm-up, each synchronised
  (`block_until_ready`, `torch.cuda.synchronize`);
- µs/step: ms divided by the sequential steps T·L;
- × torch: the best torch median (default threads or 1 thread, whichever is faster on this
  config) divided by this one (> 1 means faster than torch).

Modes: `fwd` (the output) and `fwd+bwd` (the gradient of `sum(out)` with respect to every
parameter and the input). The machine's sgemm rate is measured at the start and each
compute-bound config's FLOP-time bound (its matmul FLOPs at that rate) is printed, so the
distance from the hardware's limit is visible next to the distance from torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxlstm
from jaxlstm import LSTMConfig, init_params, lstm


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One benchmark shape.

    Attributes:
        name: the id used by `--configs`.
        batch, steps, input_size, hidden, layers, bidirectional: B, T, I, H, L, D == 2.
        compute_bound: whether its matmuls are large enough that the FLOP-time bound at the
            measured sgemm rate is a meaningful target (small configs are latency-bound).
    """

    name: str
    batch: int
    steps: int
    input_size: int
    hidden: int
    layers: int
    bidirectional: bool
    compute_bound: bool = False

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def sequential_steps(self) -> int:
        """T·L: the steps every implementation here takes one after another (a bidirectional
        layer counts T, as both directions can run side by side)."""
        return self.steps * self.layers

    def flops(self, backward: bool) -> float:
        """Matmul FLOPs: 2·T·B·4H·(I_k + H) per layer and direction, ×3 with the backward
        pass (which does two matmuls of the same size per forward matmul)."""
        total = 0.0
        for k in range(self.layers):
            in_k = self.input_size if k == 0 else self.directions * self.hidden
            total += 2.0 * self.steps * self.batch * 4 * self.hidden * (in_k + self.hidden) * self.directions
        return 3 * total if backward else total


CONFIGS: dict[str, BenchConfig] = {
    c.name: c
    for c in [
        BenchConfig("sine", 1, 49, 1, 10, 1, False),
        BenchConfig("digits", 64, 28, 28, 128, 2, False),
        BenchConfig("medium", 64, 256, 256, 512, 2, False, compute_bound=True),
        BenchConfig("bidir", 32, 128, 128, 256, 2, True),
        BenchConfig("large", 128, 512, 1024, 1024, 1, False, compute_bound=True),
        BenchConfig("deepbench", 128, 25, 1024, 1024, 1, False, compute_bound=True),
    ]
}
# Left out of the default on CPU: ~3.3 TFLOP per fwd+bwd call, over a minute at ~50 GFLOP/s.
CPU_SKIPPED = ("large",)
MODES = ("fwd", "fwd+bwd")
IMPLS = ("jaxlstm", "torch", "torch-1t", "flax", "jax.experimental.rnn")
TORCH_IMPLS = ("torch", "torch-1t")
JAX_PRECISION = {"fp32": "float32", "tf32": "tensorfloat32", "bf16": "bfloat16"}


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


# ----------------------------------------------------------------------------- timing


def _time_calls(
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


def _jax_sync(out: Any) -> Any:
    return jax.block_until_ready(out)


# ----------------------------------------------------------------------------- sgemm rate


def measure_sgemm(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Measures float32 `n×n @ n×n` GFLOP/s through XLA (at fp32 precision) and torch.

    Returns:
        `{"jax": gflops, "torch": gflops (if installed), "best": max}`.
    """
    flops = 2.0 * n**3
    rates: dict[str, float] = {}
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: jnp.matmul(a, b, precision="highest"))
    _, times = _time_calls(lambda: mm(a, a), _jax_sync, warmup=1, repeats=repeats, budget_s=10.0)
    rates["jax"] = flops / statistics.median(times) / 1e9
    torch = _import_torch()
    if torch is not None:
        t = torch.randn(n, n)
        _, times = _time_calls(lambda: t @ t, lambda o: o, warmup=1, repeats=repeats, budget_s=10.0)
        rates["torch"] = flops / statistics.median(times) / 1e9
    rates["best"] = max(rates.values())
    return rates


# ----------------------------------------------------------------------------- implementations


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _jax_dtype(precision: str):
    return jnp.bfloat16 if precision == "bf16" else jnp.float32


def _loss(out: jax.Array) -> jax.Array:
    return jnp.sum(out.astype(jnp.float32))


def _jax_runner(apply: Callable[[Any, jax.Array], jax.Array], params: Any, x: jax.Array, mode: str):
    """Compiles `apply(params, x) -> out` (fwd) or its gradient w.r.t. (params, x) (fwd+bwd).

    Returns:
        `(run, compile_s)`: a no-argument callable running the compiled executable, and the
        seconds `lower(...).compile()` took (tracing + XLA compilation, no execution).
    """
    if mode == "fwd":
        fn = jax.jit(apply)
    else:
        fn = jax.jit(jax.grad(lambda p, x: _loss(apply(p, x)), argnums=(0, 1)))
    t0 = time.perf_counter()
    compiled = fn.lower(params, x).compile()
    compile_s = time.perf_counter() - t0
    return (lambda: compiled(params, x)), compile_s


def build_jaxlstm(
    cfg: BenchConfig,
    precision: str,
    mode: str,
    unroll: int | None = None,
    custom_vjp: bool = True,
    remat: bool = False,
):
    config = LSTMConfig(cfg.input_size, cfg.hidden, num_layers=cfg.layers, bidirectional=cfg.bidirectional)
    dtype = _jax_dtype(precision)
    params = init_params(jax.random.key(0), config, dtype)
    x = jax.random.normal(jax.random.key(1), (cfg.steps, cfg.batch, cfg.input_size), dtype)
    apply = lambda p, x: lstm(p, x, config=config, scan=jaxlstm.ScanOptions(unroll=unroll, custom_vjp=custom_vjp, remat=remat))[0]  # noqa: E731
    return (*_jax_runner(apply, params, x, mode), _jax_sync)


def build_flax(cfg: BenchConfig, precision: str, mode: str):
    from flax import nnx

    dtype = _jax_dtype(precision)
    rngs = nnx.Rngs(0)
    layers = []
    for k in range(cfg.layers):
        in_k = cfg.input_size if k == 0 else cfg.directions * cfg.hidden

        def rnn(reverse: bool, in_k: int = in_k):
            cell = nnx.OptimizedLSTMCell(in_k, cfg.hidden, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
            return nnx.RNN(cell, time_major=True, reverse=reverse, keep_order=True)

        if cfg.bidirectional:
            layers.append(nnx.Bidirectional(rnn(False), rnn(True), time_major=True))
        else:
            layers.append(rnn(False))
    model = nnx.List(layers)
    # Differentiate w.r.t. the parameters only (the module also holds RNG state).
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    # Zero initial carries given explicitly: flax would otherwise draw them from the module's
    # RNG stream, which cannot be mutated inside jit. Flax's carry is (c, h).
    zeros = jnp.zeros((cfg.batch, cfg.hidden), dtype)
    carry = (zeros, zeros)

    def apply(params, x):
        for layer in nnx.merge(graphdef, params, rest):
            x = layer(x, initial_carry=(carry, carry) if cfg.bidirectional else carry)
        return x

    x = jax.random.normal(jax.random.key(1), (cfg.steps, cfg.batch, cfg.input_size), dtype)
    return (*_jax_runner(apply, params, x, mode), _jax_sync)


def build_cudnn(cfg: BenchConfig, precision: str, mode: str):
    """`jax.experimental.rnn.lstm` (cuDNN); batch-first, weights as one flat vector."""
    from jax.experimental import rnn

    if precision == "bf16":
        raise NotImplementedError("jax.experimental.rnn.lstm has no bfloat16 support")
    # Its only precision knob: HIGHEST disables TF32 in cuDNN, HIGH allows it.
    lax_precision = "highest" if precision == "fp32" else "high"
    weights = rnn.init_lstm_weight(jax.random.key(0), cfg.input_size, cfg.hidden, cfg.layers, cfg.bidirectional)
    x = jax.random.normal(jax.random.key(1), (cfg.batch, cfg.steps, cfg.input_size), jnp.float32)
    state_shape = (cfg.directions * cfg.layers, cfg.batch, cfg.hidden)
    h0 = jnp.zeros(state_shape, jnp.float32)
    c0 = jnp.zeros(state_shape, jnp.float32)
    lengths = jnp.full((cfg.batch,), cfg.steps, jnp.int32)  # it accepts int32 only

    def apply(w, x):
        y, _, _ = rnn.lstm(
            x, h0, c0, w, lengths,
            input_size=cfg.input_size, hidden_size=cfg.hidden, num_layers=cfg.layers,
            dropout=0.0, bidirectional=cfg.bidirectional, precision=lax_precision,
        )
        return y

    return (*_jax_runner(apply, weights, x, mode), _jax_sync)


_TORCH_DEFAULT_THREADS: int | None = None


def build_torch(cfg: BenchConfig, precision: str, mode: str, threads: int | None = None):
    """torch `nn.LSTM`; `threads` pins its CPU intra-op threads (None: torch's default).

    On a loaded CPU, torch's OpenMP threads wait for each other at every small op, which can
    make a tiny config 100× slower with 2 threads than with 1, hence the `torch-1t` row.
    """
    global _TORCH_DEFAULT_THREADS
    torch = _import_torch()
    if torch is None:
        raise ModuleNotFoundError("torch is not installed")
    if _TORCH_DEFAULT_THREADS is None:
        _TORCH_DEFAULT_THREADS = torch.get_num_threads()
    num_threads = threads or _TORCH_DEFAULT_THREADS
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    # Matched precision: fp32 forbids TF32 everywhere (matmul and cuDNN), tf32 allows it.
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    torch.manual_seed(0)
    model = torch.nn.LSTM(
        cfg.input_size, cfg.hidden, num_layers=cfg.layers, bidirectional=cfg.bidirectional
    ).to(device=device, dtype=dtype)
    x = torch.randn(cfg.steps, cfg.batch, cfg.input_size, device=device, dtype=dtype)

    def sync(out):
        if cuda:
            torch.cuda.synchronize()
        return out

    if mode == "fwd":
        def run():
            torch.set_num_threads(num_threads)
            with torch.no_grad():
                return model(x)[0]
    else:
        x.requires_grad_(True)
        params = list(model.parameters())

        def run():
            torch.set_num_threads(num_threads)
            out = model(x)[0]
            return torch.autograd.grad(out.float().sum(), [*params, x])

    return run, None, sync


BUILDERS = {
    "jaxlstm": build_jaxlstm,
    "torch": build_torch,
    "torch-1t": functools.partial(build_torch, threads=1),
    "flax": build_flax,
    "jax.experimental.rnn": build_cudnn,
}


# ----------------------------------------------------------------------------- reporting


def _fmt_ms(s: float | None) -> str:
    return "—" if s is None else (f"{s * 1e3:.3g}" if s < 1 else f"{s * 1e3:.0f}")


def _torch_median(cells: Sequence[Cell], cell: Cell) -> float | None:
    """The faster of torch's measured thread settings for the cell's config and mode."""
    medians = [
        c.median_s
        for c in cells
        if c.config == cell.config and c.mode == cell.mode and c.impl in TORCH_IMPLS and c.median_s
    ]
    return min(medians, default=None)


def speedup(cells: Sequence[Cell], cell: Cell) -> float | None:
    """Best torch median / this cell's median from the same run (> 1: faster than torch)."""
    ref = _torch_median(cells, cell)
    if ref is None or cell.median_s is None:
        return None
    return ref / cell.median_s


def markdown_table(cells: Sequence[Cell], sgemm_gflops: float) -> str:
    """The results as a markdown table, one row per cell."""
    lines = [
        "| config | impl | mode | compile s | ms | µs/step | × torch | FLOP bound ms | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for c in cells:
        cfg = CONFIGS[c.config]
        per_step = "—" if c.median_s is None else f"{c.median_s * 1e6 / cfg.sequential_steps:.1f}"
        ratio = speedup(cells, c)
        bound = (
            f"{cfg.flops(c.mode == 'fwd+bwd') / (sgemm_gflops * 1e9) * 1e3:.0f}" if cfg.compute_bound else ""
        )
        compile_s = "—" if c.compile_s is None else f"{c.compile_s:.2f}"
        lines.append(
            f"| {c.config} | {c.impl} | {c.mode} | {compile_s} | {_fmt_ms(c.median_s)} | {per_step} | "
            f"{'—' if ratio is None else f'{ratio:.2f}'} | {bound} | {c.note} |"
        )
    return "\n".join(lines)


def summary(cells: Sequence[Cell]) -> str:
    """One line: jaxlstm's speedup over torch per mode (geometric mean, min) and slowest cell."""
    parts = []
    for mode in MODES:
        ratios = [
            (r, c.config)
            for c in cells
            if c.impl == "jaxlstm" and c.mode == mode and (r := speedup(cells, c)) is not None
        ]
        if ratios:
            gmean = math.exp(sum(math.log(r) for r, _ in ratios) / len(ratios))
            worst = min(ratios)
            parts.append(f"{mode} ×{gmean:.2f} geo-mean (min ×{worst[0]:.2f} on {worst[1]})")
    if not parts:
        return "summary: no jaxlstm/torch pairs measured"
    return "summary: jaxlstm vs torch, " + "; ".join(parts)


def environment(precision: str) -> dict[str, Any]:
    torch = _import_torch()
    dev = jax.devices()[0]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": getattr(dev, "device_kind", str(dev)),
        "backend": jax.default_backend(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlstm": jaxlstm.__version__,
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "precision": precision,
    }


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.benchmark", description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=None,
                   help=f"comma-separated, from {list(CONFIGS)} (default: all on GPU; on CPU all but "
                        f"{list(CPU_SKIPPED)}, whose fwd+bwd takes over a minute per call there)")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated, from {list(IMPLS)}")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated, from fwd, fwd+bwd")
    p.add_argument("--precision", choices=list(JAX_PRECISION), default="fp32",
                   help="fp32: full float32 matmuls in both frameworks; tf32: TF32 matmuls (GPU); "
                        "bf16: bfloat16 parameters/inputs (jaxlstm keeps the cell state in float32)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per cell (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
    p.add_argument("--budget", type=float, default=20.0,
                   help="seconds of timed calls per cell after which it stops repeating")
    p.add_argument("--quick", action="store_true", help="smoke test: --repeats 2 --warmup 0 --budget 2")
    p.add_argument("--unroll", type=int, default=None,
                   help="jaxlstm's scan unroll (default: the backend's, see jaxlstm.ScanOptions.resolve)")
    p.add_argument("--custom-vjp", action=argparse.BooleanOptionalAction, default=True,
                   help="jaxlstm's hand-written backward pass (--no-custom-vjp: autodiff of the scan)")
    p.add_argument("--remat", action="store_true",
                   help="jaxlstm recomputes the gates in the backward pass (less activation memory)")
    p.add_argument("--json", default="runs/benchmark/benchmark.json", help="where to write the results as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.budget = 2, 0, 2.0
    if args.configs is None:
        on_cpu = jax.default_backend() == "cpu"
        args.configs = ",".join(c for c in CONFIGS if not (on_cpu and c in CPU_SKIPPED))
    for field, allowed in (("configs", CONFIGS), ("impls", IMPLS), ("modes", MODES)):
        values = [v for v in getattr(args, field).split(",") if v]
        bad = [v for v in values if v not in allowed]
        if bad:
            p.error(f"--{field}: unknown {bad}, choose from {list(allowed)}")
        setattr(args, field, values)
    return args


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None]) -> tuple[list[Cell], dict[str, Any]]:
    """Measures every requested cell; logs a progress line per cell."""
    on_gpu = jax.default_backend() == "gpu"
    torch = _import_torch()
    cells: list[Cell] = []
    work = [(c, i, m) for c in args.configs for m in args.modes for i in args.impls]
    for n, (cname, impl, mode) in enumerate(work, 1):
        cfg = CONFIGS[cname]
        cell = Cell(cname, impl, mode)
        if impl == "jax.experimental.rnn" and not on_gpu:
            cell.note = "GPU only"
        elif impl == "torch-1t" and on_gpu:
            cell.note = "CPU only"
        elif impl in TORCH_IMPLS and torch is None:
            cell.note = "torch not installed"
        elif args.precision == "tf32" and not on_gpu:
            cell.note = "tf32 needs a GPU"
        else:
            try:
                builder = BUILDERS[impl]
                if impl == "jaxlstm":
                    builder = functools.partial(builder, unroll=args.unroll, custom_vjp=args.custom_vjp, remat=args.remat)
                run, compile_s, sync = builder(cfg, args.precision, mode)
                first, times = _time_calls(
                    run, sync, warmup=args.warmup, repeats=args.repeats, budget_s=args.budget
                )
                # JAX: the AOT compile time; torch compiles nothing, so its first call is shown.
                cell.compile_s = first if compile_s is None else compile_s
                cell.times_s = times
                cell.median_s = statistics.median(times)
                if impl in TORCH_IMPLS:
                    cell.note = "first call (no compilation)"
                if len(times) < args.repeats:
                    cell.note = (cell.note + "; " if cell.note else "") + f"{len(times)} timed calls (budget)"
            except (NotImplementedError, RuntimeError, ModuleNotFoundError) as e:
                cell.note = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
        cells.append(cell)
        took = "" if cell.median_s is None else f"{cell.median_s * 1e3:.2f} ms (median of {len(cell.times_s)})"
        comp = "" if cell.compile_s is None else f", compile {cell.compile_s:.2f} s"
        log(f"[{n}/{len(work)}] {cname:9s} {impl:20s} {mode:7s} {took}{comp} {cell.note}".rstrip())
    return cells, environment(args.precision)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark, prints the table and summary, writes the JSON; returns its content."""
    args = parse_args(argv)
    jax.config.update("jax_default_matmul_precision", JAX_PRECISION[args.precision])
    log = functools.partial(print, file=sys.stderr, flush=True)
    env = environment(args.precision)
    log(f"device: {env['device']} ({env['backend']}), {env['cpu_count']} CPUs; jax {env['jax']}, "
        f"torch {env['torch']} ({env['torch_threads']} threads); precision {args.precision}")
    n = 1024 if args.quick else 2048
    sgemm = measure_sgemm(n, repeats=3 if args.quick else 5)
    rates = ", ".join(f"{k} {v:.0f}" for k, v in sgemm.items() if k != "best")
    print(f"sgemm rate ({n}³ float32): {sgemm['best']:.0f} GFLOP/s (best of: {rates})")
    for cname in args.configs:
        cfg = CONFIGS[cname]
        if cfg.compute_bound:
            fwd, bwd = (cfg.flops(b) / (sgemm["best"] * 1e9) * 1e3 for b in (False, True))
            print(f"FLOP-time bound {cname}: fwd {fwd:.0f} ms, fwd+bwd {bwd:.0f} ms "
                  f"({cfg.flops(False) / 1e9:.1f} / {cfg.flops(True) / 1e9:.1f} GFLOP)")
    cells, env = run_benchmark(args, log)
    print()
    print(markdown_table(cells, sgemm["best"]))
    print()
    print(summary(cells))
    result = {
        "environment": env,
        "sgemm_gflops": sgemm,
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "configs": {c: dataclasses.asdict(CONFIGS[c]) for c in args.configs},
        "cells": [
            {**dataclasses.asdict(c), "speedup_vs_torch": speedup(cells, c),
             "us_per_step": None if c.median_s is None else c.median_s * 1e6 / CONFIGS[c.config].sequential_steps}
            for c in cells
        ],
        "summary": summary(cells),
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        log(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
