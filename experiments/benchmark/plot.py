"""benchmark.png: every implementation's speed relative to torch, one panel per mode."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from experiments import training
from experiments.benchmark.cells import Cell, speedup, torch_label, torch_reference
from experiments.benchmark.configs import CONFIGS, MODES, TORCH_IMPLS, XLA_IMPL
from experiments.benchmark.environment import QUIET_LOAD, backend_text, device_text

__all__ = ["FONT_PT", "MODE_TITLES", "TORCH_LINE", "WIDTH_IN", "figure"]

# The smallest text in the figure, in points (at the saved 120 dpi: 17 pixels high).
FONT_PT = 10
# Inches of figure width: per mode panel, and for the config labels (at 120 dpi two panels
# are ~1750 pixels wide).
WIDTH_IN = {"panel": 6.0, "labels": 2.4}
MODE_TITLES = {
    "fwd": "fwd: forward pass",
    "fwd+bwd": "fwd+bwd: forward + gradient w.r.t. parameters and input",
}
TORCH_LINE = "torch = 1 (the faster of its thread settings)"
_BAR_IN = 0.2  # inches of height per bar
_LINE_IN = 0.19  # inches of height per line of a config's note


@dataclasses.dataclass(frozen=True)
class _Rows:
    """The vertical layout: one row of height 1 per config (top to bottom), its bars in the
    lower `bars` fraction, its note in the rest above them."""

    configs: list[str]
    impls: list[str]
    bars: float

    def y(self, config: int, impl: int) -> float:
        """The centre of bar `impl` of config `config`."""
        return config - self.bars / 2 + (impl + 0.5) * self.bars / len(self.impls)


def _impls(cells: Sequence[Cell]) -> list[str]:
    """The implementations with at least one measured cell, in running order."""
    return [
        i
        for i in dict.fromkeys(c.impl for c in cells)
        if any(c.impl == i and c.median_s for c in cells)
    ]


def _find(cells: Sequence[Cell], config: str, impl: str, mode: str) -> Cell | None:
    found = [c for c in cells if (c.config, c.impl, c.mode) == (config, impl, mode)]
    return found[0] if found else None


def _label(impl: str, threads: int | None) -> str:
    return impl if impl not in TORCH_IMPLS else f"{impl}, {torch_label(impl, threads)}"


def _others(impls: Sequence[str]) -> list[str]:
    """The jaxlstm runs measured beside `jaxlstm`: the `--baseline` and `jaxlstm-xla`."""
    return [i for i in impls if i == XLA_IMPL or i.startswith("jaxlstm@")]


def _group_note(cells: Sequence[Cell], config: str, mode: str) -> str:
    """`torch 3.41 ms` and, on a second line, `time ÷ jaxlstm's: jaxlstm-xla ×1.10`: the
    reference time, and each other jaxlstm run's time over jaxlstm's (> 1: jaxlstm faster)."""
    mine = _find(cells, config, "jaxlstm", mode)
    ref = torch_reference(cells, mine) if mine else None
    lines = [] if ref is None or not ref.median_s else [f"torch {ref.median_s * 1e3:.3g} ms"]
    ratios = []
    for other in _others(_impls(cells)):
        theirs = _find(cells, config, other, mode)
        if mine and mine.median_s and theirs and theirs.median_s:
            ratios.append(f"{other} ÷ jaxlstm ×{theirs.median_s / mine.median_s:.2f}")
    return "\n".join(lines + ([", ".join(ratios)] if ratios else []))


def _bar(ax: Any, y: float, r: float, height: float, color: str, label: str | None) -> None:
    """One bar from 1 (torch) to `r`, with `×r` written at its end, outside it."""
    ax.barh(y, r - 1, height, left=1, color=color, label=label)
    right = r >= 1
    ax.annotate(
        f"×{r:.2f}" if r >= 0.1 else f"×{r:.2g}",
        (r, y),
        xytext=(3 if right else -3, 0),
        textcoords="offset points",
        ha="left" if right else "right",
        va="center",
        fontsize=FONT_PT,
    )


def _panel(
    ax: Any, cells: Sequence[Cell], mode: str, rows: _Rows, threads: int | None
) -> list[float]:
    """One mode's bars and notes; returns the ratios drawn (for the common x range)."""
    height = 0.9 * rows.bars / len(rows.impls)
    drawn: list[float] = []
    for j, impl in enumerate(rows.impls):
        label: str | None = _label(impl, threads)
        for i, config in enumerate(rows.configs):
            cell = _find(cells, config, impl, mode)
            if cell is None or (r := speedup(cells, cell)) is None:
                continue
            _bar(ax, rows.y(i, j), r, height, f"C{j}", label)
            label, drawn = None, [*drawn, r]
    for i, config in enumerate(rows.configs):
        ax.annotate(
            _group_note(cells, config, mode),
            (0.01, i - rows.bars / 2),
            xycoords=("axes fraction", "data"),
            xytext=(0, 2),
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize=FONT_PT,
            color="0.25",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1},
        )
    ax.axvline(1.0, color="black", linewidth=1.2, label=TORCH_LINE)
    ax.set_title(MODE_TITLES[mode], fontsize=FONT_PT + 2)
    ax.set_xlabel("torch's time ÷ this one's (×, log scale; > 1: faster)", fontsize=FONT_PT)
    ax.tick_params(labelsize=FONT_PT)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.set_axisbelow(True)
    return drawn


