"""Sequence classification with jaxlstm: the tutorials' `LSTM` + `Linear` classifier, ported.

The classifier is `jaxlstm.LSTM(I, H, L, batch_first=True)` and `nnx.Linear` on the LSTM's
final hidden state, trained with softmax cross-entropy. For a one-directional LSTM on
unpadded input that feature is exactly the tutorials' `fc(lstm_out[:, -1, :])`; for padded
input it is the output at each sequence's own last step, and for a bidirectional LSTM it is
`[forward h_n, backward h_n]` (the backward direction's summary of the whole sequence).

Datasets:

* `digits` (default): scikit-learn's bundled 8x8 handwritten digits (1,797 real images shipped
  inside scikit-learn, no download), each image read row by row as 8 steps of 8 features, 10
  classes, a stratified 75/25 split with a fixed seed.
* `counting`: generated sequences of the tokens A, B, C, D (one-hot), lengths 5-60, padded to 60
  and run with `seq_lengths`; the label is whether A occurs more often than B (ties are never
  generated), which needs memory over the whole sequence.

`--torch-weights FILE` starts from a PyTorch classifier's state_dict (`lstm.*`, `fc.*`, from
`torch.save(model.state_dict(), FILE)` or safetensors), reports its test accuracy before any
training, and trains it further for `--steps` (0: evaluate only). The PyTorch model that
matches this classifier is written out in `TORCH_CLASSIFIER` below.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxlstm
from experiments import training

__all__ = [
    "DATASETS",
    "PRESETS",
    "TORCH_CLASSIFIER",
    "Classifier",
    "ModelChoice",
    "choose_model",
    "counting_data",
    "digits_data",
    "eval_fn",
    "figures",
    "load_torch_classifier",
    "main",
    "make_dataset",
    "parser",
]

Array = jax.Array

COUNT_TOKENS = 4  # A, B and two distractors
COUNT_MIN_LEN, COUNT_MAX_LEN = 5, 60
COUNT_TEST_SIZE = 2000
COUNT_TEST_SEED = 7_777_777

# The PyTorch model whose state_dict `--torch-weights` reads, for reference (and for the tests).
TORCH_CLASSIFIER = """
import torch
from torch import nn

class LSTMClassifier(nn.Module):
    def __init__(self, input_size, hidden_size, num_layers, num_classes, bidirectional=False):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True,
                            bidirectional=bidirectional)
        self.fc = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, x):                      # x: [B, T, I]
        _, (h_n, _) = self.lstm(x)             # h_n: [D*L, B, H]
        if self.lstm.bidirectional:
            features = torch.cat([h_n[-2], h_n[-1]], dim=1)
        else:
            features = h_n[-1]                 # == lstm_out[:, -1, :]
        return self.fc(features)
"""


class Classifier(nnx.Module):
    """`jaxlstm.LSTM` + `nnx.Linear` on the final hidden state (see the module docstring).

    Args:
        input_size: I.
        hidden_size: H.
        num_layers: L.
        num_classes: C.
        bidirectional: D = 2.
        dropout: dropout between LSTM layers (training only).
        proj_size: P (only when loading a torch model that has one).
        rngs: initialises the layers and draws dropout masks.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        num_classes: int,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        proj_size: int = 0,
        rngs: nnx.Rngs,
    ):
        self.lstm = jaxlstm.LSTM(
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout,
            proj_size=proj_size,
            rngs=rngs,
        )
        features = self.lstm.config.num_directions * self.lstm.config.output_size
        self.fc = nnx.Linear(features, num_classes, rngs=rngs)

    def __call__(self, x: Array, seq_lengths: Array | None = None) -> Array:
        """Class logits.

        Args:
            x: `[B, T, I]`, padded past each length when `seq_lengths` is given.
            seq_lengths: `[B]` integer lengths in [1, T], or None (all T).

        Returns:
            `[B, C]` logits.
        """
        _, (h_n, _) = self.lstm(x, seq_lengths=seq_lengths)
        if self.lstm.config.bidirectional:
            features = jnp.concatenate([h_n[-2], h_n[-1]], axis=-1)
        else:
            features = h_n[-1]
        return self.fc(features)


# --------------------------------------------------------------------------- data


