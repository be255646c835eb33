"""The one training loop shared by every experiment.

What a task supplies (a `Task`): a model factory, a loss function, a batch function that is a
pure function of the step number, and its configuration. What this module does with it:

* keeps the model and its `nnx.Optimizer` as one explicit state pytree and runs one jitted
  train step and one jitted eval step over it;
* shards each batch over every visible device along a `Mesh` axis named `data` (parameters and
  optimizer state are replicated), so one code path serves 1 CPU, 8 GPUs or many hosts;
* saves orbax checkpoints every `--save-every` steps (keeping the last `--keep`), resumes from
  the latest with `--resume`, and turns a missing, empty, damaged or mismatched checkpoint into
  a `CheckpointError` that says what is wrong;
* writes one JSON line of metrics per step and shows a tqdm progress bar.

Determinism: the batch of step `s` depends only on `(seed, s)`, the model's initial values only
on the seed, and the carried state (if any) is checkpointed with the parameters. A run
interrupted and resumed therefore ends with bitwise the same parameters as an uninterrupted one.

Why split/merge with `jax.jit` rather than `nnx.jit`: the train step is written as a pure
function `(state, batch, carry) -> (state, carry, metrics)` over the pytree that
`nnx.split` returns for the model and its optimizer (`split_train_state`). (1) That pytree is exactly what orbax saves and
restores and what `jax.device_put` replicates over the mesh, so checkpointing and sharding need
no conversions at the call site; (2) `nnx.jit` walks the Python object graph on every call,
which costs more than a whole step of these small models on a CPU, while `jax.jit` over a
pytree dispatches straight to the compiled executable; (3) the state argument can be donated
(`donate_argnums`) so XLA updates parameters in place. `nnx.merge` inside the traced function
gives the loss function an ordinary module to call, so task code still reads like NNX.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "DATA_AXIS",
    "CheckpointError",
    "Checkpoints",
    "Task",
    "TrainResult",
    "base_parser",
    "check_common_args",
    "cosine_schedule",
    "data_mesh",
    "evaluate",
    "float_tree",
    "make_eval_step",
    "make_train_step",
    "named_leaves",
    "param_count",
    "parse_args",
    "read_metrics",
    "replicate",
    "shard_batch",
    "split_train_state",
    "train",
    "write_json",
]

Array = jax.Array
Batch = Mapping[str, Any]
# loss_fn(model, batch, carry) -> (scalar loss, (extra metrics {name: scalar}, new carry))
LossFn = Callable[[Any, Batch, Any], tuple[Array, tuple[dict[str, Array], Any]]]

DATA_AXIS = "data"
METRICS_FILE = "metrics.jsonl"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, empty, damaged, or was written for another model."""


# --------------------------------------------------------------------------- arguments


