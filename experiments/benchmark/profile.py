"""`--profile`: the time per call during which a JAX cell's matmuls run, from a
`jax.profiler` trace of extra calls and the optimized HLO's names of its matrix products."""

from __future__ import annotations

import glob
import gzip
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import jax

from experiments.benchmark.timing import CompiledCall

__all__ = ["matmul_instructions", "matmul_seconds", "union_length"]


def matmul_instructions(hlo: str) -> dict[str, str]:
    """The instructions of an optimized HLO module's text that multiply matrices, name ->
    opcode: `dot`s, and `fusion`s whose fused computation holds one (XLA:CPU's library
    calls)."""
    with_dot, computation = set(), None
    calls: dict[str, str] = {}
    found = {}
    for line in hlo.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            computation = line.removeprefix("ENTRY ").lstrip("%").split(" ")[0]
            continue
        match = re.match(r"\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*\S+\s+(\w[\w\-]*)\(", line)
        if match is None:
            continue
        name, opcode = match.groups()
        if opcode == "dot":
            found[name] = "dot"
            with_dot.add(computation)
        elif opcode == "fusion" and (called := re.search(r"calls=%([\w.\-]+)", line)):
            calls[name] = called.group(1)
    return found | {name: "fusion" for name, called in calls.items() if called in with_dot}


def union_length(spans: Sequence[tuple[float, float]]) -> float:
    """The length of the union of `(start, end)` intervals."""
    covered, end = 0.0, -math.inf
    for start, stop in sorted(spans):
        if stop > end:
            covered += stop - max(start, end)
            end = stop
    return covered


def matmul_seconds(run: CompiledCall, sync: Callable[[Any], Any], calls: int = 5) -> float | None:
    """Seconds per call during which at least one matmul of `run` is executing, from a
    `jax.profiler` trace of `calls` calls (XLA:CPU names its thunks after the instructions).

    None when the trace has no matmul, or has a plain `dot` thunk: XLA:CPU may run those
    asynchronously (the backward pass's products), and the trace shows only their start.
    Matmuls fused into library calls (`fusion`s) run while their span lasts.
    """
    matmuls = matmul_instructions(run.executable.as_text())
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(calls):
                sync(run())
        paths = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
        if not paths:
            return None
        with gzip.open(paths[0]) as f:
            events = json.load(f)["traceEvents"]
    spans = [e for e in events if e.get("ph") == "X" and e.get("name") in matmuls]
    if not spans or any(matmuls[e["name"]] == "dot" for e in spans):
        return None
    return union_length([(e["ts"], e["ts"] + e["dur"]) for e in spans]) / calls / 1e6
