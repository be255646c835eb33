"""experiments.benchmark.timing: the call budget, and the peak that cells are a share of."""

from __future__ import annotations

import jaxlstm
from experiments.benchmark import timing


def test_time_calls_stops_at_the_budget_but_times_at_least_one_call():
    calls = []

    def run():
        calls.append(1)

    first, times = timing.time_calls(run, lambda o: o, warmup=2, repeats=5, budget_s=10.0)
    assert len(calls) == 1 + 2 + 5 and len(times) == 5 and first >= 0
    calls.clear()
    _, times = timing.time_calls(run, lambda o: o, warmup=0, repeats=5, budget_s=0.0)
    assert len(times) == 1 and len(calls) == 2


def test_peak_is_the_fma_probe_where_the_kernel_is_built():
    peak = timing.measure_peak(quick=True)
    assert {"jax"} <= set(peak.rates) <= {"fma", "jax", "torch"}
    sgemm = max(v for k, v in peak.rates.items() if k != "fma")
    if jaxlstm.native_backend().available:
        assert peak.label == "FMA peak" and peak.gflops == peak.rates["fma"]
        # No matmul runs faster than the multiply-adds it is made of (10% for noise).
        assert peak.gflops >= 0.9 * sgemm > 0, peak
        assert peak.text().startswith(f"FMA peak: {peak.gflops:.0f} GFLOP/s (")
    else:
        assert peak.label == "sgemm peak" and peak.gflops == sgemm > 0
    assert "512³ float32 matmul" in peak.text()


def test_without_the_kernel_the_peak_is_the_best_sgemm_rate(monkeypatch):
    from jaxlstm import native

    monkeypatch.setattr(native, "_load", lambda: ({}, "built without a compiler (test)"))
    peak = timing.measure_peak(quick=True)
    assert peak.label == "sgemm peak" and peak.gflops == max(peak.rates.values()) > 0
    assert set(peak.rates) <= {"jax", "torch"} and "jax" in peak.rates
    assert peak.text().startswith(f"sgemm peak: {peak.gflops:.0f} GFLOP/s (512³ float32 matmul")
