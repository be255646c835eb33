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
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxlstm
from experiments import training
from jaxlstm.torch_io import read_state_dict

__all__ = [
    "TORCH_CLASSIFIER",
    "Classifier",
    "counting_data",
    "digits_data",
    "load_torch_classifier",
    "main",
]

Array = jax.Array

COUNT_TOKENS = 4  # A, B and two distractors
COUNT_MIN_LEN, COUNT_MAX_LEN = 5, 60
COUNT_TEST_SIZE = 2000
COUNT_TEST_SEED = 7_777_777

# The PyTorch model whose state_dict `--torch-weights` reads, for reference (and for the tests).
TORCH_CLASSIFIER = '''
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
'''


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
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def counting_data(rng: np.random.Generator, n: int, max_len: int = COUNT_MAX_LEN) -> dict[str, np.ndarray]:
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
            "class_names": ["#A < #B", "#A > #B"],
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
        path_or_state_dict: a `.pt`/`.pth` (read with `weights_only=True`) or `.safetensors`
            file, or a state_dict.
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
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        sd = read_state_dict(path_or_state_dict)
        where = f"--torch-weights {os.fspath(path_or_state_dict)!r}"
    else:
        sd = {k: jaxlstm.torch_io.to_numpy(v) for k, v in path_or_state_dict.items()}
        where = "the torch state_dict"
    unexpected = sorted(k for k in sd if not (k.startswith("lstm.") or k in ("fc.weight", "fc.bias")))
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
            f"{num_classes} classes and {features} LSTM features, got {tuple(sd['fc.weight'].shape)} "
            f"and {tuple(sd['fc.bias'].shape)}"
        )
    if not config.bias:
        raise ValueError(f"{where}: the LSTM has no biases (bias=False); this classifier expects lstm.bias_*")
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


def loss_fn(model: Classifier, batch: dict[str, Array], carry: Any) -> tuple[Array, tuple[dict, Any]]:
    """Mean softmax cross-entropy and batch accuracy on `{"x": [B, T, I], "y": [B][, "lengths": [B]]}`."""
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
QUICK = {"steps": 8, "batch_size": 8, "hidden_size": 8, "log_every": 4, "save_every": 4}


def parser(dataset: str = "digits") -> argparse.ArgumentParser:
    """The command-line flags, with `dataset`'s defaults."""
    d = PRESETS[dataset]
    p = training.base_parser(
        "python -m experiments.classify",
        __doc__.split("\n\n")[0],
        steps=d["steps"],
        batch_size=d["batch_size"],
        hidden_size=d["hidden_size"],
        num_layers=d["num_layers"],
        lr=d["lr"],
        out_dir="runs/classify",
        save_every=200,
        log_every=50,
    )
    p.add_argument(
        "--dataset",
        choices=DATASETS,
        default="digits",
        help="digits: sklearn 8x8 digits, rows as steps; counting: variable-length 'more A than B?' "
        "(the defaults of --steps, --batch-size, ... depend on it)",
    )
    p.add_argument("--bidirectional", action="store_true", help="a bidirectional LSTM")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout between LSTM layers (needs --num-layers > 1)")
    p.add_argument("--warmup-steps", type=int, default=30, help="linear learning-rate warm-up steps")
    p.add_argument(
        "--torch-weights",
        metavar="FILE",
        default=None,
        help="start from a PyTorch classifier's state_dict (.pt or .safetensors, keys lstm.* and fc.*); "
        "its structure replaces --hidden-size/--num-layers/--bidirectional",
    )
    return p


def accuracy_and_confusion(logits: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[float, np.ndarray]:
    """Accuracy and the `[C, C]` confusion matrix (rows: true class, columns: predicted)."""
    pred = np.argmax(logits, -1)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (y, pred), 1)
    return float(np.mean(pred == y)), confusion


