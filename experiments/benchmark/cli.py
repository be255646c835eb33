"""The benchmark's command line: its flags, and `parse_args` checking them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax

import jaxlstm
from experiments import training
from experiments.benchmark.configs import (
    CONFIGS,
    CPU_SKIPPED,
    IMPLS,
    JAX_PRECISION,
    MODES,
    QUICK,
    QUICK_CONFIGS,
    XLA_IMPL,
)
from jaxlstm.options import BACKENDS

__all__ = ["DESCRIPTION", "EPILOG", "default_impls", "parse_args", "parser"]

DESCRIPTION = (
    "Side-by-side LSTM benchmark: jaxlstm vs torch `nn.LSTM`, flax `RNN`, `jax.experimental.rnn`."
)
EPILOG = (
    "Writes benchmark.md, benchmark.json and benchmark.png into --out-dir. 'ms' is the median "
    "of the timed calls; 'x torch' is torch's median divided by the row's (> 1: faster than "
    "torch), torch's being the faster of torch at its default thread count and torch-1t at one "
    "thread, as the 'torch ref' column says. Before vs after a change in one run: "
    "'python -m experiments.benchmark --configs digits --baseline HEAD' times the working "
    "tree's jaxlstm and the last commit's side by side ('x jaxlstm@<hash>' > 1: faster now). "
    "Both recurrence backends in one run: '--impls jaxlstm,jaxlstm-xla,torch' times jaxlstm "
    "at the library's dispatch (or --backend) beside jaxlstm on XLA ('x jaxlstm-xla' > 1: "
    "jaxlstm's backend is faster)."
)


def parser() -> training.ArgumentParser:
    """The benchmark's flags."""
    p = training.ArgumentParser(
        prog="python -m experiments.benchmark", description=DESCRIPTION, epilog=EPILOG
    )
    p.add_argument(
        "--configs",
        default=None,
        help=f"comma-separated, from {list(CONFIGS)} (default: all on GPU; on CPU all "
        f"but {list(CPU_SKIPPED)}, whose fwd+bwd takes over a minute per call there; "
        f"with --quick: {','.join(QUICK_CONFIGS)})",
    )
    p.add_argument(
        "--impls",
        default=None,
        help=f"comma-separated, from {list(IMPLS)} (default: all of them, but {XLA_IMPL} "
        "only where jaxlstm's own backend is not XLA already); "
        f"{XLA_IMPL} is jaxlstm with ScanOptions(backend='xla') and the other scan flags",
    )
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
        "--backend",
        choices=list(BACKENDS),
        default=None,
        help="the recurrence backend of the jaxlstm impl (default: the library's dispatch, "
        f"see jaxlstm.ScanOptions.resolve); {XLA_IMPL} always runs on xla",
    )
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


def default_impls(scan: jaxlstm.ScanOptions) -> list[str]:
    """Every implementation, but `jaxlstm-xla` only where `jaxlstm` (run with `scan`) does
    not resolve to the XLA backend already (it would time the same program twice)."""
    backend = scan.backend if scan.backend is not None else scan.resolve().backend
    same = backend == "xla"
    return [i for i in IMPLS if not (same and i == XLA_IMPL)]


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value in (("repeats", args.repeats), ("budget", args.budget)):
        if not value > 0:
            raise training.UsageError(f"--{flag} must be positive, got {value}")
    if args.warmup < 0:
        raise training.UsageError(f"--warmup must be >= 0, got {args.warmup}")
    if args.unroll is not None and args.unroll < 1:
        raise training.UsageError(f"--unroll must be a positive integer, got {args.unroll}")


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
    args.modes = _split_list("modes", args.modes, MODES)
    _check_numbers(args)
    args.scan = jaxlstm.ScanOptions(
        unroll=args.unroll,
        custom_vjp=args.custom_vjp,
        remat=args.remat,
        fuse_directions=args.fuse_directions,
        backend=args.backend,
    )
    impls = ",".join(default_impls(args.scan)) if args.impls is None else args.impls
    args.impls = _split_list("impls", impls, IMPLS)
    args.out_dir = args.out_dir or ("runs/benchmark-quick" if args.quick else "runs/benchmark")
    return args
