"""Side-by-side LSTM benchmark: jaxlstm vs torch `nn.LSTM`, flax `RNN`, `jax.experimental.rnn`.

Run `python -m experiments.benchmark` (`--help` for options). Every implementation runs in
this one process on the same shapes and the same explicit precision, one cell right after the
other, so the ratios are like for like even when the machine is noisy. For each (config,
implementation, mode) cell it reports:

- compile: seconds of `jit(f).lower(...).compile()` for JAX (tracing + XLA compilation,
  no execution); torch compiles nothing, so its first call is shown there instead;
- ms: the median of the timed calls after warm-up, each synchronised
  (`block_until_ready`, `torch.cuda.synchronize`);
- µs/step: ms divided by the sequential steps T·L;
- × torch: torch's time divided by this one (> 1 means faster than torch). On a CPU torch is
  measured at its default thread count (`torch`) and at one thread (`torch-1t`), and the
  faster of the two for that config and mode is the reference; the `torch ref` column names
  which. On a loaded CPU, torch's threads wait for each other at every small op, which can make
  a tiny config many times slower with its default threads than with one.
- × REV (with `--baseline REV`): the time of jaxlstm as it was at git revision REV divided by
  the current one's (> 1 means the working tree is faster than REV).
- matmul ms (with `--profile`, on a CPU): for each JAX cell, the time per call during which at
  least one of its matmuls runs, from a `jax.profiler` trace of 5 more calls, and its share of
  the median. The rest is elementwise work, copies and the loop's overhead; where torch's
  time is below this alone, only faster matmuls from XLA can close the gap. "—" where XLA:CPU
  runs a product asynchronously (jaxlstm's backward pass after the loop): the trace shows
  only its start.

Modes: `fwd` (the output) and `fwd+bwd` (the gradient of `sum(out)` with respect to every
parameter and the input). The machine's sgemm rate is measured at the start and each
compute-bound config's FLOP-time bound (its matmul FLOPs at that rate) is printed, so the
distance from the hardware's limit is visible next to the distance from torch. The load average
is printed too, with a warning when other work is running.

Writes `benchmark.md` (the table), `benchmark.json` (every timing) and `benchmark.png` (the
times per config and mode, log scale, with the ratios) into `--out-dir`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import glob
import gzip
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

import jaxlstm
from experiments import training
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

    @property
    def shape(self) -> str:
        """`B 64, T 28, I 28, H 128, L 2`, with `, bidir` when D == 2."""
        text = (
            f"B {self.batch}, T {self.steps}, I {self.input_size}, H {self.hidden}, L {self.layers}"
        )
        return text + (", bidir" if self.bidirectional else "")

    def flops(self, backward: bool) -> float:
        """Matmul FLOPs: 2·T·B·4H·(I_k + H) per layer and direction, ×3 with the backward
        pass (which does two matmuls of the same size per forward matmul)."""
        total = 0.0
        for k in range(self.layers):
            in_k = self.input_size if k == 0 else self.directions * self.hidden
            per_direction = 2.0 * self.steps * self.batch * 4 * self.hidden * (in_k + self.hidden)
            total += per_direction * self.directions
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
# --quick: the smallest configs, a few calls each: a smoke run of every code path.
QUICK_CONFIGS = ("sine", "digits")
QUICK = {"repeats": 3, "warmup": 1, "budget": 1.0}
MODES = ("fwd", "fwd+bwd")
IMPLS = ("jaxlstm", "torch", "torch-1t", "flax", "jax.experimental.rnn")
TORCH_IMPLS = ("torch", "torch-1t")
JAX_PRECISION = {"fp32": "float32", "tf32": "tensorfloat32", "bf16": "bfloat16"}
# A 1-minute load average above this before starting means other work shares the CPU.
QUIET_LOAD = 0.5


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


# ----------------------------------------------------------------------------- matmul time


def matmul_instructions(hlo: str) -> dict[str, str]:
    """The instructions of an optimized HLO module's text that multiply matrices, name ->
    opcode: `dot`s, and `fusion`s whose fused computation holds one (XLA:CPU's library
    calls)."""
    with_dot, computation = set(), None
    calls: dict[str, str] = {}
    found = {}
    for line in hlo.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            computation = line.removeprefix("ENTRY ").lstrip("%").split(" ")[0]
            continue
        match = re.match(r"\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*\S+\s+(\w[\w\-]*)\(", line)
        if match is None:
            continue
        name, opcode = match.groups()
        if opcode == "dot":
            found[name] = "dot"
            with_dot.add(computation)
        elif opcode == "fusion" and (called := re.search(r"calls=%([\w.\-]+)", line)):
            calls[name] = called.group(1)
    return found | {name: "fusion" for name, called in calls.items() if called in with_dot}


def union_length(spans: Sequence[tuple[float, float]]) -> float:
    """The length of the union of `(start, end)` intervals."""
    covered, end = 0.0, -math.inf
    for start, stop in sorted(spans):
        if stop > end:
            covered += stop - max(start, end)
            end = stop
    return covered


def matmul_seconds(run: CompiledCall, sync: Callable[[Any], Any], calls: int = 5) -> float | None:
    """Seconds per call during which at least one matmul of `run` is executing, from a
    `jax.profiler` trace of `calls` calls (XLA:CPU names its thunks after the instructions).

    None when the trace has no matmul, or has a plain `dot` thunk: XLA:CPU may run those
    asynchronously (the backward pass's products), and the trace shows only their start.
    Matmuls fused into library calls (`fusion`s) run while their span lasts.
    """
    matmuls = matmul_instructions(run.executable.as_text())
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(calls):
                sync(run())
        paths = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
        if not paths:
            return None
        with gzip.open(paths[0]) as f:
            events = json.load(f)["traceEvents"]
    spans = [e for e in events if e.get("ph") == "X" and e.get("name") in matmuls]
    if not spans or any(matmuls[e["name"]] == "dot" for e in spans):
        return None
    return union_length([(e["ts"], e["ts"] + e["dur"]) for e in spans]) / calls / 1e6


# ----------------------------------------------------------------------------- implementations


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


@functools.cache
def torch_default_threads() -> int | None:
    """torch's intra-op thread count before this benchmark changes it (None: no torch)."""
    torch = _import_torch()
    return None if torch is None else torch.get_num_threads()


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
    return CompiledCall(compiled, (params, x)), compile_s


@dataclasses.dataclass(frozen=True)
class CompiledCall:
    """A JAX cell's run: its compiled executable and arguments; calling it runs one call."""

    executable: Any
    args: tuple

    def __call__(self) -> Any:
        return self.executable(*self.args)


def build_jaxlstm(
    cfg: BenchConfig, precision: str, mode: str, scan: jaxlstm.ScanOptions | None = None
):
    """The working tree's `jaxlstm.lstm`, run with `scan` (None: the backend's defaults)."""
    config = LSTMConfig(
        cfg.input_size, cfg.hidden, num_layers=cfg.layers, bidirectional=cfg.bidirectional
    )
    dtype = _jax_dtype(precision)
    params = init_params(jax.random.key(0), config, dtype)
    x = jax.random.normal(jax.random.key(1), (cfg.steps, cfg.batch, cfg.input_size), dtype)

    def apply(p, x):
        return lstm(p, x, config=config, scan=scan)[0]

    return (*_jax_runner(apply, params, x, mode), _jax_sync)


def build_baseline(cfg: BenchConfig, precision: str, mode: str, module: Any):
    """`module.lstm` of a `--baseline` revision, through the API every revision has
    (`LSTMConfig`, `init_params(key, config, dtype)`, `lstm(params, x, config=...)`), with that
    revision's default options."""
    config = module.LSTMConfig(
        cfg.input_size, cfg.hidden, num_layers=cfg.layers, bidirectional=cfg.bidirectional
    )
    dtype = _jax_dtype(precision)
    params = module.init_params(jax.random.key(0), config, dtype)
    x = jax.random.normal(jax.random.key(1), (cfg.steps, cfg.batch, cfg.input_size), dtype)

    def apply(p, x):
        return module.lstm(p, x, config=config)[0]

    return (*_jax_runner(apply, params, x, mode), _jax_sync)


def build_flax(cfg: BenchConfig, precision: str, mode: str):
    from flax import nnx

    dtype = _jax_dtype(precision)
    rngs = nnx.Rngs(0)
    layers = []
    for k in range(cfg.layers):
        in_k = cfg.input_size if k == 0 else cfg.directions * cfg.hidden

        def rnn(reverse: bool, in_k: int = in_k):
            cell = nnx.OptimizedLSTMCell(
                in_k, cfg.hidden, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
            )
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
    weights = rnn.init_lstm_weight(
        jax.random.key(0), cfg.input_size, cfg.hidden, cfg.layers, cfg.bidirectional
    )
    x = jax.random.normal(jax.random.key(1), (cfg.batch, cfg.steps, cfg.input_size), jnp.float32)
    state_shape = (cfg.directions * cfg.layers, cfg.batch, cfg.hidden)
    h0 = jnp.zeros(state_shape, jnp.float32)
    c0 = jnp.zeros(state_shape, jnp.float32)
    lengths = jnp.full((cfg.batch,), cfg.steps, jnp.int32)  # it accepts int32 only

    def apply(w, x):
        y, _, _ = rnn.lstm(
            x,
            h0,
            c0,
            w,
            lengths,
            input_size=cfg.input_size,
            hidden_size=cfg.hidden,
            num_layers=cfg.layers,
            dropout=0.0,
            bidirectional=cfg.bidirectional,
            precision=lax_precision,
        )
        return y

    return (*_jax_runner(apply, weights, x, mode), _jax_sync)


def build_torch(cfg: BenchConfig, precision: str, mode: str, threads: int | None = None):
    """torch `nn.LSTM`; `threads` pins its CPU intra-op threads (None: torch's default)."""
    torch = _import_torch()
    if torch is None:
        raise ModuleNotFoundError("torch is not installed")
    num_threads = threads or torch_default_threads()
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


def make_builders(scan: jaxlstm.ScanOptions, baseline: Any = None) -> dict[str, Callable]:
    """`{impl: builder(cfg, precision, mode) -> (run, compile_s, sync)}` for this run."""
    builders = {
        "jaxlstm": functools.partial(build_jaxlstm, scan=scan),
        "torch": build_torch,
        "torch-1t": functools.partial(build_torch, threads=1),
        "flax": build_flax,
        "jax.experimental.rnn": build_cudnn,
    }
    if baseline is not None:
        builders[baseline.name] = functools.partial(build_baseline, module=baseline.module)
    return builders


# ----------------------------------------------------------------------------- ratios


def torch_reference(cells: Sequence[Cell], cell: Cell) -> Cell | None:
    """The faster of torch's measured thread settings for the cell's config and mode."""
    measured = [
        c
        for c in cells
        if c.config == cell.config and c.mode == cell.mode and c.impl in TORCH_IMPLS and c.median_s
    ]
    return min(measured, key=lambda c: c.median_s, default=None)


def _ratio(reference: Cell | None, cell: Cell) -> float | None:
    if reference is None or not reference.median_s or not cell.median_s:
        return None
    return reference.median_s / cell.median_s


def speedup(cells: Sequence[Cell], cell: Cell) -> float | None:
    """The reference torch median / this cell's median, same run (> 1: faster than torch)."""
    return _ratio(torch_reference(cells, cell), cell)


def baseline_speedup(cells: Sequence[Cell], cell: Cell, baseline: str | None) -> float | None:
    """For a `jaxlstm` cell: the `baseline` impl's median / this one's (> 1: faster now)."""
    if baseline is None or cell.impl != "jaxlstm":
        return None
    ref = [c for c in cells if (c.config, c.mode, c.impl) == (cell.config, cell.mode, baseline)]
    return _ratio(ref[0] if ref else None, cell)


def _gmean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def torch_label(impl: str, threads: int | None) -> str:
    """`2 threads (default)` / `1 thread`: the thread count of a torch impl."""
    if impl == "torch-1t":
        return "1 thread"
    return f"{threads} threads (default)" if threads != 1 else "1 thread (default)"


# ----------------------------------------------------------------------------- reporting


def _fmt_ms(s: float | None) -> str:
    return "—" if s is None else (f"{s * 1e3:.3g}" if s < 1 else f"{s * 1e3:.0f}")


def _fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}"


