"""experiments.benchmark's command line: --quick, the scan flags (--backend among them) as one
ScanOptions, the default implementations, and bad flags rejected in one line, exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

import jaxlstm
from experiments import benchmark, training
from experiments.benchmark import cli, configs
from tests.harness import ROOT, subprocess_env


def test_quick_picks_the_smallest_configs_and_few_calls():
    args = cli.parse_args(["--quick"])
    assert args.configs == ["sine", "digits"]
    assert (args.repeats, args.warmup) == (3, 1) and args.out_dir == "runs/benchmark-quick"
    assert cli.parse_args(["--quick", "--configs", "bidir"]).configs == ["bidir"]
    assert cli.parse_args([]).out_dir == "runs/benchmark"


def test_jaxlstm_flags_build_one_scan_options():
    args = cli.parse_args(["--unroll", "4", "--no-custom-vjp", "--remat"])
    assert args.scan == jaxlstm.ScanOptions(unroll=4, custom_vjp=False, remat=True)
    assert cli.parse_args([]).scan == jaxlstm.ScanOptions()


@pytest.mark.parametrize("backend", ["xla", "native"])
def test_backend_flag_sets_the_jaxlstm_impls_backend(backend):
    args = cli.parse_args(["--backend", backend, "--remat"])
    assert args.scan == jaxlstm.ScanOptions(remat=True, backend=backend)


def test_default_impls_time_jaxlstm_xla_only_where_jaxlstm_is_not_on_xla():
    xla = jaxlstm.ScanOptions(backend="xla")
    assert cli.default_impls(xla) == [i for i in configs.IMPLS if i != "jaxlstm-xla"]
    assert cli.default_impls(jaxlstm.ScanOptions(backend="native")) == list(configs.IMPLS)
    explicit = cli.parse_args(["--backend", "xla", "--impls", "jaxlstm,jaxlstm-xla"])
    assert explicit.impls == ["jaxlstm", "jaxlstm-xla"], "an explicit --impls is kept"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--configs", "huge"], "--configs must be a comma-separated list from"),
        (["--modes", "bwd"], "--modes must be a comma-separated list from"),
        (["--impls", "jaxlstm,keras"], "--impls must be a comma-separated list from"),
        (["--repeats", "0"], "--repeats must be positive, got 0"),
        (["--unroll", "0"], "--unroll must be a positive integer, got 0"),
        (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
        (["--backend", "cuda"], "argument --backend: invalid choice: 'cuda'"),
        (["--baseline", "no-such-rev"], "--baseline must name a git revision"),
    ],
)
def test_bad_flags_name_the_flag(argv, message):
    with pytest.raises(training.UsageError, match=message):
        benchmark.main(argv)


def test_command_line_error_is_one_line_and_exit_status_2():
    cmd = [sys.executable, "-m", "experiments.benchmark", "--configs", "sine,huge"]
    done = subprocess.run(
        cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --configs must be"), done.stderr
    assert "got 'sine,huge'" in lines[0]
