"""MkDocs hook: `images/performance.png`, drawn at build time from the table in performance.md.

The picture is the page's own table (the benchmark's measured times) drawn, so it cannot
disagree with it: change the table and the plot follows. Nothing is measured here.
"""

from __future__ import annotations

import io
import os
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

PAGE = "performance.md"
IMAGE = "images/performance.png"
IMPLS = ("jaxlstm", "jaxlstm-xla", "torch", "flax")  # the table's time columns, in ms
RATIO = "torch ÷ jaxlstm"  # the table's ratio column, as measured (not from rounded times)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def read_table(markdown: str) -> list[dict[str, Any]]:
    """The rows of the first table whose header has `config`, `mode`, every impl and RATIO.

    Returns one `{"config", "mode", RATIO: text, impl: ms}` per row; an empty config cell
    repeats the one above, as the table writes it.
    """
    lines = markdown.splitlines()
    starts = [
        i
        for i, line in enumerate(lines)
        if line.startswith("|") and {"config", "mode", RATIO, *IMPLS} <= set(_cells(line))
    ]
    if not starts:
        raise PluginError(
            f"{PAGE}: no table with the columns config, mode, {RATIO}, {', '.join(IMPLS)}"
        )
    start = starts[0]
    header = _cells(lines[start])
    rows, config = [], ""
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, _cells(line), strict=True))
        config = cells["config"] or config
        rows.append(
            {"config": config, "mode": cells["mode"], RATIO: cells[RATIO]}
            | {impl: float(cells[impl]) for impl in IMPLS}
        )
    return rows


def draw(rows: list[dict[str, Any]]) -> bytes:
    """Horizontal bars of each implementation's time per config and mode, log axis, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.2))
    height = 0.8 / len(IMPLS)
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:gray")
    for k, (impl, color) in enumerate(zip(IMPLS, colors, strict=True)):
        ys = [i + k * height for i in range(len(rows))]
        ax.barh(
            ys,
            [row[impl] for row in rows],
            height=height,
            color=color,
            label={"jaxlstm": "jaxlstm (native kernel)", "jaxlstm-xla": "jaxlstm on XLA"}.get(
                impl, impl
            ),
        )
    for i, row in enumerate(rows):
        ax.text(row["jaxlstm"] * 1.08, i, f"{RATIO} {row[RATIO]}", va="center", fontsize=8)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))])
    ax.set_yticklabels([f"{row['config']} {row['mode']}" for row in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time per call (ms, log scale; shorter is faster)")
    ax.set_title("The table above, drawn: CPU, float32")
    ax.grid(axis="x", alpha=0.3)
    longest = max(row[impl] for row in rows for impl in IMPLS)
    ax.set_xlim(right=longest * 10)  # room for the ratio beside the longest bar
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()


def on_files(files: Files, config: Any) -> Files:
    with open(os.path.join(config.docs_dir, PAGE), encoding="utf-8") as f:
        png = draw(read_table(f.read()))
    files.append(File.generated(config, IMAGE, content=png))
    return files