def _fmt_matmul(c: Cell) -> str:
    """`292 (95%)`: the cell's matmul time and its share of the median call."""
    if c.matmul_s is None or not c.median_s:
        return "—"
    return f"{_fmt_ms(c.matmul_s)} ({c.matmul_s / c.median_s:.0%})"


def table_caption(threads: int | None, baseline: str | None, profiled: bool = False) -> str:
    """What the table's ratio columns mean, with torch's thread counts named."""
    text = (
        "ms: median per call. × torch: torch's median ÷ this row's (> 1: faster than torch), "
        f"where torch's is the faster of torch at {torch_label('torch', threads)} and "
        "torch-1t (1 thread) on the same config and mode, as the `torch ref` column says."
    )
    if baseline is not None:
        text += f" × {baseline}: {baseline}'s median ÷ this jaxlstm row's (> 1: faster now)."
    if profiled:
        text += (
            " matmul ms: per call, the time during which at least one matmul runs (from a "
            "profiler trace of 5 calls), and its share of the median; — where a product runs "
            "asynchronously (the trace shows only its start)."
        )
    return text


def markdown_table(
    cells: Sequence[Cell],
    sgemm_gflops: float,
    threads: int | None = None,
    baseline: str | None = None,
    profiled: bool = False,
) -> str:
    """The results as a markdown table, one row per cell (with `profiled`, a matmul column)."""
    extra = f" × {baseline} |" if baseline else ""
    extra += " matmul ms |" if profiled else ""
    lines = [
        f"| config | impl | mode | compile s | ms | µs/step | × torch | torch ref |{extra} "
        "FLOP bound ms | note |",
        "|---|---|---|---:|---:|---:|---:|---|"
        + ("---:|" if baseline else "")
        + ("---:|" if profiled else "")
        + "---:|---|",
    ]
    for c in cells:
        cfg = CONFIGS[c.config]
        per_step = "—" if c.median_s is None else f"{c.median_s * 1e6 / cfg.sequential_steps:.1f}"
        ref = torch_reference(cells, c)
        ref_name = "" if ref is None or c.median_s is None else torch_label(ref.impl, threads)
        bound = ""
        if cfg.compute_bound:
            bound = f"{cfg.flops(c.mode == 'fwd+bwd') / (sgemm_gflops * 1e9) * 1e3:.0f}"
        compile_s = "—" if c.compile_s is None else f"{c.compile_s:.2f}"
        base = f" {_fmt_ratio(baseline_speedup(cells, c, baseline))} |" if baseline else ""
        if profiled:
            base += f" {_fmt_matmul(c)} |"
        lines.append(
            f"| {c.config} | {c.impl} | {c.mode} | {compile_s} | {_fmt_ms(c.median_s)} | "
            f"{per_step} | {_fmt_ratio(_ratio(ref, c))} | {ref_name} |{base} {bound} | {c.note} |"
        )
    return "\n".join(lines)