def base_parser(
    prog: str,
    description: str,
    *,
    steps: int,
    batch_size: int,
    hidden_size: int,
    num_layers: int,
    lr: float,
    out_dir: str,
    save_every: int,
    log_every: int = 50,
) -> argparse.ArgumentParser:
    """The flags every experiment shares, with the experiment's own defaults.

    Args:
        prog: the program name shown by `--help`, e.g. `python -m experiments.sine`.
        description: the first paragraph of `--help`.
        steps, batch_size, hidden_size, num_layers, lr, out_dir, save_every, log_every: defaults.

    Returns:
        A parser; experiments add their own flags to it.
    """
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=steps, help="optimizer steps in the whole run")
    g.add_argument("--seed", type=int, default=0, help="seed of the initial weights, data and dropout")
    g.add_argument("--hidden-size", type=int, default=hidden_size, help="LSTM hidden size H")
    g.add_argument("--num-layers", type=int, default=num_layers, help="stacked LSTM layers L")
    g.add_argument("--lr", type=float, default=lr, help="peak learning rate of the Adam schedule")
    g.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help="global batch size; must be divisible by the number of devices",
    )
    g.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run (few steps, small model) for smoke tests; overrides the sizes above",
    )
    o = p.add_argument_group("output")
    o.add_argument("--out-dir", default=out_dir, help="where metrics and plots are written")
    o.add_argument(
        "--log-every",
        type=int,
        default=log_every,
        help="steps between progress-bar updates (every step is still logged to metrics.jsonl)",
    )
    o.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    o.add_argument("--no-plots", action="store_true", help="skip writing the .png plots")
    c = p.add_argument_group("checkpoints")
    c.add_argument(
        "--checkpoint-dir",
        default=None,
        help="save orbax checkpoints here (none are written without it)",
    )
    c.add_argument(
        "--save-every", type=int, default=save_every, help="steps between checkpoints (the last step is always saved)"
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
        help="stop after this step without a final save, as if the run had been killed "
        "(for trying out --resume)",
    )
    d = p.add_argument_group("devices")
    d.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first, for a run over several processes/hosts; on "
        "SLURM, Open MPI, Kubernetes or Cloud TPU the three flags below are detected automatically",
    )
    d.add_argument("--coordinator-address", default=None, help="with --distributed: host:port of process 0")
    d.add_argument("--num-processes", type=int, default=None, help="with --distributed: how many processes")
    d.add_argument("--process-id", type=int, default=None, help="with --distributed: this process's index")
    return p


def parse_args(
    parser: argparse.ArgumentParser, argv: list[str] | None, quick: Mapping[str, Any]
) -> argparse.Namespace:
    """Parses `argv`; with `--quick`, `quick` replaces the defaults (explicit flags still win).

    Raises:
        ValueError: see `check_common_args`.
    """
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**quick)
        args = parser.parse_args(argv)
    check_common_args(args)
    if args.distributed:
        # Before anything touches a device: every process then sees every host's devices.
        # CPU processes need a collectives backend (GPU and TPU ignore this option).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    return args


def check_common_args(args: argparse.Namespace) -> None:
    """Rejects impossible values of the shared flags with a message naming the flag.

    Raises:
        ValueError: a count is not positive, or --resume is given without --checkpoint-dir.
    """
    if args.steps < 0:
        raise ValueError(f"--steps must be >= 0 (0 only evaluates), got {args.steps}")
    for flag in ("hidden_size", "num_layers", "batch_size", "log_every", "save_every", "keep"):
        value = getattr(args, flag)
        if value <= 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    if args.lr <= 0 or not math.isfinite(args.lr):
        raise ValueError(f"--lr must be a positive number, got {args.lr}")
    if args.resume and not args.checkpoint_dir:
        raise ValueError("--resume needs --checkpoint-dir DIR to resume from, got no --checkpoint-dir")
    if args.stop_at is not None and not 0 < args.stop_at <= args.steps:
        raise ValueError(f"--stop-at must be in [1, --steps={args.steps}], got {args.stop_at}")


# --------------------------------------------------------------------------- devices


