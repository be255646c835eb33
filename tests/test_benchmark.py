"""experiments.benchmark: a smoke run on the smallest configuration."""

from __future__ import annotations

import json


def test_benchmark_smoke_on_sine(tmp_path, capsys):
    from experiments import benchmark

    path = tmp_path / "bench.json"
    result = benchmark.main(["--configs", "sine", "--impls", "jaxlstm,torch", "--quick", "--json", str(path)])
    assert json.loads(path.read_text())["summary"] == result["summary"]
    cells = {(c["impl"], c["mode"]): c for c in result["cells"]}
    for mode in benchmark.MODES:
        assert cells[("jaxlstm", mode)]["median_s"] > 0
    printed = capsys.readouterr().out
    assert "sgemm rate" in printed and "| sine | jaxlstm | fwd+bwd |" in printed
