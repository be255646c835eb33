"""experiments.benchmark end to end: a --quick run with a --baseline and jaxlstm-xla writes its
table, JSON and plot, states torch's thread counts, the load and jaxlstm's backend, times
both recurrence backends side by side and reports each cell's share of the sgemm peak."""

from __future__ import annotations

import json

import jax
import pytest

import jaxlstm
from experiments import benchmark, training
from experiments.benchmark import cells as cells_
from experiments.benchmark import configs, environment, plot
from tests.harness import assert_png

pytestmark = pytest.mark.usefixtures("compilation_cache")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`--quick --profile` on the sine config with jaxlstm on both backends, torch at both
    thread settings and jaxlstm at HEAD."""
    out = tmp_path_factory.mktemp("bench")
    argv = [
        "--quick",
        "--profile",
        "--configs",
        "sine",
        "--impls",
        "jaxlstm,jaxlstm-xla,torch,torch-1t",
        "--baseline",
        "HEAD",
        "--out-dir",
        str(out),
    ]
    return {"out": out, "result": benchmark.main(argv)}


def _cell(result, impl, mode):
    return next(c for c in result["cells"] if (c["impl"], c["mode"]) == (impl, mode))


def test_quick_run_writes_table_json_and_plot(quick_run):
    out, result = quick_run["out"], quick_run["result"]
    assert json.loads((out / "benchmark.json").read_text())["summary"] == result["summary"]
    table = (out / "benchmark.md").read_text()
    assert "| sine | jaxlstm | fwd+bwd |" in table
    assert_png(out / "benchmark.png")
    cells = {(c["impl"], c["mode"]): c for c in result["cells"]}
    for mode in configs.MODES:
        assert cells[("jaxlstm", mode)]["median_s"] > 0
        assert cells[("jaxlstm", mode)]["speedup_vs_torch"] > 0
        assert cells[("jaxlstm", mode)]["torch_reference"] in configs.TORCH_IMPLS
    assert result["summary"].startswith("summary: ") and "\n" not in result["summary"]
    assert (out / "benchmark.md").read_text().rstrip().endswith(result["summary"])


def test_plot_is_at_most_1800_pixels_wide(quick_run):
    image = training.pyplot().imread(str(quick_run["out"] / "benchmark.png"))
    assert 300 <= image.shape[1] <= 1800, image.shape


def test_profile_reports_the_time_matmuls_run(quick_run):
    cells = quick_run["result"]["cells"]
    on_cpu = jax.default_backend() == "cpu"
    on_xla = {"jaxlstm-xla"} | (
        {"jaxlstm"} if quick_run["result"]["environment"]["jaxlstm_backend"] == "xla" else set()
    )
    for c in cells:
        if on_cpu and c["impl"] in on_xla and c["mode"] == "fwd":
            # Measured in other calls than the median (under the profiler): a loose upper bound.
            assert 0 < c["matmul_s"] <= 1.5 * c["median_s"], c
        elif c["impl"].startswith("torch") or not on_cpu:
            # --profile traces XLA:CPU's thunks only: elsewhere every cell has none.
            assert c["matmul_s"] is None, c
    table = (quick_run["out"] / "benchmark.md").read_text()
    assert "| matmul ms |" in table and "matmul ms: per call" in table


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
    assert cells_.torch_label(reference, threads) in rows[0]
    line = environment.environment_line(env)
    assert f"({threads} threads by default)" in line and "load average" in line


def test_baseline_is_timed_beside_the_current_jaxlstm(quick_run):
    result = quick_run["result"]
    baseline = result["environment"]["baseline"]
    assert baseline["rev"] == "HEAD" and len(baseline["commit"]) == 40
    name = f"jaxlstm@{baseline['commit'][:7]}"
    impls = [c["impl"] for c in result["cells"] if c["mode"] == "fwd"]
    assert impls == ["jaxlstm", name, "jaxlstm-xla", "torch", "torch-1t"], (
        "the baseline right after jaxlstm"
    )
    for mode in configs.MODES:
        ours = _cell(result, "jaxlstm", mode)
        theirs = _cell(result, name, mode)
        assert theirs["median_s"] > 0 and theirs["compile_s"] > 0
        assert ours["speedup_vs_baseline"] == pytest.approx(theirs["median_s"] / ours["median_s"])
    table = (quick_run["out"] / "benchmark.md").read_text()
    assert f"× {name} |" in table
    assert f"jaxlstm vs {name}, fwd ×" in result["summary"]


def test_both_backends_are_timed_and_compared(quick_run):
    result = quick_run["result"]
    env = result["environment"]
    assert env["jaxlstm_backend"] == jaxlstm.ScanOptions().resolve().backend
    assert env["jaxlstm_backend_requested"] is None
    for mode in configs.MODES:
        ours, xla = _cell(result, "jaxlstm", mode), _cell(result, "jaxlstm-xla", mode)
        assert xla["median_s"] > 0 and xla["compile_s"] > 0
        assert ours["speedup_vs_xla"] == pytest.approx(xla["median_s"] / ours["median_s"])
        assert xla["speedup_vs_xla"] is None, "a ratio of jaxlstm rows only"
    table = (quick_run["out"] / "benchmark.md").read_text()
    assert "| × jaxlstm-xla |" in table and "× jaxlstm-xla: jaxlstm-xla's median" in table
    assert "jaxlstm vs jaxlstm-xla, fwd ×" in result["summary"]
    backend = f"jaxlstm backend {env['jaxlstm_backend']} (the library's dispatch)"
    assert backend in result["summary"] and backend in table.splitlines()[0]


def test_cells_report_their_flop_rate_and_share_of_the_peak(quick_run):
    result = quick_run["result"]
    peak = result["peak"]
    label = "FMA peak" if jaxlstm.native_backend().available else "sgemm peak"
    assert peak["label"] == label and peak["gflops"] == result["sgemm_gflops"]["best"] > 0
    sine = configs.CONFIGS["sine"]
    for c in result["cells"]:
        flops = sine.flops(c["mode"] == "fwd+bwd")
        assert c["gflops"] == pytest.approx(flops / c["median_s"] / 1e9), c
        assert c["peak_share"] == pytest.approx(c["gflops"] / peak["gflops"]), c
    table = (quick_run["out"] / "benchmark.md").read_text()
    assert "| GFLOP/s (% of peak) |" in table and f"share of the {label}" in table
    assert f"{label}: " in table and "512³ float32 matmul" in table


def test_plot_is_labelled_and_shows_the_ratios(quick_run):
    result = quick_run["result"]
    cells = [
        cells_.Cell(
            **{
                k: c[k]
                for k in ("config", "impl", "mode", "compile_s", "median_s", "times_s", "note")
            }
        )
        for c in result["cells"]
    ]
    name = next(c.impl for c in cells if c.impl.startswith("jaxlstm@"))
    fig = plot.figure(cells, result["environment"], name)
    assert training.missing_labels(fig) == []
    ax = fig.axes[0]
    assert "log scale" in ax.get_xlabel() and ax.get_xscale() == "log"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:3] == ["jaxlstm", name, "jaxlstm-xla"]
    # torch-1t runs on a CPU only (on a GPU its cell is skipped and has no bar).
    assert any("1 thread" in t for t in legend) == (jax.default_backend() == "cpu"), legend
    notes = [t.get_text() for t in ax.texts]
    ours = _cell(result, "jaxlstm", "fwd")
    assert f"×{ours['speedup_vs_torch']:.2f}" in notes, notes
    note = next(t for t in notes if t.startswith("torch "))
    assert f"{name} ÷ jaxlstm ×{ours['speedup_vs_baseline']:.2f}" in note, note
    assert f"jaxlstm-xla ÷ jaxlstm ×{ours['speedup_vs_xla']:.2f}" in note, note
    training.pyplot().close(fig)