def digits_data(seed: int = 0) -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits as sequences: rows are steps, pixels (scaled to [0, 1]) features.

    Args:
        seed: the stratified 75/25 split's `random_state`.

    Returns:
        `{"x_train": [N, 8, 8], "y_train": [N], "x_test": [M, 8, 8], "y_test": [M]}`.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)
    y = data.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def counting_data(
    rng: np.random.Generator, n: int, max_len: int = COUNT_MAX_LEN
) -> dict[str, np.ndarray]:
    """`n` sequences of the counting task, padded with zeros to `max_len`.

    Tokens are A, B, C, D with probabilities drawn per sequence (so either A or B can dominate);
    a sequence with as many A as B is redrawn, so the label is never a tie.

    Args:
        rng: the random source.
        n: how many sequences.
        max_len: T, the padded length (>= 60).

    Returns:
        `{"x": [n, T, 4] one-hot float32, "lengths": [n] int32 in [5, 60], "y": [n] int32}`
        with `y = 1` where A occurs more often than B.
    """
    x = np.zeros((n, max_len, COUNT_TOKENS), np.float32)
    lengths = rng.integers(COUNT_MIN_LEN, COUNT_MAX_LEN + 1, size=n).astype(np.int32)
    y = np.zeros(n, np.int32)
    for i in range(n):
        p_a, p_b = rng.uniform(0.1, 0.4, size=2)
        probs = [p_a, p_b, (1 - p_a - p_b) / 2, (1 - p_a - p_b) / 2]
        while True:
            tokens = rng.choice(COUNT_TOKENS, size=lengths[i], p=probs)
            a, b = int(np.sum(tokens == 0)), int(np.sum(tokens == 1))
            if a != b:
                break
        x[i, np.arange(lengths[i]), tokens] = 1.0
        y[i] = int(a > b)
    return {"x": x, "lengths": lengths, "y": y}


def make_dataset(name: str, seed: int) -> dict[str, Any]:
    """Everything a run needs about its dataset.

    Returns:
        `{"input_size", "num_classes", "class_names", "test": {x, y[, lengths]},
        "batch_fn": (step, batch_size) -> batch, "train_size"}`.

    Raises:
        ValueError: unknown `name`.
    """
    if name == "digits":
        d = digits_data(0)  # the split is fixed (random_state=0) so every run tests on the same 450

        def batch_fn(step: int, batch_size: int) -> dict[str, np.ndarray]:
            rng = np.random.default_rng([seed, step])
            idx = rng.choice(len(d["y_train"]), size=batch_size, replace=False)
            return {"x": d["x_train"][idx], "y": d["y_train"][idx]}

        return {
            "input_size": 8,
            "num_classes": 10,
            "class_names": [str(i) for i in range(10)],
            "test": {"x": d["x_test"], "y": d["y_test"]},
            "batch_fn": batch_fn,
            "train_size": len(d["y_train"]),
        }
    if name == "counting":

        def batch_fn(step: int, batch_size: int) -> dict[str, np.ndarray]:
            return counting_data(np.random.default_rng([seed, step]), batch_size)

        return {
            "input_size": COUNT_TOKENS,
            "num_classes": 2,
            "class_names": ["more B than A", "more A than B"],
            "test": counting_data(np.random.default_rng(COUNT_TEST_SEED), COUNT_TEST_SIZE),
            "batch_fn": batch_fn,
            "train_size": None,  # fresh sequences every step
        }
    raise ValueError(f"--dataset must be one of {DATASETS}, got {name!r}")


DATASETS = ("digits", "counting")


# --------------------------------------------------------------------------- torch weights


