"""What a run writes about itself: one JSON line of metrics per step, and JSON summaries."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax

__all__ = ["METRICS_FILE", "MetricsLog", "read_metrics", "write_json"]

METRICS_FILE = "metrics.jsonl"


def read_metrics(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON-lines metrics a run wrote into `out_dir` (one dict per step; [] if none)."""
    path = os.path.join(out_dir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json(path: str, obj: Mapping[str, Any]) -> None:
    """Writes `obj` as indented JSON with sorted keys (process 0 only)."""
    if jax.process_index() != 0:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


class MetricsLog:
    """The per-step metrics of a run, appended to `out_dir/metrics.jsonl`.

    Each step's metrics arrive as device arrays (`add`) and are fetched together by `flush`,
    so logging never makes the host wait for a step. A record reads
    `{"step": s, "loss": ..., <the task's metrics>, "lr": ..., "time": seconds since start}`;
    step `s` is the number of optimizer updates done, so the first record is step 1.

    Args:
        out_dir: the directory (created if needed).
        start_step: the step the run starts from; records of later steps left by an earlier,
            interrupted run are dropped (0 starts a fresh file).
        lr_fn: `step -> learning rate` of the update made at `step` (0-based), or None.
        write: False on every process but 0 (metrics are only fetched there, not written).
    """

    def __init__(
        self,
        out_dir: str,
        *,
        start_step: int = 0,
        lr_fn: Callable[[int], float] | None = None,
        write: bool = True,
    ):
        self.out_dir = out_dir
        self._lr_fn = lr_fn
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self._started = time.time()
        self._file = None
        if write:
            os.makedirs(out_dir, exist_ok=True)
            kept = [r for r in read_metrics(out_dir) if r.get("step", 0) <= start_step]
            self._file = open(os.path.join(out_dir, METRICS_FILE), "w")
            for record in kept if start_step else []:
                self._file.write(json.dumps(record) + "\n")

    def add(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Queues the metrics of `step` (device arrays; nothing is fetched yet)."""
        self._pending.append((step, dict(metrics)))

    def flush(self) -> dict[str, Any] | None:
        """Fetches and writes the queued steps.

        Returns:
            The last record written, or None if nothing was queued.
        """
        if not self._pending:
            return None
        fetched = jax.device_get([m for _, m in self._pending])
        record: dict[str, Any] = {}
        for (step, _), values in zip(self._pending, fetched, strict=True):
            record = {"step": step, **{k: float(v) for k, v in values.items()}}
            if self._lr_fn is not None:
                record["lr"] = float(self._lr_fn(step - 1))
            record["time"] = round(time.time() - self._started, 4)
            if self._file is not None:
                self._file.write(json.dumps(record) + "\n")
        if self._file is not None:
            self._file.flush()
        self._pending.clear()
        return record

    def close(self) -> None:
        """Writes what is queued and closes the file."""
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:  # an error: do not block on a device that may be failing
            self._pending.clear()
        self.close()
