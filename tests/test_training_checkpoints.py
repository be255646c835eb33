"""experiments.training.checkpoints, and the determinism it gives the experiments.

* resuming an interrupted run gives bitwise the parameters of an uninterrupted one (with the
  carried LSTM state, and with dropout whose RNG state must be checkpointed too);
* the same seed gives bitwise the same parameters in two separate processes;
* a process SIGKILLed in the middle of a save leaves the previous checkpoint restorable;
* a damaged checkpoint, a missing or empty directory, and a checkpoint written for another
  model configuration each give a `CheckpointError` that says what is wrong, which a command
  reports in one line with exit status 2;
* dropout masks are a function of the key.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from experiments import classify, sine, training
from tests.harness import ROOT, subprocess_env

SINE = ["--quick", "--carry-state", "--no-progress", "--no-plots"]  # 12 steps, saves every 4
# 8 steps of a 2-layer classifier with dropout
DIGITS_DROPOUT = ["--quick", "--num-layers", "2", "--dropout", "0.5", "--no-progress", "--no-plots"]

pytestmark = pytest.mark.usefixtures("compilation_cache")


def final_arrays(checkpoint_dir: str) -> dict[str, np.ndarray]:
    ckpt = training.Checkpoints(checkpoint_dir, must_exist=True)
    return ckpt.read_arrays(ckpt.latest_step())


def assert_bitwise_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, f"arrays differ: {different}"


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory):
    """An uninterrupted 12-step sine run with --carry-state, checkpoints at 4, 8, 12."""
    root = tmp_path_factory.mktemp("sine_full")
    ckpt, out = str(root / "ckpt"), str(root / "out")
    sine.main([*SINE, "--out-dir", out, "--checkpoint-dir", ckpt])
    return {"ckpt": ckpt, "out": out, "arrays": final_arrays(ckpt)}


def test_uninterrupted_run_checkpoints_the_carried_state(sine_run):
    ckpt = training.Checkpoints(sine_run["ckpt"], must_exist=True)
    assert ckpt.all_steps() == [4, 8, 12]
    arrays = sine_run["arrays"]
    assert {"carry.0", "carry.1", "model.lstm.weight_ih_l0", "optimizer.step"} <= set(arrays)
    assert arrays["carry.0"].shape == (1, 8, 8)  # (h, c) [L, B, H] carried between batches
    assert np.abs(arrays["carry.0"]).max() > 0
    assert int(arrays["optimizer.step"]) == 12


def test_interrupted_and_resumed_run_is_bitwise_identical(sine_run, tmp_path):
    ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "out")
    sine.main([*SINE, "--out-dir", out, "--checkpoint-dir", ckpt, "--stop-at", "10"])
    # Stopped after step 10 without saving, like a killed run: steps 9 and 10 are lost.
    assert training.Checkpoints(ckpt, must_exist=True).all_steps() == [4, 8]
    metrics = sine.main([*SINE, "--out-dir", out, "--checkpoint-dir", ckpt, "--resume"])
    assert metrics["start_step"] == 8 and metrics["steps"] == 12
    assert_bitwise_equal(final_arrays(ckpt), sine_run["arrays"])
    # The metrics log of the resumed run is the uninterrupted one, step for step.
    resumed, full = training.read_metrics(out), training.read_metrics(sine_run["out"])
    assert [r["step"] for r in resumed] == list(range(1, 13))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full]


@pytest.fixture(scope="module")
def digits_dropout_run(tmp_path_factory):
    """An uninterrupted 8-step run of a 2-layer classifier with dropout, seed 3, in this process."""
    root = tmp_path_factory.mktemp("digits_full")
    ckpt = str(root / "ckpt")
    out = str(root / "out")
    classify.main([*DIGITS_DROPOUT, "--seed", "3", "--out-dir", out, "--checkpoint-dir", ckpt])
    return {"ckpt": ckpt, "arrays": final_arrays(ckpt)}


def test_resume_with_dropout_restores_the_rng_state(digits_dropout_run, tmp_path):
    ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "out")
    args = [*DIGITS_DROPOUT, "--seed", "3", "--out-dir", out, "--checkpoint-dir", ckpt]
    classify.main([*args, "--stop-at", "6"])
    classify.main([*args, "--resume"])
    full = digits_dropout_run["arrays"]
    assert int(full["model.lstm.dropout_rngs.count"]) == 8  # one draw per step: the stream moved
    assert_bitwise_equal(final_arrays(ckpt), full)


def test_same_seed_gives_bitwise_identical_parameters_in_two_processes(
    digits_dropout_run, tmp_path
):
    """A fresh process (no compilation cache: it compiles on its own) repeats this one's run."""
    ckpt = str(tmp_path / "ckpt")
    cmd = [sys.executable, "-m", "experiments.classify", *DIGITS_DROPOUT, "--seed", "3"]
    cmd += ["--out-dir", str(tmp_path / "out"), "--checkpoint-dir", ckpt]
    done = subprocess.run(
        cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    theirs, ours = final_arrays(ckpt), digits_dropout_run["arrays"]
    assert_bitwise_equal(theirs, ours)
    # ... and a different seed is really a different run (the comparison can fail).
    other = str(tmp_path / "other")
    classify.main(
        [
            *DIGITS_DROPOUT,
            "--seed",
            "4",
            "--out-dir",
            str(tmp_path / "o"),
            "--checkpoint-dir",
            other,
        ]
    )
    different = final_arrays(other)
    assert not np.array_equal(ours["model.lstm.weight_ih_l0"], different["model.lstm.weight_ih_l0"])


KILL_SCRIPT = """
import sys, time
from orbax.checkpoint._src.path import atomicity

marker = sys.argv[1]
original = atomicity.AtomicRenameTemporaryPath.finalize

async def finalize(self):
    # The step's data are written to a temporary directory; before it is committed
    # (renamed), tell the parent and wait to be killed.
    if self._final_path.name == "8":
        with open(marker, "w") as f:
            f.write(str(self._tmp_path))
        time.sleep(600)
    return await original(self)

atomicity.AtomicRenameTemporaryPath.finalize = finalize
from experiments import sine
sine.main(sys.argv[2:])
"""


def test_sigkill_during_a_save_leaves_the_previous_checkpoint_restorable(
    sine_run, tmp_path, compilation_cache
):
    ckpt, out, marker = str(tmp_path / "ckpt"), str(tmp_path / "out"), str(tmp_path / "saving")
    script = tmp_path / "killed.py"
    script.write_text(KILL_SCRIPT)
    cmd = [sys.executable, str(script), marker, *SINE, "--out-dir", out, "--checkpoint-dir", ckpt]
    env = subprocess_env(**compilation_cache)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.time() + 240
        while not os.path.exists(marker):
            if proc.poll() is not None:
                output = proc.stdout.read().decode()[-3000:]
                pytest.fail("the run ended before saving step 8: " + output)
            if time.time() > deadline:
                pytest.fail("the run never reached the save of step 8")
            time.sleep(0.2)
        time.sleep(0.2)
        with open(marker) as f:
            tmp_dir = f.read().strip()
        assert os.path.isdir(tmp_dir), "the half-written step exists while the process is alive"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert os.path.isdir(tmp_dir), "the kill should have left the half-written step behind"

    ckpt_dir = training.Checkpoints(ckpt, must_exist=True)
    assert ckpt_dir.all_steps() == [4]
    restored = ckpt_dir.read_arrays(4)
    assert int(restored["optimizer.step"]) == 4
    # Resuming from step 4 ends exactly where the uninterrupted run ends.
    metrics = sine.main([*SINE, "--out-dir", out, "--checkpoint-dir", ckpt, "--resume"])
    assert metrics["start_step"] == 4
    assert_bitwise_equal(final_arrays(ckpt), sine_run["arrays"])


def _damage_all_files(step_dir: str, how: str) -> None:
    state_dir = os.path.join(step_dir, "state")
    if how == "metadata_deleted":
        os.remove(os.path.join(state_dir, "_METADATA"))
        return
    if how == "state_deleted":
        shutil.rmtree(state_dir)
        return
    for root, _, files in os.walk(state_dir):
        for name in files:
            path = os.path.join(root, name)
            if how == "truncated":
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
            elif how == "garbage":
                with open(path, "wb") as f:
                    f.write(b"\x00not a checkpoint\xff" * 7)


@pytest.mark.parametrize("how", ["truncated", "garbage", "metadata_deleted", "state_deleted"])
def test_damaged_checkpoint_gives_a_clear_error(sine_run, tmp_path, how):
    ckpt = str(tmp_path / "ckpt")
    shutil.copytree(sine_run["ckpt"], ckpt)
    _damage_all_files(os.path.join(ckpt, "12"), how)
    with pytest.raises(training.CheckpointError) as e:
        sine.main([*SINE, "--out-dir", str(tmp_path / "out"), "--checkpoint-dir", ckpt, "--resume"])
    message = str(e.value)
    assert "step 12" in message and ckpt in message
    assert "damaged or unreadable" in message
    assert "earlier complete steps are [4, 8]" in message


def test_missing_checkpoint_dir_gives_a_clear_error(tmp_path, capsys):
    missing = str(tmp_path / "nope")
    argv = [*SINE, "--out-dir", str(tmp_path / "out"), "--checkpoint-dir", missing, "--resume"]
    message = "does not exist, so there is nothing to resume"
    with pytest.raises(training.CheckpointError, match=message):
        sine.main(argv)
    assert not os.path.exists(missing), "resuming must not create the directory"
    # As a command: one line on stderr, exit status 2, no traceback.
    with pytest.raises(SystemExit) as e:
        training.entry_point(sine.main, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: --checkpoint-dir {missing!r} does not exist")


def test_empty_checkpoint_dir_gives_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [*SINE, "--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(empty), "--resume"]
    message = r"holds no complete checkpoint.*it is empty"
    with pytest.raises(training.CheckpointError, match=message):
        sine.main(argv)
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(training.CheckpointError, match=r"holds no complete checkpoint.*notes\.txt"):
        sine.main(argv)


def test_resume_without_checkpoint_dir_is_an_error(tmp_path):
    with pytest.raises(training.UsageError, match="--resume needs --checkpoint-dir"):
        sine.main([*SINE, "--out-dir", str(tmp_path / "out"), "--resume"])


def test_new_run_refuses_a_directory_with_checkpoints(sine_run, tmp_path):
    message = r"already holds checkpoints \(steps \[4, 8, 12\]\).*--resume"
    with pytest.raises(training.CheckpointError, match=message):
        sine.main([*SINE, "--out-dir", str(tmp_path / "out"), "--checkpoint-dir", sine_run["ckpt"]])


def test_different_configuration_is_an_error_naming_the_mismatch(sine_run, tmp_path):
    ckpt = sine_run["ckpt"]
    args = [*SINE, "--out-dir", str(tmp_path / "out"), "--checkpoint-dir", ckpt, "--resume"]
    with pytest.raises(training.CheckpointError) as e:
        sine.main([*args, "--hidden-size", "16"])
    assert "different model configuration" in str(e.value)
    assert "model.hidden_size: checkpoint has 8, this run has 16" in str(e.value)
    message = r"model\.num_layers: checkpoint has 1, this run has 2"
    with pytest.raises(training.CheckpointError, match=message):
        sine.main([*args, "--num-layers", "2"])
    with pytest.raises(training.CheckpointError, match=r"model\.task: checkpoint has 'sine'"):
        classify.main(
            [
                "--quick",
                "--no-progress",
                "--out-dir",
                str(tmp_path / "o"),
                "--checkpoint-dir",
                ckpt,
                "--resume",
            ]
        )


def test_restore_checks_every_array_against_the_model(sine_run):
    """Below the config check: a template whose arrays differ is refused array by array."""
    ckpt = training.Checkpoints(sine_run["ckpt"], must_exist=True)
    config = ckpt.read_config(12)
    model = sine.SineModel(16, 1, rngs=nnx.Rngs(0))
    _, state = training.split_train_state(model, optax.adam(lambda step: 1e-3))
    with pytest.raises(training.CheckpointError) as e:
        ckpt.restore(12, {**state, "carry": None}, config)
    message = str(e.value)
    assert (
        "model.lstm.weight_hh_l0: checkpoint has shape (32, 8) float32, "
        "this model has (64, 16) float32"
    ) in message
    assert "arrays in the checkpoint this model lacks: ['carry.0', 'carry.1']" in message
    # Another optimizer (a constant rate: no schedule count) is a structural mismatch too.
    _, state = training.split_train_state(sine.SineModel(8, 1, rngs=nnx.Rngs(0)), optax.adam(1e-3))
    message = r"lacks: \['carry.0', 'carry.1', 'optimizer.opt_state.1.count'\]"
    with pytest.raises(training.CheckpointError, match=message):
        ckpt.restore(12, {**state, "carry": None}, config)


def test_restore_into_a_matching_template_returns_the_saved_values(sine_run):
    ckpt = training.Checkpoints(sine_run["ckpt"], must_exist=True)
    config = ckpt.read_config(12)
    model = sine.SineModel(8, 1, rngs=nnx.Rngs(123))
    _, state = training.split_train_state(model, optax.adam(lambda step: 1e-3))
    carry = (jnp.zeros((1, 8, 8)), jnp.zeros((1, 8, 8)))
    restored = ckpt.restore(12, {**state, "carry": carry}, config)
    named = training.named_leaves(restored)
    for k, v in sine_run["arrays"].items():
        np.testing.assert_array_equal(np.asarray(named[k]), v, err_msg=k)


# --------------------------------------------------------------------------- dropout keys


def test_checkpoint_stores_plain_arrays_for_prng_keys(tmp_path):
    """Typed PRNG keys are saved as raw uint32 data and come back as keys of the same impl."""
    ckpt = training.Checkpoints(str(tmp_path / "k"))
    tree = {"key": jax.random.key(5), "x": jnp.arange(3.0)}
    ckpt.save(1, tree, {"model": {"kind": "test"}})
    assert ckpt.read_arrays(1)["key"].dtype == np.uint32
    back = ckpt.restore(1, tree, {"model": {"kind": "test"}})
    assert jax.dtypes.issubdtype(back["key"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(
        jax.random.key_data(back["key"]), jax.random.key_data(tree["key"])
    )
    assert json.loads(json.dumps(ckpt.read_config(1))) == {"model": {"kind": "test"}}
    ckpt.close()
