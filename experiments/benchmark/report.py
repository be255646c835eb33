"""The run's text: the markdown table with its caption, the FLOP-time bounds and the one-line
summary."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from experiments.benchmark.cells import (
    Cell,
    achieved_gflops,
    baseline_speedup,
    gmean,
    peak_share,
    speedup,
    torch_label,
    torch_reference,
    xla_speedup,
)
from experiments.benchmark.configs import CONFIGS, MODES, XLA_IMPL
from experiments.benchmark.timing import Peak

__all__ = ["bounds_text", "markdown_table", "summary", "table_caption"]

Column = tuple[str, str, Callable[[Cell], str]]


def _fmt_ms(s: float | None) -> str:
    return "—" if s is None else (f"{s * 1e3:.3g}" if s < 1 else f"{s * 1e3:.0f}")


def _fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}"


def _fmt_matmul(c: Cell) -> str:
    """`292 (95%)`: the cell's matmul time and its share of the median call."""
    if c.matmul_s is None or not c.median_s:
        return "—"
    return f"{_fmt_ms(c.matmul_s)} ({c.matmul_s / c.median_s:.0%})"


def _fmt_rate(c: Cell, peak: Peak) -> str:
    """`812 (83%)`: the cell's achieved GFLOP/s and its share of the peak."""
    rate, share = achieved_gflops(c), peak_share(c, peak.gflops)
    if rate is None or share is None:
        return "—"
    return f"{rate:.3g} ({_fmt_share(share)})" if rate < 100 else f"{rate:.0f} ({share:.0%})"


def _has_xla_pair(cells: Sequence[Cell]) -> bool:
    measured = {c.impl for c in cells if c.median_s}
    return {"jaxlstm", XLA_IMPL} <= measured


def table_caption(
    threads: int | None,
    baseline: str | None,
    profiled: bool = False,
    xla: bool = False,
    peak_label: str = "sgemm peak",
) -> str:
    """What the table's ratio columns mean, with torch's thread counts named."""
    text = (
        "ms: median per call. × torch: torch's median ÷ this row's (> 1: faster than torch), "
        f"where torch's is the faster of torch at {torch_label('torch', threads)} and "
        "torch-1t (1 thread) on the same config and mode, as the `torch ref` column says."
    )
    if baseline is not None:
        text += f" × {baseline}: {baseline}'s median ÷ this jaxlstm row's (> 1: faster now)."
    if xla:
        text += (
            f" × {XLA_IMPL}: {XLA_IMPL}'s median ÷ this jaxlstm row's (> 1: jaxlstm's backend "
            "is faster than its XLA scan)."
        )
    if profiled:
        text += (
            " matmul ms: per call, the time during which at least one matmul runs (from a "
            "profiler trace of 5 calls), and its share of the median; — where a product runs "
            "asynchronously (the trace shows only its start)."
        )
    text += (
        f" GFLOP/s: the recurrence's and projection's matmul FLOPs per call ÷ the median, and "
        f"its share of the {peak_label}. FLOP bound ms: those FLOPs at the {peak_label} "
        "(compute-bound configs)."
    )
    return text


def _columns(
    cells: Sequence[Cell],
    peak: Peak,
    threads: int | None,
    baseline: str | None,
    profiled: bool,
) -> list[Column]:
    """`(header, alignment, cell -> text)` of every column of this run's table."""

    def ref_name(c: Cell) -> str:
        ref = torch_reference(cells, c)
        return "" if ref is None or c.median_s is None else torch_label(ref.impl, threads)

    def per_step(c: Cell) -> str:
        steps = CONFIGS[c.config].sequential_steps
        return "—" if c.median_s is None else f"{c.median_s * 1e6 / steps:.1f}"

    def bound(c: Cell) -> str:
        cfg = CONFIGS[c.config]
        if not cfg.compute_bound:
            return ""
        return f"{cfg.flops(c.mode == 'fwd+bwd') / (peak.gflops * 1e9) * 1e3:.0f}"

    columns: list[Column] = [
        ("config", "---", lambda c: c.config),
        ("impl", "---", lambda c: c.impl),
        ("mode", "---", lambda c: c.mode),
        ("compile s", "---:", lambda c: "—" if c.compile_s is None else f"{c.compile_s:.2f}"),
        ("ms", "---:", lambda c: _fmt_ms(c.median_s)),
        ("µs/step", "---:", per_step),
        ("× torch", "---:", lambda c: _fmt_ratio(speedup(cells, c))),
        ("torch ref", "---", ref_name),
    ]
    if baseline:
        base = ("---:", lambda c: _fmt_ratio(baseline_speedup(cells, c, baseline)))
        columns.append((f"× {baseline}", *base))
    if _has_xla_pair(cells):
        columns.append((f"× {XLA_IMPL}", "---:", lambda c: _fmt_ratio(xla_speedup(cells, c))))
    if profiled:
        columns.append(("matmul ms", "---:", _fmt_matmul))
    columns.append(("GFLOP/s (% of peak)", "---:", lambda c: _fmt_rate(c, peak)))
    columns.append(("FLOP bound ms", "---:", bound))
    columns.append(("note", "---", lambda c: c.note))
    return columns


