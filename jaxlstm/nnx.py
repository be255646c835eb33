"""`jaxlstm.LSTM` and `jaxlstm.LSTMCell`: thin `flax.nnx` modules over the functional core.

Each parameter is an `nnx.Param` attribute named exactly like the torch `state_dict` key
(`lstm.weight_ih_l0`, `cell.bias_hh`, ...), with torch's shape and gate order.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlstm._checks import check_float_dtype, check_floating
from jaxlstm.cell import lstm_cell
from jaxlstm.config import LSTMConfig, require_positive_int
from jaxlstm.lstm import init_params, lstm, uniform_params

__all__ = ["LSTM", "LSTMCell"]

Array = jax.Array


class _TorchParams(nnx.Module):
    """Shared plumbing: parameters stored as attributes under their torch names."""

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """`{torch name: shape}` of every parameter, in torch's `state_dict` order."""
        raise NotImplementedError

    @property
    def params(self) -> dict[str, Array]:
        """`{torch name: array}` of every parameter, in torch's `state_dict` order."""
        return {name: getattr(self, name).get_value() for name in self.param_shapes()}

    def _init_params(self, params: dict[str, Array]) -> None:
        for name, value in params.items():
            setattr(self, name, nnx.Param(value))

    def _compute_inputs(self, x: Any) -> tuple[dict[str, Array], Array]:
        """The parameters and `x` in the compute dtype `self.dtype` (unchanged when None).

        Raises:
            TypeError: `x` is not floating point (checked before any cast hides it).
        """
        params, x = self.params, jnp.asarray(x)
        if self.dtype is not None:
            check_floating("x", x)
            params = {k: v.astype(self.dtype) for k, v in params.items()}
            x = x.astype(self.dtype)
        return params, x

    def set_params(self, params: dict[str, Any]) -> None:
        """Replaces parameter values in place (shapes and names must already be checked)."""
        for name, value in params.items():
            var = getattr(self, name)
            var.set_value(jnp.asarray(value, dtype=var.get_value().dtype))