def summary(cells: Sequence[Cell], baseline: str | None = None) -> str:
    """One line: jaxlstm's speedup over torch (and over the baseline) per mode."""
    parts = []
    for mode in MODES:
        ratios = [
            (r, c.config)
            for c in cells
            if c.impl == "jaxlstm" and c.mode == mode and (r := speedup(cells, c)) is not None
        ]
        if ratios:
            worst = min(ratios)
            parts.append(
                f"{mode} ×{_gmean([r for r, _ in ratios]):.2f} geo-mean "
                f"(min ×{worst[0]:.2f} on {worst[1]})"
            )
    text = "jaxlstm vs torch, " + "; ".join(parts) if parts else "no jaxlstm/torch pairs measured"
    if baseline is not None:
        base = []
        for mode in MODES:
            ratios = [
                r
                for c in cells
                if c.mode == mode and (r := baseline_speedup(cells, c, baseline)) is not None
            ]
            if ratios:
                base.append(f"{mode} ×{_gmean(ratios):.2f}")
        text += f"; jaxlstm vs {baseline}, " + ("; ".join(base) if base else "none measured")
    return "summary: " + text


def figure(cells: Sequence[Cell], env: dict[str, Any], baseline: str | None = None) -> Any:
    """Median times per config (groups) and implementation (bars), one panel per mode, on a
    log axis, with torch ÷ jaxlstm (and baseline ÷ jaxlstm) written above each group."""
    plt = training.pyplot()
    modes = [m for m in MODES if any(c.mode == m for c in cells)]
    configs = list(dict.fromkeys(c.config for c in cells))
    impls = [
        i
        for i in dict.fromkeys(c.impl for c in cells)
        if any(c.impl == i and c.median_s for c in cells)
    ]
    size = (max(7, 3.2 * len(configs) * len(modes)), 5.5)
    fig, axes = plt.subplots(1, len(modes), figsize=size, squeeze=False, layout="constrained")
    width = 0.8 / max(1, len(impls))
    threads = env.get("torch_threads")
    for ax, mode in zip(axes[0], modes, strict=True):
        for j, impl in enumerate(impls):
            xs, ys = [], []
            for i, config in enumerate(configs):
                found = [c for c in cells if (c.config, c.impl, c.mode) == (config, impl, mode)]
                if found and found[0].median_s:
                    xs.append(i + (j - (len(impls) - 1) / 2) * width)
                    ys.append(found[0].median_s * 1e3)
            label = impl if impl not in TORCH_IMPLS else f"{impl}, {torch_label(impl, threads)}"
            ax.bar(xs, ys, width, label=label, color=f"C{j}")
        for i, config in enumerate(configs):
            ax.annotate(
                _ratio_text(cells, config, mode, baseline),
                (i, 1.0),
                xycoords=("data", "axes fraction"),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_yscale("log")
        ax.set_xticks(
            range(len(configs)), [f"{c}\n{CONFIGS[c].shape}" for c in configs], fontsize=8
        )
        ax.set(
            xlabel="benchmark config (batch B, time steps T, input I, hidden H, layers L)",
            ylabel="median time per call (ms, log scale)",
        )
        ax.set_title(mode, pad=30)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="upper left")
    load = env.get("load_average")
    busy = " (a busy machine: noisy times)" if load and load[0] > QUIET_LOAD else ""
    fig.suptitle(
        f"LSTM {', '.join(modes)} on {_device_text(env)}, {env['precision']}, "
        f"{env['date'][:10]}; load average {load[0] if load else '?'}{busy}\n"
        "above each group: torch's time ÷ jaxlstm's (torch: the faster of its thread settings)"
        + (f", and {baseline}'s ÷ jaxlstm's" if baseline else "")
        + "; > 1: jaxlstm faster",
        fontsize=9,
    )
    return fig


