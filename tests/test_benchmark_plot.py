"""experiments.benchmark.plot on made-up cells: bars of torch's time ÷ each implementation's
from the line at 1, one panel per mode, text of at least 10 points, at most 1800 pixels
wide with every config and implementation."""

from __future__ import annotations

import pytest

from experiments import training
from experiments.benchmark import plot
from experiments.benchmark.cells import Cell
from experiments.benchmark.configs import CONFIGS
from tests.harness import assert_png

ENV = {
    "date": "2026-12-04T15:00:00+00:00",
    "backend": "cpu",
    "device": "cpu",
    "cpu": "x86_64",
    "cpu_count": 2,
    "load_average": [0.3, 0.2, 0.1],
    "precision": "fp32",
    "torch_threads": 2,
    "jaxlstm_backend": "native",
    "jaxlstm_backend_requested": None,
}
IMPLS = ("jaxlstm", "jaxlstm@abc1234", "jaxlstm-xla", "torch", "torch-1t", "flax")


def made_up(configs=tuple(CONFIGS), impls=IMPLS) -> list[Cell]:
    """Medians from 1 ms (jaxlstm) to 6 ms, by implementation; torch (4 ms) the reference."""
    return [
        Cell(config, impl, mode, 0.1, (1 + impls.index(impl)) * 1e-3, [1e-3])
        for config in configs
        for mode in ("fwd", "fwd+bwd")
        for impl in impls
    ]


@pytest.fixture
def full_figure():
    fig = plot.figure(made_up(), ENV, "jaxlstm@abc1234")
    yield fig
    training.pyplot().close(fig)


def test_every_config_and_impl_fits_in_1800_pixels(tmp_path):
    fig = plot.figure(made_up(), ENV)
    (path,) = training.save_figures(str(tmp_path), {"b.png": fig})
    assert_png(path)
    height, width = training.pyplot().imread(path).shape[:2]
    assert width <= 1800 and height <= 1800, (width, height)


def test_text_is_at_least_10_points(full_figure):
    from matplotlib.text import Text

    full_figure.canvas.draw()  # creates the tick labels
    texts = [t for t in full_figure.findobj(Text) if t.get_visible() and t.get_text()]
    small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < 10]
    assert len(texts) > 100 and small == []


def test_one_panel_per_mode_with_bars_from_torch(full_figure):
    assert training.missing_labels(full_figure) == []
    axes = full_figure.axes
    assert [ax.get_title() for ax in axes] == [plot.MODE_TITLES["fwd"], plot.MODE_TITLES["fwd+bwd"]]
    for ax in axes:
        assert ax.get_xscale() == "log" and "log scale" in ax.get_xlabel()
        assert any(tuple(line.get_xdata()) == (1.0, 1.0) for line in ax.get_lines()), "torch"
        # jaxlstm's bars: 1 ms against torch's 4 ms, from 1 to 4, once per config.
        bars = [p for p in ax.patches if p.get_facecolor() == ax.patches[0].get_facecolor()]
        assert len(bars) == len(CONFIGS)
        for bar in bars:
            assert (bar.get_x(), bar.get_x() + bar.get_width()) == pytest.approx((1.0, 4.0))
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert labels[0] == f"sine\n{CONFIGS['sine'].shape}"


def test_legend_names_every_impl_then_torch_and_notes_give_the_jaxlstm_ratios(full_figure):
    legend = [t.get_text() for t in full_figure.legends[0].get_texts()]
    assert legend == [
        "jaxlstm",
        "jaxlstm@abc1234",
        "jaxlstm-xla",
        "torch, 2 threads (default)",
        "torch-1t, 1 thread",
        "flax",
        plot.TORCH_LINE,
    ]
    notes = [t.get_text() for t in full_figure.axes[1].texts]
    assert notes.count("×4.00") == len(CONFIGS), "jaxlstm: torch's 4 ms ÷ 1 ms"
    assert notes.count(
        "torch 4 ms\njaxlstm@abc1234 ÷ jaxlstm ×2.00, jaxlstm-xla ÷ jaxlstm ×3.00"
    ) == len(CONFIGS)
    title = full_figure.get_suptitle()
    assert "2 CPU cores (x86_64), fp32, 2026-12-04" in title
    assert "jaxlstm backend native (the library's dispatch)" in title


def test_a_single_config_and_mode_is_still_a_readable_image(tmp_path):
    cells = [c for c in made_up(("sine",), ("jaxlstm", "torch")) if c.mode == "fwd"]
    fig = plot.figure(cells, ENV)
    assert training.missing_labels(fig) == [] and len(fig.axes) == 1
    (path,) = training.save_figures(str(tmp_path), {"b.png": fig})
    assert_png(path)