class LSTM(_TorchParams):
    """`torch.nn.LSTM` as a `flax.nnx.Module`.

    Args:
        input_size: I.
        hidden_size: H.
        num_layers: L.
        bias: whether each layer has `bias_ih_l{k}` and `bias_hh_l{k}`.
        batch_first: input and `out` are `[B, T, *]` (h_n/c_n never are).
        dropout: rate of dropout on every layer's output but the last's, active in
            `train()` mode (the default, as in torch) and off after `eval()`.
        bidirectional: D = 2.
        proj_size: P > 0 adds `weight_hr_l{k}` `(P, H)` and makes H_out = P.
        dtype: compute dtype (e.g. `jnp.bfloat16`); None uses the inputs' and parameters'.
            The cell state c stays in at least float32.
        param_dtype: dtype of the parameters.
        rngs: `nnx.Rngs`; `params` initialises the weights, `dropout` draws dropout masks.

    Raises:
        TypeError, ValueError: invalid structural arguments (see `LSTMConfig`).

    Example:
        >>> lstm = LSTM(12, 10, num_layers=3, batch_first=True, rngs=nnx.Rngs(0))
        >>> out, (h_n, c_n) = lstm(jnp.zeros((2, 4, 12)))
        >>> out.shape, h_n.shape, c_n.shape
        ((2, 4, 10), (3, 2, 10), (3, 2, 10))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.config = LSTMConfig(
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            proj_size=proj_size,
        )
        self.dtype = None if dtype is None else check_float_dtype("dtype", dtype)
        self.param_dtype = param_dtype
        self.deterministic = False
        self._init_params(init_params(rngs.params(), self.config, param_dtype))
        uses_dropout = dropout > 0 and num_layers > 1
        self.dropout_rngs = rngs["dropout"].fork() if uses_dropout else None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.config.param_shapes()

    # torch-style read access to the structural arguments: lstm.hidden_size, lstm.num_layers, ...
    input_size = property(lambda self: self.config.input_size)
    hidden_size = property(lambda self: self.config.hidden_size)
    num_layers = property(lambda self: self.config.num_layers)
    bias = property(lambda self: self.config.bias)
    batch_first = property(lambda self: self.config.batch_first)
    dropout = property(lambda self: self.config.dropout)
    bidirectional = property(lambda self: self.config.bidirectional)
    proj_size = property(lambda self: self.config.proj_size)

    def __call__(
        self,
        x: Array,
        hx: tuple[Array, Array] | None = None,
        *,
        seq_lengths: Array | None = None,
        unroll: int | None = None,
        custom_vjp: bool = True,
        remat: bool = False,
    ) -> tuple[Array, tuple[Array, Array]]:
        """Runs the LSTM; see `jaxlstm.lstm` for every shape.

        Args:
            x: `[T, B, I]`, `[B, T, I]` with batch_first, or unbatched `[T, I]`.
            hx: `(h_0 [D*L, B, H_out], c_0 [D*L, B, H])` or None for zeros.
            seq_lengths: `[B]` integer lengths in [1, T], any order, or None.
            unroll: scan steps per loop iteration; None picks a default.
            custom_vjp: differentiate with the hand-written backward pass (False: autodiff
                of the plain scan, needed for plain forward mode); see `jaxlstm.lstm`.
            remat: keep only the states for the backward pass and recompute the gates
                (less activation memory); see `jaxlstm.lstm`.

        Returns:
            `(out [T, B, D*H_out], (h_n [D*L, B, H_out], c_n [D*L, B, H]))`.

        Raises:
            ValueError, TypeError: see `jaxlstm.lstm`.
        """
        key = None
        if not self.deterministic and self.dropout_rngs is not None:
            key = self.dropout_rngs()
        params, x = self._compute_inputs(x)
        return lstm(
            params, x, hx, config=self.config, seq_lengths=seq_lengths, dropout_key=key, unroll=unroll,
            custom_vjp=custom_vjp, remat=remat,
        )


class LSTMCell(_TorchParams):
    """`torch.nn.LSTMCell` as a `flax.nnx.Module`.

    Args:
        input_size: I.
        hidden_size: H.
        bias: whether the cell has `bias_ih` and `bias_hh` `(4H,)`.
        dtype: compute dtype; None uses the inputs' and parameters'.
        param_dtype: dtype of the parameters.
        rngs: `nnx.Rngs`; `params` initialises the weights, U(-1/√H, 1/√H) as in torch.

    Raises:
        TypeError, ValueError: a size is not a positive int, or bias is not a bool.

    Example:
        >>> cell = LSTMCell(10, 20, rngs=nnx.Rngs(0))
        >>> h, c = cell(jnp.zeros((3, 10)))
        >>> h.shape, c.shape
        ((3, 20), (3, 20))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.input_size = require_positive_int("input_size", input_size)
        self.hidden_size = require_positive_int("hidden_size", hidden_size)
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {bias!r} of type {type(bias).__name__}")
        self.bias = bias
        self.dtype = None if dtype is None else check_float_dtype("dtype", dtype)
        self.param_dtype = param_dtype
        self._init_params(uniform_params(rngs.params(), self.param_shapes(), hidden_size, param_dtype))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        G = 4 * self.hidden_size
        shapes = {"weight_ih": (G, self.input_size), "weight_hh": (G, self.hidden_size)}
        if self.bias:
            shapes |= {"bias_ih": (G,), "bias_hh": (G,)}
        return shapes

    def __call__(self, x: Array, hx: tuple[Array, Array] | None = None) -> tuple[Array, Array]:
        """One step: `x` `[B, I]` (or `[I]`), `hx` `(h [B, H], c [B, H])` or None -> `(h', c')`.

        Raises:
            ValueError, TypeError: see `jaxlstm.lstm_cell`.
        """
        params, x = self._compute_inputs(x)
        return lstm_cell(params, x, hx)
