"""experiments.classify: smoke runs of both datasets into their own default directories, the
confusion matrix and the training curve, the data, padding, PyTorch weights, the per-dataset
`--help`, command-line errors, and (marked `slow`) the accuracy and time targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import classify, training
from tests.harness import ROOT, assert_png, subprocess_env, timed_experiment

QUIET = ["--quick", "--no-progress"]
CLASSIFY_KEYS = {"test_accuracy", "train_seconds", "steps", "confusion", "config"}

pytestmark = pytest.mark.usefixtures("compilation_cache")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Quick digits and counting (bidirectional) runs with the default --out-dir, in one
    working directory: each must land in its own directory."""
    cwd = tmp_path_factory.mktemp("classify")
    before = os.getcwd()
    os.chdir(cwd)
    try:
        digits = classify.main(QUIET)
        counting = classify.main([*QUIET, "--dataset", "counting", "--bidirectional"])
    finally:
        os.chdir(before)
    return {
        "cwd": cwd,
        "digits": {"out": str(cwd / "runs" / "classify-digits-quick"), "metrics": digits},
        "counting": {
            "out": str(cwd / "runs" / "classify-counting-bidirectional-quick"),
            "metrics": counting,
        },
    }


def test_each_dataset_has_its_own_default_out_dir(runs):
    assert sorted(os.listdir(runs["cwd"] / "runs")) == [
        "classify-counting-bidirectional-quick",
        "classify-digits-quick",
    ]
    for name in ("digits", "counting"):
        with open(os.path.join(runs[name]["out"], "metrics.json")) as f:
            assert json.load(f)["dataset"] == name


def test_default_out_dir_names_the_kind_of_run():
    args = classify.parse(["--dataset", "counting"])
    choice = classify.ModelChoice(8, 1, bidirectional=False)
    assert classify.default_out_dir(args, choice) == "runs/classify-counting"
    choice = classify.ModelChoice(8, 1, bidirectional=True, torch_weights="m.pt")
    expected = "runs/classify-counting-bidirectional-torch-weights"
    assert classify.default_out_dir(args, choice) == expected
    quick = classify.parse(["--quick"])
    expected = "runs/classify-digits-bidirectional-torch-weights-quick"
    assert classify.default_out_dir(quick, choice) == expected


