"""The experiments: smoke runs of each command, the written files, torch weights, padding,
multi-device data parallelism, the flags, and (marked `slow`) the accuracy and time targets."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import classify, sine, training
from tests.harness import ROOT, subprocess_env

QUIET = ["--quick", "--no-progress"]
SINE_KEYS = {"teacher_forced_mse", "rollout_mse", "train_seconds", "steps"}
CLASSIFY_KEYS = {"test_accuracy", "train_seconds", "steps"}



pytestmark = pytest.mark.usefixtures("compilation_cache")


def assert_png(path: str) -> None:
    assert os.path.isfile(path), path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert os.path.getsize(path) > 5_000, f"{path} is suspiciously small"


def assert_metrics_log(out_dir: str, steps: int) -> list[dict]:
    log = training.read_metrics(out_dir)
    assert [r["step"] for r in log] == list(range(1, steps + 1))
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in log)
    assert all("lr" in r and "time" in r for r in log)
    return log


# --------------------------------------------------------------------------- sine


@pytest.fixture(scope="module")
def sine_quick(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sine") / "out")
    metrics = sine.main([*QUIET, "--out-dir", out])
    return {"out": out, "metrics": metrics}


def test_sine_smoke_writes_plots_metrics_and_log(sine_quick, capsys):
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


def test_sine_prints_a_one_line_summary(tmp_path, capsys):
    sine.main([*QUIET, "--steps", "2", "--no-plots", "--out-dir", str(tmp_path)])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sine:")]
    assert len(lines) == 1
    assert "teacher-forced MSE" in lines[0] and "rollout MSE" in lines[0] and "after 2 steps" in lines[0]


def test_sine_carry_state_threads_the_state_between_batches(sine_quick, tmp_path):
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


def test_sine_windows_are_the_tutorials():
    w = sine.make_windows(np.array([0.0, 3.0]))
    assert w.shape == (2, 50) and w.dtype == np.float32
    np.testing.assert_allclose(w[1], np.sin(np.linspace(3.0, 13.0, 50)), atol=1e-7)
    a, b = sine.train_batch(0, 5, 4), sine.train_batch(0, 5, 4)
    np.testing.assert_array_equal(a["windows"], b["windows"])  # a function of (seed, step)
    assert not np.array_equal(a["windows"], sine.train_batch(0, 6, 4)["windows"])


# --------------------------------------------------------------------------- classify


@pytest.fixture(scope="module")
def digits_quick(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("digits") / "out")
    return {"out": out, "metrics": classify.main([*QUIET, "--out-dir", out])}


@pytest.fixture(scope="module")
def counting_quick(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("counting") / "out")
    args = [*QUIET, "--dataset", "counting", "--bidirectional", "--out-dir", out]
    return {"out": out, "metrics": classify.main(args)}


def test_digits_smoke_writes_confusion_and_metrics(digits_quick):
    out = digits_quick["out"]
    assert_png(os.path.join(out, "confusion.png"))
    with open(os.path.join(out, "metrics.json")) as f:
        written = json.load(f)
    assert CLASSIFY_KEYS <= set(written)
    assert written["steps"] == 8 and written["dataset"] == "digits"
    assert written["test_examples"] == 450  # 25% of 1,797, stratified
    confusion = np.array(written["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 450
    assert written["test_accuracy"] == pytest.approx(np.trace(confusion) / 450)
    assert_metrics_log(out, 8)


def test_counting_bidirectional_smoke(counting_quick):
    out, metrics = counting_quick["out"], counting_quick["metrics"]
    assert_png(os.path.join(out, "confusion.png"))
    assert metrics["config"]["model"]["bidirectional"] is True
    assert np.array(metrics["confusion"]).shape == (2, 2)
    assert np.array(metrics["confusion"]).sum() == classify.COUNT_TEST_SIZE
    assert_metrics_log(out, 8)


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
    """Logits of padded batches equal each sequence run alone at its own length, whatever the padding holds."""
    model = classify.Classifier(4, 8, 2, 2, bidirectional=bidirectional, rngs=nnx.Rngs(0))
    d = classify.counting_data(np.random.default_rng(1), 3)
    forward = jax.jit(lambda x, n: model(x, n))
    padded = np.asarray(forward(jnp.asarray(d["x"]), jnp.asarray(d["lengths"])))
    # Longer padding full of garbage (huge values and NaN) must not leak into the logits.
    garbage = np.full((3, 75, 4), 1e6, np.float32)
    garbage[:, ::3] = np.nan
    for i, n in enumerate(d["lengths"]):
        garbage[i, :n] = d["x"][i, :n]
    np.testing.assert_allclose(np.asarray(forward(jnp.asarray(garbage), jnp.asarray(d["lengths"]))), padded, rtol=1e-5, atol=1e-6)
    alone_forward = jax.jit(lambda x: model(x))
    for i, n in enumerate(d["lengths"]):
        alone = np.asarray(alone_forward(jnp.asarray(d["x"][i : i + 1, :n])))
        np.testing.assert_allclose(alone[0], padded[i], rtol=1e-5, atol=1e-6, err_msg=f"sequence {i}, length {n}")
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
        assert ours.lstm.config.bidirectional is bidirectional and ours.lstm.config.num_layers == 2
        got = training.evaluate(ours, classify.eval_fn, {"x": data["x_test"]})["logits"]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=str(path))


@pytest.mark.torch
def test_torch_weights_flag_reports_accuracy_before_training(tmp_path, capsys):
    torch, model = _torch_classifier(False)
    torch.set_num_threads(1)
    data = classify.digits_data(0)
    model = _train_torch(torch, model, data, steps=15)
    with torch.no_grad():
        torch_accuracy = float((model(torch.from_numpy(data["x_test"])).argmax(1).numpy() == data["y_test"]).mean())
    path = tmp_path / "classifier.pt"
    torch.save(model.state_dict(), path)
    metrics = classify.main(["--torch-weights", str(path), "--steps", "0", "--no-progress", "--out-dir", str(tmp_path / "o")])
    assert metrics["initial_test_accuracy"] == pytest.approx(torch_accuracy, abs=1e-9)
    assert metrics["test_accuracy"] == pytest.approx(torch_accuracy, abs=1e-9)  # 0 steps: unchanged
    assert metrics["config"]["model"]["hidden_size"] == 12  # taken from the file, not --hidden-size
    assert f"score {torch_accuracy:.2%} test accuracy before training" in capsys.readouterr().out


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


# --------------------------------------------------------------------------- data parallel

PARALLEL_SCRIPT = """
import json, sys
import jax
import numpy as np
from experiments import classify, sine, training

