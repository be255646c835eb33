"""experiments.benchmark.profile: which HLO instructions multiply matrices, and the time
covered by their (overlapping) spans."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from experiments.benchmark import profile

HLO = """HloModule m

%fused_computation (p0: f32[2,2], p1: f32[2,2]) -> f32[2,2] {
  %p0 = f32[2,2]{1,0} parameter(0)
  %p1 = f32[2,2]{1,0} parameter(1)
  ROOT %dot.1 = f32[2,2]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_computation.1 (p0.1: f32[2,2]) -> f32[2,2] {
  %p0.1 = f32[2,2]{1,0} parameter(0)
  ROOT %tanh.1 = f32[2,2]{1,0} tanh(%p0.1)
}

ENTRY %main (a: f32[2,2], b: f32[2,2]) -> f32[2,2] {
  %a = f32[2,2]{1,0} parameter(0)
  %b = f32[2,2]{1,0} parameter(1)
  %ynn_fusion = f32[2,2]{1,0} fusion(%a, %b), kind=kCustom, calls=%fused_computation
  %dot.2 = f32[2,2]{1,0} dot(%a, %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %add_fusion = f32[2,2]{1,0} fusion(%ynn_fusion, %dot.2), kind=kLoop, calls=%fused_computation.1
  ROOT %tanh_fusion = f32[2,2]{1,0} fusion(%add_fusion), kind=kLoop, calls=%fused_computation.1
}
"""


def test_matmul_instructions_are_dots_and_fusions_holding_one():
    want = {"dot.1": "dot", "ynn_fusion": "fusion", "dot.2": "dot"}
    assert profile.matmul_instructions(HLO) == want


def test_matmul_instructions_of_a_compiled_xla_cpu_program():
    # XLA:CPU's HLO, which the profile reads, also on a machine whose default is a GPU.
    try:
        cpu = jax.devices("cpu")[0]
    except RuntimeError:  # JAX_PLATFORMS=cuda leaves no CPU backend
        pytest.skip("XLA:CPU is not among the backends (JAX_PLATFORMS)")
    ones = jax.device_put(jnp.ones((8, 8)), cpu)
    compiled = jax.jit(lambda a, b: jnp.tanh(a @ b)).lower(ones, ones)
    text = compiled.compile().as_text()
    names = profile.matmul_instructions(text)
    assert names and all(f"%{name} = " in text for name in names)
    elementwise = jax.jit(jnp.tanh).lower(ones).compile().as_text()
    assert profile.matmul_instructions(elementwise) == {}


def test_covered_time_is_the_union_of_the_spans():
    assert profile.union_length([(5, 6), (0, 2), (1, 3), (1.5, 2.5)]) == 4