def plot_confusion(path: str, confusion: np.ndarray, names: list[str], title: str) -> None:
    """Writes the confusion matrix as an annotated heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * n + 2, 0.5 * n + 2.5))
    im = ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(n), names, rotation=45 if n <= 3 else 0)
    ax.set_yticks(range(n), names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    top = confusion.max() if confusion.size else 0
    for i in range(n):
        for j in range(n):
            color = "white" if confusion[i, j] > top / 2 else "black"
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", color=color, fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the experiment; returns the metrics it writes to `--out-dir`/metrics.json.

    Raises:
        ValueError: a flag has an impossible value, or --torch-weights does not fit.
        experiments.training.CheckpointError: see `experiments.training.Checkpoints`.
    """
    t_start = time.perf_counter()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--dataset", choices=DATASETS, default="digits")
    known, _ = pre.parse_known_args(argv)
    args = training.parse_args(parser(known.dataset), argv, QUICK)
    if not 0.0 <= args.dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.warmup_steps < 0:
        raise ValueError(f"--warmup-steps must be >= 0, got {args.warmup_steps}")

    data = make_dataset(args.dataset, args.seed)
    num_classes, input_size = data["num_classes"], data["input_size"]
    initial_accuracy = None
    if args.torch_weights is not None:
        torch_model = load_torch_classifier(args.torch_weights, input_size=input_size, num_classes=num_classes)
        cfg = torch_model.lstm.config
        args.hidden_size, args.num_layers, args.bidirectional = cfg.hidden_size, cfg.num_layers, cfg.bidirectional
        logits = training.evaluate(torch_model, eval_fn, data["test"])["logits"]
        initial_accuracy, _ = accuracy_and_confusion(logits, data["test"]["y"], num_classes)
        print(
            f"classify: the PyTorch weights in {args.torch_weights} (H={cfg.hidden_size}, "
            f"L={cfg.num_layers}, bidirectional={cfg.bidirectional}) score {initial_accuracy:.2%} "
            "test accuracy before training",
            flush=True,
        )
        proj_size = cfg.proj_size

        def make_model(rngs):
            return load_torch_classifier(args.torch_weights, input_size=input_size, num_classes=num_classes, rngs=rngs)
    else:
        proj_size = 0

        def make_model(rngs):
            return Classifier(
                input_size,
                args.hidden_size,
                args.num_layers,
                num_classes,
                bidirectional=args.bidirectional,
                dropout=args.dropout,
                rngs=rngs,
            )

    schedule = training.cosine_schedule(args.lr, args.steps, args.warmup_steps)
    batch_size = args.batch_size
    task = training.Task(
        name=f"classify:{args.dataset}",
        make_model=make_model,
        tx=optax.adam(schedule),
        loss_fn=loss_fn,
        batch_fn=lambda step: data["batch_fn"](step, batch_size),
        config={
            "model": {
                "task": f"classify:{args.dataset}",
                "input_size": input_size,
                "num_classes": num_classes,
                "hidden_size": args.hidden_size,
                "num_layers": args.num_layers,
                "bidirectional": args.bidirectional,
                "proj_size": proj_size,
            },
            "run": {
                "seed": args.seed,
                "steps": args.steps,
                "batch_size": batch_size,
                "lr": args.lr,
                "warmup_steps": args.warmup_steps,
                "dropout": args.dropout,
                "torch_weights": args.torch_weights,
            },
        },
        lr_fn=lambda step: float(schedule(step)),
    )
    result = training.train(task, **training.train_options(args))
    logits = result.evaluate(eval_fn, data["test"])["logits"]
    accuracy, confusion = accuracy_and_confusion(logits, data["test"]["y"], num_classes)
    history = result.history
    metrics = {
        "dataset": args.dataset,
        "test_accuracy": accuracy,
        "initial_test_accuracy": initial_accuracy,
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
    title = f"{args.dataset}: test accuracy {accuracy:.2%} ({len(data['test']['y'])} examples)"
    return training.finish(
        args.out_dir,
        metrics,
        t_start,
        lambda m: (
            f"classify[{args.dataset}{', bidirectional' if args.bidirectional else ''}]: test accuracy "
            f"{accuracy:.2%} on {m['test_examples']} examples after {m['steps']} steps; "
            f"train {m['train_seconds']:.1f} s, total {m['total_seconds']:.1f} s on {m['devices']} device(s)"
        ),
        None
        if args.no_plots
        else lambda: plot_confusion(os.path.join(args.out_dir, "confusion.png"), confusion, data["class_names"], title),
    )


if __name__ == "__main__":
    main()