def _ticks(low: float, high: float) -> list[float]:
    """×1, ×2, ×5 per decade over a narrow range, powers of ten only over a wide one."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    steps = (1, 2, 5) if last - first <= 2 else (1,)
    return [m * 10.0**e for e in range(first, last + 1) for m in steps]


def _x_axis(ax: Any, drawn: Sequence[float]) -> None:
    """The shared log ratio axis, from the smallest to the largest ratio drawn and 1, with
    room on both sides for the bars' `×r` labels."""
    from matplotlib import ticker  # matplotlib is an optional dependency (experiments)

    low, high = min(1.0, *drawn), max(1.0, *drawn)
    margin = 10 ** (0.25 * (math.log10(high / low) + 0.2))
    low, high = low / margin, high * margin
    ax.set_xscale("log")
    ax.set_xticks(_ticks(low, high))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"×{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlim(low, high)


def _y_axis(ax: Any, rows: _Rows) -> None:
    configs = rows.configs
    ax.set_yticks(range(len(configs)), [f"{c}\n{CONFIGS[c].shape}" for c in configs])
    ax.set_ylim(len(configs) - 0.5, -0.5 - (1 - rows.bars) / 2)
    ax.set_ylabel("config: B batch, T steps, I input,\nH hidden, L layers", fontsize=FONT_PT)


def _title(env: dict[str, Any]) -> str:
    load = env.get("load_average")
    busy = " (a busy machine: noisy times)" if load and load[0] > QUIET_LOAD else ""
    return (
        f"LSTM speed relative to torch: {device_text(env)}, {env['precision']}, "
        f"{env['date'][:10]}\njaxlstm backend {backend_text(env)}; load average "
        f"{load[0] if load else '?'}{busy}\nbars: torch's time ÷ each implementation's "
        "(torch: the faster of its thread settings, the black line);\nabove each config: "
        "torch's time, and other jaxlstm runs' time ÷ jaxlstm's (> 1: jaxlstm faster)"
    )


def _legend(fig: Any, axes: Sequence[Any]) -> None:
    """One legend below the panels: every implementation, then torch's line."""
    legend: dict[str, Any] = {}
    for ax in axes:
        legend.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    legend[TORCH_LINE] = legend.pop(TORCH_LINE)
    fig.legend(
        legend.values(),
        legend,
        loc="outside lower center",
        ncols=min(4, len(legend)),
        fontsize=FONT_PT,
    )


def figure(cells: Sequence[Cell], env: dict[str, Any], baseline: str | None = None) -> Any:
    """Horizontal bars of torch's median time ÷ each implementation's per config (rows), one
    panel per mode, on a shared log axis with torch at 1 (a vertical line); each bar's ratio
    written at its end; above each config's bars torch's time and the ratios of the other
    jaxlstm runs (`baseline`, `jaxlstm-xla`) to jaxlstm. Text is at least `FONT_PT` points;
    at 120 dpi two panels are ~1750 pixels wide."""
    del baseline  # an implementation like any other here, recognised by its `jaxlstm@` name
    plt = training.pyplot()
    modes = [m for m in MODES if any(c.mode == m for c in cells)]
    impls = _impls(cells)
    note_lines = 1 + bool(_others(impls))
    bars_in = max(1, len(impls)) * _BAR_IN
    row_in = bars_in + note_lines * _LINE_IN + 0.06
    rows = _Rows(list(dict.fromkeys(c.config for c in cells)), impls, bars_in / row_in)
    size = (
        WIDTH_IN["panel"] * len(modes) + WIDTH_IN["labels"],
        max(3.5, 2.6 + len(rows.configs) * row_in),
    )
    fig, axes = plt.subplots(
        1, len(modes), figsize=size, squeeze=False, sharex=True, sharey=True, layout="constrained"
    )
    drawn: list[float] = []
    for ax, mode in zip(axes[0], modes, strict=True):
        drawn += _panel(ax, cells, mode, rows, env.get("torch_threads"))
    _x_axis(axes[0, 0], drawn)
    _y_axis(axes[0, 0], rows)
    _legend(fig, axes[0])
    fig.suptitle(_title(env), fontsize=FONT_PT + 1)
    return fig
