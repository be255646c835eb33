"""Helpers for the interop tests: models with random weights, built without jax's slow eager init."""

from __future__ import annotations

import numpy as np

from jaxlstm.config import LSTMConfig
from jaxlstm.flax_io import new_lstm


def random_params(config: LSTMConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """`{torch name: float32 array}` drawn like torch's init, U(-1/√H, 1/√H), with numpy."""
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(config.hidden_size)
    return {k: rng.uniform(-bound, bound, s).astype(np.float32) for k, s in config.param_shapes().items()}


def random_lstm(config: LSTMConfig, seed: int = 0):
    """A `jaxlstm.LSTM` of `config` holding `random_params(config, seed)`."""
    return new_lstm(config, random_params(config, seed))
