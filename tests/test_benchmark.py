"""experiments.benchmark: a --quick run with a --baseline writes its table, JSON and plot, states
torch's thread counts and the load, and rejects bad flags in one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from experiments import benchmark, training
from tests.harness import ROOT, assert_png, subprocess_env

pytestmark = pytest.mark.usefixtures("compilation_cache")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`--quick --profile` on the sine config with torch at both thread settings and jaxlstm
    at HEAD."""
    out = tmp_path_factory.mktemp("bench")
    argv = [
        "--quick",
        "--profile",
        "--configs",
        "sine",
        "--impls",
        "jaxlstm,torch,torch-1t",
        "--baseline",
        "HEAD",
        "--out-dir",
        str(out),
    ]
    return {"out": out, "result": benchmark.main(argv)}


def test_quick_run_writes_table_json_and_plot(quick_run):
    out, result = quick_run["out"], quick_run["result"]
    assert json.loads((out / "benchmark.json").read_text())["summary"] == result["summary"]
    table = (out / "benchmark.md").read_text()
    assert "| sine | jaxlstm | fwd+bwd |" in table
    assert_png(out / "benchmark.png")
    cells = {(c["impl"], c["mode"]): c for c in result["cells"]}
    for mode in benchmark.MODES:
        assert cells[("jaxlstm", mode)]["median_s"] > 0
        assert cells[("jaxlstm", mode)]["speedup_vs_torch"] > 0
        assert cells[("jaxlstm", mode)]["torch_reference"] in benchmark.TORCH_IMPLS


def test_profile_reports_the_time_matmuls_run(quick_run):
    cells = quick_run["result"]["cells"]
    on_cpu = jax.default_backend() == "cpu"
    for c in cells:
        if on_cpu and c["impl"].startswith("jaxlstm") and c["mode"] == "fwd":
            # Measured in other calls than the median (under the profiler): a loose upper bound.
            assert 0 < c["matmul_s"] <= 1.5 * c["median_s"], c
        elif c["impl"].startswith("torch") or not on_cpu:
            # --profile traces XLA:CPU's thunks only: elsewhere every cell has none.
            assert c["matmul_s"] is None, c
    table = (quick_run["out"] / "benchmark.md").read_text()
    assert "| matmul ms |" in table and "matmul ms: per call" in table


HLO = """HloModule m

%fused_computation (p0: f32[2,2], p1: f32[2,2]) -> f32[2,2] {
  %p0 = f32[2,2]{1,0} parameter(0)
  %p1 = f32[2,2]{1,0} parameter(1)
  ROOT %dot.1 = f32[2,2]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_computation.1 (p0.1: f32[2,2]) -> f32[2,2] {
  %p0.1 = f32[2,2]{1,0} parameter(0)
  ROOT %tanh.1 = f32[2,2]{1,0} tanh(%p0.1)
}

ENTRY %main (a: f32[2,2], b: f32[2,2]) -> f32[2,2] {
  %a = f32[2,2]{1,0} parameter(0)
  %b = f32[2,2]{1,0} parameter(1)
  %ynn_fusion = f32[2,2]{1,0} fusion(%a, %b), kind=kCustom, calls=%fused_computation
  %dot.2 = f32[2,2]{1,0} dot(%a, %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %add_fusion = f32[2,2]{1,0} fusion(%ynn_fusion, %dot.2), kind=kLoop, calls=%fused_computation.1
  ROOT %tanh_fusion = f32[2,2]{1,0} fusion(%add_fusion), kind=kLoop, calls=%fused_computation.1
}
"""


def test_matmul_instructions_are_dots_and_fusions_holding_one():
    want = {"dot.1": "dot", "ynn_fusion": "fusion", "dot.2": "dot"}
    assert benchmark.matmul_instructions(HLO) == want


def test_matmul_instructions_of_a_compiled_xla_cpu_program():
    # XLA:CPU's HLO, which the profile reads, also on a machine whose default is a GPU.
    try:
        cpu = jax.devices("cpu")[0]
    except RuntimeError:  # JAX_PLATFORMS=cuda leaves no CPU backend
        pytest.skip("XLA:CPU is not among the backends (JAX_PLATFORMS)")
    ones = jax.device_put(jnp.ones((8, 8)), cpu)
    compiled = jax.jit(lambda a, b: jnp.tanh(a @ b)).lower(ones, ones)
    text = compiled.compile().as_text()
    names = benchmark.matmul_instructions(text)
    assert names and all(f"%{name} = " in text for name in names)
    elementwise = jax.jit(jnp.tanh).lower(ones).compile().as_text()
    assert benchmark.matmul_instructions(elementwise) == {}