def markdown_table(
    cells: Sequence[Cell],
    peak: Peak,
    threads: int | None = None,
    baseline: str | None = None,
    profiled: bool = False,
) -> str:
    """The results as a markdown table, one row per cell (with `profiled`, a matmul column;
    with both `jaxlstm` and `jaxlstm-xla` measured, a `× jaxlstm-xla` column)."""
    columns = _columns(cells, peak, threads, baseline, profiled)
    lines = [
        "| " + " | ".join(name for name, _, _ in columns) + " |",
        "|" + "|".join(align for _, align, _ in columns) + "|",
    ]
    for c in cells:
        lines.append("| " + " | ".join(text(c) for _, _, text in columns) + " |")
    return "\n".join(lines)


def bounds_text(peak: Peak, configs: Sequence[str]) -> list[str]:
    """The peak, then each compute-bound config's FLOP-time bound at that rate."""
    lines = [peak.text()]
    for cname in configs:
        cfg = CONFIGS[cname]
        if cfg.compute_bound:
            fwd, bwd = (cfg.flops(b) / (peak.gflops * 1e9) * 1e3 for b in (False, True))
            lines.append(
                f"FLOP-time bound {cname} at the {peak.label}: fwd {fwd:.0f} ms, fwd+bwd "
                f"{bwd:.0f} ms ({cfg.flops(False) / 1e9:.1f} / {cfg.flops(True) / 1e9:.1f} GFLOP)"
            )
    return lines


def _per_mode(cells: Sequence[Cell], of: Callable[[Cell], float | None]) -> list[str]:
    """`fwd ×1.23` per mode: the geometric mean of `of(cell)` over the jaxlstm cells."""
    parts = []
    for mode in MODES:
        ratios = [r for c in cells if c.mode == mode and (r := of(c)) is not None]
        if ratios:
            parts.append(f"{mode} ×{gmean(ratios):.2f}")
    return parts


def _versus_torch(cells: Sequence[Cell]) -> str:
    parts = []
    for mode in MODES:
        ratios = [
            (r, c.config)
            for c in cells
            if c.impl == "jaxlstm" and c.mode == mode and (r := speedup(cells, c)) is not None
        ]
        if ratios:
            worst = min(ratios)
            parts.append(
                f"{mode} ×{gmean([r for r, _ in ratios]):.2f} geo-mean "
                f"(min ×{worst[0]:.2f} on {worst[1]})"
            )
    return "jaxlstm vs torch, " + "; ".join(parts) if parts else "no jaxlstm/torch pairs measured"


def _fmt_share(share: float) -> str:
    return f"{share:.0%}" if share >= 0.01 else "<1%"


def _peak_shares(cells: Sequence[Cell], peak: Peak) -> str:
    """`jaxlstm fwd share of the sgemm peak (197 GFLOP/s): medium 45%, deepbench 50%`, over
    the compute-bound configs ("" if none was measured)."""
    shares = [
        f"{c.config} {_fmt_share(share)}"
        for c in cells
        if (c.impl, c.mode) == ("jaxlstm", "fwd")
        and CONFIGS[c.config].compute_bound
        and (share := peak_share(c, peak.gflops)) is not None
    ]
    head = f"jaxlstm fwd share of the {peak.label} ({peak.gflops:.0f} GFLOP/s)"
    return f"{head}: {', '.join(shares)}" if shares else ""


def summary(
    cells: Sequence[Cell],
    baseline: str | None = None,
    peak: Peak | None = None,
    backend: str | None = None,
) -> str:
    """One line: jaxlstm's speedup over torch (and over jaxlstm-xla and the baseline) per
    mode, its forward's share of the peak on the compute-bound configs, and its backend."""
    text = _versus_torch(cells)
    if _has_xla_pair(cells):
        xla = _per_mode(cells, lambda c: xla_speedup(cells, c))
        text += f"; jaxlstm vs {XLA_IMPL}, " + ("; ".join(xla) if xla else "none measured")
    if baseline is not None:
        base = _per_mode(cells, lambda c: baseline_speedup(cells, c, baseline))
        text += f"; jaxlstm vs {baseline}, " + ("; ".join(base) if base else "none measured")
    if peak is not None and (shares := _peak_shares(cells, peak)):
        text += f"; {shares}"
    if backend is not None:
        text += f"; jaxlstm backend {backend}"
    return "summary: " + text
