"""`jaxlstm.LSTM` and `jaxlstm.LSTMCell`: thin `flax.nnx` modules over the functional core.

Each parameter is an `nnx.Param` attribute named exactly like the torch `state_dict` key
(`lstm.weight_ih_l0`, `cell.bias_hh`, ...), with torch's shape and gate order. Building a
module from weights (`from_params`) lives here too, so every importer builds modules one way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, overload

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlstm._checks import check_float_dtype, check_floating, check_params
from jaxlstm.cell import lstm_cell
from jaxlstm.config import LSTMCellConfig, LSTMConfig, layer_names
from jaxlstm.initializers import Initializer, init_params
from jaxlstm.lstm import lstm
from jaxlstm.options import ScanOptions

__all__ = ["LSTM", "LSTMCell", "check_rngs", "from_params"]

Array = jax.Array


def check_rngs(rngs: Any) -> nnx.Rngs:
    """Returns `rngs` if it is an `nnx.Rngs`, else raises TypeError naming the argument.

    Raises:
        TypeError: `rngs` is anything else (an int seed, a bare key, a numpy Generator).
    """
    if not isinstance(rngs, nnx.Rngs):
        got = (
            f"{type(rngs).__name__} {rngs!r}"
            if isinstance(rngs, (int, float, str))
            else type(rngs).__name__
        )
        raise TypeError(f"rngs must be an nnx.Rngs such as nnx.Rngs(0), got {got}")
    return rngs


class _TorchNamedParams(nnx.Module):
    """What both modules share: a config, parameters stored as attributes under torch's names."""

    config: LSTMConfig | LSTMCellConfig
    dtype: Any

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """`{torch name: shape}` of every parameter, in torch's `state_dict` order."""
        return self.config.param_shapes()

    @property
    def params(self) -> dict[str, Array]:
        """`{torch name: array}` of every parameter, in torch's `state_dict` order."""
        return {name: getattr(self, name).get_value() for name in self.param_shapes()}

    def set_params(self, params: Mapping[str, Any]) -> None:
        """Replaces parameter values in place, each cast to its parameter's dtype.

        All names and shapes are checked before anything changes.

        Args:
            params: `{torch name: array}`, a subset of `param_shapes()`.

        Raises:
            ValueError: an unknown name or a mis-shaped value (all listed).
        """
        shapes = self.param_shapes()
        check_params(params, {k: shapes[k] for k in params if k in shapes}, what="params")
        for name, value in params.items():
            var = getattr(self, name)
            var.set_value(jnp.asarray(value, dtype=var.get_value().dtype))

    def _initialise(
        self,
        config: LSTMConfig | LSTMCellConfig,
        *,
        dtype: Any,
        param_dtype: Any,
        rngs: nnx.Rngs,
        **initializers: Initializer | None,
    ) -> None:
        """Checks and stores what every module holds, and draws its parameters.

        Raises:
            TypeError: `rngs` is not an `nnx.Rngs`, a dtype is not floating point, or an
                initializer is not callable.
        """
        check_rngs(rngs)
        self.config = config
        self.dtype = None if dtype is None else check_float_dtype("dtype", dtype)
        self.param_dtype = check_float_dtype("param_dtype", param_dtype)
        params = init_params(rngs.params(), config, self.param_dtype, **initializers)
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


