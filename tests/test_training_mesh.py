"""experiments.training.mesh: batches split over a `data` axis of 4 host devices, the batch-size
check, and experiments on 4 devices training like on 1."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from experiments import classify, sine, training
from tests.harness import ROOT, subprocess_env

pytestmark = pytest.mark.usefixtures("compilation_cache")

QUIET = ["--quick", "--no-progress", "--no-plots"]
RUNS = {
    "sine": (sine, QUIET),
    "counting": (classify, [*QUIET, "--dataset", "counting", "--bidirectional"]),
}

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


def test_check_batch_size_names_the_flag():
    """Only the mesh's `data` size matters (4 real devices: tests/test_sine.py's command test)."""
    mesh = training.data_mesh()
    training.check_batch_size(mesh.shape[training.DATA_AXIS] * 3, mesh)
    four = SimpleNamespace(shape={training.DATA_AXIS: 4})
    training.check_batch_size(8, four)
    message = r"--batch-size must be divisible by the number of devices \(4\), got 6"
    with pytest.raises(training.UsageError, match=message):
        training.check_batch_size(6, four)


def test_data_parallel_run_matches_one_device(tmp_path):
    """4 host devices (a subprocess with XLA_FLAGS) give the 1-device loss curves within float
    tolerance."""
    for name, (module, argv) in RUNS.items():
        module.main([*argv, "--out-dir", str(tmp_path / "one" / name)])
    script = tmp_path / "parallel.py"
    script.write_text(PARALLEL_SCRIPT)
    # 4 host (CPU) devices also on a machine with a GPU, which would otherwise be the only one.
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "four")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(tmp_path / "four" / "info.json") as f:
        info = json.load(f)
    assert info["devices"] == 4
    assert info["batch_split_over_data_axis"] and info["shards"] == [[2, 2]] * 4
    assert "divisible by the number of devices (4)" in info["error"]
    assert "got batch size 6" in info["error"]
    for name in RUNS:
        four = training.read_metrics(str(tmp_path / "four" / name))
        single = training.read_metrics(str(tmp_path / "one" / name))
        assert len(four) == len(single) > 0
        np.testing.assert_allclose(
            [r["loss"] for r in four],
            [r["loss"] for r in single],
            rtol=2e-5,
            atol=1e-6,
            err_msg=name,
        )
        with open(tmp_path / "four" / name / "metrics.json") as f:
            assert json.load(f)["devices"] == 4
