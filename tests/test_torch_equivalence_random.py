"""jaxlstm.lstm against `torch.nn.LSTM`, randomized: hypothesis draws whole configurations.

Each example draws num_layers 1–3, input/hidden/proj sizes, bias, batch_first,
bidirectional, batch 1–5 or unbatched input, T 1–20, an optional initial state, optional
seq_lengths in any order, and float32 or float64; it compares `out`, `h_n`, `c_n` and the
gradients of a random linear loss with respect to every parameter, the input, `h_0` and `c_0`.

The `ci` profile (default) runs a small derandomized sample; `HYPOTHESIS_PROFILE=thorough`
runs ≥ 500 fresh examples (see tests/conftest.py). With `JAXLSTM_DEVIATION_REPORT=path` the
worst deviation per dtype is written to `path` at the end.
"""

from __future__ import annotations

import json
import os

import chex
import numpy as np
import pytest

pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from jaxlstm import LSTMConfig  # noqa: E402
from tests.harness import (  # noqa: E402
    TOLERANCES,
    deviation,
    make_problem,
    precision,
    run_jax,
    run_torch,
)

# Every test here runs on both recurrence backends (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

# Largest allowed max|jax - torch| / max(1, max|torch|), for outputs and for gradients
# (TOLERANCES["float32-scaled"] and ["float64-scaled"] say why).
TOLERANCE = {d: TOLERANCES[f"{d}-scaled"]["deviation"] for d in ("float32", "float64")}

WORST: dict[str, dict] = {}


@st.composite
def problems(draw):
    """One random `Problem` description (everything but the arrays, which a seed fixes)."""
    hidden = draw(st.integers(1, 6))
    config = LSTMConfig(
        input_size=draw(st.integers(1, 5)),
        hidden_size=hidden,
        num_layers=draw(st.integers(1, 3)),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bidirectional=draw(st.booleans()),
        proj_size=draw(st.integers(1, hidden - 1)) if hidden > 1 and draw(st.booleans()) else 0,
    )
    unbatched = draw(st.integers(0, 3)) == 0  # a quarter of the examples
    batch = None if unbatched else draw(st.integers(1, 5))
    steps = draw(st.integers(1, 20))
    lengths = None
    if draw(st.booleans()):
        one = st.integers(1, steps)
        lengths = draw(one) if unbatched else draw(st.lists(one, min_size=batch, max_size=batch))
    return dict(
        config=config,
        batch=batch,
        steps=steps,
        with_hx=draw(st.booleans()),
        seq_lengths=lengths,
        dtype=draw(st.sampled_from(["float32", "float64"])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def _describe(d: dict) -> str:
    c = d["config"]
    return (
        f"{d['dtype']} L={c.num_layers} I={c.input_size} H={c.hidden_size} P={c.proj_size} "
        f"bias={c.bias} batch_first={c.batch_first} bidir={c.bidirectional} B={d['batch']} "
        f"T={d['steps']} hx={d['with_hx']} lengths={d['seq_lengths']} seed={d['seed']}"
    )


@given(problems())
def test_matches_torch(description):
    problem = make_problem(**description)
    expected = run_torch(problem)
    with precision(description["dtype"]):
        actual = run_jax(problem, fast_compile=True)
    assert actual.keys() == expected.keys()
    dtype = description["dtype"]
    errors = {}
    for name in expected:
        chex.assert_shape(
            actual[name], expected[name].shape, custom_message=f"{name}: {_describe(description)}"
        )
        errors[name] = deviation(actual[name], expected[name])
    worst_name = max(errors, key=errors.get)
    record = WORST.setdefault(dtype, {"deviation": 0.0, "examples": 0})
    record["examples"] += 1
    if errors[worst_name] >= record["deviation"]:
        record |= {
            "deviation": errors[worst_name],
            "what": worst_name,
            "case": _describe(description),
        }
    assert errors[worst_name] <= TOLERANCE[dtype], (
        f"{worst_name} deviates by {errors[worst_name]:.3g} > {TOLERANCE[dtype]} for "
        f"{_describe(description)}"
    )
    if problem.seq_lengths is not None:
        # torch's padded outputs are exactly zero; ours must be too, not merely close.
        out = actual["out"]
        lengths = np.atleast_1d(problem.seq_lengths)
        time_axis = 1 if (problem.config.batch_first and out.ndim == 3) else 0
        steps = np.arange(out.shape[time_axis])
        padded = steps[:, None] >= lengths[None, :]  # [T, B]
        if out.ndim == 2:
            padded = padded[:, 0]
        elif time_axis == 1:
            padded = padded.T
        assert np.all(out[padded] == 0), f"padded outputs not zero: {_describe(description)}"


@pytest.fixture(scope="module", autouse=True)
def _report_worst():
    yield
    path = os.environ.get("JAXLSTM_DEVIATION_REPORT")
    if path and WORST:
        with open(path, "w") as f:
            json.dump(WORST, f, indent=2)
