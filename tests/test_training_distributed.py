"""experiments.training.distributed: two processes started with --distributed train like one
device and write their checkpoints together (slow: two fresh processes compile everything)."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from experiments import sine, training
from tests.harness import ROOT, subprocess_env

pytestmark = pytest.mark.usefixtures("compilation_cache")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_without_the_flag_nothing_starts():
    assert training.start_distributed(argparse.Namespace(distributed=False)) is False


@pytest.mark.slow
def test_two_process_run_matches_one_device(tmp_path):
    """--distributed: 2 processes x 2 CPU devices (gloo) train like 1 device, and checkpoint
    together."""
    sine.main(["--quick", "--no-progress", "--no-plots", "--out-dir", str(tmp_path / "one")])
    port = _free_port()
    # CPU devices, whatever the machine has: this checks host devices over gloo.
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    procs = []
    for i in range(2):
        cmd = [
            sys.executable,
            "-m",
            "experiments.sine",
            "--quick",
            "--no-progress",
            "--no-plots",
            "--distributed",
            "--coordinator-address",
            f"localhost:{port}",
            "--num-processes",
            "2",
            "--process-id",
            str(i),
            "--out-dir",
            str(tmp_path / "out"),
            "--checkpoint-dir",
            str(tmp_path / "ckpt"),
        ]
        procs.append(
            subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    for p in procs:
        output, _ = p.communicate(timeout=300)
        assert p.returncode == 0, output[-3000:]
    with open(tmp_path / "out" / "metrics.json") as f:
        assert json.load(f)["devices"] == 4
    four = [r["loss"] for r in training.read_metrics(str(tmp_path / "out"))]
    one = [r["loss"] for r in training.read_metrics(str(tmp_path / "one"))]
    np.testing.assert_allclose(four, one, rtol=2e-5, atol=1e-6)
    checkpoints = training.Checkpoints(str(tmp_path / "ckpt"), must_exist=True)
    assert checkpoints.all_steps() == [4, 8, 12]