out = sys.argv[1]
mesh = training.data_mesh()
batch = training.shard_batch({"x": np.arange(16.0).reshape(8, 2)}, mesh)
try:
    training.shard_batch({"x": np.zeros((6, 2))}, mesh)
    error = None
except ValueError as e:
    error = str(e)
sine.main(["--quick", "--no-progress", "--no-plots", "--out-dir", out + "/sine"])
classify.main(["--quick", "--no-progress", "--no-plots", "--dataset", "counting", "--bidirectional",
               "--out-dir", out + "/counting"])
info = {
    "devices": jax.device_count(),
    "batch_split_over_data_axis": batch["x"].sharding.spec == jax.sharding.PartitionSpec("data"),
    "shards": [list(s.data.shape) for s in batch["x"].addressable_shards],
    "error": error,
}
with open(out + "/info.json", "w") as f:
    json.dump(info, f)
"""


def test_data_parallel_run_matches_one_device(sine_quick, counting_quick, tmp_path):
    """4 host devices (a subprocess with XLA_FLAGS) give the 1-device loss curves within float tolerance."""
    script = tmp_path / "parallel.py"
    script.write_text(PARALLEL_SCRIPT)
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(tmp_path / "info.json") as f:
        info = json.load(f)
    assert info["devices"] == 4
    assert info["batch_split_over_data_axis"] and info["shards"] == [[2, 2]] * 4
    assert "divisible by the number of devices (4)" in info["error"] and "got batch size 6" in info["error"]
    for name, one in (("sine", sine_quick), ("counting", counting_quick)):
        four = training.read_metrics(str(tmp_path / name))
        single = training.read_metrics(one["out"])
        assert len(four) == len(single) > 0
        np.testing.assert_allclose(
            [r["loss"] for r in four], [r["loss"] for r in single], rtol=2e-5, atol=1e-6, err_msg=name
        )
        with open(tmp_path / name / "metrics.json") as f:
            assert json.load(f)["devices"] == 4


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize("module", [sine, classify], ids=["sine", "classify"])
def test_help_documents_every_flag(module, capsys):
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    p = module.parser()
    for action in p._actions:
        if action.option_strings:
            assert action.help, f"{action.option_strings} has no help text"
            assert action.option_strings[-1] in text
    for flag in ("--steps", "--seed", "--hidden-size", "--num-layers", "--lr", "--batch-size", "--out-dir",
                 "--quick", "--checkpoint-dir", "--save-every", "--resume"):
        assert flag in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["--lr", "-1"], "--lr must be a positive number, got -1.0"),
        (["--stop-at", "99"], r"--stop-at must be in \[1, --steps=12\], got 99"),
        (["--steps", "-3"], "--steps must be >= 0"),
    ],
)
def test_bad_flags_name_the_flag(argv, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        sine.main([*QUIET, "--out-dir", str(tmp_path), *argv])


def test_quick_defaults_yield_to_explicit_flags():
    args = training.parse_args(sine.parser(), ["--quick", "--hidden-size", "5"], sine.QUICK)
    assert args.hidden_size == 5 and args.steps == sine.QUICK["steps"]


# --------------------------------------------------------------------------- targets (slow)


def _timed_run(module: str, args: list[str]) -> tuple[float, dict]:
    out = args[args.index("--out-dir") + 1]
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(os.path.join(out, "metrics.json")) as f:
        return wall, json.load(f)


@pytest.mark.slow
def test_sine_defaults_meet_the_targets(tmp_path):
    """`python -m experiments.sine` with its defaults: both MSEs <= 1e-3 in under 60 s (wall, compile included)."""
    wall, m = _timed_run("experiments.sine", ["--no-progress", "--out-dir", str(tmp_path)])
    print(f"sine defaults: teacher-forced {m['teacher_forced_mse']:.2e}, rollout {m['rollout_mse']:.2e}, wall {wall:.1f} s")
    assert m["teacher_forced_mse"] <= 1e-3
    assert m["rollout_mse"] <= 1e-3
    assert wall < 60, f"took {wall:.1f} s"


@pytest.mark.slow
def test_digits_defaults_meet_the_targets(tmp_path):
    """`python -m experiments.classify` (digits) with its defaults: >= 97% test accuracy in under 2 minutes."""
    wall, m = _timed_run("experiments.classify", ["--no-progress", "--out-dir", str(tmp_path)])
    print(f"digits defaults: test accuracy {m['test_accuracy']:.2%}, wall {wall:.1f} s")
    assert m["test_accuracy"] >= 0.97
    assert wall < 120, f"took {wall:.1f} s"


@pytest.mark.slow
def test_counting_defaults_learn_the_task(tmp_path):
    wall, m = _timed_run("experiments.classify", ["--dataset", "counting", "--no-progress", "--out-dir", str(tmp_path)])
    print(f"counting defaults: test accuracy {m['test_accuracy']:.2%}, wall {wall:.1f} s")
    assert m["test_accuracy"] >= 0.97
    assert wall < 120, f"took {wall:.1f} s"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_run_matches_one_device(sine_quick, tmp_path):
    """--distributed: 2 processes x 2 CPU devices (gloo) train like 1 device, and checkpoint together."""
    port = _free_port()
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = []
    for i in range(2):
        cmd = [sys.executable, "-m", "experiments.sine", "--quick", "--no-progress", "--no-plots", "--distributed"]
        cmd += ["--coordinator-address", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)]
        cmd += ["--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ckpt")]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        output, _ = p.communicate(timeout=300)
        assert p.returncode == 0, output[-3000:]
    with open(tmp_path / "out" / "metrics.json") as f:
        assert json.load(f)["devices"] == 4
    four = [r["loss"] for r in training.read_metrics(str(tmp_path / "out"))]
    one = [r["loss"] for r in training.read_metrics(sine_quick["out"])]
    np.testing.assert_allclose(four, one, rtol=2e-5, atol=1e-6)
    assert training.Checkpoints(str(tmp_path / "ckpt"), must_exist=True).all_steps() == [4, 8, 12]
