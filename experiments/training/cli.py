"""The command line every experiment shares: the flags, their checks and the entry point.

A user error (an impossible flag value, a checkpoint directory that cannot be resumed, an output
directory holding another run's results, ...) is a `UsageError` whose message names the flag,
what was expected and what was given. `entry_point` turns it into one line `error: ...` on
stderr and exit status 2, like argparse and other Unix tools; every other exception is a bug or
an environment failure and keeps its traceback. Called from Python, `main(argv)` raises.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "ArgumentParser",
    "HelpFormatter",
    "UsageError",
    "base_parser",
    "check_common_args",
    "entry_point",
    "parse_args",
    "train_options",
]

# The shared flags whose default each experiment chooses (base_parser's `defaults`).
EXPERIMENT_DEFAULTS = (
    "steps",
    "batch_size",
    "hidden_size",
    "num_layers",
    "lr",
    "save_every",
    "log_every",
)


class UsageError(ValueError):
    """A command-line value the run cannot use; the message names the flag, the expected and
    the given value. `entry_point` prints it as one line and exits with status 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's help with `(default: ...)` appended, unless the help text states its default
    itself (a default that depends on other flags) or the default is None (nothing to say)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default is None:
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` that raises `UsageError` instead of printing the usage and
    exiting, so that a bad flag is reported like every other user error (by `entry_point`).

    Attributes:
        quick: the defaults `--quick` switches to (explicit flags still win); empty if the
            program has no `--quick`.
    """

    def __init__(self, *args: Any, quick: Mapping[str, Any] | None = None, **kwargs: Any):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.quick = dict(quick or {})

    def error(self, message: str):
        raise UsageError(message)


def entry_point(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None):
    """Runs `main(argv)` as a command: a `UsageError` becomes one line on stderr and exit 2.

    Args:
        main: the experiment's `main(argv)`.
        argv: the arguments (None: `sys.argv[1:]`).

    Returns:
        What `main` returns (other exceptions propagate with their traceback).
    """
    try:
        return main(argv)
    except UsageError as e:
        message = " ".join(str(e).split())
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _quick_help(quick: Mapping[str, Any]) -> str:
    listed = " ".join(f"{_flag(k)} {v}" for k, v in quick.items())
    return f"a tiny run for smoke tests, as if given {listed} (explicit flags still win)"


def base_parser(
    prog: str,
    description: str,
    *,
    defaults: Mapping[str, Any],
    quick: Mapping[str, Any],
    default_notes: Mapping[str, str] | None = None,
) -> ArgumentParser:
    """The flags every experiment shares, with the experiment's own defaults.

    Args:
        prog: the program name shown by `--help`, e.g. `python -m experiments.sine`.
        description: the first paragraph of `--help`.
        defaults: the defaults of `--steps`, `--batch-size`, `--hidden-size`,
            `--num-layers`, `--lr`, `--save-every` and `--log-every` (by their dest names).
        quick: the defaults `--quick` switches to.
        default_notes: `{dest: text}` shown as `(default: text)` in place of the default value,
            for defaults that depend on other flags (e.g. `--out-dir`, or classify's datasets).

    Returns:
        A parser; experiments add their own flags to it.
    """
    missing = [k for k in EXPERIMENT_DEFAULTS if k not in defaults]
    if missing:
        raise TypeError(f"base_parser: defaults lacks {missing}")
    notes = dict(default_notes or {})

    def helped(dest: str, text: str) -> str:
        return f"{text} (default: {notes[dest]})" if dest in notes else text

    p = ArgumentParser(prog=prog, description=description, quick=quick)
    _add_training_flags(p.add_argument_group("training"), defaults, helped, quick)
    _add_output_flags(p.add_argument_group("output"), defaults, helped)
    _add_checkpoint_flags(p.add_argument_group("checkpoints"), defaults)
    _add_device_flags(p.add_argument_group("devices"))
    return p


# (dest, type, help) of the training flags whose defaults each experiment sets.
_MODEL_FLAGS = (
    ("steps", int, "optimizer steps in the whole run (0 only evaluates)"),
    ("hidden_size", int, "LSTM hidden size H"),
    ("num_layers", int, "stacked LSTM layers L"),
    ("lr", float, "peak learning rate of the Adam schedule"),
    ("batch_size", int, "global batch size; must be divisible by the number of devices"),
)


def _add_training_flags(
    g: Any, defaults: Mapping[str, Any], helped: Callable[[str, str], str], quick: Mapping
) -> None:
    """--steps, --seed, --hidden-size, --num-layers, --lr, --batch-size, --quick."""
    for dest, kind, text in _MODEL_FLAGS:
        g.add_argument(_flag(dest), type=kind, default=defaults[dest], help=helped(dest, text))
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the initial weights, the data order and dropout",
    )
    g.add_argument("--quick", action="store_true", help=_quick_help(quick))


def _add_output_flags(
    o: Any, defaults: Mapping[str, Any], helped: Callable[[str, str], str]
) -> None:
    """--out-dir, --overwrite, --log-every, --no-progress, --no-plots."""
    o.add_argument(
        "--out-dir",
        default=None,
        help=helped("out_dir", "where metrics.json, metrics.jsonl and the plots go"),
    )
    o.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of a different run in --out-dir (without it such "
        "a run is refused; re-running the same command there is always allowed)",
    )
    o.add_argument(
        "--log-every",
        type=int,
        default=defaults["log_every"],
        help="steps between progress-bar updates (every step is still logged to metrics.jsonl)",
    )
    o.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    o.add_argument("--no-plots", action="store_true", help="skip writing the .png plots")


def _add_checkpoint_flags(c: Any, defaults: Mapping[str, Any]) -> None:
    """--checkpoint-dir, --save-every, --keep, --resume, --stop-at."""
    c.add_argument(
        "--checkpoint-dir",
        default=None,
        help="save orbax checkpoints here (none are written without it)",
    )
    c.add_argument(
        "--save-every",
        type=int,
        default=defaults["save_every"],
        help="steps between checkpoints (the last step is always saved)",
    )
    c.add_argument("--keep", type=int, default=3, help="how many of the latest checkpoints to keep")
    c.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest checkpoint in --checkpoint-dir (an error if there is none)",
    )
    c.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="stop after this step without a final save, as if the run had been "
        "killed (for trying out --resume)",
    )


def _add_device_flags(d: Any) -> None:
    """--distributed and the three settings it may need."""
    d.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first, for a run over several "
        "processes/hosts; on SLURM, Open MPI, Kubernetes or Cloud TPU the three flags "
        "below are detected automatically",
    )
    d.add_argument(
        "--coordinator-address", default=None, help="with --distributed: host:port of process 0"
    )
    d.add_argument(
        "--num-processes", type=int, default=None, help="with --distributed: how many processes"
    )
    d.add_argument(
        "--process-id", type=int, default=None, help="with --distributed: this process's index"
    )


def parse_args(parser: ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parses `argv`; with `--quick`, `parser.quick` replaces the defaults (explicit flags win).

    Raises:
        UsageError: an unknown flag, a value of the wrong type, or see `check_common_args`.
    """
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**parser.quick)
        args = parser.parse_args(argv)
    check_common_args(args)
    return args


def check_common_args(args: argparse.Namespace) -> None:
    """Rejects impossible values of the shared flags with a message naming the flag.

    Raises:
        UsageError: a count is not positive, --lr is not a positive number, --resume lacks
            --checkpoint-dir, --stop-at is outside the run, or a --distributed setting is given
            without --distributed.
    """
    if args.steps < 0:
        raise UsageError(f"--steps must be >= 0 (0 only evaluates), got {args.steps}")
    for dest in ("hidden_size", "num_layers", "batch_size", "log_every", "save_every", "keep"):
        value = getattr(args, dest)
        if value <= 0:
            raise UsageError(f"{_flag(dest)} must be a positive integer, got {value}")
    if args.lr <= 0 or not math.isfinite(args.lr):
        raise UsageError(f"--lr must be a positive number, got {args.lr}")
    if args.resume and not args.checkpoint_dir:
        raise UsageError(
            "--resume needs --checkpoint-dir DIR to resume from, got no --checkpoint-dir"
        )
    if args.stop_at is not None and not 0 < args.stop_at <= args.steps:
        raise UsageError(f"--stop-at must be in [1, --steps={args.steps}], got {args.stop_at}")
    for dest in ("coordinator_address", "num_processes", "process_id"):
        if getattr(args, dest) is not None and not args.distributed:
            raise UsageError(f"{_flag(dest)} needs --distributed, got it without")


def train_options(args: argparse.Namespace, out_dir: str) -> dict[str, Any]:
    """The keyword arguments of `train` from the shared flags.

    Args:
        args: parsed by a parser from `base_parser`.
        out_dir: the output directory (`--out-dir`, or the experiment's default for it).
    """
    return {
        "steps": args.steps,
        "seed": args.seed,
        "out_dir": out_dir,
        "overwrite": args.overwrite,
        "checkpoint_dir": args.checkpoint_dir,
        "save_every": args.save_every,
        "keep": args.keep,
        "resume": args.resume,
        "stop_at": args.stop_at,
        "log_every": args.log_every,
        "progress": not args.no_progress,
    }