def test_digits_smoke_writes_plots_and_metrics(runs):
    out = runs["digits"]["out"]
    assert_png(os.path.join(out, "confusion.png"))
    assert_png(os.path.join(out, "training.png"))
    with open(os.path.join(out, "metrics.json")) as f:
        written = json.load(f)
    assert CLASSIFY_KEYS <= set(written)
    assert written["steps"] == 8 and written["dataset"] == "digits"
    assert written["test_examples"] == 450  # 25% of 1,797, stratified
    confusion = np.array(written["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 450
    assert written["test_accuracy"] == pytest.approx(np.trace(confusion) / 450)
    log = training.read_metrics(out)
    assert [r["step"] for r in log] == list(range(1, 9))
    assert all(0 <= r["accuracy"] <= 1 and r["loss"] > 0 for r in log)


def test_counting_bidirectional_smoke(runs):
    out, metrics = runs["counting"]["out"], runs["counting"]["metrics"]
    assert_png(os.path.join(out, "confusion.png"))
    assert_png(os.path.join(out, "training.png"))
    assert metrics["config"]["model"]["bidirectional"] is True
    assert np.array(metrics["confusion"]).shape == (2, 2)
    assert np.array(metrics["confusion"]).sum() == classify.COUNT_TEST_SIZE
    assert [r["step"] for r in training.read_metrics(out)] == list(range(1, 9))


def test_confusion_matrix_is_readable(runs):
    m = runs["counting"]["metrics"]
    names = classify.make_dataset("counting", 0)["class_names"]
    figures = classify.figures("classify[counting]", [], m, names)
    fig = figures["confusion.png"]
    assert training.missing_labels(fig) == []
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    title = ax.get_title()
    for fragment in ("counting", "test split", "2000 examples", f"{m['test_accuracy']:.2%}"):
        assert fragment in title, (fragment, title)
    for f in figures.values():
        training.pyplot().close(f)


def test_training_curve_shows_loss_accuracy_and_the_test_accuracy(runs):
    history = [{"step": s, "loss": 2.0 / s, "accuracy": min(1.0, s / 100)} for s in range(1, 201)]
    metrics = {**runs["digits"]["metrics"], "test_accuracy": 0.95, "initial_test_accuracy": 0.5}
    fig = classify.figures("classify[digits]", history, metrics, [str(i) for i in range(10)])[
        "training.png"
    ]
    assert training.missing_labels(fig) == []
    loss_ax, acc_ax = fig.axes
    assert "cross-entropy" in loss_ax.get_ylabel() and loss_ax.get_yscale() == "log"
    assert "accuracy (%)" in acc_ax.get_ylabel() and "step" in acc_ax.get_xlabel()
    legend = [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert any("test accuracy after training: 95.00%" in t for t in legend), legend
    assert any("PyTorch weights before training: 50.00%" in t for t in legend), legend
    marker = [line for line in acc_ax.get_lines() if line.get_label().startswith("test accuracy")]
    assert marker and marker[0].get_data()[0][0] == 200 and marker[0].get_data()[1][0] == 95.0
    training.pyplot().close(fig)


# --------------------------------------------------------------------------- data


def test_digits_split_is_stratified_and_fixed():
    a, b = classify.digits_data(0), classify.digits_data(0)
    np.testing.assert_array_equal(a["y_test"], b["y_test"])
    assert a["x_train"].shape[1:] == (8, 8) and a["x_train"].max() <= 1.0
    counts = np.bincount(a["y_test"], minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47  # ~45 of each digit


def test_counting_data_labels_lengths_and_padding():
    d = classify.counting_data(np.random.default_rng(0), 300)
    x, lengths, y = d["x"], d["lengths"], d["y"]
    assert x.shape == (300, 60, 4)
    assert lengths.min() >= 5 and lengths.max() <= 60
    for i in range(300):
        tokens = x[i, : lengths[i]].argmax(-1)
        assert np.all(x[i, : lengths[i]].sum(-1) == 1)
        assert np.all(x[i, lengths[i] :] == 0)
        a, b = np.sum(tokens == 0), np.sum(tokens == 1)
        assert a != b and y[i] == int(a > b)
    assert 0.3 < y.mean() < 0.7


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_padding_does_not_change_predictions(bidirectional):
    """Logits of padded batches equal each sequence run alone at its own length, whatever the
    padding holds."""
    model = classify.Classifier(4, 8, 2, 2, bidirectional=bidirectional, rngs=nnx.Rngs(0))
    d = classify.counting_data(np.random.default_rng(1), 3)
    forward = jax.jit(lambda x, n: model(x, n))
    padded = np.asarray(forward(jnp.asarray(d["x"]), jnp.asarray(d["lengths"])))
    # Longer padding full of garbage (huge values and NaN) must not leak into the logits.
    garbage = np.full((3, 75, 4), 1e6, np.float32)
    garbage[:, ::3] = np.nan
    for i, n in enumerate(d["lengths"]):
        garbage[i, :n] = d["x"][i, :n]
    got = np.asarray(forward(jnp.asarray(garbage), jnp.asarray(d["lengths"])))
    np.testing.assert_allclose(got, padded, rtol=1e-5, atol=1e-6)
    alone_forward = jax.jit(lambda x: model(x))
    for i, n in enumerate(d["lengths"]):
        alone = np.asarray(alone_forward(jnp.asarray(d["x"][i : i + 1, :n])))
        np.testing.assert_allclose(
            alone[0], padded[i], rtol=1e-5, atol=1e-6, err_msg=f"sequence {i}, length {n}"
        )
    # The test can fail: ignoring the lengths (reading the zero padding) changes the logits.
    assert not np.allclose(np.asarray(alone_forward(jnp.asarray(d["x"]))), padded, atol=1e-4)


# --------------------------------------------------------------------------- torch weights


def _torch_classifier(bidirectional: bool, input_size: int = 8, seed: int = 0):
    torch = pytest.importorskip("torch")
    namespace: dict = {}
    exec(classify.TORCH_CLASSIFIER, namespace)
    torch.manual_seed(seed)
    return torch, namespace["LSTMClassifier"](input_size, 12, 2, 10, bidirectional=bidirectional)


def _train_torch(torch, model, data, steps: int = 5):
    """A few Adam steps in torch, so the weights are not torch's initial ones."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(data["x_train"][:128]), torch.from_numpy(data["y_train"][:128]).long()
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.torch
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_torch_classifier_logits_match(bidirectional, tmp_path):
    torch, model = _torch_classifier(bidirectional)
    torch.set_num_threads(1)
    data = classify.digits_data(0)
    model = _train_torch(torch, model, data)
    with torch.no_grad():
        expected = model(torch.from_numpy(data["x_test"])).numpy()
    pt = tmp_path / "classifier.pt"
    torch.save(model.state_dict(), pt)
    from safetensors.torch import save_file

    st = tmp_path / "classifier.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, st)
    for path in (pt, st):
        ours = classify.load_torch_classifier(str(path), input_size=8, num_classes=10)
        assert ours.lstm.config.bidirectional is bidirectional
        assert ours.lstm.config.num_layers == 2
        got = training.evaluate(ours, classify.eval_fn, {"x": data["x_test"]})["logits"]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=str(path))


@pytest.mark.torch
def test_torch_weights_flag_reports_accuracy_before_training(tmp_path, capsys, monkeypatch):
    torch, model = _torch_classifier(False)
    torch.set_num_threads(1)
    data = classify.digits_data(0)
    model = _train_torch(torch, model, data, steps=15)
    with torch.no_grad():
        logits = model(torch.from_numpy(data["x_test"])).numpy()
    torch_accuracy = float((logits.argmax(1) == data["y_test"]).mean())
    path = tmp_path / "classifier.pt"
    torch.save(model.state_dict(), path)
    reads = []
    original = classify.load_torch_classifier
    monkeypatch.setattr(
        classify, "load_torch_classifier", lambda *a, **k: reads.append(a) or original(*a, **k)
    )
    monkeypatch.chdir(tmp_path)
    metrics = classify.main(["--torch-weights", str(path), "--steps", "0", "--no-progress"])
    assert len(reads) == 1, "the file is read once"
    assert metrics["initial_test_accuracy"] == pytest.approx(torch_accuracy, abs=1e-9)
    assert metrics["test_accuracy"] == pytest.approx(torch_accuracy, abs=1e-9)  # 0 steps
    assert metrics["config"]["model"]["hidden_size"] == 12  # from the file, not --hidden-size
    assert f"score {torch_accuracy:.2%} test accuracy before training" in capsys.readouterr().out
    assert (tmp_path / "runs" / "classify-digits-torch-weights" / "training.png").is_file()


@pytest.mark.torch
def test_torch_weights_that_do_not_fit_give_clear_errors(tmp_path):
    torch, model = _torch_classifier(False, input_size=5)
    path = tmp_path / "five.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="input_size=5 features, but the dataset has 8"):
        classify.load_torch_classifier(str(path), input_size=8, num_classes=10)
    with pytest.raises(ValueError, match=r"fc.weight must have shape \(2, 12\).*got \(10, 12\)"):
        classify.load_torch_classifier(str(path), input_size=5, num_classes=2)
    sd = dict(model.state_dict())
    sd["head.weight"] = sd.pop("fc.weight")
    with pytest.raises(ValueError, match=r"missing \['fc.weight'\], unexpected \['head.weight'\]"):
        classify.load_torch_classifier(sd, input_size=5, num_classes=10)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        classify.load_torch_classifier(str(tmp_path / "missing.pt"), input_size=5, num_classes=10)
    # From the command line both are user errors naming --torch-weights.
    out = ["--out-dir", str(tmp_path / "o")]
    with pytest.raises(training.UsageError, match=r"--torch-weights .*five\.pt.*input_size=5"):
        classify.main(["--torch-weights", str(path), *QUIET, *out])
    with pytest.raises(training.UsageError, match=r"--torch-weights .*missing\.pt.*does not exist"):
        classify.main(["--torch-weights", str(tmp_path / "missing.pt"), *QUIET, *out])


# --------------------------------------------------------------------------- flags


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        classify.main([*argv, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_every_datasets_defaults(capsys):
    text = _help([], capsys)
    for action in classify.parser()._actions:
        if action.option_strings:
            assert action.help, f"{action.option_strings} has no help text"
            assert action.option_strings[-1] in text
    assert "(default: 1500 with --dataset digits, 600 with --dataset counting)" in text
    assert "(default: 64 with --dataset digits, 32 with --dataset counting)" in text
    assert "(default: 1500)" not in text, "no single default for a per-dataset flag"
    assert "runs/classify-DATASET" in text
    assert _help(["--dataset", "counting"], capsys) == text


def test_dataset_selects_its_defaults():
    digits, counting = classify.parse([]), classify.parse(["--dataset", "counting"])
    assert (digits.steps, digits.hidden_size) == (1500, 64)
    assert (counting.steps, counting.hidden_size) == (600, 32)
    assert classify.parse(["--dataset", "counting", "--steps", "7"]).steps == 7


def test_command_line_error_is_one_line_and_exit_status_2(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "experiments.classify",
        "--dataset",
        "letters",
        "--out-dir",
        str(tmp_path),
    ]
    done = subprocess.run(
        cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    # (Python versions differ in quoting the choices.)
    assert lines[0].startswith("error: argument --dataset: invalid choice: 'letters' (choose from")
    assert "digits" in lines[0] and "counting" in lines[0]


# --------------------------------------------------------------------------- targets (slow)


@pytest.mark.slow
def test_digits_defaults_meet_the_targets(tmp_path):
    """`python -m experiments.classify` (digits) with its defaults: >= 97% test accuracy in
    under 2 minutes."""
    wall, m = timed_experiment(
        "experiments.classify", ["--no-progress", "--out-dir", str(tmp_path)]
    )
    print(f"digits defaults: test accuracy {m['test_accuracy']:.2%}, wall {wall:.1f} s")
    assert m["test_accuracy"] >= 0.97
    assert wall < 120, f"took {wall:.1f} s"


@pytest.mark.slow
def test_counting_defaults_learn_the_task(tmp_path):
    wall, m = timed_experiment(
        "experiments.classify",
        ["--dataset", "counting", "--no-progress", "--out-dir", str(tmp_path)],
    )
    print(f"counting defaults: test accuracy {m['test_accuracy']:.2%}, wall {wall:.1f} s")
    assert m["test_accuracy"] >= 0.97
    assert wall < 120, f"took {wall:.1f} s"
