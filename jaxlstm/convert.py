"""`python -m jaxlstm.convert SRC DST`: an LSTM's weights between torch, safetensors and orbax.

Sources (SRC), as `jaxlstm.from_torch` reads them, without running code from the file:

- torch files `.pt .pth .bin .ckpt .jit`: a `state_dict`, a training checkpoint nesting one
  at any depth (`{"model_state": ..., "optimizer": ..., "step": 3}`), a TorchScript archive
  (`torch.jit.save`), or the legacy format; objects of other libraries in them are skipped;
- `.safetensors` files (under any suffix: the content decides);
- checkpoints in the wild, read only: `.zip` archives of torch files (e.g. a recurrent RL
  policy), `.pkl` pickles of numpy arrays, Keras `.keras`/`.h5` model files and `.onnx`
  models (see `jaxlstm.keras_io`, `jaxlstm.onnx_io`); weight-dropped and dynamically
  quantized LSTMs are written as their eval-time float weights, with a `note:` line;
- orbax checkpoint directories, such as this command writes, or any orbax pytree (nested
  keys joined with `.`).

Destinations (DST), by suffix: a torch file (`.pt .pth .bin .ckpt .jit`, written without
torch; `torch.load(weights_only=True)` reads it), `.safetensors`, or a path without a suffix:
an orbax checkpoint directory with the items `params` (`{torch name: array}`) and `config`
(the configuration as JSON, so `batch_first` and `dropout` survive). That directory loads
with `jaxlstm.from_torch(DST)`, `jaxlstm.load_torch_state_dict(model, DST)` and
`jaxlstm.torch_io.linen_load_torch_state_dict(variables, DST)`.

The LSTM (an `nn.LSTM` or an `nn.LSTMCell`) is the one in SRC, or the one under `--prefix`
when SRC holds several; `--list` prints every one with its prefix and configuration. Only
its weights are written, under torch's names without the prefix; values and dtypes are
copied bit for bit. The destination and both suffixes are checked before SRC is read.

Exit status: 0 on success; 2 on a user error (a bad flag, a missing or unreadable file, no
LSTM under the prefix, an existing destination), with one line `error: ...` on stderr.

Examples:
    ```bash
    python -m jaxlstm.convert --list checkpoint.pt
    python -m jaxlstm.convert checkpoint.pt lstm_ckpt --prefix model_state.lstm. --batch-first
    python -m jaxlstm.convert lstm_ckpt lstm.safetensors
    ```
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from jaxlstm.config import LSTMConfig
from jaxlstm.state_dict import (
    READ_ONLY_SUFFIXES,
    LSTMWeights,
    StateDictError,
    detect_format,
    find_lstms,
    read_lstm,
    write_state_dict,
)

__all__ = ["check_paths", "convert", "main"]


def check_paths(src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False) -> None:
    """Checks a conversion's paths before anything is read.

    Raises:
        StateDictError: a suffix names no known format, or `dst` one that is only read
            (`.zip .pkl .keras .h5 .onnx`).
        FileNotFoundError: `src` does not exist.
        FileExistsError: `dst` exists and `force` is False.
    """
    detect_format(src)
    if detect_format(dst) in READ_ONLY_SUFFIXES.values():
        raise StateDictError(
            f"destination {os.fspath(dst)!r}: {detect_format(dst)} files are read, not written; "
            "write a torch file, .safetensors or an orbax directory"
        )
    if not os.path.exists(src):
        raise FileNotFoundError(f"source {os.fspath(src)!r} does not exist")
    if os.path.exists(dst) and not force:
        raise FileExistsError(
            f"destination {os.fspath(dst)!r} already exists (pass --force to overwrite it)"
        )


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    prefix: str | None = None,
    batch_first: bool | None = None,
    force: bool = False,
) -> LSTMWeights:
    """Converts one LSTM's weights from `src` to `dst`; see the module docstring.

    Args:
        src: the source file or orbax directory.
        dst: the destination; its format follows from its suffix.
        prefix: the LSTM's key prefix in `src` (as `--list` prints it); None: the only one.
        batch_first: recorded in an orbax destination's configuration; None keeps the
            source's (its module's, or False for weights alone).
        force: overwrite an existing destination.

    Returns:
        What was written: `LSTMWeights(prefix, config, params, training)`.

    Raises:
        StateDictError: a bad suffix, an unreadable source, no LSTM (under `prefix`), several
            and no `prefix`, or `batch_first` for an LSTM cell.
        FileNotFoundError, FileExistsError: see `check_paths`.

    Examples:
        >>> convert("checkpoint.pt", "lstm_ckpt", prefix="model_state.lstm.")  # doctest: +SKIP
    """
    check_paths(src, dst, force=force)
    weights = read_lstm(src, prefix=prefix)
    if batch_first is not None:
        if not isinstance(weights.config, LSTMConfig):
            raise StateDictError(
                f"--batch-first applies to an nn.LSTM, but {weights.prefix!r} is an nn.LSTMCell"
            )
        weights = weights._replace(
            config=dataclasses.replace(weights.config, batch_first=batch_first)
        )
    write_state_dict(dst, weights.params, weights.config, force=force)
    return weights


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`error: ...`, status 2) instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m jaxlstm.convert",
        description="Convert a torch nn.LSTM's or nn.LSTMCell's weights between torch files "
        "(state_dicts, training checkpoints, TorchScript), .safetensors and an orbax checkpoint "
        "directory, inferring the configuration from the weights.",
    )
    parser.add_argument(
        "src",
        help="source: .pt/.pth/.bin/.ckpt/.jit, .safetensors, .zip, .pkl, .keras/.h5, .onnx, "
        "or an orbax directory",
    )
    parser.add_argument(
        "dst", nargs="?", help="destination: a torch file, .safetensors, or a new directory (orbax)"
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="print every LSTM in SRC with its prefix and configuration",
    )
    parser.add_argument(
        "--prefix", default=None, help="the LSTM's key prefix in SRC, as --list prints it"
    )
    parser.add_argument(
        "--batch-first",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="record batch_first in the configuration (default: the source's)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    return parser


def _run(args: Any) -> None:
    if args.list:
        if (
            args.dst is not None
            or args.prefix is not None
            or args.batch_first is not None
            or args.force
        ):
            raise StateDictError("--list takes SRC alone")
        detect_format(args.src)
        found = find_lstms(args.src)
        if not found:
            read_lstm(args.src)  # raises, saying what the source holds
        for prefix, config in found.items():
            print(f"{prefix!r}: {config}")
        return
    if args.dst is None:
        raise StateDictError("DST is required (or pass --list to see the LSTMs in SRC)")
    weights = convert(
        args.src, args.dst, prefix=args.prefix, batch_first=args.batch_first, force=args.force
    )
    dtypes = ", ".join(sorted({str(v.dtype) for v in weights.params.values()}))
    print(
        f"read {len(weights.params)} tensors ({dtypes}) under prefix {weights.prefix!r} "
        f"of {args.src}"
    )
    print(f"inferred {weights.config}")
    for note in weights.notes:
        print(f"note: {note}")
    print(f"wrote {detect_format(args.dst)} {args.dst}")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0, or 2 on a user error)."""
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except (StateDictError, OSError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