def _device_text(env: dict[str, Any]) -> str:
    if env["backend"] == "cpu":
        return f"{env['cpu_count']} CPU cores ({env['cpu']})"
    return f"{env['device']} ({env['backend']})"


def _ratio_text(cells: Sequence[Cell], config: str, mode: str, baseline: str | None) -> str:
    mine = [c for c in cells if (c.config, c.impl, c.mode) == (config, "jaxlstm", mode)]
    if not mine:
        return ""
    parts = []
    if (r := speedup(cells, mine[0])) is not None:
        parts.append(f"torch ÷ jaxlstm ×{r:.2f}")
    if (b := baseline_speedup(cells, mine[0], baseline)) is not None:
        parts.append(f"{baseline} ÷ jaxlstm ×{b:.2f}")
    return "\n".join(parts)


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def environment(precision: str, baseline: Any = None) -> dict[str, Any]:
    """The machine, the versions, torch's default thread count and the load, for the record."""
    torch = _import_torch()
    dev = jax.devices()[0]
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
        "baseline": None if baseline is None else {"rev": baseline.rev, "commit": baseline.commit},
        "torch": None if torch is None else torch.__version__,
        "torch_threads": torch_default_threads(),
        "precision": precision,
    }


def environment_line(env: dict[str, Any]) -> str:
    """The environment in one line (printed first and written above the table)."""
    load = env["load_average"]
    load_text = "unknown" if load is None else "/".join(f"{v:.2f}" for v in load)
    base = env["baseline"]
    return (
        f"device: {_device_text(env)}, load average "
        f"{load_text} (1/5/15 min); jax {env['jax']}, torch {env['torch']} "
        f"({env['torch_threads']} threads by default); precision {env['precision']}"
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


# ----------------------------------------------------------------------------- command line

EPILOG = (
    "Writes benchmark.md, benchmark.json and benchmark.png into --out-dir. 'ms' is the median "
    "of the timed calls; 'x torch' is torch's median divided by the row's (> 1: faster than "
    "torch), torch's being the faster of torch at its default thread count and torch-1t at one "
    "thread, as the 'torch ref' column says. Before vs after a change in one run: "
    "'python -m experiments.benchmark --configs digits --baseline HEAD' times the working "
    "tree's jaxlstm and the last commit's side by side ('x jaxlstm@<hash>' > 1: faster now)."
)


def parser() -> training.ArgumentParser:
    """The benchmark's flags."""
    p = training.ArgumentParser(
        prog="python -m experiments.benchmark", description=__doc__.split("\n\n")[0], epilog=EPILOG
    )
    p.add_argument(
        "--configs",
        default=None,
        help=f"comma-separated, from {list(CONFIGS)} (default: all on GPU; on CPU all "
        f"but {list(CPU_SKIPPED)}, whose fwd+bwd takes over a minute per call there; "
        f"with --quick: {','.join(QUICK_CONFIGS)})",
    )
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated, from {list(IMPLS)}")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated, from fwd, fwd+bwd")
    p.add_argument(
        "--precision",
        choices=list(JAX_PRECISION),
        default="fp32",
        help="fp32: full float32 matmuls in both frameworks; tf32: TF32 matmuls (GPU); "
        "bf16: bfloat16 parameters/inputs (jaxlstm keeps the cell state in float32)",
    )
    p.add_argument("--repeats", type=int, default=10, help="timed calls per cell (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
    p.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds of timed calls per cell after which it stops repeating",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run in well under a minute: --configs {','.join(QUICK_CONFIGS)} "
        f"(unless given) --repeats {QUICK['repeats']} --warmup {QUICK['warmup']} "
        f"--budget {QUICK['budget']}, and a smaller sgemm",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="CPU: also trace 5 calls of every JAX cell with jax.profiler and report the time "
        "during which its matmuls run ('matmul ms'), the part only faster matmuls can shrink "
        "(not where XLA runs a product asynchronously, as in jaxlstm's backward pass)",
    )
    p.add_argument(
        "--baseline",
        metavar="REV",
        default=None,
        help="also time jaxlstm as it was at git revision REV (a hash, tag, branch, "
        "HEAD, HEAD~3, ...) in this process, right after the current jaxlstm on every "
        "config and mode, as the impl jaxlstm@<hash> with its own default options; "
        "the table gets a column of REV's time ÷ the current one's",
    )
    _add_scan_flags(p)
    p.add_argument(
        "--out-dir",
        default=None,
        help="where benchmark.md, benchmark.json and benchmark.png go (default: "
        "runs/benchmark, or runs/benchmark-quick with --quick)",
    )
    return p


