"""What a run writes: benchmark.json (every timing), benchmark.md (the table) and
benchmark.png (the plot)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from experiments import training
from experiments.benchmark.cells import Cell, cell_record
from experiments.benchmark.configs import CONFIGS
from experiments.benchmark.plot import figure
from experiments.benchmark.timing import Peak

__all__ = ["result_record", "write_outputs"]


def result_record(
    args: argparse.Namespace,
    env: dict[str, Any],
    peak: Peak,
    cells: Sequence[Cell],
    baseline: str | None,
    summary: str,
) -> dict[str, Any]:
    """benchmark.json: the environment, the peak, the flags, the configs, every cell and the
    summary line. `sgemm_gflops` holds the large-matmul rates (and `best`, the peak's value)."""
    return {
        "environment": env,
        "peak": dataclasses.asdict(peak),
        "sgemm_gflops": {
            **{k: v for k, v in peak.rates.items() if k != "fma"},
            "best": peak.gflops,
        },
        "args": {**vars(args), "scan": dataclasses.asdict(args.scan)},
        "configs": {c: dataclasses.asdict(CONFIGS[c]) for c in args.configs},
        "cells": [cell_record(cells, c, baseline, peak.gflops) for c in cells],
        "summary": summary,
    }


def write_outputs(
    args: argparse.Namespace,
    result: dict[str, Any],
    report: str,
    cells: Sequence[Cell],
    baseline: str | None,
) -> list[str]:
    """benchmark.json, benchmark.md and benchmark.png in `args.out_dir`; returns the paths."""
    os.makedirs(args.out_dir, exist_ok=True)
    json_path = os.path.join(args.out_dir, "benchmark.json")
    md_path = os.path.join(args.out_dir, "benchmark.md")
    training.write_json(json_path, result)
    with open(md_path, "w") as f:
        f.write(report + "\n")
    pngs = training.save_figures(
        args.out_dir, {"benchmark.png": figure(cells, result["environment"], baseline)}
    )
    return [md_path, json_path, *pngs]
