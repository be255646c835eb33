"""Orbax checkpoints of a run: the training state as flat named arrays, and its config.

A missing, empty, damaged or mismatched checkpoint is a `CheckpointError` that says what is
wrong and what to do; it is a `UsageError`, so a command reports it in one line.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from experiments.training.cli import UsageError

__all__ = [
    "CheckpointError",
    "Checkpoints",
    "abstract_template",
    "diff_configs",
    "named_leaves",
    "rewrap_keys",
]


class CheckpointError(UsageError):
    """A checkpoint directory is missing, empty, damaged, or was written for another model."""


# --------------------------------------------------------------------------- names


def _key_name(key: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def named_leaves(tree: Any) -> dict[str, Any]:
    """`{dotted path: leaf}` of a pytree, e.g. `model.lstm.weight_ih_l0`, in leaf order."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = [_key_name(k) for k in path]
        if parts and parts[-1] == "value":  # nnx.Variable's own attribute: noise in a name
            parts = parts[:-1]
        out[".".join(parts)] = leaf
    return out


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_storable(x: Any) -> Any:
    """PRNG key arrays become their raw uint32 data (orbax stores plain arrays)."""
    return jax.random.key_data(x) if _is_key(x) else x


def _shape_dtype(x: Any) -> tuple[tuple[int, ...], np.dtype]:
    stored = _to_storable(x)
    return tuple(np.shape(stored)), np.dtype(stored.dtype)


def abstract_template(named: Mapping[str, Any], sharding: Any = None) -> dict[str, Any]:
    """`{name: jax.ShapeDtypeStruct}` of the arrays as stored (keys as raw data), placed on
    `sharding`: what orbax restores into."""
    out = {}
    for name, x in named.items():
        shape, dtype = _shape_dtype(x)
        out[name] = jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
    return out


def rewrap_keys(template: Any, restored: Mapping[str, Any]) -> Any:
    """The restored `{name: array}` back in `template`'s structure, with each PRNG key of the
    template rebuilt (same implementation) from its stored raw data."""
    leaves = []
    for name, like in named_leaves(template).items():
        value = restored[name]
        if _is_key(like):
            value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(like))
        leaves.append(value)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)


# --------------------------------------------------------------------------- configs


def diff_configs(
    saved: Any, current: Any, prefix: str = "", saved_as: str = "checkpoint"
) -> list[str]:
    """Human-readable differences between two JSON-like configs.

    Args:
        saved: the stored config.
        current: this run's config.
        prefix: prepended to every key path (e.g. `"model."`).
        saved_as: what the stored config is called in the messages.

    Returns:
        One line per differing key, e.g. `model.hidden_size: checkpoint has 8, this run has 16`.
    """
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        out = []
        for k in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}{k}"
            if k not in saved:
                out.append(f"{name}: not in the {saved_as}, this run has {current[k]!r}")
            elif k not in current:
                out.append(f"{name}: {saved_as} has {saved[k]!r}, this run has none")
            else:
                out += diff_configs(saved[k], current[k], name + ".", saved_as)
        return out
    if saved != current:
        return [f"{prefix.rstrip('.')}: {saved_as} has {saved!r}, this run has {current!r}"]
    return []


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


# --------------------------------------------------------------------------- the directory