def _add_scan_flags(parser: training.ArgumentParser) -> None:
    """The flags of jaxlstm's `ScanOptions` (`parse_args` makes them one `args.scan`)."""
    j = parser.add_argument_group("jaxlstm's scan options (one jaxlstm.ScanOptions)")
    j.add_argument(
        "--unroll",
        type=int,
        default=None,
        help="time steps per loop iteration (default: the backend's, see "
        "jaxlstm.ScanOptions.resolve)",
    )
    j.add_argument(
        "--custom-vjp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the hand-written backward pass (--no-custom-vjp: autodiff of the scan)",
    )
    j.add_argument(
        "--remat",
        action="store_true",
        help="recompute the gates in the backward pass (less activation memory)",
    )
    j.add_argument(
        "--fuse-directions",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="both directions of a bidirectional layer in one scan (default: the backend's)",
    )


def _split_list(field: str, text: str, allowed: Sequence[str]) -> list[str]:
    values = [v for v in text.split(",") if v]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise training.UsageError(
            f"--{field} must be a comma-separated list from {list(allowed)}, got {text!r}"
        )
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The checked flags; `args.scan` is the `jaxlstm.ScanOptions` of the jaxlstm flags.

    Raises:
        experiments.training.UsageError: an unknown flag or value (the message names it).
    """
    args = parser().parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.budget = QUICK["repeats"], QUICK["warmup"], QUICK["budget"]
    if args.configs is None:
        on_cpu = jax.default_backend() == "cpu"
        everything = [c for c in CONFIGS if not (on_cpu and c in CPU_SKIPPED)]
        default = QUICK_CONFIGS if args.quick else everything
        args.configs = ",".join(default)
    args.configs = _split_list("configs", args.configs, list(CONFIGS))
    args.impls = _split_list("impls", args.impls, IMPLS)
    args.modes = _split_list("modes", args.modes, MODES)
    for flag, value in (("repeats", args.repeats), ("budget", args.budget)):
        if not value > 0:
            raise training.UsageError(f"--{flag} must be positive, got {value}")
    if args.warmup < 0:
        raise training.UsageError(f"--warmup must be >= 0, got {args.warmup}")
    if args.unroll is not None and args.unroll < 1:
        raise training.UsageError(f"--unroll must be a positive integer, got {args.unroll}")
    args.scan = jaxlstm.ScanOptions(
        unroll=args.unroll,
        custom_vjp=args.custom_vjp,
        remat=args.remat,
        fuse_directions=args.fuse_directions,
    )
    args.out_dir = args.out_dir or ("runs/benchmark-quick" if args.quick else "runs/benchmark")
    return args


# ----------------------------------------------------------------------------- running


def _skip_reason(impl: str, precision: str, on_gpu: bool) -> str:
    """Why a cell cannot run here ("" if it can)."""
    if impl == "jax.experimental.rnn" and not on_gpu:
        return "GPU only"
    if impl == "torch-1t" and on_gpu:
        return "CPU only"
    if impl in TORCH_IMPLS and _import_torch() is None:
        return "torch not installed"
    if precision == "tf32" and not on_gpu:
        return "tf32 needs a GPU"
    return ""


def measure_cell(
    cell: Cell, builder: Callable, args: argparse.Namespace, threads: int | None
) -> None:
    """Builds and times one cell, filling in its times and notes."""
    try:
        run, compile_s, sync = builder(CONFIGS[cell.config], args.precision, cell.mode)
        first, times = _time_calls(
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
        cell = Cell(cname, impl, mode, note=_skip_reason(impl, args.precision, on_gpu))
        if not cell.note:
            measure_cell(cell, builders[impl], args, threads)
        cells.append(cell)
        took = ""
        if cell.median_s is not None:
            took = f"{cell.median_s * 1e3:.2f} ms (median of {len(cell.times_s)})"
        comp = "" if cell.compile_s is None else f", compile {cell.compile_s:.2f} s"
        log(f"[{n}/{len(work)}] {cname:9s} {impl:20s} {mode:7s} {took}{comp} {cell.note}".rstrip())
    return cells


def _print_bounds(args: argparse.Namespace, sgemm: dict[str, float], n: int) -> None:
    rates = ", ".join(f"{k} {v:.0f}" for k, v in sgemm.items() if k != "best")
    print(f"sgemm rate ({n}³ float32): {sgemm['best']:.0f} GFLOP/s (best of: {rates})")
    for cname in args.configs:
        cfg = CONFIGS[cname]
        if cfg.compute_bound:
            fwd, bwd = (cfg.flops(b) / (sgemm["best"] * 1e9) * 1e3 for b in (False, True))
            print(
                f"FLOP-time bound {cname}: fwd {fwd:.0f} ms, fwd+bwd {bwd:.0f} ms "
                f"({cfg.flops(False) / 1e9:.1f} / {cfg.flops(True) / 1e9:.1f} GFLOP)"
            )


def cell_record(cells: Sequence[Cell], c: Cell, baseline: str | None) -> dict[str, Any]:
    """One cell of benchmark.json: its times, the ratios and torch's reference impl."""
    ref = torch_reference(cells, c)
    steps = CONFIGS[c.config].sequential_steps
    return {
        **dataclasses.asdict(c),
        "speedup_vs_torch": _ratio(ref, c),
        "torch_reference": None if ref is None else ref.impl,
        "speedup_vs_baseline": baseline_speedup(cells, c, baseline),
        "us_per_step": None if c.median_s is None else c.median_s * 1e6 / steps,
    }


