"""The one training loop every experiment shares: `Task` in, `TrainResult` out.

What a task supplies (a `Task`): a model factory, a loss function, a batch function that is a
pure function of the step number, and its configuration. What `train` does with it: keeps the
model and its optimizer as one state pytree, runs the jitted train step over batches sharded
on the device mesh, saves and resumes checkpoints, logs every step's metrics and shows a
progress bar. `evaluate` runs an eval function on the trained model; `finish` writes the plots,
`metrics.json` and the one-line summary.

Determinism: the batch of step `s` depends only on `(seed, s)`, the model's initial values only
on the seed, and the carried state (if any) is checkpointed with the parameters. A run
interrupted and resumed therefore ends with bitwise the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from experiments.training.checkpoints import CheckpointError, Checkpoints
from experiments.training.mesh import data_mesh, replicate, shard_batch
from experiments.training.metrics import MetricsLog, read_metrics, write_json
from experiments.training.outputs import SUMMARY_FILE, check_out_dir
from experiments.training.plots import save_figures
from experiments.training.steps import (
    Batch,
    LossFn,
    make_eval_step,
    make_train_step,
    split_train_state,
)

__all__ = ["Task", "TrainResult", "evaluate", "finish", "train"]


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

    def evaluate(
        self, eval_fn: Callable[[Any, Batch], Any], batch: Mapping[str, np.ndarray]
    ) -> Any:
        """`evaluate(self.model, eval_fn, batch, self.mesh)`."""
        return evaluate(self.model, eval_fn, batch, self.mesh)


def evaluate(
    model: Any,
    eval_fn: Callable[[Any, Batch], Any],
    batch: Mapping[str, np.ndarray],
    mesh: Mesh | None = None,
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
    sharded = shard_batch(batch, mesh, require_divisible=False)
    return jax.device_get(step(replicate(state, mesh), sharded))


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Which steps a run takes, and after which it logs and saves."""

    start: int
    end: int
    steps: int
    log_every: int
    save_every: int

    def logs_after(self, done: int) -> bool:
        return done % self.log_every == 0 or done == self.end

    def saves_after(self, done: int) -> bool:
        return done % self.save_every == 0 or done == self.steps


def _starting_point(
    checkpoints: Checkpoints | None,
    resume: bool,
    state: Any,
    carry: Any,
    config: Mapping[str, Any],
    sharding: Any,
) -> tuple[int, Any, Any]:
    """`(start step, state, carry)`: the fresh ones, or the latest checkpoint's with `resume`.

    Raises:
        CheckpointError: see `Checkpoints.restore`; also when the directory already holds
            checkpoints and `resume` is False (a run never silently mixes with another).
    """
    if checkpoints is None:
        return 0, state, carry
    latest = checkpoints.latest_step()
    if resume:
        assert latest is not None  # Checkpoints(must_exist=True) guarantees it
        restored = checkpoints.restore(latest, {**state, "carry": carry}, config, sharding)
        carry = restored.pop("carry")
        return latest, restored, carry
    if latest is not None:
        raise CheckpointError(
            f"--checkpoint-dir {checkpoints.directory!r} already holds checkpoints "
            f"(steps {checkpoints.all_steps()}); pass --resume to continue that run or choose "
            "another directory"
        )
    return 0, state, carry


