"""experiments.sine: the smoke run and its files, the rollout, the windows, the plots, the flags,
the default output directories, and (marked `slow`) the accuracy and time targets."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import sine, training
from tests.harness import ROOT, assert_png, subprocess_env, timed_experiment

QUIET = ["--quick", "--no-progress"]
SINE_KEYS = {"teacher_forced_mse", "rollout_mse", "train_seconds", "steps", "config"}

pytestmark = pytest.mark.usefixtures("compilation_cache")


def assert_metrics_log(out_dir: str, steps: int) -> list[dict]:
    log = training.read_metrics(out_dir)
    assert [r["step"] for r in log] == list(range(1, steps + 1))
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in log)
    assert all("lr" in r and "time" in r for r in log)
    return log


@pytest.fixture(scope="module")
def sine_quick(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sine") / "out")
    metrics = sine.main([*QUIET, "--out-dir", out])
    return {"out": out, "metrics": metrics}


def test_smoke_run_writes_plots_metrics_and_log(sine_quick):
    out, metrics = sine_quick["out"], sine_quick["metrics"]
    assert_png(os.path.join(out, "loss.png"))
    assert_png(os.path.join(out, "prediction.png"))
    with open(os.path.join(out, "metrics.json")) as f:
        written = json.load(f)
    assert SINE_KEYS <= set(written)
    assert written["steps"] == 12 == metrics["steps"]
    assert written["teacher_forced_mse"] == metrics["teacher_forced_mse"]
    for key in ("teacher_forced_mse", "rollout_mse"):
        assert 0 < written[key] < 10, (key, written[key])
    assert written["train_seconds"] > 0
    log = assert_metrics_log(out, 12)
    assert log[0]["lr"] < log[5]["lr"], "the warm-up should raise the learning rate"


def test_prints_a_one_line_summary(tmp_path, capsys):
    sine.main([*QUIET, "--steps", "2", "--no-plots", "--out-dir", str(tmp_path)])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sine:")]
    assert len(lines) == 1
    assert "teacher-forced MSE" in lines[0] and "rollout MSE" in lines[0]
    assert "after 2 steps" in lines[0]
    assert not os.path.exists(tmp_path / "loss.png"), "--no-plots writes no plot"


def test_carry_state_threads_the_state_between_batches(sine_quick, tmp_path):
    metrics = sine.main([*QUIET, "--carry-state", "--no-plots", "--out-dir", str(tmp_path)])
    assert metrics["config"]["run"]["carry_state"] is True
    carried, fresh = training.read_metrics(str(tmp_path)), training.read_metrics(sine_quick["out"])
    # Step 1 starts from zeros either way; later steps start from the previous batch's state.
    assert carried[0]["loss"] == fresh[0]["loss"]
    assert all(a["loss"] != b["loss"] for a, b in zip(carried[1:], fresh[1:], strict=True))


def test_rollout_feeds_predictions_back():
    """The rollout equals a Python loop that feeds each prediction back one step at a time."""
    model = sine.SineModel(6, 2, rngs=nnx.Rngs(0))
    windows = jnp.asarray(sine.eval_windows(3))
    got = np.asarray(sine.rollout(model, windows))
    assert got.shape == (3, sine.WINDOW - sine.WARMUP)
    call = jax.jit(lambda x, hx: model(x, hx))
    pred, state = call(windows[:, : sine.WARMUP, None], None)
    point, expected = pred[:, -1:], [pred[:, -1, 0]]
    for _ in range(sine.WINDOW - sine.WARMUP - 1):
        point, state = call(point, state)
        expected.append(point[:, 0, 0])
    np.testing.assert_allclose(got, np.stack(expected, axis=1), rtol=1e-5, atol=1e-6)


def test_windows_are_the_tutorials():
    w = sine.make_windows(np.array([0.0, 3.0]))
    assert w.shape == (2, 50) and w.dtype == np.float32
    np.testing.assert_allclose(w[1], np.sin(np.linspace(3.0, 13.0, 50)), atol=1e-7)
    a, b = sine.train_batch(0, 5, 4), sine.train_batch(0, 5, 4)
    np.testing.assert_array_equal(a["windows"], b["windows"])  # a function of (seed, step)
    assert not np.array_equal(a["windows"], sine.train_batch(0, 6, 4)["windows"])


# --------------------------------------------------------------------------- plots


def test_plots_are_labelled_and_name_the_warm_up(sine_quick):
    model = sine.SineModel(8, 1, rngs=nnx.Rngs(0))
    windows = sine.eval_windows(4)
    result = training.evaluate(model, sine.eval_fn, {"windows": windows})
    config = sine_quick["metrics"]["config"]
    figures = sine.figures(training.read_metrics(sine_quick["out"]), config, windows, result)
    assert set(figures) == {"loss.png", "prediction.png"}
    for name, fig in figures.items():
        assert training.missing_labels(fig) == [], name
    loss_ax = figures["loss.png"].axes[0]
    assert "log scale" in loss_ax.get_ylabel() and "step" in loss_ax.get_xlabel()
    smooth = [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert not any("centred" in t for t in smooth), "12 steps are too few to smooth"
    prediction = figures["prediction.png"]
    legend = [t.get_text() for t in prediction.legends[0].get_texts()]
    assert any("warm-up" in t and str(sine.WARMUP) in t for t in legend), legend
    assert "radians" in prediction.axes[-1].get_xlabel()
    for fig in figures.values():
        training.pyplot().close(fig)


def test_loss_plot_smooths_with_a_centred_window():
    """2000 steps of a falling loss: the smoothed curve is centred (no lag) and says so."""
    steps = np.arange(1, 2001)
    history = [{"step": int(s), "loss": float(np.exp(-s / 300))} for s in steps]
    config = {"model": {"hidden_size": 32, "num_layers": 1}, "run": {"batch_size": 32, "lr": 0.01}}
    fig = sine.loss_figure(history, config)
    smooth = fig.axes[0].get_lines()[1]
    x, y = smooth.get_data()
    label = smooth.get_label()
    assert "centred" in label and "41 steps" in label
    # A centred mean of a convex curve lies just above it at the same step; a trailing mean
    # (which lags) would sit above it by about 20 steps' worth of decay.
    truth = np.exp(-np.asarray(x) / 300)
    assert np.max(np.abs(np.asarray(y) / truth - 1)) < 0.01
    training.pyplot().close(fig)


# --------------------------------------------------------------------------- flags and dirs


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        sine.main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for action in sine.parser()._actions:
        if action.option_strings:
            assert action.help, f"{action.option_strings} has no help text"
            assert action.option_strings[-1] in text
    assert "runs/sine-carry-state with --carry-state" in text
    assert "--steps 12 --hidden-size 8" in text, "--quick lists its values"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["--lr", "-1"], "--lr must be a positive number, got -1.0"),
        (["--stop-at", "99"], r"--stop-at must be in \[1, --steps=12\], got 99"),
        (["--steps", "-3"], "--steps must be >= 0"),
        (["--warmup-steps", "-1"], "--warmup-steps must be >= 0, got -1"),
        (["--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
        (["--num-processes", "2"], "--num-processes needs --distributed"),
    ],
)
def test_bad_flags_name_the_flag(argv, message, tmp_path):
    with pytest.raises(training.UsageError, match=message):
        sine.main([*QUIET, "--out-dir", str(tmp_path), *argv])


def test_default_out_dirs_do_not_mix_kinds_of_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sine.main([*QUIET, "--steps", "2", "--no-plots"])
    sine.main([*QUIET, "--steps", "2", "--no-plots", "--carry-state"])
    with open(tmp_path / "runs" / "sine-quick" / "metrics.json") as f:
        assert json.load(f)["config"]["run"]["carry_state"] is False
    with open(tmp_path / "runs" / "sine-carry-state-quick" / "metrics.json") as f:
        assert json.load(f)["config"]["run"]["carry_state"] is True
    assert sine.default_out_dir(sine.parse([])) == "runs/sine"


def test_command_line_error_is_one_line_and_exit_status_2(tmp_path):
    """`python -m experiments.sine` on 4 devices with a batch of 6: one line, status 2."""
    # 4 host (CPU) devices also on a machine with a GPU, which would otherwise be the only one.
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    cmd = [
        sys.executable,
        "-m",
        "experiments.sine",
        *QUIET,
        "--batch-size",
        "6",
        "--out-dir",
        str(tmp_path),
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines == ["error: --batch-size must be divisible by the number of devices (4), got 6"], (
        done.stderr
    )
    assert not os.path.exists(tmp_path / "metrics.json")


# --------------------------------------------------------------------------- targets (slow)


@pytest.mark.slow
def test_defaults_meet_the_targets(tmp_path):
    """`python -m experiments.sine` with its defaults: both MSEs <= 1e-3 in under 60 s (wall,
    compile included)."""
    wall, m = timed_experiment("experiments.sine", ["--no-progress", "--out-dir", str(tmp_path)])
    print(
        f"sine defaults: teacher-forced {m['teacher_forced_mse']:.2e}, "
        f"rollout {m['rollout_mse']:.2e}, wall {wall:.1f} s"
    )
    assert m["teacher_forced_mse"] <= 1e-3
    assert m["rollout_mse"] <= 1e-3
    assert wall < 60, f"took {wall:.1f} s"