def write_outputs(
    args: argparse.Namespace,
    result: dict[str, Any],
    report: str,
    cells: Sequence[Cell],
    baseline: str | None,
) -> list[str]:
    """benchmark.json, benchmark.md and benchmark.png in `args.out_dir`; returns the paths."""
    os.makedirs(args.out_dir, exist_ok=True)
    json_path = os.path.join(args.out_dir, "benchmark.json")
    md_path = os.path.join(args.out_dir, "benchmark.md")
    training.write_json(json_path, result)
    with open(md_path, "w") as f:
        f.write(report + "\n")
    pngs = training.save_figures(
        args.out_dir, {"benchmark.png": figure(cells, result["environment"], baseline)}
    )
    return [md_path, json_path, *pngs]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark, prints the table and summary, writes the files; returns the JSON.

    Raises:
        experiments.training.UsageError: a flag is unknown or has an impossible value, or
            --baseline names no revision with a jaxlstm package.
    """
    args = parse_args(argv)
    jax.config.update("jax_default_matmul_precision", JAX_PRECISION[args.precision])
    log = functools.partial(print, file=sys.stderr, flush=True)
    baseline = None
    if args.baseline is not None:
        from experiments.baseline import load_baseline

        baseline = load_baseline(args.baseline)
    env = environment(args.precision, baseline)
    log(environment_line(env))
    if warning := load_warning(env):
        log(warning)
    n = 512 if args.quick else 2048
    sgemm = measure_sgemm(n, repeats=3 if args.quick else 5)
    _print_bounds(args, sgemm, n)
    cells = run_benchmark(args, log, baseline)
    base_name = None if baseline is None else baseline.name
    table = markdown_table(cells, sgemm["best"], env["torch_threads"], base_name, args.profile)
    line = summary(cells, base_name)
    caption = table_caption(env["torch_threads"], base_name, args.profile)
    head = [environment_line(env), load_warning(env), caption]
    report = "\n\n".join([text for text in head if text] + [table, line])
    print(f"\n{caption}\n\n{table}\n\n{line}")
    env["load_average_at_end"] = load_average()
    result = {
        "environment": env,
        "sgemm_gflops": sgemm,
        "args": {**vars(args), "scan": dataclasses.asdict(args.scan)},
        "configs": {c: dataclasses.asdict(CONFIGS[c]) for c in args.configs},
        "cells": [cell_record(cells, c, base_name) for c in cells],
        "summary": line,
    }
    paths = write_outputs(args, result, report, cells, base_name)
    log(f"wrote {', '.join(paths)}")
    return result


if __name__ == "__main__":
    training.entry_point(main)