def _run_steps(
    task: Task,
    train_step: Callable,
    state: Any,
    carry: Any,
    *,
    mesh: Mesh,
    plan: _Plan,
    log: MetricsLog,
    bar: Any,
    checkpoints: Checkpoints | None,
    config: Mapping[str, Any],
) -> tuple[Any, Any]:
    """Runs the steps of `plan` and returns the final `(state, carry)`."""

    def show(record: dict[str, Any] | None) -> None:
        if record is not None:
            bar.update(record["step"] - bar.n)
            bar.set_postfix(loss=f"{record['loss']:.3e}")

    for step in range(plan.start, plan.end):
        batch = shard_batch(task.batch_fn(step), mesh)
        state, carry, metrics = train_step(state, batch, carry)
        done = step + 1
        log.add(done, metrics)
        saves = checkpoints is not None and plan.saves_after(done)
        if plan.logs_after(done) or saves:
            show(log.flush())
        if saves:
            checkpoints.save(done, {**state, "carry": carry}, config)
    jax.block_until_ready(state)
    show(log.flush())
    return state, carry


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
    overwrite: bool = False,
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
        overwrite: allow `out_dir` to hold another run's results (see `check_out_dir`).

    Returns:
        A `TrainResult`.

    Raises:
        UsageError: `out_dir` holds the results of a run of another configuration.
        CheckpointError: see `Checkpoints` and `Checkpoints.restore`; also when
            `checkpoint_dir` already holds checkpoints and `resume` is False.
        ValueError: the batch does not split over the devices.
    """
    from tqdm.auto import tqdm

    mesh = data_mesh() if mesh is None else mesh
    replicated = NamedSharding(mesh, P())
    config = json.loads(json.dumps(task.config))  # what the checkpoint will hold, normalised
    check_out_dir(out_dir, config, overwrite=overwrite, resume=resume)
    graphdef, state = split_train_state(task.make_model(nnx.Rngs(seed)), task.tx)
    carry = task.init_carry() if task.init_carry is not None else None
    checkpoints = None
    if checkpoint_dir is not None:
        checkpoints = Checkpoints(checkpoint_dir, keep=keep, must_exist=resume)
    is_main = jax.process_index() == 0
    try:
        start, state, carry = _starting_point(checkpoints, resume, state, carry, config, replicated)
        # Own copies: the train step donates them, and the task's arrays must stay valid.
        state, carry = replicate((state, carry), mesh, copy=True)
        plan = _Plan(
            start, steps if stop_at is None else min(stop_at, steps), steps, log_every, save_every
        )
        train_step = make_train_step(graphdef, task.loss_fn, replicated)
        t0 = time.perf_counter()
        with (
            MetricsLog(out_dir, start_step=start, lr_fn=task.lr_fn, write=is_main) as log,
            tqdm(
                total=steps,
                initial=start,
                desc=task.name,
                dynamic_ncols=True,
                disable=not (progress and is_main),
            ) as bar,
        ):
            state, carry = _run_steps(
                task,
                train_step,
                state,
                carry,
                mesh=mesh,
                plan=plan,
                log=log,
                bar=bar,
                checkpoints=checkpoints,
                config=config,
            )
        seconds = time.perf_counter() - t0
    finally:
        if checkpoints is not None:
            checkpoints.close()
    return TrainResult(
        model=nnx.merge(graphdef[0], state["model"]),
        state=state,
        graphdef=graphdef,
        mesh=mesh,
        start_step=start,
        end_step=plan.end,
        train_seconds=seconds,
        history=read_metrics(out_dir) if is_main else [],
    )


def finish(
    out_dir: str,
    metrics: dict[str, Any],
    t_start: float,
    summary: Callable[[dict[str, Any]], str],
    figures: Callable[[], Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """Ends a run on process 0: plots, `metrics.json` with `total_seconds`, a one-line summary.

    Args:
        out_dir: where the files go.
        metrics: the run's metrics, with the run's `config` (which `check_out_dir` reads back);
            `total_seconds` (since `t_start`) is added.
        t_start: `time.perf_counter()` at the start of the run.
        summary: the one line printed last, from the final metrics.
        figures: `() -> {file name: matplotlib Figure}` of the plots to write, or None.

    Returns:
        `metrics`.
    """
    if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        if figures is not None:
            save_figures(out_dir, figures())
        metrics["total_seconds"] = round(time.perf_counter() - t_start, 3)
        write_json(os.path.join(out_dir, SUMMARY_FILE), metrics)
        print(f"{summary(metrics)}; wrote {out_dir}/", flush=True)
    return metrics
