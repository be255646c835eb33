"""`jaxlstm.linen.LSTM` and `jaxlstm.linen.LSTMCell`: thin `flax.linen` modules over the core.

The parameters live in the `params` collection under torch's `state_dict` names
(`weight_ih_l0`, `bias_hh_l0_reverse`, ..., or `weight_ih`, ... for the cell), with torch's
shapes and gate order (i, f, g, o). The input size is inferred from the input at `init`.
The forward pass is `jaxlstm.lstm` / `jaxlstm.lstm_cell`: there is no second implementation.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> model = LSTM(10, num_layers=2, batch_first=True)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((4, 7, 3)))
    >>> out, (h_n, c_n) = model.apply(variables, jnp.zeros((4, 7, 3)))
    >>> out.shape, h_n.shape, variables["params"]["weight_ih_l0"].shape
    ((4, 7, 10), (2, 4, 10), (40, 3))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlstm._checks import check_params
from jaxlstm.cell import lstm_cell
from jaxlstm.config import LSTMCellConfig, LSTMConfig
from jaxlstm.initializers import Initializer, init_params
from jaxlstm.lstm import lstm
from jaxlstm.options import ScanOptions

__all__ = ["LSTM", "LSTMCell", "from_params"]

Array = jax.Array


def _declare_params(
    module: nn.Module, config: LSTMConfig | LSTMCellConfig, inits: dict[str, Initializer | None]
) -> dict[str, Array]:
    """Declares the module's parameters under torch's names; returns them.

    At `init`, all are drawn at once by `jaxlstm.init_params` from one key, the one linen
    draws for the module's first parameter (its first `make_rng("params")`), as the nnx
    modules draw theirs from `rngs.params()`: the same key gives the same weights.
    """
    drawn: dict[str, Array] = {}

    def initial(name: str) -> Callable[..., Array]:
        def init(key: Array, shape: tuple[int, ...], dtype: Any) -> Array:
            if not module.is_initializing():
                # linen's shape check of an existing parameter (under eval_shape): no draw.
                return jnp.zeros(shape, dtype)
            if not drawn:
                drawn.update(init_params(key, config, dtype, **inits))
            return drawn[name]

        return init

    return {
        name: module.param(name, initial(name), shape, module.param_dtype)
        for name, shape in config.param_shapes().items()
    }


class LSTM(nn.Module):
    """`torch.nn.LSTM` as a `flax.linen.Module`; the input size is inferred at `init`.

    Attributes:
        hidden_size: H.
        num_layers: L.
        bias: whether each layer has `bias_ih_l{k}` and `bias_hh_l{k}`.
        batch_first: input and `out` are `[B, T, *]` (h_n/c_n never are).
        dropout: rate of dropout on every layer's output but the last's; active when
            `deterministic` is False, which then needs a `'dropout'` rng.
        bidirectional: D = 2.
        proj_size: P > 0 adds `weight_hr_l{k}` `(P, H)` and makes H_out = P.
        dtype: compute dtype (e.g. `jnp.bfloat16`); None uses the inputs' and parameters'.
            The cell state c stays in at least float32.
        param_dtype: dtype of the parameters.
        deterministic: default for the call argument of the same name (as `nn.Dropout`).
        kernel_init: initializer of every `weight_ih*`, in Flax's convention (see
            `jaxlstm.initializers`); None: torch's U(-1/√H, 1/√H), as for the three below.
        recurrent_kernel_init: initializer of every `weight_hh*`.
        bias_init: initializer of every `bias_ih*` and `bias_hh*`.
        projection_init: initializer of every `weight_hr*`.

    Raises:
        TypeError, ValueError: invalid structural arguments (see `LSTMConfig`), at
            construction.

    Examples:
        >>> model = LSTM(10, dropout=0.5, num_layers=2)
        >>> x = jnp.zeros((7, 4, 3))
        >>> variables = model.init(jax.random.key(0), x, deterministic=True)
        >>> out, _ = model.apply(variables, x, deterministic=False,
        ...                      rngs={"dropout": jax.random.key(1)})
        >>> out.shape
        (7, 4, 10)
    """

    hidden_size: int
    num_layers: int = 1
    _: dataclasses.KW_ONLY
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    proj_size: int = 0
    dtype: Any = None
    param_dtype: Any = jnp.float32
    deterministic: bool | None = None
    kernel_init: Initializer | None = None
    recurrent_kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    projection_init: Initializer | None = None

    def __post_init__(self) -> None:
        self.config(1)  # validates the structural arguments now, not at the first call
        super().__post_init__()

    def config(self, input_size: int) -> LSTMConfig:
        """The `LSTMConfig` of this module for inputs of `input_size` features."""
        return LSTMConfig(
            input_size,
            self.hidden_size,
            self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            dropout=self.dropout,
            bidirectional=self.bidirectional,
            proj_size=self.proj_size,
        )

    @nn.compact
    def __call__(
        self,
        x: Array,
        hx: tuple[Array, Array] | None = None,
        *,
        seq_lengths: Array | None = None,
        deterministic: bool | None = None,
        scan: ScanOptions | None = None,
    ) -> tuple[Array, tuple[Array, Array]]:
        """Runs the LSTM; see `jaxlstm.lstm` for every shape.

        Args:
            x: `[T, B, I]`, `[B, T, I]` with batch_first, or unbatched `[T, I]`.
            hx: `(h_0 [D*L, B, H_out], c_0 [D*L, B, H])` or None for zeros.
            seq_lengths: `[B]` integer lengths in [1, T], any order, or None.
            deterministic: if False, dropout between layers is applied with the `'dropout'`
                rng. Required (here or as attribute) only when dropout is active
                (`dropout > 0` and `num_layers > 1`).
            scan: how the recurrence runs (`jaxlstm.ScanOptions`); None for the defaults.

        Returns:
            `(out [T, B, D*H_out], (h_n [D*L, B, H_out], c_n [D*L, B, H]))`.

        Raises:
            ValueError, TypeError: see `jaxlstm.lstm`; `x` has no feature axis.
        """
        x = jnp.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"input must be [T, B, I], [B, T, I] or [T, I], got shape {x.shape}")
        config = self.config(x.shape[-1])
        inits = {
            "kernel_init": self.kernel_init,
            "recurrent_kernel_init": self.recurrent_kernel_init,
            "bias_init": self.bias_init,
            "projection_init": self.projection_init,
        }
        params = _declare_params(self, config, inits)
        key = None
        if config.dropout > 0 and config.num_layers > 1:
            if not nn.merge_param("deterministic", self.deterministic, deterministic):
                key = self.make_rng("dropout")
        if self.dtype is not None:
            params = {k: v.astype(self.dtype) for k, v in params.items()}
            x = x.astype(self.dtype)
        return lstm(
            params, x, hx, config=config, seq_lengths=seq_lengths, dropout_key=key, scan=scan
        )


class LSTMCell(nn.Module):
    """`torch.nn.LSTMCell` as a `flax.linen.Module`; the input size is inferred at `init`.

    Attributes:
        hidden_size: H.
        bias: whether the cell has `bias_ih` and `bias_hh` `(4H,)`.
        dtype: compute dtype; None uses the inputs' and parameters'.
        param_dtype: dtype of the parameters.
        kernel_init: initializer of `weight_ih`, in Flax's convention (see
            `jaxlstm.initializers`); None: torch's U(-1/√H, 1/√H), as for the two below.
        recurrent_kernel_init: initializer of `weight_hh`.
        bias_init: initializer of `bias_ih` and `bias_hh`.

    Raises:
        TypeError, ValueError: hidden_size is not a positive int or bias not a bool.

    Examples:
        >>> cell = LSTMCell(20)
        >>> variables = cell.init(jax.random.key(0), jnp.zeros((3, 10)))
        >>> h, c = cell.apply(variables, jnp.zeros((3, 10)))
        >>> h.shape, c.shape
        ((3, 20), (3, 20))
    """

    hidden_size: int
    _: dataclasses.KW_ONLY
    bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Initializer | None = None
    recurrent_kernel_init: Initializer | None = None
    bias_init: Initializer | None = None

    def __post_init__(self) -> None:
        self.config(1)  # validates the structural arguments now, not at the first call
        super().__post_init__()

    def config(self, input_size: int) -> LSTMCellConfig:
        """The `LSTMCellConfig` of this module for inputs of `input_size` features."""
        return LSTMCellConfig(input_size, self.hidden_size, bias=self.bias)

    @nn.compact
    def __call__(self, x: Array, hx: tuple[Array, Array] | None = None) -> tuple[Array, Array]:
        """One step: `x` `[B, I]` (or `[I]`), `hx` `(h [B, H], c [B, H])` or None -> `(h', c')`.

        Raises:
            ValueError, TypeError: see `jaxlstm.lstm_cell`.
        """
        x = jnp.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"x must be [B, I] or unbatched [I], got shape {x.shape}")
        inits = {
            "kernel_init": self.kernel_init,
            "recurrent_kernel_init": self.recurrent_kernel_init,
            "bias_init": self.bias_init,
        }
        params = _declare_params(self, self.config(x.shape[-1]), inits)
        if self.dtype is not None:
            params = {k: v.astype(self.dtype) for k, v in params.items()}
            x = x.astype(self.dtype)
        return lstm_cell(params, x, hx)


def from_params(
    params: Mapping[str, Any], config: LSTMConfig | LSTMCellConfig, *, dtype: Any = None
) -> tuple[nn.Module, dict[str, Any]]:
    """A `jaxlstm.linen` module of `config` and its variables holding `params`.

    Args:
        params: `{torch name: array}` with exactly the names and shapes of
            `config.param_shapes()`; their dtype becomes `param_dtype`.
        config: an `LSTMConfig` (gives an `LSTM`) or `LSTMCellConfig` (gives an `LSTMCell`).
        dtype: the module's compute dtype (None: the inputs' and parameters').

    Returns:
        `(module, {"params": {torch name: jax.Array}})`, names in torch's order.

    Raises:
        TypeError: `config` is not a configuration.
        ValueError: names or shapes do not match `config` (all listed).

    Examples:
        >>> cfg = LSTMConfig(3, 4)
        >>> model, variables = from_params(jaxlstm.init_params(jax.random.key(0), cfg), cfg)
        >>> model.apply(variables, jnp.zeros((5, 2, 3)))[0].shape
        (5, 2, 4)
    """
    if not isinstance(config, (LSTMConfig, LSTMCellConfig)):
        raise TypeError(
            f"config must be a jaxlstm.LSTMConfig or LSTMCellConfig, got {type(config).__name__}"
        )
    shapes = config.param_shapes()
    check_params(params, shapes)
    values = {name: jnp.asarray(params[name]) for name in shapes}
    param_dtype = jnp.result_type(*values.values())
    cls = LSTMCell if isinstance(config, LSTMCellConfig) else LSTM
    module = cls(config.hidden_size, **config.keywords(), dtype=dtype, param_dtype=param_dtype)
    return module, {"params": values}
