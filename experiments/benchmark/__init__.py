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
- × jaxlstm-xla (when `jaxlstm-xla` ran too): the time of jaxlstm with
  `ScanOptions(backend="xla")` divided by jaxlstm's (at the library's backend dispatch, or
  `--backend`): > 1 means the backend jaxlstm ran on is faster than XLA's scan. The
  environment line and the summary name that backend.
- matmul ms (with `--profile`, on a CPU): for each JAX cell, the time per call during which at
  least one of its matmuls runs, from a `jax.profiler` trace of 5 more calls, and its share of
  the median. The rest is elementwise work, copies and the loop's overhead; where torch's
  time is below this alone, only faster matmuls from XLA can close the gap. "—" where XLA:CPU
  runs a product asynchronously (jaxlstm's backward pass after the loop): the trace shows
  only its start.
- GFLOP/s (% of peak): the recurrence's and projection's matmul FLOPs per call
  (`BenchConfig.flops`) divided by the median, and its share of the peak that
  `timing.measure_peak` measured: the "FMA peak" (jaxlstm's native FMA probe on every core)
  where the kernel is built, else the "sgemm peak" (a large float32 matmul).

Modes: `fwd` (the output) and `fwd+bwd` (the gradient of `sum(out)` with respect to every
parameter and the input). The machine's peak (the FMA peak, or the rate of a large float32
matmul without the kernel) is measured at the start and each compute-bound config's FLOP-time
bound (its matmul FLOPs at that rate) is printed, so the distance from the hardware's limit is
visible next to the distance from torch. The load average is printed too, with a warning when
other work is running.

Implementations: `jaxlstm` (the working tree's, at the library's recurrence backend dispatch,
or the one `--backend` names), `jaxlstm-xla` (the same with `ScanOptions(backend="xla")`, so
both backends are timed in one run), `jaxlstm@<hash>` (`--baseline`), torch `nn.LSTM` as
`torch` and `torch-1t`, flax `RNN(OptimizedLSTMCell)` and `jax.experimental.rnn` (GPU).

Writes `benchmark.md` (the table), `benchmark.json` (every timing) and `benchmark.png` (per
mode, each implementation's speed relative to torch per config, log scale) into `--out-dir`.

One concept a module: `configs` (shapes, modes, implementations), `timing` (timed calls, the
peak), `implementations` (the builders), `profile` (`--profile`'s matmul time), `cells` (a
cell and its ratios), `report` (table, bounds, summary), `plot`, `environment`, `cli` (the
flags), `run` (the measuring loop), `outputs` (the files); `main` ties them together.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any

import jax

from experiments.benchmark import environment
from experiments.benchmark.cli import parse_args
from experiments.benchmark.configs import JAX_PRECISION, XLA_IMPL
from experiments.benchmark.outputs import result_record, write_outputs
from experiments.benchmark.report import bounds_text, markdown_table, summary, table_caption
from experiments.benchmark.run import run_benchmark
from experiments.benchmark.timing import measure_peak

__all__ = ["main"]


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
    env = environment.environment(args.precision, baseline, args.scan)
    log(environment.environment_line(env))
    if warning := environment.load_warning(env):
        log(warning)
    peak = measure_peak(quick=args.quick)
    print("\n".join(bounds_text(peak, args.configs)))
    cells = run_benchmark(args, log, baseline)
    base_name = None if baseline is None else baseline.name
    table = markdown_table(cells, peak, env["torch_threads"], base_name, args.profile)
    line = summary(cells, base_name, peak, environment.backend_text(env))
    measured = {c.impl for c in cells if c.median_s}
    xla = {"jaxlstm", XLA_IMPL} <= measured
    caption = table_caption(env["torch_threads"], base_name, args.profile, xla, peak.label)
    head = [
        environment.environment_line(env),
        environment.load_warning(env),
        *bounds_text(peak, args.configs),
        caption,
    ]
    report = "\n\n".join([text for text in head if text] + [table, line])
    print(f"\n{caption}\n\n{table}\n\n{line}")
    env["load_average_at_end"] = environment.load_average()
    result = result_record(args, env, peak, cells, base_name, line)
    paths = write_outputs(args, result, report, cells, base_name)
    log(f"wrote {', '.join(paths)}")
    return result
