"""Predict the next point of a sine wave: the PyTorch LSTM tutorial, ported to jaxlstm.

The tutorial trains `nn.LSTM(1, H, batch_first=True)` + `nn.Linear(H, 1)` on windows of 50
points of `sin` over `linspace(start, start + 10, 50)` with a random start: inputs are points
0..48, targets points 1..49, Adam on the MSE. It then feeds the model its own predictions to
draw the curve. Here the same model is `jaxlstm.LSTM` + `nnx.Linear`, trained on batches of
random windows with one jitted step, and evaluated on 256 held-out windows two ways:

* teacher-forced: the MSE of the 49 next-point predictions given the true points;
* free-running rollout: the true points 0..9 warm the state up, then the model's own prediction
  is fed back for 39 steps; the MSE is over the 40 predicted points 10..49.

The teacher-forced MSE cannot go much below about 4e-4: the first prediction of each window sees
a single point, which does not tell whether the wave is rising or falling (for the step
10/49 that ambiguity alone costs about sin²(0.2)/2 / 49 ≈ 4e-4). The rollout, which starts
after 10 points, has no such floor.

Run `python -m experiments.sine --help` for the flags. `--carry-state` reproduces the
tutorial's habit of carrying `(h, c)` from one batch to the next (detached with
`jax.lax.stop_gradient`, i.e. truncated backpropagation through time); by default every
window starts from zeros.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxlstm
from experiments import training

__all__ = [
    "WARMUP",
    "WINDOW",
    "SineModel",
    "eval_fn",
    "figures",
    "main",
    "make_task",
    "make_windows",
    "parser",
    "rollout",
]

WINDOW = 50  # points per window, as in the tutorial
SPAN = 10.0  # each window covers [start, start + SPAN]
WARMUP = 10  # true points fed before the free-running rollout
EVAL_WINDOWS = 256
EVAL_SEED = 20_240_601  # the held-out windows are the same for every --seed

Array = jax.Array


class SineModel(nnx.Module):
    """`jaxlstm.LSTM(1, H, L, batch_first=True)` followed by `nnx.Linear(H, 1)` at every step.

    Args:
        hidden_size: H.
        num_layers: L.
        rngs: initialises both layers.
    """

    def __init__(self, hidden_size: int, num_layers: int, *, rngs: nnx.Rngs):
        self.lstm = jaxlstm.LSTM(1, hidden_size, num_layers, batch_first=True, rngs=rngs)
        self.head = nnx.Linear(hidden_size, 1, rngs=rngs)

    def __call__(
        self, x: Array, hx: tuple[Array, Array] | None = None
    ) -> tuple[Array, tuple[Array, Array]]:
        """Next-point predictions.

        Args:
            x: `[B, T, 1]` points.
            hx: `(h [L, B, H], c [L, B, H])` or None for zeros.

        Returns:
            `(pred [B, T, 1], (h_n [L, B, H], c_n [L, B, H]))`.
        """
        out, state = self.lstm(x, hx)
        return self.head(out), state


def make_windows(starts: np.ndarray) -> np.ndarray:
    """Windows of the tutorial: `sin(linspace(start, start + 10, 50))`.

    Args:
        starts: `[B]` start points.

    Returns:
        `[B, 50]` float32 windows.
    """
    t = np.asarray(starts, np.float64)[:, None] + np.linspace(0.0, SPAN, WINDOW)[None, :]
    return np.sin(t).astype(np.float32)


def train_batch(seed: int, step: int, batch_size: int) -> dict[str, np.ndarray]:
    """The batch of `step`: `[B, 50]` windows, starts uniform in [0, 10), from (seed, step) only."""
    rng = np.random.default_rng([seed, step])
    return {"windows": make_windows(rng.uniform(0.0, SPAN, batch_size))}


def eval_windows(n: int = EVAL_WINDOWS) -> np.ndarray:
    """The `[n, 50]` held-out windows (a fixed seed, disjoint from every training stream)."""
    rng = np.random.default_rng(EVAL_SEED)
    return make_windows(rng.uniform(0.0, SPAN, n))


def loss_fn(
    model: SineModel, batch: dict[str, Array], carry: Any
) -> tuple[Array, tuple[dict, Any]]:
    """Teacher-forced next-point MSE; `carry` is `(h, c)` with `--carry-state`, else None.

    Args:
        model: the model.
        batch: `{"windows": [B, 50]}`.
        carry: the state left by the previous batch (detached), or None.

    Returns:
        `(loss, ({}, new_carry))`.
    """
    w = batch["windows"][..., None]
    pred, state = model(w[:, :-1], carry)
    loss = jnp.mean((pred - w[:, 1:]) ** 2)
    new_carry = None if carry is None else jax.lax.stop_gradient(state)
    return loss, ({}, new_carry)


def rollout(model: SineModel, windows: Array, warmup: int = WARMUP) -> Array:
    """Free-running predictions after `warmup` true points.

    Args:
        model: the model.
        windows: `[B, 50]`.
        warmup: true points fed first.

    Returns:
        `[B, 50 - warmup]` predictions of points `warmup..49`, each step fed the previous
        prediction.
    """
    x = windows[:, :warmup, None]
    out, state = model(x)
    first = out[:, -1:]  # [B, 1, 1]: the prediction of point `warmup`

    def step(carry, _):
        point, hx = carry
        pred, hx = model(point, hx)
        return (pred, hx), pred[:, 0, 0]

    _, preds = jax.lax.scan(step, (first, state), None, length=WINDOW - 1 - warmup)
    return jnp.concatenate([first[:, :, 0], preds.T], axis=1)


def eval_fn(model: SineModel, batch: dict[str, Array]) -> dict[str, Array]:
    """Teacher-forced and rollout MSE, and the predictions for the plot.

    Args:
        model: the model.
        batch: `{"windows": [B, 50]}`.

    Returns:
        `{"teacher_forced_mse": scalar, "rollout_mse": scalar, "teacher_forced": [B, 49],
        "rollout": [B, 40]}`.
    """
    w = batch["windows"]
    pred, _ = model(w[:, :-1, None])
    free = rollout(model, w)
    return {
        "teacher_forced_mse": jnp.mean((pred[..., 0] - w[:, 1:]) ** 2),
        "rollout_mse": jnp.mean((free - w[:, WARMUP:]) ** 2),
        "teacher_forced": pred[..., 0],
        "rollout": free,
    }


QUICK = {"steps": 12, "hidden_size": 8, "batch_size": 8, "log_every": 4, "save_every": 4}
DEFAULTS = {
    "steps": 2000,
    "batch_size": 32,
    "hidden_size": 32,
    "num_layers": 1,
    "lr": 1e-2,
    "save_every": 200,
    "log_every": 50,
}


def parser() -> training.ArgumentParser:
    """The command-line flags (shared ones from `experiments.training`, plus the sine's own)."""
    p = training.base_parser(
        "python -m experiments.sine",
        __doc__.split("\n\n")[0],
        defaults=DEFAULTS,
        quick=QUICK,
        default_notes={
            "out_dir": "runs/sine, or runs/sine-carry-state with --carry-state; "
            "-quick appended with --quick"
        },
    )
    p.add_argument(
        "--carry-state",
        action="store_true",
        help="carry (h, c) from batch to batch with stop_gradient, as the tutorial does "
        "(truncated BPTT)",
    )
    p.add_argument(
        "--warmup-steps", type=int, default=50, help="linear learning-rate warm-up steps"
    )
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The checked flags.

    Raises:
        experiments.training.UsageError: a flag has an impossible value (the message names it).
    """
    args = training.parse_args(parser(), argv)
    if args.warmup_steps < 0:
        raise training.UsageError(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    return args


def default_out_dir(args: argparse.Namespace) -> str:
    """`runs/sine` or `runs/sine-carry-state` (`-quick` appended with --quick): each kind of
    run has its own results."""
    name = "sine-carry-state" if args.carry_state else "sine"
    return training.default_out_dir(name, quick=args.quick)


def make_task(args) -> training.Task:
    """The `training.Task` the flags describe."""
    schedule = training.cosine_schedule(args.lr, args.steps, args.warmup_steps)
    seed, batch_size, hidden, layers = args.seed, args.batch_size, args.hidden_size, args.num_layers
    init_carry = None
    if args.carry_state:

        def init_carry():
            shape = (layers, batch_size, hidden)
            return (jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))

    return training.Task(
        name="sine",
        make_model=lambda rngs: SineModel(hidden, layers, rngs=rngs),
        tx=optax.adam(schedule),
        loss_fn=loss_fn,
        batch_fn=lambda step: train_batch(seed, step, batch_size),
        config={
            "model": {"task": "sine", "hidden_size": hidden, "num_layers": layers},
            "run": {
                "seed": seed,
                "steps": args.steps,
                "batch_size": batch_size,
                "lr": args.lr,
                "warmup_steps": args.warmup_steps,
                "carry_state": args.carry_state,
            },
        },
        init_carry=init_carry,
        lr_fn=lambda step: float(schedule(step)),
    )


# --------------------------------------------------------------------------- plots


def loss_figure(history: list[dict], config: dict) -> Any:
    """The training loss per step (log scale) and its centred running mean."""
    plt = training.pyplot()
    steps = np.array([r["step"] for r in history])
    losses = np.array([r["loss"] for r in history])
    model, run = config["model"], config["run"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    ax.semilogy(
        steps,
        losses,
        lw=0.6,
        alpha=0.5,
        color="C0",
        label=f"MSE of each training batch ({run['batch_size']} windows)",
    )
    k = training.smoothing_window(len(losses))
    xs, smooth = training.centred_mean(steps, losses, k)
    if k > 1 and len(smooth):
        ax.semilogy(
            xs, smooth, lw=1.6, color="C1", label=f"mean over the {k} steps centred on each step"
        )
    ax.set(
        xlabel="optimizer step",
        ylabel="teacher-forced MSE (amplitude², log scale)",
        title=f"sine: training loss of LSTM(1, {model['hidden_size']}) × "
        f"{model['num_layers']} layer(s) + Linear, Adam, peak lr {run['lr']:g}",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


def prediction_figure(windows: np.ndarray, result: dict[str, np.ndarray]) -> Any:
    """Four held-out windows: the truth, teacher-forced predictions, the free-running rollout."""
    plt = training.pyplot()
    t = np.linspace(0.0, SPAN, WINDOW)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True, sharey=True, layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axvspan(
            t[0],
            t[WARMUP - 1],
            color="0.9",
            label=f"warm-up: the first {WARMUP} true points are fed in",
        )
        ax.plot(t, windows[i], color="0.55", lw=3, label="truth: sin(t)")
        ax.plot(
            t[1:],
            result["teacher_forced"][i],
            ".",
            color="C2",
            ms=4,
            label="teacher-forced: next point predicted from the true points",
        )
        ax.plot(
            t[WARMUP:],
            result["rollout"][i],
            "-",
            color="C3",
            lw=1.5,
            label="free-running rollout: each prediction fed back as the next input",
        )
        ax.set_title(f"held-out window {i}", fontsize=10)
        ax.grid(True, alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("t − window start (radians)")
    for ax in axes[:, 0]:
        ax.set_ylabel("sin(t) (amplitude, unitless)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(
        f"sine: 4 of the {len(windows)} held-out windows; over all of them teacher-forced MSE "
        f"{float(result['teacher_forced_mse']):.2e}, rollout MSE {float(result['rollout_mse']):.2e}"
    )
    return fig


def figures(history: list[dict], config: dict, windows: np.ndarray, result: dict) -> dict[str, Any]:
    """`{file name: Figure}`: loss.png and prediction.png."""
    return {
        "loss.png": loss_figure(history, config),
        "prediction.png": prediction_figure(windows, result),
    }


# --------------------------------------------------------------------------- main


def summary(m: dict[str, Any]) -> str:
    """The one line printed at the end of a run."""
    return (
        f"sine: teacher-forced MSE {m['teacher_forced_mse']:.2e}, rollout MSE "
        f"{m['rollout_mse']:.2e} after {m['steps']} steps; train {m['train_seconds']:.1f} s, "
        f"total {m['total_seconds']:.1f} s on {m['devices']} device(s)"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the experiment; returns the metrics it writes to `--out-dir`/metrics.json.

    Raises:
        experiments.training.UsageError: a flag has an impossible value, --out-dir holds
            another run's results, or (`CheckpointError`) see
            `experiments.training.Checkpoints`.
    """
    t_start = time.perf_counter()
    args = parse(argv)
    mesh = training.start_devices(args)
    out_dir = args.out_dir or default_out_dir(args)
    task = make_task(args)
    result = training.train(task, mesh=mesh, **training.train_options(args, out_dir))
    windows = eval_windows()
    ev = result.evaluate(eval_fn, {"windows": windows})
    history = result.history
    metrics = {
        "teacher_forced_mse": float(ev["teacher_forced_mse"]),
        "rollout_mse": float(ev["rollout_mse"]),
        "train_seconds": round(result.train_seconds, 3),
        "steps": result.end_step,
        "start_step": result.start_step,
        "final_loss": history[-1]["loss"] if history else None,
        "eval_windows": int(windows.shape[0]),
        "warmup_points": WARMUP,
        "devices": jax.device_count(),
        "params": training.param_count(result.model),
        "config": task.config,
    }
    figs = None if args.no_plots else lambda: figures(history, task.config, windows, ev)
    return training.finish(out_dir, metrics, t_start, summary, figs)


if __name__ == "__main__":
    training.entry_point(main)
