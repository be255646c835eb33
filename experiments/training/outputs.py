"""Which run an output directory belongs to: a run never silently replaces another's results.

Each kind of run has its own default directory (`default_out_dir`). Every finished run
leaves `metrics.json` in its `--out-dir`, holding the run's `config` (task,
dataset, model and training settings). A new run into a directory whose `metrics.json` comes
from a different configuration is refused with a `UsageError` that lists the differences,
unless `--overwrite` is given. Refusing (rather than warning) is the choice because the results
a run replaces cannot be recovered, a warning scrolls away under the progress bar, and the
way out is one flag. Re-running the same configuration into its own directory is always
allowed (it reproduces the same results), and so is resuming with the same model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from experiments.training.checkpoints import diff_configs
from experiments.training.cli import UsageError

__all__ = ["SUMMARY_FILE", "check_out_dir", "default_out_dir"]

SUMMARY_FILE = "metrics.json"


def default_out_dir(name: str, *, quick: bool = False) -> str:
    """`runs/<name>`, or `runs/<name>-quick` for a `--quick` run (so that a smoke run never
    meets the results of a real one)."""
    return f"runs/{name}-quick" if quick else f"runs/{name}"


def _previous_config(out_dir: str) -> tuple[bool, Any]:
    """`(whether out_dir/metrics.json exists, its "config" or None)`."""
    path = os.path.join(out_dir, SUMMARY_FILE)
    if not os.path.isfile(path):
        return False, None
    try:
        with open(path) as f:
            return True, json.load(f).get("config")
    except (OSError, ValueError, AttributeError):
        return True, None


def check_out_dir(
    out_dir: str, config: Mapping[str, Any], *, overwrite: bool = False, resume: bool = False
) -> None:
    """Refuses an `out_dir` holding the results of a run of another configuration.

    Args:
        out_dir: the run's output directory (it need not exist).
        config: this run's JSON-able `{"model": {...}, "run": {...}}`.
        overwrite: replace whatever is there (`--overwrite`).
        resume: the run continues a checkpointed one (`--resume`): only the `model` entry must
            match, as the checkpoint's own check warns about other differences.

    Raises:
        UsageError: `out_dir/metrics.json` was written by a different configuration, or cannot
            be read, and `overwrite` is False.
    """
    exists, previous = _previous_config(out_dir)
    if overwrite or not exists:
        return
    where = f"--out-dir {out_dir!r}"
    if not isinstance(previous, Mapping):
        raise UsageError(
            f"{where} holds a {SUMMARY_FILE} that names no run configuration; pass --overwrite "
            "to replace it, or choose another --out-dir"
        )
    current = json.loads(json.dumps(config))
    if resume:
        previous, current = previous.get("model", {}), current.get("model", {})
        prefix = "model."
    else:
        prefix = ""
    diffs = diff_configs(previous, current, prefix, saved_as="the earlier run")
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise UsageError(
            f"{where} holds the results of a different run ({shown}); pass --overwrite to "
            "replace them, or choose another --out-dir"
        )