def data_mesh(devices: Any = None) -> Mesh:
    """A 1-D `Mesh` over every device (all hosts' devices when multi-host), axis `data`."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every array of `tree` on every device of `mesh` (the parameters' layout)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh, *, require_divisible: bool = True) -> dict[str, Array]:
    """Splits every array of a global host batch along axis 0 over the mesh's `data` axis.

    Every process holds the same global batch (it is a function of seed and step) and each
    device takes only its slice, so this works unchanged on several hosts.

    Args:
        batch: `{name: [B, ...] array}`, the same B for every entry.
        mesh: the mesh from `data_mesh`.
        require_divisible: if False, a batch that does not split evenly is replicated instead
            (used for evaluation sets of arbitrary size).

    Returns:
        `{name: global jax.Array}` sharded as `PartitionSpec("data")`.

    Raises:
        ValueError: B is not divisible by the number of devices (when required).
    """
    n = mesh.shape[DATA_AXIS]
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        if value.shape[0] % n:
            if require_divisible:
                raise ValueError(
                    f"batch size must be divisible by the number of devices ({n}) to shard "
                    f"'{name}' over the '{DATA_AXIS}' axis, got batch size {value.shape[0]}"
                )
            spec = P()
        else:
            spec = P(DATA_AXIS)
        sharding = NamedSharding(mesh, spec)
        out[name] = jax.make_array_from_callback(value.shape, sharding, lambda idx, v=value: v[idx])
    return out


# --------------------------------------------------------------------------- pure steps


def make_train_step(graphdef: tuple[Any, Any], loss_fn: LossFn, state_sharding: Any = None) -> Callable:
    """The jitted train step `(state, batch, carry) -> (state, carry, metrics)`.

    `state` is `{"model": nnx.State, "optimizer": nnx.State}` (see `split_train_state`).

    Args:
        graphdef: `(model graphdef, optimizer graphdef)` from `split_train_state`.
        loss_fn: `loss_fn(model, batch, carry) -> (loss, (metrics, new_carry))`; `carry` is
            any pytree threaded from step to step (None if unused).
        state_sharding: a sharding for the new state (e.g. replicated), or None.

    Returns:
        A function jitted with the state donated; `metrics` holds `loss` and the extras.
    """

    def train_step(state, batch, carry):
        model = nnx.merge(graphdef[0], state["model"])
        optimizer = nnx.merge(graphdef[1], state["optimizer"])

        def objective(model):
            return loss_fn(model, batch, carry)

        (loss, (metrics, new_carry)), grads = nnx.value_and_grad(objective, has_aux=True)(model)
        optimizer.update(model, grads)
        new_state = {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}
        if state_sharding is not None:
            new_state = jax.lax.with_sharding_constraint(new_state, state_sharding)
        return new_state, new_carry, {"loss": loss, **metrics}

    return jax.jit(train_step, donate_argnums=(0,))


def split_train_state(model: Any, tx: optax.GradientTransformation) -> tuple[tuple[Any, Any], dict[str, Any]]:
    """Creates the `nnx.Optimizer` and splits both into graph definitions and one state pytree.

    Args:
        model: the freshly built model.
        tx: the optax transformation.

    Returns:
        `((model graphdef, optimizer graphdef), {"model": nnx.State, "optimizer": nnx.State})`.
        The optimizer holds no reference to the model (flax >= 0.11), so the two split apart;
        checkpoint names then read `model.lstm.weight_ih_l0`, `optimizer.opt_state.0.mu...`.
    """
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    model_def, model_state = nnx.split(model)
    opt_def, opt_state = nnx.split(optimizer)
    return (model_def, opt_def), {"model": model_state, "optimizer": opt_state}


def make_eval_step(graphdef: Any, eval_fn: Callable[[Any, Batch], Any], out_sharding: Any = None) -> Callable:
    """The jitted eval step `(state, batch) -> eval_fn(model, batch)` with the model in eval mode.

    Args:
        graphdef: from `nnx.split(model)` (the state argument is the matching state).
        eval_fn: `(model, batch) -> pytree of arrays`.
        out_sharding: the results' sharding, e.g. replicated so that every host can read them
            (a result sharded over several hosts cannot be fetched with `jax.device_get`).
    """

    def eval_step(state, batch):
        model = nnx.merge(graphdef, state)
        model.eval()
        return eval_fn(model, batch)

    return jax.jit(eval_step) if out_sharding is None else jax.jit(eval_step, out_shardings=out_sharding)


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


def _abstract(x: Any, sharding: Any) -> jax.ShapeDtypeStruct:
    x = _to_storable(x) if not isinstance(x, jax.ShapeDtypeStruct) else x
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


# --------------------------------------------------------------------------- checkpoints


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _diff_configs(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two JSON-like configs."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        out = []
        for k in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}{k}"
            if k not in saved:
                out.append(f"{name}: not in the checkpoint, this run has {current[k]!r}")
            elif k not in current:
                out.append(f"{name}: checkpoint has {saved[k]!r}, this run has none")
            else:
                out += _diff_configs(saved[k], current[k], name + ".")
        return out
    if saved != current:
        return [f"{prefix.rstrip('.')}: checkpoint has {saved!r}, this run has {current!r}"]
    return []


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
            holds no complete checkpoint.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, must_exist: bool = False):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(os.fspath(directory))
        if must_exist:
            if not os.path.exists(self.directory):
                raise CheckpointError(
                    f"--checkpoint-dir {self.directory!r} does not exist, so there is nothing to "
                    "resume from; run without --resume to start a new run there"
                )
            if not os.path.isdir(self.directory):
                raise CheckpointError(f"--checkpoint-dir {self.directory!r} is not a directory")
        elif os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointError(f"--checkpoint-dir {self.directory!r} exists and is not a directory")
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            create=not must_exist,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        )
        try:
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=options,
                item_handlers={"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler()},
            )
        except Exception as e:  # orbax raises assorted types for an unreadable directory
            raise CheckpointError(f"cannot open --checkpoint-dir {self.directory!r}: {_first_line(e)}") from e
        if must_exist and self.latest_step() is None:
            entries = sorted(os.listdir(self.directory))
            seen = f"it holds {entries[:6]}" if entries else "it is empty"
            raise CheckpointError(
                f"--checkpoint-dir {self.directory!r} holds no complete checkpoint to resume from "
                f"({seen}; expected step directories such as '100/' written by a previous run)"
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
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(named), config=ocp.args.JsonSave(dict(config))),
            force=True,
        )
        self._manager.wait_until_finished()

    def read_config(self, step: int) -> dict[str, Any]:
        """The config saved with `step`.

        Raises:
            CheckpointError: the step's config cannot be read.
        """
        ocp = self._ocp
        try:
            return self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
        except Exception as e:
            raise self._damaged(step, e) from e

    def restore(self, step: int, template: Any, config: Mapping[str, Any], sharding: Any = None) -> Any:
        """Restores `step` into the structure of `template` after checking it matches.

        Args:
            step: the step to restore.
            template: a pytree with the run's current state (arrays or ShapeDtypeStructs);
                only its structure, shapes and dtypes are used.
            config: this run's config; every difference in its `model` entry is an error.
            sharding: where the restored arrays go (e.g. replicated over the mesh).

        Returns:
            A pytree like `template` holding the checkpoint's values.

        Raises:
            CheckpointError: the checkpoint is damaged, or was written for a model of another
                configuration (the message lists every differing setting or array).
        """
        ocp = self._ocp
        saved_config = self.read_config(step)
        model_diffs = _diff_configs(saved_config.get("model", {}), dict(config).get("model", {}), "model.")
        if model_diffs:
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory!r} was written for a different model "
                f"configuration: {'; '.join(model_diffs)}. Use the same flags as the run that wrote "
                "it, or a new --checkpoint-dir"
            )
        run_diffs = _diff_configs(saved_config.get("run", {}), dict(config).get("run", {}), "run.")
        if run_diffs:
            warnings.warn(
                "resuming with settings that differ from the checkpointed run (the result will not "
                "equal an uninterrupted run): " + "; ".join(run_diffs),
                UserWarning,
                stacklevel=2,
            )

        named_template = named_leaves(template)
        try:
            metadata = self._manager.item_metadata(step)["state"]
            saved_shapes = {k: (tuple(m.shape), np.dtype(m.dtype)) for k, m in dict(metadata).items()}
        except Exception as e:
            raise self._damaged(step, e) from e
        wanted = {}
        for k, v in named_template.items():
            stored = _to_storable(v)
            wanted[k] = (tuple(np.shape(stored)), np.dtype(stored.dtype))
        problems = []
        if missing := sorted(set(wanted) - set(saved_shapes)):
            problems.append(f"arrays this model has but the checkpoint lacks: {missing}")
        if extra := sorted(set(saved_shapes) - set(wanted)):
            problems.append(f"arrays in the checkpoint this model lacks: {extra}")
        for k in wanted.keys() & saved_shapes.keys():
            if wanted[k] != saved_shapes[k]:
                problems.append(
                    f"{k}: checkpoint has shape {saved_shapes[k][0]} {saved_shapes[k][1]}, "
                    f"this model has {wanted[k][0]} {wanted[k][1]}"
                )
        if problems:
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory!r} does not fit this model: " + "; ".join(sorted(problems))
            )

        abstract = {k: _abstract(v, sharding) for k, v in named_template.items()}
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
            restored = dict(restored["state"])
        except Exception as e:
            raise self._damaged(step, e) from e
        leaves = []
        for name, like in named_template.items():
            value = restored[name]
            if _is_key(like):
                value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(like))
            leaves.append(value)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)

    def read_arrays(self, step: int) -> dict[str, np.ndarray]:
        """`{dotted name: np.ndarray}` saved as `step` (PRNG keys as their raw uint32 data).

        Raises:
            CheckpointError: the step cannot be read.
        """
        ocp = self._ocp
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
            return {k: np.asarray(v) for k, v in dict(restored["state"]).items()}
        except Exception as e:
            raise self._damaged(step, e) from e

    def _damaged(self, step: int, e: BaseException) -> CheckpointError:
        others = [s for s in self.all_steps() if s != step]
        hint = (
            f"; earlier complete steps are {others}: delete {os.path.join(self.directory, str(step))!r} "
            "to resume from the newest of them"
            if others
            else ""
        )
        return CheckpointError(
            f"checkpoint step {step} in {self.directory!r} is damaged or unreadable ({_first_line(e)}){hint}"
        )

    def close(self) -> None:
        """Waits for pending work and releases the manager."""
        self._manager.close()


# --------------------------------------------------------------------------- metrics


def read_metrics(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON-lines metrics a run wrote into `out_dir` (one dict per step)."""
    path = os.path.join(out_dir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _open_metrics(out_dir: str, start_step: int) -> Any:
    """Opens metrics.jsonl for appending, keeping only lines of steps <= start_step."""
    os.makedirs(out_dir, exist_ok=True)
    kept = [r for r in read_metrics(out_dir) if r.get("step", 0) <= start_step] if start_step else []
    f = open(os.path.join(out_dir, METRICS_FILE), "w")
    for r in kept:
        f.write(json.dumps(r) + "\n")
    return f


# --------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class Task:
    """What an experiment hands to `train`.

    Attributes:
        name: shown on the progress bar.
        make_model: `rngs -> nnx.Module`, the freshly initialised model.
        tx: the optax transformation (its schedule is a function of the optimizer's count).
        loss_fn: `(model, batch, carry) -> (loss, (metrics, new_carry))`.
        batch_fn: `step -> {name: np.ndarray [B, ...]}`, the global batch of that step; it must
            depend only on the step (and the seed it closes over), which makes resuming exact.
        config: JSON-able `{"model": {...}, "run": {...}}`; a checkpoint whose `model` entry
            differs is refused, a different `run` entry is warned about.
        init_carry: `() -> pytree` of the state threaded between steps (None: no carry).
        lr_fn: `step -> learning rate`, logged with the metrics (optional).
    """

    name: str
    make_model: Callable[[nnx.Rngs], Any]
    tx: optax.GradientTransformation
    loss_fn: LossFn
    batch_fn: Callable[[int], Mapping[str, np.ndarray]]
    config: Mapping[str, Any]
    init_carry: Callable[[], Any] | None = None
    lr_fn: Callable[[int], float] | None = None


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        model: the trained model (an ordinary nnx.Module, on the mesh's devices).
        state: the final training state pytree (model and optimizer).
        graphdef: `(model graphdef, optimizer graphdef)`, as `split_train_state` returns.
        mesh: the mesh the run used.
        start_step: the step the run started from (0, or the resumed checkpoint's step).
        end_step: the last completed step.
        train_seconds: wall time of the training loop, compilation included.
        history: `[{"step", "loss", ...}]` of the whole run, resumed parts included.
    """

    model: Any
    state: Any
    graphdef: Any
    mesh: Mesh
    start_step: int
    end_step: int
    train_seconds: float
    history: list[dict[str, Any]]

    def evaluate(self, eval_fn: Callable[[Any, Batch], Any], batch: Mapping[str, np.ndarray]) -> Any:
        """`evaluate(self.model, eval_fn, batch, self.mesh)`."""
        return evaluate(self.model, eval_fn, batch, self.mesh)


def evaluate(
    model: Any, eval_fn: Callable[[Any, Batch], Any], batch: Mapping[str, np.ndarray], mesh: Mesh | None = None
) -> Any:
    """Runs `eval_fn(model, batch)` jitted, in eval mode, the batch sharded when it splits evenly.

    Args:
        model: an nnx.Module (left unchanged).
        eval_fn: `(model, batch) -> pytree of arrays`.
        batch: `{name: [N, ...] np.ndarray}`.
        mesh: the device mesh (default: every device).

    Returns:
        `eval_fn`'s result as numpy arrays.
    """
    mesh = data_mesh() if mesh is None else mesh
    graphdef, state = nnx.split(model)
    step = make_eval_step(graphdef, eval_fn, NamedSharding(mesh, P()))
    return jax.device_get(step(replicate(state, mesh), shard_batch(batch, mesh, require_divisible=False)))


def train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `train` from the flags of `base_parser` (every experiment's)."""
    return {
        "steps": args.steps,
        "seed": args.seed,
        "out_dir": args.out_dir,
        "checkpoint_dir": args.checkpoint_dir,
        "save_every": args.save_every,
        "keep": args.keep,
        "resume": args.resume,
        "stop_at": args.stop_at,
        "log_every": args.log_every,
        "progress": not args.no_progress,
    }


def train(
    task: Task,
    *,
    steps: int,
    seed: int,
    out_dir: str,
    mesh: Mesh | None = None,
    checkpoint_dir: str | None = None,
    save_every: int = 100,
    keep: int = 3,
    resume: bool = False,
    stop_at: int | None = None,
    log_every: int = 50,
    progress: bool = True,
) -> TrainResult:
    """Trains `task` for `steps` steps (or until `stop_at`), checkpointing and logging.

    Args:
        task: the experiment.
        steps: total steps of the run (a resumed run continues to the same total).
        seed: seeds the model's initialisation (`nnx.Rngs(seed)`).
        out_dir: metrics.jsonl is written here.
        mesh: the device mesh (default: every device on the `data` axis).
        checkpoint_dir: orbax checkpoints go here (None: no checkpoints).
        save_every: steps between checkpoints; the last step is always saved.
        keep: checkpoints kept.
        resume: continue from the latest checkpoint in `checkpoint_dir`.
        stop_at: stop after this step without a final save, as an interrupted run would.
        log_every: steps between progress updates (each fetches the pending metrics).
        progress: show a tqdm progress bar (on process 0 only).

    Returns:
        A `TrainResult`.

    Raises:
        CheckpointError: see `Checkpoints`; also when `checkpoint_dir` already holds
            checkpoints and `resume` is False (so a run never silently mixes with another).
        ValueError: the batch does not split over the devices.
    """
    from tqdm.auto import tqdm

    mesh = data_mesh() if mesh is None else mesh
    replicated = NamedSharding(mesh, P())
    model = task.make_model(nnx.Rngs(seed))
    graphdef, state = split_train_state(model, task.tx)
    carry = task.init_carry() if task.init_carry is not None else None
    config = json.loads(json.dumps(task.config))  # what the checkpoint will hold, normalised

    checkpoints = None
    start = 0
    if checkpoint_dir is not None:
        checkpoints = Checkpoints(checkpoint_dir, keep=keep, must_exist=resume)
        latest = checkpoints.latest_step()
        if resume:
            assert latest is not None  # Checkpoints(must_exist=True) guarantees it
            restored = checkpoints.restore(latest, {**state, "carry": carry}, config, replicated)
            carry, start = restored.pop("carry"), latest
            state = restored
        elif latest is not None:
            raise CheckpointError(
                f"--checkpoint-dir {checkpoints.directory!r} already holds checkpoints "
                f"(steps {checkpoints.all_steps()}); pass --resume to continue that run or choose "
                "another directory"
            )
    state = replicate(state, mesh)
    carry = replicate(carry, mesh)
    end = steps if stop_at is None else min(stop_at, steps)

    train_step = make_train_step(graphdef, task.loss_fn, replicated)
    is_main = jax.process_index() == 0
    metrics_file = _open_metrics(out_dir, start) if is_main else None
    bar = tqdm(total=steps, initial=start, desc=task.name, disable=not (progress and is_main), dynamic_ncols=True)
    pending: list[tuple[int, dict[str, Array]]] = []
    t0 = time.perf_counter()
    started = time.time()

    def flush():
        fetched = jax.device_get([m for _, m in pending])
        for (step, _), m in zip(pending, fetched, strict=True):
            record = {"step": step, **{k: float(v) for k, v in m.items()}}
            if task.lr_fn is not None:
                record["lr"] = float(task.lr_fn(step - 1))
            record["time"] = round(time.time() - started, 4)
            if metrics_file is not None:
                metrics_file.write(json.dumps(record) + "\n")
        if pending:
            bar.update(pending[-1][0] - bar.n)
            bar.set_postfix(loss=f"{float(fetched[-1]['loss']):.3e}")
        pending.clear()

    try:
        for step in range(start, end):
            batch = shard_batch(task.batch_fn(step), mesh)
            state, carry, metrics = train_step(state, batch, carry)
            done = step + 1
            pending.append((done, metrics))
            if done % log_every == 0 or done == end:
                flush()
            if checkpoints is not None and (done % save_every == 0 or done == steps):
                flush()
                checkpoints.save(done, {**state, "carry": carry}, config)
        jax.block_until_ready(state)
        flush()
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
        if checkpoints is not None:
            checkpoints.close()
    seconds = time.perf_counter() - t0
    model = nnx.merge(graphdef[0], state["model"])
    return TrainResult(
        model=model,
        state=state,
        graphdef=graphdef,
        mesh=mesh,
        start_step=start,
        end_step=end,
        train_seconds=seconds,
        history=read_metrics(out_dir) if is_main else [],
    )


def write_json(path: str, obj: Mapping[str, Any]) -> None:
    """Writes `obj` as indented JSON (process 0 only)."""
    if jax.process_index() != 0:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def finish(out_dir: str, metrics: dict[str, Any], t_start: float, summary: Callable[[dict], str], plot: Callable[[], None] | None) -> dict[str, Any]:
    """Ends a run on process 0: plots, `metrics.json` with `total_seconds`, a one-line summary.

    Args:
        out_dir: where the files go.
        metrics: the run's metrics; `total_seconds` (since `t_start`) is added.
        t_start: `time.perf_counter()` at the start of the run.
        summary: the one line printed last, from the final metrics.
        plot: writes the plots into `out_dir`, or None to skip them.

    Returns:
        `metrics`.
    """
    if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        if plot is not None:
            plot()
        metrics["total_seconds"] = round(time.perf_counter() - t_start, 3)
        write_json(os.path.join(out_dir, "metrics.json"), metrics)
        print(f"{summary(metrics)}; wrote {out_dir}/", flush=True)
    return metrics


def param_count(model: Any) -> int:
    """Number of scalars in the model's `nnx.Param`s."""
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))))


def cosine_schedule(lr: float, steps: int, warmup: int) -> optax.Schedule:
    """Linear warm-up to `lr` over `warmup` steps, then cosine decay to `lr / 100` at `steps`."""
    warmup = max(1, min(warmup, steps - 1)) if steps > 1 else 0
    if warmup == 0:
        return optax.constant_schedule(lr)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1), end_value=lr / 100)


def float_tree(tree: Any) -> Any:
    """A pytree of arrays as nested Python floats/lists (JSON-able)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x).tolist(), tree)


