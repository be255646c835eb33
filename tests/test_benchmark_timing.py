"""experiments.benchmark.timing: the call budget, and the peak that cells are a share of."""

from __future__ import annotations

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


def test_peak_is_the_best_sgemm_rate_labelled_sgemm_peak():
    peak = timing.measure_peak(quick=True)
    assert peak.label == "sgemm peak" and peak.gflops == max(peak.rates.values()) > 0
    assert set(peak.rates) <= {"jax", "torch"} and "jax" in peak.rates
    assert peak.text().startswith(f"sgemm peak: {peak.gflops:.0f} GFLOP/s (512³ float32 matmul")
