"""Plotting helpers every experiment shares: a headless pyplot, figure saving, and smoothing.

Experiments build their figures in functions that return `{file name: Figure}` (so tests can
inspect a figure's labels before anything is written) and `save_figures` writes them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["centred_mean", "missing_labels", "pyplot", "save_figures", "smoothing_window"]


def pyplot() -> Any:
    """`matplotlib.pyplot` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def smoothing_window(n: int) -> int:
    """An odd window of about 2% of `n` points (at least 1): light smoothing of a noisy curve."""
    k = max(1, n // 50)
    return k if k % 2 else k + 1


def centred_mean(x: np.ndarray, y: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean of `y` over a window centred on each point, so the curve does not lag.

    Args:
        x: `[N]` positions (e.g. steps).
        y: `[N]` values.
        window: an odd number of points; the `window // 2` points at each end, whose window
            would be incomplete, are left out rather than biased.

    Returns:
        `(x[window // 2 : N - window // 2], means)`, each `[N - window + 1]`.
    """
    x, y = np.asarray(x), np.asarray(y, np.float64)
    if window % 2 == 0 or window < 1:
        raise ValueError(f"window must be a positive odd number, got {window}")
    if len(y) < window:
        return x[:0], y[:0]
    half = window // 2
    means = np.convolve(y, np.ones(window) / window, mode="valid")
    return x[half : len(x) - half], means


def save_figures(out_dir: str, figures: Mapping[str, Any], dpi: int = 120) -> list[str]:
    """Writes each `{file name: Figure}` into `out_dir` and closes it.

    Returns:
        The paths written.
    """
    plt = pyplot()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.15)  # nothing clipped
        plt.close(fig)
        paths.append(path)
    return paths


def missing_labels(fig: Any) -> list[str]:
    """What a reader of `fig` would miss: panels without an x or y label (a label on a panel
    sharing the axis counts), a figure without any title, a colour bar without a label.

    Returns:
        One line per problem; empty for a readable figure.
    """
    problems = []
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    for i, ax in enumerate(panels):
        for name, shared, label in (
            ("x", ax.get_shared_x_axes(), lambda a: a.get_xlabel()),
            ("y", ax.get_shared_y_axes(), lambda a: a.get_ylabel()),
        ):
            if not any(label(a) for a in shared.get_siblings(ax)):
                problems.append(f"panel {i} ({ax.get_title() or 'untitled'}): no {name} label")
    if not (fig.get_suptitle() or any(ax.get_title() for ax in panels)):
        problems.append("no title")
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>" and not (ax.get_ylabel() or ax.get_xlabel()):
            problems.append("a colour bar without a label")
    return problems