def load_torch_classifier(
    path_or_state_dict: Any, *, input_size: int, num_classes: int, rngs: nnx.Rngs | None = None
) -> Classifier:
    """A `Classifier` holding a PyTorch classifier's weights (`lstm.*` and `fc.*` keys).

    The LSTM's structure (H, L, bidirectional, P, bias) is read from the weights' shapes.

    Args:
        path_or_state_dict: a torch checkpoint file (`.pt`, `.pth`, `.bin`, `.ckpt`,
            TorchScript), a `.safetensors` file, or a state_dict, nested in a training
            checkpoint or not; read by `jaxlstm.read_state_dict`, which runs no code from it.
        input_size: I the dataset needs.
        num_classes: C the dataset needs.
        rngs: for the (dropout) streams; default `nnx.Rngs(0)`.

    Returns:
        The classifier with the torch weights loaded.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: keys are missing or unexpected, or the input size, class count or any
            shape does not fit (the message names the key, expected and actual shapes).
    """
    sd = jaxlstm.read_state_dict(path_or_state_dict)
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        where = f"--torch-weights {os.fspath(path_or_state_dict)!r}"
    else:
        where = "the torch state_dict"
    head = ("fc.weight", "fc.bias")
    unexpected = sorted(k for k in sd if not (k.startswith("lstm.") or k in head))
    missing = [k for k in ("fc.weight", "fc.bias") if k not in sd]
    if unexpected or missing:
        raise ValueError(
            f"{where} is not an LSTM classifier's state_dict (expected keys 'lstm.*', 'fc.weight', "
            f"'fc.bias'): missing {missing}, unexpected {unexpected[:8]}"
        )
    config = jaxlstm.LSTMConfig.from_state_dict(sd, prefix="lstm.", batch_first=True)
    if config.input_size != input_size:
        raise ValueError(
            f"{where}: lstm.weight_ih_l0 takes input_size={config.input_size} features, but the "
            f"dataset has {input_size}"
        )
    features = config.num_directions * config.output_size
    expected_fc = (num_classes, features)
    if tuple(sd["fc.weight"].shape) != expected_fc or tuple(sd["fc.bias"].shape) != (num_classes,):
        raise ValueError(
            f"{where}: fc.weight must have shape {expected_fc} and fc.bias ({num_classes},) for "
            f"{num_classes} classes and {features} LSTM features, got "
            f"{tuple(sd['fc.weight'].shape)} "
            f"and {tuple(sd['fc.bias'].shape)}"
        )
    if not config.bias:
        raise ValueError(
            f"{where}: the LSTM has no biases (bias=False); this classifier expects lstm.bias_*"
        )
    model = Classifier(
        config.input_size,
        config.hidden_size,
        config.num_layers,
        num_classes,
        bidirectional=config.bidirectional,
        proj_size=config.proj_size,
        rngs=nnx.Rngs(0) if rngs is None else rngs,
    )
    jaxlstm.load_torch_state_dict(model.lstm, sd, prefix="lstm.")
    model.fc.kernel.set_value(jnp.asarray(np.asarray(sd["fc.weight"], np.float32).T))
    model.fc.bias.set_value(jnp.asarray(np.asarray(sd["fc.bias"], np.float32)))
    return model


# --------------------------------------------------------------------------- steps


def loss_fn(
    model: Classifier, batch: dict[str, Array], carry: Any
) -> tuple[Array, tuple[dict, Any]]:
    """Mean softmax cross-entropy and batch accuracy.

    Args:
        model: the classifier.
        batch: `{"x": [B, T, I], "y": [B]}`, with `"lengths": [B]` for padded sequences.
        carry: unused (None), passed through.
    """
    logits = model(batch["x"], batch.get("lengths"))
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
    return loss, ({"accuracy": accuracy}, carry)


def eval_fn(model: Classifier, batch: dict[str, Array]) -> dict[str, Array]:
    """Logits of the test set (accuracy and the confusion matrix are computed from them)."""
    return {"logits": model(batch["x"], batch.get("lengths"))}


PRESETS = {
    "digits": {"steps": 1500, "batch_size": 64, "hidden_size": 64, "num_layers": 1, "lr": 1e-2},
    "counting": {"steps": 600, "batch_size": 64, "hidden_size": 32, "num_layers": 1, "lr": 1e-2},
}
SHARED_DEFAULTS = {"save_every": 200, "log_every": 50}
QUICK = {"steps": 8, "batch_size": 8, "hidden_size": 8, "log_every": 4, "save_every": 4}


def _per_dataset(dest: str) -> str:
    return ", ".join(f"{PRESETS[d][dest]:g} with --dataset {d}" for d in DATASETS)


