"""experiments.benchmark.report and .cells on made-up cells: the table's ratio, FLOP-rate and
bound columns, and the one-line summary (torch, jaxlstm-xla, baseline, peak share, backend)."""

from __future__ import annotations

import pytest

from experiments.benchmark import cells as cells_
from experiments.benchmark import report
from experiments.benchmark.cells import Cell
from experiments.benchmark.configs import CONFIGS
from experiments.benchmark.timing import Peak

PEAK = Peak("sgemm peak", 100.0, "made up", {"jax": 100.0})
# Medians in ms: jaxlstm twice as fast as jaxlstm-xla, torch-1t the faster torch.
MS = {"jaxlstm": 10.0, "jaxlstm@abc1234": 15.0, "jaxlstm-xla": 20.0, "torch": 12.0, "torch-1t": 8}


def made_up(impls=tuple(MS), configs=("digits", "medium")) -> list[Cell]:
    return [
        Cell(config, impl, mode, 0.5, MS[impl] * 1e-3 * (3 if mode == "fwd+bwd" else 1), [1.0])
        for config in configs
        for mode in ("fwd", "fwd+bwd")
        for impl in impls
    ]


def row(table: str, config: str, impl: str, mode: str) -> dict[str, str]:
    lines = table.splitlines()
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        values = [v.strip() for v in line.strip("|").split("|")]
        if values[:3] == [config, impl, mode]:
            return dict(zip(header, values, strict=True))
    raise AssertionError(f"no row {config} {impl} {mode}")


def test_table_has_the_xla_ratio_and_the_flop_rate_with_its_share_of_the_peak():
    cells = made_up()
    table = report.markdown_table(cells, PEAK, threads=2, baseline="jaxlstm@abc1234")
    ours = row(table, "medium", "jaxlstm", "fwd")
    assert ours["× torch"] == "0.80" and ours["torch ref"] == "1 thread"
    assert ours["× jaxlstm@abc1234"] == "1.50" and ours["× jaxlstm-xla"] == "2.00"
    rate = CONFIGS["medium"].flops(False) / 10e-3 / 1e9
    assert ours["GFLOP/s (% of peak)"] == f"{rate:.0f} ({rate / 100:.0%})"
    assert ours["FLOP bound ms"] == f"{CONFIGS['medium'].flops(False) / 100e9 * 1e3:.0f}"
    xla = row(table, "medium", "jaxlstm-xla", "fwd+bwd")
    assert xla["× jaxlstm-xla"] == "—" and xla["× torch"] == "0.40"
    assert xla["GFLOP/s (% of peak)"].startswith(f"{rate * 3 / 6:.0f} (")
    assert row(table, "digits", "jaxlstm", "fwd")["FLOP bound ms"] == "", "not compute-bound"


def test_no_xla_column_without_both_jaxlstm_backends():
    cells = made_up(impls=("jaxlstm", "torch"))
    assert "jaxlstm-xla" not in report.markdown_table(cells, PEAK)
    assert "jaxlstm-xla" not in report.summary(cells, None, PEAK)
    assert "jaxlstm-xla" not in report.table_caption(2, None, xla=False)
    assert "× jaxlstm-xla: jaxlstm-xla's median" in report.table_caption(2, None, xla=True)


def test_summary_is_one_line_with_every_comparison():
    line = report.summary(made_up(), "jaxlstm@abc1234", PEAK, "native (--backend native)")
    assert "\n" not in line and line.startswith("summary: jaxlstm vs torch, fwd ×0.80 geo-mean")
    assert "; jaxlstm vs jaxlstm-xla, fwd ×2.00; fwd+bwd ×2.00" in line
    assert "; jaxlstm vs jaxlstm@abc1234, fwd ×1.50; fwd+bwd ×1.50" in line
    share = CONFIGS["medium"].flops(False) / 10e-3 / 1e9 / 100
    assert f"; jaxlstm fwd share of the sgemm peak (100 GFLOP/s): medium {share:.0%};" in line
    assert line.endswith("; jaxlstm backend native (--backend native)")


def test_bounds_name_the_peak_and_each_compute_bound_config():
    lines = report.bounds_text(PEAK, ["digits", "medium"])
    assert lines[0] == "sgemm peak: 100 GFLOP/s (made up)"
    assert len(lines) == 2 and lines[1].startswith("FLOP-time bound medium at the sgemm peak:")


def test_ratios_and_rates_of_a_cell():
    cells = made_up(configs=("medium",))
    ours = cells[0]
    assert cells_.speedup(cells, ours) == pytest.approx(0.8)
    assert cells_.xla_speedup(cells, ours) == pytest.approx(2.0)
    assert cells_.xla_speedup(cells, cells[2]) is None, "only jaxlstm rows"
    assert cells_.achieved_gflops(ours) == pytest.approx(
        CONFIGS["medium"].flops(False) / 1e-2 / 1e9
    )
    assert cells_.peak_share(ours, 50.0) == pytest.approx(cells_.achieved_gflops(ours) / 50)
    assert cells_.achieved_gflops(Cell("medium", "jaxlstm", "fwd")) is None
