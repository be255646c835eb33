"""The benchmark's shapes, modes, implementations and precisions: what a run can measure."""

from __future__ import annotations

import dataclasses

__all__ = [
    "CONFIGS",
    "CPU_SKIPPED",
    "IMPLS",
    "JAX_PRECISION",
    "MODES",
    "QUICK",
    "QUICK_CONFIGS",
    "TORCH_IMPLS",
    "XLA_IMPL",
    "BenchConfig",
]


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One benchmark shape.

    Attributes:
        name: the id used by `--configs`.
        batch, steps, input_size, hidden, layers, bidirectional: B, T, I, H, L, D == 2.
        compute_bound: whether its matmuls are large enough that the FLOP-time bound at the
            measured peak is a meaningful target (small configs are latency-bound).
        proj_size: P, the projection of h (0: none, H_out = H).
    """

    name: str
    batch: int
    steps: int
    input_size: int
    hidden: int
    layers: int
    bidirectional: bool
    compute_bound: bool = False
    proj_size: int = 0

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def hidden_out(self) -> int:
        """H_out: P with a projection, else H."""
        return self.proj_size or self.hidden

    @property
    def sequential_steps(self) -> int:
        """T·L: the steps every implementation here takes one after another (a bidirectional
        layer counts T, as both directions can run side by side)."""
        return self.steps * self.layers

    @property
    def shape(self) -> str:
        """`B 64, T 28, I 28, H 128, L 2`, with `, P 64` and `, bidir` where they apply."""
        text = (
            f"B {self.batch}, T {self.steps}, I {self.input_size}, H {self.hidden}, L {self.layers}"
        )
        text += f", P {self.proj_size}" if self.proj_size else ""
        return text + (", bidir" if self.bidirectional else "")

    def flops(self, backward: bool) -> float:
        """Matmul FLOPs of the recurrence and the projection, per call.

        Per layer k and direction: `2·T·B·4H·(I_k + H_out)` for the gate products
        (`x_t W_ihᵀ` and `h W_hhᵀ`), plus `2·T·B·H·P` for the projection `h W_hrᵀ` when
        P > 0; `I_0 = I`, `I_k = D·H_out` for k > 0. With the backward pass ×3, since it
        does two matmuls of the same size per forward matmul (the input's and the weight's
        gradients). Elementwise work is not counted.
        """
        t, b, h, out = self.steps, self.batch, self.hidden, self.hidden_out
        total = 0.0
        for k in range(self.layers):
            in_k = self.input_size if k == 0 else self.directions * out
            per_direction = 2.0 * t * b * 4 * h * (in_k + out) + 2.0 * t * b * h * self.proj_size
            total += per_direction * self.directions
        return 3 * total if backward else total


CONFIGS: dict[str, BenchConfig] = {
    c.name: c
    for c in [
        BenchConfig("sine", 1, 49, 1, 10, 1, False),
        BenchConfig("digits", 64, 28, 28, 128, 2, False),
        BenchConfig("medium", 64, 256, 256, 512, 2, False, compute_bound=True),
        BenchConfig("bidir", 32, 128, 128, 256, 2, True),
        BenchConfig("large", 128, 512, 1024, 1024, 1, False, compute_bound=True),
        BenchConfig("deepbench", 128, 25, 1024, 1024, 1, False, compute_bound=True),
    ]
}
# Left out of the default on CPU: ~3.3 TFLOP per fwd+bwd call, over a minute at ~50 GFLOP/s.
CPU_SKIPPED = ("large",)
# --quick: the smallest configs, a few calls each: a smoke run of every code path.
QUICK_CONFIGS = ("sine", "digits")
QUICK = {"repeats": 3, "warmup": 1, "budget": 1.0}
MODES = ("fwd", "fwd+bwd")
# jaxlstm with ScanOptions(backend="xla"): beside `jaxlstm` (the library's dispatch, or
# --backend), both recurrence backends are timed in one run.
XLA_IMPL = "jaxlstm-xla"
IMPLS = ("jaxlstm", XLA_IMPL, "torch", "torch-1t", "flax", "jax.experimental.rnn")
TORCH_IMPLS = ("torch", "torch-1t")
JAX_PRECISION = {"fp32": "float32", "tf32": "tensorfloat32", "bf16": "bfloat16"}