class LSTM(_TorchNamedParams):
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
        kernel_init: initializer of every `weight_ih*`, in Flax's convention (see
            `jaxlstm.initializers`); None: torch's U(-1/√H, 1/√H), as for the three below.
        recurrent_kernel_init: initializer of every `weight_hh*`.
        bias_init: initializer of every `bias_ih*` and `bias_hh*`.
        projection_init: initializer of every `weight_hr*`.
        rngs: `nnx.Rngs`; `params` initialises the weights, `dropout` draws dropout masks.

    Raises:
        TypeError, ValueError: invalid structural arguments (see `LSTMConfig`), `rngs` is not
            an `nnx.Rngs`, or an initializer is not callable.

    Examples:
        >>> lstm = LSTM(12, 10, num_layers=3, batch_first=True, rngs=nnx.Rngs(0))
        >>> out, (h_n, c_n) = lstm(jnp.zeros((2, 4, 12)))
        >>> out.shape, h_n.shape, c_n.shape
        ((2, 4, 10), (3, 2, 10), (3, 2, 10))
    """

    config: LSTMConfig

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
        kernel_init: Initializer | None = None,
        recurrent_kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        projection_init: Initializer | None = None,
        rngs: nnx.Rngs,
    ):
        config = LSTMConfig(
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            proj_size=proj_size,
        )
        self._initialise(
            config,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
            kernel_init=kernel_init,
            recurrent_kernel_init=recurrent_kernel_init,
            bias_init=bias_init,
            projection_init=projection_init,
        )
        self.deterministic = False
        self.dropout_rngs = rngs["dropout"].fork() if self.uses_dropout else None

    # torch-style read access to the structural arguments: lstm.hidden_size, lstm.num_layers, ...
    input_size = property(lambda self: self.config.input_size)
    hidden_size = property(lambda self: self.config.hidden_size)
    num_layers = property(lambda self: self.config.num_layers)
    bias = property(lambda self: self.config.bias)
    batch_first = property(lambda self: self.config.batch_first)
    dropout = property(lambda self: self.config.dropout)
    bidirectional = property(lambda self: self.config.bidirectional)
    proj_size = property(lambda self: self.config.proj_size)

    @property
    def uses_dropout(self) -> bool:
        """Whether dropout between layers exists at all (`dropout > 0` and `num_layers > 1`)."""
        return self.config.dropout > 0 and self.config.num_layers > 1

    def __call__(
        self,
        x: Array,
        hx: tuple[Array, Array] | None = None,
        *,
        seq_lengths: Array | None = None,
        scan: ScanOptions | None = None,
    ) -> tuple[Array, tuple[Array, Array]]:
        """Runs the LSTM; see `jaxlstm.lstm` for every shape.

        Args:
            x: `[T, B, I]`, `[B, T, I]` with batch_first, or unbatched `[T, I]`.
            hx: `(h_0 [D*L, B, H_out], c_0 [D*L, B, H])` or None for zeros.
            seq_lengths: `[B]` integer lengths in [1, T], any order, or None.
            scan: how the recurrence runs (`jaxlstm.ScanOptions`); None for the defaults.

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
            params, x, hx, config=self.config, seq_lengths=seq_lengths, dropout_key=key, scan=scan
        )

    def as_cell(self) -> LSTMCell:
        """The `LSTMCell` holding this one-layer LSTM's weights, to step it by hand.

        Raises:
            ValueError: the LSTM has several layers, two directions or a projection, which
                a cell cannot hold.
        """
        cfg = self.config
        if cfg.num_layers != 1 or cfg.bidirectional or cfg.proj_size:
            raise ValueError(
                "only a one-layer, one-direction LSTM without projection is a cell, got "
                f"num_layers={cfg.num_layers}, bidirectional={cfg.bidirectional}, "
                f"proj_size={cfg.proj_size}"
            )
        cell_config = LSTMCellConfig(cfg.input_size, cfg.hidden_size, bias=cfg.bias)
        params = self.params
        return from_params(
            {role: params[name] for role, name in layer_names(cell_config).items()},
            cell_config,
            dtype=self.dtype,
        )


