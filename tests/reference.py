"""The plain reference every fast path is compared with: `lstm_cell` in a Python loop."""

from __future__ import annotations

import jax.numpy as jnp

from jaxlstm import lstm_cell
from jaxlstm.config import LSTMConfig, param_names


def reference_lstm(params, x, hx=None, *, config: LSTMConfig, seq_lengths=None):
    """`jaxlstm.lstm` written as loops over layers, directions, batch rows and time steps.

    Args:
        params: `{torch name: array}`.
        x: `[T, B, I]` (or `[B, T, I]` with batch_first); batched only.
        hx: `(h_0 [D*L, B, H_out], c_0 [D*L, B, H])` or None.
        config: the configuration.
        seq_lengths: `[B]` ints or None.

    Returns:
        `(out, (h_n, c_n))` as `jaxlstm.lstm` returns them.
    """
    x = jnp.asarray(x)
    if config.batch_first:
        x = jnp.swapaxes(x, 0, 1)
    steps, batch = x.shape[:2]
    lengths = [steps] * batch if seq_lengths is None else [int(n) for n in seq_lengths]
    num_dirs = config.num_directions
    if hx is None:
        h0 = jnp.zeros((config.num_layers * num_dirs, batch, config.output_size), x.dtype)
        c0 = jnp.zeros((config.num_layers * num_dirs, batch, config.hidden_size), x.dtype)
    else:
        h0, c0 = hx
    layer_in = x
    h_n, c_n = [], []
    for k in range(config.num_layers):
        outs = []
        for d in range(num_dirs):
            p = {role: params[name] for role, name in param_names(config, k, d).items()}
            rows_out, rows_h, rows_c = [], [], []
            for b in range(batch):
                h, c = h0[k * num_dirs + d, b], c0[k * num_dirs + d, b]
                ys = [jnp.zeros((config.output_size,), x.dtype)] * steps
                order = range(lengths[b]) if d == 0 else reversed(range(lengths[b]))
                for t in order:
                    h, c = lstm_cell(p, layer_in[t, b], (h, c))
                    ys[t] = h
                rows_out.append(jnp.stack(ys))
                rows_h.append(h)
                rows_c.append(c)
            outs.append(jnp.stack(rows_out, axis=1))
            h_n.append(jnp.stack(rows_h))
            c_n.append(jnp.stack(rows_c))
        layer_in = jnp.concatenate(outs, axis=-1)
    out = jnp.swapaxes(layer_in, 0, 1) if config.batch_first else layer_in
    return out, (jnp.stack(h_n), jnp.stack(c_n))