def parser(dataset: str = "digits") -> training.ArgumentParser:
    """The command-line flags, with `dataset`'s defaults (`--help` lists every dataset's)."""
    notes = {dest: _per_dataset(dest) for dest in PRESETS[dataset]}
    notes["out_dir"] = (
        "runs/classify-DATASET, with -bidirectional, -torch-weights and -quick appended for "
        "such runs"
    )
    p = training.base_parser(
        "python -m experiments.classify",
        __doc__.split("\n\n")[0],
        defaults={**PRESETS[dataset], **SHARED_DEFAULTS},
        quick=QUICK,
        default_notes=notes,
    )
    p.add_argument(
        "--dataset",
        choices=DATASETS,
        default="digits",
        help="digits: sklearn 8x8 digits, rows as steps; counting: variable-length 'more A than "
        "B?' (it selects the defaults of --steps, --batch-size, --hidden-size, --num-layers, "
        "--lr)",
    )
    p.add_argument("--bidirectional", action="store_true", help="a bidirectional LSTM")
    p.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        help="dropout between LSTM layers (needs --num-layers > 1)",
    )
    p.add_argument(
        "--warmup-steps", type=int, default=30, help="linear learning-rate warm-up steps"
    )
    p.add_argument(
        "--torch-weights",
        metavar="FILE",
        default=None,
        help="start from a PyTorch classifier's state_dict (.pt or .safetensors, keys lstm.* "
        "and fc.*); its structure replaces --hidden-size/--num-layers/--bidirectional",
    )
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The checked flags, with the defaults of the dataset `--dataset` names.

    Raises:
        experiments.training.UsageError: a flag is unknown or has an impossible value.
    """
    pre = training.ArgumentParser(add_help=False)
    pre.add_argument("--dataset", choices=DATASETS, default="digits")
    known, _ = pre.parse_known_args(argv)
    args = training.parse_args(parser(known.dataset), argv)
    if not 0.0 <= args.dropout < 1.0:
        raise training.UsageError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.warmup_steps < 0:
        raise training.UsageError(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    return args


# --------------------------------------------------------------------------- the model


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """The classifier a run trains: its structure, and where its first weights come from.

    Attributes:
        hidden_size, num_layers, bidirectional, proj_size, dropout: the structure.
        torch_weights: the `--torch-weights` file, or None for a fresh initialisation.
        loaded: the classifier holding those weights (None without a file).
        initial_accuracy: its test accuracy before any training (None without a file).
    """

    hidden_size: int
    num_layers: int
    bidirectional: bool
    proj_size: int = 0
    dropout: float = 0.0
    torch_weights: str | None = None
    loaded: Classifier | None = None
    initial_accuracy: float | None = None

    def make(self, rngs: nnx.Rngs, input_size: int, num_classes: int) -> Classifier:
        """A classifier of this structure; with `loaded`, holding copies of its weights."""
        model = Classifier(
            input_size,
            self.hidden_size,
            self.num_layers,
            num_classes,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            proj_size=self.proj_size,
            rngs=rngs,
        )
        if self.loaded is not None:
            params = nnx.state(self.loaded, nnx.Param)
            nnx.update(model, jax.tree.map(jnp.array, params))
        return model


def choose_model(args: argparse.Namespace, data: dict[str, Any]) -> ModelChoice:
    """The model the flags ask for; with `--torch-weights`, the file is read here, once.

    Raises:
        experiments.training.UsageError: the --torch-weights file is missing or does not fit
            the dataset.
    """
    if args.torch_weights is None:
        return ModelChoice(
            args.hidden_size, args.num_layers, args.bidirectional, dropout=args.dropout
        )
    try:
        loaded = load_torch_classifier(
            args.torch_weights, input_size=data["input_size"], num_classes=data["num_classes"]
        )
    except (OSError, ValueError) as e:
        message = str(e)
        if not message.startswith("--torch-weights"):
            message = f"--torch-weights {args.torch_weights!r}: {message}"
        raise training.UsageError(message) from e
    cfg = loaded.lstm.config
    logits = training.evaluate(loaded, eval_fn, data["test"])["logits"]
    accuracy, _ = accuracy_and_confusion(logits, data["test"]["y"], data["num_classes"])
    print(
        f"classify: the PyTorch weights in {args.torch_weights} (H={cfg.hidden_size}, "
        f"L={cfg.num_layers}, bidirectional={cfg.bidirectional}) score {accuracy:.2%} "
        "test accuracy before training",
        flush=True,
    )
    return ModelChoice(
        cfg.hidden_size,
        cfg.num_layers,
        cfg.bidirectional,
        cfg.proj_size,
        args.dropout,
        args.torch_weights,
        loaded,
        accuracy,
    )


def default_out_dir(args: argparse.Namespace, choice: ModelChoice) -> str:
    """`runs/classify-<dataset>[-bidirectional][-torch-weights][-quick]`: one directory per
    kind of run."""
    name = f"classify-{args.dataset}"
    if choice.bidirectional:
        name += "-bidirectional"
    if choice.torch_weights is not None:
        name += "-torch-weights"
    return training.default_out_dir(name, quick=args.quick)


def make_task(args: argparse.Namespace, data: dict[str, Any], choice: ModelChoice) -> training.Task:
    """The `training.Task` of the flags, the dataset and the chosen model."""
    schedule = training.cosine_schedule(args.lr, args.steps, args.warmup_steps)
    batch_size, input_size, num_classes = args.batch_size, data["input_size"], data["num_classes"]
    return training.Task(
        name=f"classify:{args.dataset}",
        make_model=lambda rngs: choice.make(rngs, input_size, num_classes),
        tx=optax.adam(schedule),
        loss_fn=loss_fn,
        batch_fn=lambda step: data["batch_fn"](step, batch_size),
        config={
            "model": {
                "task": f"classify:{args.dataset}",
                "input_size": input_size,
                "num_classes": num_classes,
                "hidden_size": choice.hidden_size,
                "num_layers": choice.num_layers,
                "bidirectional": choice.bidirectional,
                "proj_size": choice.proj_size,
            },
            "run": {
                "seed": args.seed,
                "steps": args.steps,
                "batch_size": batch_size,
                "lr": args.lr,
                "warmup_steps": args.warmup_steps,
                "dropout": args.dropout,
                "torch_weights": choice.torch_weights,
            },
        },
        lr_fn=lambda step: float(schedule(step)),
    )


def accuracy_and_confusion(
    logits: np.ndarray, y: np.ndarray, num_classes: int
) -> tuple[float, np.ndarray]:
    """Accuracy and the `[C, C]` confusion matrix (rows: true class, columns: predicted)."""
    pred = np.argmax(logits, -1)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (y, pred), 1)
    return float(np.mean(pred == y)), confusion


# --------------------------------------------------------------------------- plots


def confusion_figure(confusion: np.ndarray, names: list[str], title: str) -> Any:
    """The confusion matrix as an annotated heat map (rows: true class, columns: predicted)."""
    plt = training.pyplot()
    n = len(names)
    longest = max(len(name) for name in names)
    rotate = n * longest > 40  # long names side by side would overlap
    size = (max(6.5, 0.55 * n + 4), max(5, 0.5 * n + 3))
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    im = ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(n), names, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(n), names)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(title, fontsize=10)
    top = confusion.max() if confusion.size else 0
    for i in range(n):
        for j in range(n):
            color = "white" if confusion[i, j] > top / 2 else "black"
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", color=color, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="test examples")
    return fig


def curve_figure(
    history: list[dict],
    test_accuracy: float,
    test_examples: int,
    initial_accuracy: float | None,
    title: str,
    batch: str = "",
) -> Any:
    """Training loss and batch accuracy over the steps, with the test accuracy marked."""
    plt = training.pyplot()
    steps = np.array([r["step"] for r in history], np.float64)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, layout="constrained")
    k = training.smoothing_window(len(steps))
    for ax, key, scale in ((top, "loss", 1.0), (bottom, "accuracy", 100.0)):
        values = np.array([r[key] for r in history], np.float64) * scale
        ax.plot(
            steps, values, lw=0.6, alpha=0.45, color="C0", label=f"each training batch ({batch})"
        )
        xs, smooth = training.centred_mean(steps, values, k)
        if k > 1 and len(smooth):
            ax.plot(
                xs, smooth, lw=1.6, color="C1", label=f"mean over the {k} steps centred on each"
            )
        ax.grid(True, alpha=0.3)
    if len(steps):
        top.set_yscale("log")
    end = steps[-1] if len(steps) else 0
    bottom.axhline(100 * test_accuracy, color="C3", ls="--", lw=1)
    bottom.plot(
        [end],
        [100 * test_accuracy],
        "o",
        color="C3",
        label=f"test accuracy after training: {test_accuracy:.2%} ({test_examples} test examples)",
    )
    if initial_accuracy is not None:
        start = steps[0] - 1 if len(steps) else 0
        bottom.plot(
            [start],
            [100 * initial_accuracy],
            "s",
            color="C4",
            label=f"test accuracy of the PyTorch weights before training: {initial_accuracy:.2%}",
        )
    top.set(ylabel="cross-entropy (nats, log scale)", title=title)
    bottom.set(xlabel="optimizer step", ylabel="accuracy (%)", ylim=(0, 102))
    top.legend(fontsize=8)
    bottom.legend(fontsize=8, loc="lower right")
    return fig


def figures(
    run: str, history: list[dict], metrics: dict[str, Any], class_names: list[str]
) -> dict[str, Any]:
    """`{file name: Figure}`: confusion.png and training.png."""
    confusion = np.asarray(metrics["confusion"])
    n, acc, steps = metrics["test_examples"], metrics["test_accuracy"], metrics["steps"]
    confusion_title = (
        f"{run}: confusion matrix on the test split\n{n} examples, accuracy {acc:.2%} "
        f"after {steps} training steps"
    )
    run_config = metrics["config"]["run"]
    curve_title = (
        f"{run}: training curve (Adam, peak lr {run_config['lr']:g}, warm-up "
        f"{run_config['warmup_steps']} steps, cosine decay)"
    )
    return {
        "confusion.png": confusion_figure(confusion, class_names, confusion_title),
        "training.png": curve_figure(
            history,
            acc,
            n,
            metrics["initial_test_accuracy"],
            curve_title,
            f"{run_config['batch_size']} sequences",
        ),
    }


# --------------------------------------------------------------------------- main


def run_name(args: argparse.Namespace, choice: ModelChoice) -> str:
    """`classify[digits]`, `classify[counting, bidirectional]`, ...: names the run in output."""
    extras = [args.dataset]
    if choice.bidirectional:
        extras.append("bidirectional")
    if choice.torch_weights is not None:
        extras.append("from PyTorch weights")
    return f"classify[{', '.join(extras)}]"


def summary(name: str) -> Callable[[dict[str, Any]], str]:
    """The one line printed at the end of a run named `name`."""

    def line(m: dict[str, Any]) -> str:
        return (
            f"{name}: test accuracy {m['test_accuracy']:.2%} on {m['test_examples']} examples "
            f"after {m['steps']} steps; train {m['train_seconds']:.1f} s, total "
            f"{m['total_seconds']:.1f} s on {m['devices']} device(s)"
        )

    return line


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the experiment; returns the metrics it writes to `--out-dir`/metrics.json.

    Raises:
        experiments.training.UsageError: a flag has an impossible value, --torch-weights does
            not fit, --out-dir holds another run's results, or (`CheckpointError`) see
            `experiments.training.Checkpoints`.
    """
    t_start = time.perf_counter()
    args = parse(argv)
    mesh = training.start_devices(args)
    data = make_dataset(args.dataset, args.seed)
    choice = choose_model(args, data)
    out_dir = args.out_dir or default_out_dir(args, choice)
    task = make_task(args, data, choice)
    result = training.train(task, mesh=mesh, **training.train_options(args, out_dir))
    logits = result.evaluate(eval_fn, data["test"])["logits"]
    accuracy, confusion = accuracy_and_confusion(logits, data["test"]["y"], data["num_classes"])
    history = result.history
    metrics = {
        "dataset": args.dataset,
        "test_accuracy": accuracy,
        "initial_test_accuracy": choice.initial_accuracy,
        "train_seconds": round(result.train_seconds, 3),
        "steps": result.end_step,
        "start_step": result.start_step,
        "final_loss": history[-1]["loss"] if history else None,
        "test_examples": len(data["test"]["y"]),
        "confusion": confusion.tolist(),
        "devices": jax.device_count(),
        "params": training.param_count(result.model),
        "config": task.config,
    }
    name = run_name(args, choice)
    figs = None if args.no_plots else lambda: figures(name, history, metrics, data["class_names"])
    return training.finish(out_dir, metrics, t_start, summary(name), figs)


if __name__ == "__main__":
    training.entry_point(main)