def test_covered_time_is_the_union_of_the_spans():
    assert benchmark.union_length([(5, 6), (0, 2), (1, 3), (1.5, 2.5)]) == 4


def test_table_states_torchs_threads_and_the_load(quick_run):
    result = quick_run["result"]
    env = result["environment"]
    threads = env["torch_threads"]
    assert threads >= 1 and len(env["load_average"]) == 3
    table = (quick_run["out"] / "benchmark.md").read_text()
    assert f"torch at {threads} threads (default)" in table or threads == 1
    assert "torch-1t (1 thread)" in table
    assert "load average" in table.splitlines()[0]
    rows = [line for line in table.splitlines() if line.startswith("| sine | jaxlstm | fwd |")]
    reference = result["cells"][0]["torch_reference"]
    assert benchmark.torch_label(reference, threads) in rows[0]
    line = benchmark.environment_line(env)
    assert f"({threads} threads by default)" in line and "load average" in line


def test_baseline_is_timed_beside_the_current_jaxlstm(quick_run):
    result = quick_run["result"]
    baseline = result["environment"]["baseline"]
    assert baseline["rev"] == "HEAD" and len(baseline["commit"]) == 40
    name = f"jaxlstm@{baseline['commit'][:7]}"
    impls = [c["impl"] for c in result["cells"] if c["mode"] == "fwd"]
    assert impls == ["jaxlstm", name, "torch", "torch-1t"], "the baseline right after jaxlstm"
    for mode in benchmark.MODES:
        ours = next(c for c in result["cells"] if (c["impl"], c["mode"]) == ("jaxlstm", mode))
        theirs = next(c for c in result["cells"] if (c["impl"], c["mode"]) == (name, mode))
        assert theirs["median_s"] > 0 and theirs["compile_s"] > 0
        assert ours["speedup_vs_baseline"] == pytest.approx(theirs["median_s"] / ours["median_s"])
    table = (quick_run["out"] / "benchmark.md").read_text()
    assert f"× {name} |" in table
    assert f"jaxlstm vs {name}, fwd ×" in result["summary"]


def test_plot_is_labelled_and_shows_the_ratios(quick_run):
    result = quick_run["result"]
    cells = [
        benchmark.Cell(
            **{
                k: c[k]
                for k in ("config", "impl", "mode", "compile_s", "median_s", "times_s", "note")
            }
        )
        for c in result["cells"]
    ]
    name = next(c.impl for c in cells if c.impl.startswith("jaxlstm@"))
    fig = benchmark.figure(cells, result["environment"], name)
    assert training.missing_labels(fig) == []
    ax = fig.axes[0]
    assert "ms, log scale" in ax.get_ylabel() and ax.get_yscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["jaxlstm", name]
    # torch-1t runs on a CPU only (on a GPU its cell is skipped and has no bar).
    torch_1t = [t for t in legend if t.startswith("torch-1t")]
    assert torch_1t == (["torch-1t, 1 thread"] if jax.default_backend() == "cpu" else [])
    notes = [t.get_text() for t in ax.texts]
    assert any("torch ÷ jaxlstm ×" in t and f"{name} ÷ jaxlstm ×" in t for t in notes), notes
    training.pyplot().close(fig)


def test_quick_picks_the_smallest_configs_and_few_calls():
    args = benchmark.parse_args(["--quick"])
    assert args.configs == ["sine", "digits"]
    assert (args.repeats, args.warmup) == (3, 1) and args.out_dir == "runs/benchmark-quick"
    assert benchmark.parse_args(["--quick", "--configs", "bidir"]).configs == ["bidir"]
    assert benchmark.parse_args([]).out_dir == "runs/benchmark"


def test_jaxlstm_flags_build_one_scan_options():
    args = benchmark.parse_args(["--unroll", "4", "--no-custom-vjp", "--remat"])
    assert args.scan == benchmark.jaxlstm.ScanOptions(unroll=4, custom_vjp=False, remat=True)
    assert benchmark.parse_args([]).scan == benchmark.jaxlstm.ScanOptions()


def test_load_warning_only_on_a_busy_machine():
    env = {"load_average": [0.2, 0.1, 0.1], "cpu_count": 2}
    assert benchmark.load_warning(env) is None
    warning = benchmark.load_warning({**env, "load_average": [1.7, 1.0, 1.0]})
    assert warning.startswith("warning: the load average is 1.70 (> 0.5)")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--configs", "huge"], "--configs must be a comma-separated list from"),
        (["--modes", "bwd"], "--modes must be a comma-separated list from"),
        (["--repeats", "0"], "--repeats must be positive, got 0"),
        (["--unroll", "0"], "--unroll must be a positive integer, got 0"),
        (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
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
