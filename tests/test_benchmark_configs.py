"""experiments.benchmark.configs: the FLOP count is 2·T·B times the elements of every weight
matrix (gates and projection), ×3 with the backward pass."""

from __future__ import annotations

import jax
import pytest

import jaxlstm
from experiments.benchmark.configs import CONFIGS, BenchConfig


def weight_elements(cfg: BenchConfig) -> int:
    """Elements of every `weight_*` matrix of the same LSTM, from jaxlstm's parameters."""
    config = jaxlstm.LSTMConfig(
        cfg.input_size,
        cfg.hidden,
        num_layers=cfg.layers,
        bidirectional=cfg.bidirectional,
        proj_size=cfg.proj_size,
    )
    params = jax.eval_shape(lambda: jaxlstm.init_params(jax.random.key(0), config))
    return sum(v.size for k, v in params.items() if k.startswith("weight_"))


@pytest.mark.parametrize(
    "cfg",
    [
        CONFIGS["digits"],
        CONFIGS["bidir"],
        BenchConfig("proj", 2, 3, 5, 7, 2, True, proj_size=4),
        BenchConfig("proj-1", 3, 4, 6, 8, 1, False, proj_size=2),
    ],
    ids=lambda c: c.name,
)
def test_flops_count_every_weight_matrix_once_per_step_and_sequence(cfg):
    want = 2.0 * cfg.steps * cfg.batch * weight_elements(cfg)
    assert cfg.flops(backward=False) == want
    assert cfg.flops(backward=True) == 3 * want


def test_hand_count_with_projection():
    # Layer 0 per direction: 2·3·2·28·(5 + 4) + 2·3·2·7·4 = 3360; layer 1 (I_1 = 2·4):
    # 2·3·2·28·(8 + 4) + 336 = 4368; two directions each.
    cfg = BenchConfig("proj", 2, 3, 5, 7, 2, True, proj_size=4)
    assert cfg.flops(False) == 2 * (3360 + 4368)
    assert cfg.shape == "B 2, T 3, I 5, H 7, L 2, P 4, bidir"