class LSTMCell(_TorchNamedParams):
    """`torch.nn.LSTMCell` as a `flax.nnx.Module`.

    Args:
        input_size: I.
        hidden_size: H.
        bias: whether the cell has `bias_ih` and `bias_hh` `(4H,)`.
        dtype: compute dtype; None uses the inputs' and parameters'.
        param_dtype: dtype of the parameters.
        kernel_init: initializer of `weight_ih`, in Flax's convention (see
            `jaxlstm.initializers`); None: torch's U(-1/√H, 1/√H), as for the two below.
        recurrent_kernel_init: initializer of `weight_hh`.
        bias_init: initializer of `bias_ih` and `bias_hh`.
        rngs: `nnx.Rngs`; `params` initialises the weights.

    Raises:
        TypeError, ValueError: a size is not a positive int, bias is not a bool, `rngs` is not
            an `nnx.Rngs`, or an initializer is not callable.

    Examples:
        >>> cell = LSTMCell(10, 20, rngs=nnx.Rngs(0))
        >>> h, c = cell(jnp.zeros((3, 10)))
        >>> h.shape, c.shape
        ((3, 20), (3, 20))
    """

    config: LSTMCellConfig

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        kernel_init: Initializer | None = None,
        recurrent_kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        rngs: nnx.Rngs,
    ):
        self._initialise(
            LSTMCellConfig(input_size, hidden_size, bias=bias),
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
            kernel_init=kernel_init,
            recurrent_kernel_init=recurrent_kernel_init,
            bias_init=bias_init,
        )

    input_size = property(lambda self: self.config.input_size)
    hidden_size = property(lambda self: self.config.hidden_size)
    bias = property(lambda self: self.config.bias)

    def __call__(self, x: Array, hx: tuple[Array, Array] | None = None) -> tuple[Array, Array]:
        """One step: `x` `[B, I]` (or `[I]`), `hx` `(h [B, H], c [B, H])` or None -> `(h', c')`.

        Raises:
            ValueError, TypeError: see `jaxlstm.lstm_cell`.
        """
        params, x = self._compute_inputs(x)
        return lstm_cell(params, x, hx)

    def as_lstm(self, *, batch_first: bool = False) -> LSTM:
        """A one-layer `LSTM` holding this cell's weights: a whole sequence in one call.

        `cell.as_lstm()(x)` for `x` `[T, B, I]` gives the hidden states that stepping the cell
        over `x[0], x[1], ...` gives, as `out` `[T, B, H]`; `LSTM.as_cell` goes back.

        Args:
            batch_first: the layout of the returned LSTM.
        """
        params = self.params
        layer = {name: params[role] for role, name in layer_names(self.config).items()}
        return from_params(layer, self.config.as_lstm(batch_first=batch_first), dtype=self.dtype)


@overload
def from_params(
    params: Mapping[str, Any],
    config: LSTMConfig,
    *,
    dtype: Any = None,
    rngs: nnx.Rngs | None = None,
) -> LSTM: ...


@overload
def from_params(
    params: Mapping[str, Any],
    config: LSTMCellConfig,
    *,
    dtype: Any = None,
    rngs: nnx.Rngs | None = None,
) -> LSTMCell: ...


def from_params(
    params: Mapping[str, Any],
    config: LSTMConfig | LSTMCellConfig,
    *,
    dtype: Any = None,
    rngs: nnx.Rngs | None = None,
) -> LSTM | LSTMCell:
    """A `jaxlstm.LSTM` (or `LSTMCell`) of `config` holding `params`, without drawing weights.

    The module is built abstractly (`nnx.eval_shape`) and each parameter then set, which
    skips the random initialisation of weights that would be overwritten. `param_dtype` is
    the arrays' dtype; values are copied exactly. The module is in train mode, like a new
    one; call `.eval()` for inference with dropout off.

    Args:
        params: `{torch name: array}` with exactly the names and shapes of
            `config.param_shapes()`.
        config: an `LSTMConfig` (gives an `LSTM`) or `LSTMCellConfig` (gives an `LSTMCell`).
        dtype: the module's compute dtype (None: the inputs' and parameters').
        rngs: for the dropout stream of an `LSTM` with dropout (default `nnx.Rngs(0)`).

    Returns:
        The module.

    Raises:
        TypeError: `config` is not a configuration, `rngs` not an `nnx.Rngs`, or the
            parameters are not floating point.
        ValueError: names or shapes do not match `config` (all listed).

    Examples:
        >>> cfg = LSTMConfig(3, 4)
        >>> model = from_params(jaxlstm.init_params(jax.random.key(0), cfg), cfg)
        >>> model.hidden_size
        4
    """
    if not isinstance(config, (LSTMConfig, LSTMCellConfig)):
        raise TypeError(
            f"config must be a jaxlstm.LSTMConfig or LSTMCellConfig, got {type(config).__name__}"
        )
    rngs = nnx.Rngs(0) if rngs is None else check_rngs(rngs)
    check_params(params, config.param_shapes())
    param_dtype = np.result_type(
        *(np.dtype(getattr(v, "dtype", np.float32)) for v in params.values())
    )
    param_dtype = check_float_dtype("the parameters' dtype", param_dtype)
    cls: type[LSTM] | type[LSTMCell] = LSTMCell if isinstance(config, LSTMCellConfig) else LSTM
    model = nnx.eval_shape(
        lambda: cls(
            config.input_size,
            config.hidden_size,
            **config.keywords(),
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=nnx.Rngs(0),
        )
    )
    model.set_params(params)
    if isinstance(model, LSTM) and model.uses_dropout:
        model.dropout_rngs = rngs["dropout"].fork()  # a real stream, not eval_shape's abstract one
    return model
