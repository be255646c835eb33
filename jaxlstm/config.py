"""The structural arguments of an LSTM or an LSTM cell, validated once, and the parameter layout
they imply: torch's names and shapes, and the configuration a set of weights determines.

Shape vocabulary used throughout jaxlstm: B batch, T time, I input features, H hidden,
P projection, H_out = P if P > 0 else H, L layers, D directions (2 if bidirectional).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping
from typing import Any

from jaxlstm._checks import require_bool, require_positive_int

__all__ = ["LSTMCellConfig", "LSTMConfig", "layer_names", "param_names", "param_roles"]


@dataclasses.dataclass(frozen=True)
class LSTMConfig:
    """The structural arguments of `torch.nn.LSTM`, validated as torch validates them.

    Attributes:
        input_size: I, features of the input.
        hidden_size: H, features of the cell state (and of h when proj_size == 0).
        num_layers: L, stacked layers.
        bias: whether the layers have `bias_ih_l{k}` and `bias_hh_l{k}`.
        batch_first: input and output are `[B, T, *]` instead of `[T, B, *]`.
        dropout: probability of zeroing an output of every layer but the last, in training.
        bidirectional: D = 2 if True, the backward direction's parameters end in `_reverse`.
        proj_size: P; if > 0, h is projected to P features by `weight_hr_l{k}` `(P, H)`.

    Raises:
        TypeError: a size is not an int, a flag is not a bool, dropout is not a number.
        ValueError: a size is not positive, dropout is outside [0, 1], proj_size is outside
            [0, hidden_size).

    Examples:
        >>> cfg = LSTMConfig(12, 10, num_layers=3, bidirectional=True)
        >>> cfg.output_size, cfg.num_directions
        (10, 2)
    """

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    proj_size: int = 0

    def __post_init__(self) -> None:
        require_positive_int("input_size", self.input_size)
        require_positive_int("hidden_size", self.hidden_size)
        require_positive_int("num_layers", self.num_layers)
        require_bool("bias", self.bias)
        require_bool("batch_first", self.batch_first)
        require_bool("bidirectional", self.bidirectional)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise TypeError(
                f"dropout must be a number in [0, 1], got {self.dropout!r} of type "
                f"{type(self.dropout).__name__}"
            )
        if not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"dropout must be a number in [0, 1], got {self.dropout}")
        if isinstance(self.proj_size, bool) or not isinstance(self.proj_size, int):
            raise TypeError(
                f"proj_size must be an int in [0, hidden_size), got {self.proj_size!r} of type "
                f"{type(self.proj_size).__name__}"
            )
        if not 0 <= self.proj_size < self.hidden_size:
            raise ValueError(
                f"proj_size must be in [0, hidden_size={self.hidden_size}), got {self.proj_size}"
            )
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={self.dropout} and "
                f"num_layers={self.num_layers}",
                UserWarning,
                stacklevel=3,
            )

    @property
    def num_directions(self) -> int:
        """D: 2 for a bidirectional LSTM, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """H_out: features of h (P if proj_size > 0, else H)."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def keywords(self) -> dict[str, Any]:
        """The keyword arguments after the sizes that build a module of this configuration.

        `jaxlstm.LSTM(c.input_size, c.hidden_size, **c.keywords(), rngs=...)` and
        `jaxlstm.linen.LSTM(c.hidden_size, **c.keywords())` have this configuration.
        """
        fields = ("num_layers", "bias", "batch_first", "dropout", "bidirectional", "proj_size")
        return {name: getattr(self, name) for name in fields}

    def layer_input_size(self, layer: int) -> int:
        """I_k: input features of layer k (I for k = 0, D * H_out above)."""
        return self.input_size if layer == 0 else self.num_directions * self.output_size

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's torch name and shape, in torch's `state_dict` order.

        Returns:
            `{name: shape}`, e.g. `weight_ih_l0: (4H, I)`, `weight_hh_l0: (4H, H_out)`,
            `bias_ih_l0: (4H,)`, `bias_hh_l0: (4H,)`, `weight_hr_l0: (P, H)`, then `*_reverse`.
        """
        H, G = self.hidden_size, 4 * self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {}
        for k in range(self.num_layers):
            for suffix in ("", "_reverse")[: self.num_directions]:
                shapes[f"weight_ih_l{k}{suffix}"] = (G, self.layer_input_size(k))
                shapes[f"weight_hh_l{k}{suffix}"] = (G, self.output_size)
                if self.bias:
                    shapes[f"bias_ih_l{k}{suffix}"] = (G,)
                    shapes[f"bias_hh_l{k}{suffix}"] = (G,)
                if self.proj_size > 0:
                    shapes[f"weight_hr_l{k}{suffix}"] = (self.proj_size, H)
        return shapes

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, Any],
        *,
        prefix: str = "",
        batch_first: bool = False,
        dropout: float = 0.0,
    ) -> LSTMConfig:
        """Infers the configuration that a torch `nn.LSTM` state_dict determines.

        Sizes, layers, bias, bidirectionality and projection follow from the keys and shapes;
        `batch_first` and `dropout` leave no trace in the weights and are taken as given.

        Args:
            state_dict: `{name: array-like with .shape}`, e.g. `torch_lstm.state_dict()`.
            prefix: only keys starting with it are read, with it stripped (e.g. `"lstm."`).
            batch_first: recorded in the config as given.
            dropout: recorded in the config as given.

        Returns:
            The config whose `param_shapes()` the state_dict's LSTM keys match.

        Raises:
            ValueError: no `weight_ih_l0` under `prefix`, or the keys are not an LSTM's.

        Examples:
            >>> import numpy as np
            >>> sd = {"weight_ih_l0": np.zeros((40, 3)), "weight_hh_l0": np.zeros((40, 10))}
            >>> LSTMConfig.from_state_dict(sd).bias
            False
        """
        sd = _under_prefix(state_dict, prefix)
        if "weight_ih_l0" not in sd:
            raise ValueError(
                f"state_dict has no LSTM weights under prefix={prefix!r}: expected the key "
                f"{prefix + 'weight_ih_l0'!r}, {_found_keys(state_dict)}"
            )
        layer_re = re.compile(r"^(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")
        layers = [int(m.group(3)) for k in sd if (m := layer_re.match(k))]
        w_ih = tuple(sd["weight_ih_l0"].shape)
        w_hh = tuple(sd["weight_hh_l0"].shape) if "weight_hh_l0" in sd else None
        if len(w_ih) != 2 or w_ih[0] % 4 != 0 or w_hh is None or len(w_hh) != 2:
            raise ValueError(
                f"state_dict under prefix={prefix!r} is not an nn.LSTM's: weight_ih_l0 has shape "
                f"{w_ih} (expected (4H, I)), weight_hh_l0 has shape {w_hh} (expected (4H, H_out))"
            )
        proj = sd["weight_hr_l0"].shape[0] if "weight_hr_l0" in sd else 0
        return cls(
            input_size=int(w_ih[1]),
            hidden_size=int(w_ih[0] // 4),
            num_layers=max(layers) + 1,
            bias="bias_ih_l0" in sd,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional="weight_ih_l0_reverse" in sd,
            proj_size=int(proj),
        )


def param_names(config: LSTMConfig, layer: int, direction: int) -> dict[str, str]:
    """The torch names of one layer-direction's parameters, keyed by their role.

    Args:
        config: the LSTM's configuration.
        layer: k in [0, L).
        direction: 0 forward, 1 backward (`_reverse`).

    Returns:
        `{"weight_ih": "weight_ih_l{k}[_reverse]", ...}` for the roles this config has.
    """
    suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
    roles = ["weight_ih", "weight_hh"]
    if config.bias:
        roles += ["bias_ih", "bias_hh"]
    if config.proj_size > 0:
        roles.append("weight_hr")
    return {role: role + suffix for role in roles}


@dataclasses.dataclass(frozen=True)
class LSTMCellConfig:
    """The structural arguments of `torch.nn.LSTMCell`.

    Attributes:
        input_size: I, features of the input.
        hidden_size: H, features of h and c.
        bias: whether the cell has `bias_ih` and `bias_hh`.

    Raises:
        TypeError: a size is not an int, or bias is not a bool.
        ValueError: a size is not positive.

    Examples:
        >>> LSTMCellConfig(10, 20).param_shapes()["weight_hh"]
        (80, 20)
    """

    input_size: int
    hidden_size: int
    bias: bool = True

    def __post_init__(self) -> None:
        require_positive_int("input_size", self.input_size)
        require_positive_int("hidden_size", self.hidden_size)
        require_bool("bias", self.bias)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's torch name and shape, in torch's `state_dict` order.

        Returns:
            `{"weight_ih": (4H, I), "weight_hh": (4H, H)}`, and with bias `bias_ih`, `bias_hh`
            `(4H,)`.
        """
        gates = 4 * self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {
            "weight_ih": (gates, self.input_size),
            "weight_hh": (gates, self.hidden_size),
        }
        if self.bias:
            shapes |= {"bias_ih": (gates,), "bias_hh": (gates,)}
        return shapes

    def keywords(self) -> dict[str, Any]:
        """The keyword arguments after the sizes that build a module of this configuration:
        `{"bias": ...}` (see `LSTMConfig.keywords`)."""
        return {"bias": self.bias}

    def as_lstm(self, *, batch_first: bool = False) -> LSTMConfig:
        """The one-layer `LSTMConfig` that computes what this cell computes, step after step.

        Its parameters are the cell's under the names `layer_names(...)` gives.
        """
        return LSTMConfig(
            self.input_size, self.hidden_size, bias=self.bias, batch_first=batch_first
        )

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *, prefix: str = "") -> LSTMCellConfig:
        """Infers the configuration that a torch `nn.LSTMCell` state_dict determines.

        Args:
            state_dict: `{name: array-like with .shape}`, e.g. `torch_cell.state_dict()`.
            prefix: only keys starting with it are read, with it stripped (e.g. `"cell."`).

        Returns:
            The config whose `param_shapes()` the state_dict's cell keys have.

        Raises:
            ValueError: no `weight_ih`/`weight_hh` under `prefix`, or their shapes are not a
                cell's.

        Examples:
            >>> import numpy as np
            >>> sd = {"weight_ih": np.zeros((8, 3)), "weight_hh": np.zeros((8, 2))}
            >>> LSTMCellConfig.from_state_dict(sd)
            LSTMCellConfig(input_size=3, hidden_size=2, bias=False)
        """
        sd = _under_prefix(state_dict, prefix)
        if "weight_ih" not in sd or "weight_hh" not in sd:
            raise ValueError(
                f"state_dict has no LSTMCell weights under prefix={prefix!r}: expected the keys "
                f"{prefix + 'weight_ih'!r} and {prefix + 'weight_hh'!r}, {_found_keys(state_dict)}"
            )
        w_ih, w_hh = tuple(sd["weight_ih"].shape), tuple(sd["weight_hh"].shape)
        if len(w_ih) != 2 or len(w_hh) != 2 or w_ih[0] % 4 or w_hh != (w_ih[0], w_ih[0] // 4):
            raise ValueError(
                f"state_dict under prefix={prefix!r} is not an nn.LSTMCell's: weight_ih has shape "
                f"{w_ih} (expected (4H, I)) and weight_hh {w_hh} (expected (4H, H))"
            )
        return cls(int(w_ih[1]), int(w_ih[0] // 4), bias="bias_ih" in sd)


def param_roles(config: LSTMConfig | LSTMCellConfig) -> dict[str, str]:
    """`{torch name: role}` of every parameter, in torch's `state_dict` order.

    A role is the name a parameter has in one direction of one layer, or in a cell:
    `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh` or `weight_hr`.

    Examples:
        >>> param_roles(LSTMConfig(3, 5, bidirectional=True, bias=False))["weight_hh_l0_reverse"]
        'weight_hh'
    """
    if isinstance(config, LSTMCellConfig):
        return {name: name for name in config.param_shapes()}
    return {
        name: role
        for k in range(config.num_layers)
        for d in range(config.num_directions)
        for role, name in param_names(config, k, d).items()
    }


def layer_names(config: LSTMCellConfig) -> dict[str, str]:
    """The cell's parameter names mapped to those of the equivalent one-layer LSTM.

    `{"weight_ih": "weight_ih_l0", ...}`: rename a cell's parameters with it to run them as
    `config.as_lstm()` over a whole sequence in one call, and invert it to go back.
    """
    return param_names(config.as_lstm(), 0, 0)


def _under_prefix(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of `state_dict` whose key starts with `prefix`, with it stripped."""
    return {
        k[len(prefix) :]: v
        for k, v in state_dict.items()
        if isinstance(k, str) and k.startswith(prefix)
    }


def _found_keys(state_dict: Mapping[str, Any], most: int = 8) -> str:
    """`found keys [...]` for an error message: the first `most` keys, sorted."""
    keys = sorted(str(k) for k in state_dict)
    return f"found keys {keys[:most]}{' ...' if len(keys) > most else ''}"
