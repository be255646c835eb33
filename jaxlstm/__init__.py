"""jaxlstm: PyTorch's `nn.LSTM` and `nn.LSTMCell`, exact, as pure JAX functions and Flax modules.

Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import jaxlstm
    >>> lstm = jaxlstm.LSTM(12, 10, num_layers=3, batch_first=True, rngs=nnx.Rngs(0))
    >>> out, (h_n, c_n) = lstm(jnp.ones((2, 4, 12)))
    >>> out.shape, h_n.shape
    ((2, 4, 10), (3, 2, 10))
"""

from jaxlstm import (
    checked,
    flax_io,
    haiku_io,
    initializers,
    keras_io,
    linen,
    native,
    onnx_io,
    state_dict,
    torch_io,
)
from jaxlstm.cell import lstm_cell
from jaxlstm.config import LSTMCellConfig, LSTMConfig
from jaxlstm.flax_io import from_flax, to_flax
from jaxlstm.haiku_io import from_haiku, to_haiku
from jaxlstm.initializers import init_params
from jaxlstm.keras_io import from_keras
from jaxlstm.lstm import lstm
from jaxlstm.native import native_backend
from jaxlstm.nnx import LSTM, LSTMCell
from jaxlstm.onnx_io import from_onnx
from jaxlstm.options import ScanOptions, use_backend
from jaxlstm.state_dict import find_lstms, read_state_dict
from jaxlstm.torch_io import from_torch, load_torch_state_dict, torch_state_dict

__version__ = "0.2.0"

__all__ = [
    "LSTM",
    "LSTMCell",
    "LSTMCellConfig",
    "LSTMConfig",
    "ScanOptions",
    "checked",
    "find_lstms",
    "flax_io",
    "from_flax",
    "from_haiku",
    "from_keras",
    "from_onnx",
    "from_torch",
    "haiku_io",
    "init_params",
    "initializers",
    "keras_io",
    "linen",
    "load_torch_state_dict",
    "lstm",
    "lstm_cell",
    "native",
    "native_backend",
    "onnx_io",
    "read_state_dict",
    "state_dict",
    "to_flax",
    "to_haiku",
    "torch_io",
    "torch_state_dict",
    "use_backend",
]