class Checkpoints:
    """Orbax checkpoints of one run: the training state (flat, named arrays) and its config.

    Each step directory holds two items: `state` (`{dotted name: array}`, the model, the
    optimizer and the carried state) and `config` (JSON: the model's structure and the run's
    settings). Orbax writes a step into a temporary directory and renames it when complete, so a
    process killed in the middle of a save leaves the earlier steps intact; partial
    directories are removed the next time the directory is opened.

    Args:
        directory: the checkpoint directory.
        keep: how many of the latest steps to keep.
        must_exist: if True (resuming), the directory must exist and hold a complete step.

    Raises:
        CheckpointError: `must_exist` and the directory is missing, is not a directory, or
            holds no complete checkpoint; or the directory cannot be opened.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, must_exist: bool = False):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(os.fspath(directory))
        self._check_directory(must_exist)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            create=not must_exist,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        )
        handlers = {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler()}
        try:
            self._manager = ocp.CheckpointManager(
                self.directory, options=options, item_handlers=handlers
            )
        except Exception as e:  # orbax raises assorted types for an unreadable directory
            raise CheckpointError(
                f"cannot open --checkpoint-dir {self.directory!r}: {_first_line(e)}"
            ) from e
        if must_exist and self.latest_step() is None:
            entries = sorted(os.listdir(self.directory))
            seen = f"it holds {entries[:6]}" if entries else "it is empty"
            raise CheckpointError(
                f"--checkpoint-dir {self.directory!r} holds no complete checkpoint to resume "
                f"from ({seen}; expected step directories such as '100/' written by a previous "
                "run)"
            )

    def _check_directory(self, must_exist: bool) -> None:
        if must_exist and not os.path.exists(self.directory):
            raise CheckpointError(
                f"--checkpoint-dir {self.directory!r} does not exist, so there is nothing to "
                "resume from; run without --resume to start a new run there"
            )
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointError(
                f"--checkpoint-dir {self.directory!r} exists and is not a directory"
            )

    def all_steps(self) -> list[int]:
        """The complete steps on disk, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest complete step, or None."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any, config: Mapping[str, Any]) -> None:
        """Writes `state` (any pytree of arrays) and `config` (JSON-able) as `step`, blocking."""
        ocp = self._ocp
        named = {k: _to_storable(v) for k, v in named_leaves(state).items()}
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(named), config=ocp.args.JsonSave(dict(config))
        )
        self._manager.save(step, args=args, force=True)
        self._manager.wait_until_finished()

    def read_config(self, step: int) -> dict[str, Any]:
        """The config saved with `step`.

        Raises:
            CheckpointError: the step's config cannot be read.
        """
        args = self._ocp.args.Composite(config=self._ocp.args.JsonRestore())
        try:
            return self._manager.restore(step, args=args)["config"]
        except Exception as e:
            raise self._damaged(step, e) from e

    def read_arrays(self, step: int) -> dict[str, np.ndarray]:
        """`{dotted name: np.ndarray}` saved as `step` (PRNG keys as their raw uint32 data).

        Raises:
            CheckpointError: the step cannot be read.
        """
        return {k: np.asarray(v) for k, v in self._read_state(step, None).items()}

    def restore(
        self, step: int, template: Any, config: Mapping[str, Any], sharding: Any = None
    ) -> Any:
        """Restores `step` into the structure of `template` after checking it matches.

        Args:
            step: the step to restore.
            template: a pytree with the run's current state (arrays or ShapeDtypeStructs);
                only its structure, shapes and dtypes are used.
            config: this run's config; every difference in its `model` entry is an error,
                a difference in its `run` entry a warning.
            sharding: where the restored arrays go (e.g. replicated over the mesh).

        Returns:
            A pytree like `template` holding the checkpoint's values.

        Raises:
            CheckpointError: the checkpoint is damaged, or was written for a model of another
                configuration (the message lists every differing setting or array).
        """
        self.check_config(step, config)
        named = named_leaves(template)
        self.check_arrays(step, named)
        restored = self._read_state(step, abstract_template(named, sharding))
        return rewrap_keys(template, restored)

    def check_config(self, step: int, config: Mapping[str, Any]) -> None:
        """Refuses a checkpoint of another model; warns about other run settings.

        Raises:
            CheckpointError: the `model` entries differ (or the config cannot be read).
        """
        saved = self.read_config(step)
        config = dict(config)
        model_diffs = diff_configs(saved.get("model", {}), config.get("model", {}), "model.")
        if model_diffs:
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory!r} was written for a different "
                f"model configuration: {'; '.join(model_diffs)}. Use the same flags as the run "
                "that wrote it, or a new --checkpoint-dir"
            )
        run_diffs = diff_configs(saved.get("run", {}), config.get("run", {}), "run.")
        if run_diffs:
            warnings.warn(
                "resuming with settings that differ from the checkpointed run (the result will "
                "not equal an uninterrupted run): " + "; ".join(run_diffs),
                UserWarning,
                stacklevel=3,
            )

    def check_arrays(self, step: int, named: Mapping[str, Any]) -> None:
        """Checks that `step` holds exactly the arrays of `named`, with their shapes and dtypes.

        Raises:
            CheckpointError: arrays are missing, extra or differently shaped (all are listed),
                or the step's metadata cannot be read.
        """
        try:
            metadata = dict(self._manager.item_metadata(step)["state"])
            saved = {k: (tuple(m.shape), np.dtype(m.dtype)) for k, m in metadata.items()}
        except Exception as e:
            raise self._damaged(step, e) from e
        wanted = {k: _shape_dtype(v) for k, v in named.items()}
        problems = []
        if missing := sorted(set(wanted) - set(saved)):
            problems.append(f"arrays this model has but the checkpoint lacks: {missing}")
        if extra := sorted(set(saved) - set(wanted)):
            problems.append(f"arrays in the checkpoint this model lacks: {extra}")
        for k in wanted.keys() & saved.keys():
            if wanted[k] != saved[k]:
                problems.append(
                    f"{k}: checkpoint has shape {saved[k][0]} {saved[k][1]}, "
                    f"this model has {wanted[k][0]} {wanted[k][1]}"
                )
        if problems:
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory!r} does not fit this model: "
                + "; ".join(sorted(problems))
            )

    def _read_state(self, step: int, abstract: Mapping[str, Any] | None) -> dict[str, Any]:
        ocp = self._ocp
        restore = ocp.args.StandardRestore(abstract)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(state=restore))
            return dict(restored["state"])
        except Exception as e:
            raise self._damaged(step, e) from e

    def _damaged(self, step: int, e: BaseException) -> CheckpointError:
        others = [s for s in self.all_steps() if s != step]
        hint = ""
        if others:
            step_dir = os.path.join(self.directory, str(step))
            hint = (
                f"; earlier complete steps are {others}: delete {step_dir!r} to resume from "
                "the newest of them"
            )
        return CheckpointError(
            f"checkpoint step {step} in {self.directory!r} is damaged or unreadable "
            f"({_first_line(e)}){hint}"
        )

    def close(self) -> None:
        """Waits for pending work and releases the manager."""
        self._manager.close()
