"""Loading state_dicts and checkpoint files: errors name the key or file and change nothing."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

import jaxlstm
from jaxlstm.torch_io import write_safetensors
from tests.harness import expect

# --- load_torch_state_dict ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A model's state_dict as .pt and .safetensors files, and broken variants of them."""
    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("state_dicts")
    model = jaxlstm.LSTM(3, 5, num_layers=2, rngs=nnx.Rngs(1))
    sd = jaxlstm.torch_state_dict(model)
    paths = {"pt": root / "ok.pt", "safetensors": root / "ok.safetensors"}
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, paths["pt"])
    write_safetensors(paths["safetensors"], sd)
    for kind in ("pt", "safetensors"):
        data = paths[kind].read_bytes()
        paths[f"truncated.{kind}"] = root / f"truncated.{kind}"
        paths[f"truncated.{kind}"].write_bytes(data[: len(data) // 2])
        paths[f"text.{kind}"] = root / f"text.{kind}"
        paths[f"text.{kind}"].write_text("hello, I am not a checkpoint")
    paths["empty.safetensors"] = root / "empty.safetensors"
    paths["empty.safetensors"].write_bytes(b"")
    paths["list.pt"] = root / "list.pt"
    torch.save([1, 2, 3], paths["list.pt"])
    paths["pickled-module.pt"] = root / "pickled-module.pt"
    torch.save(torch.nn.Linear(2, 2), paths["pickled-module.pt"])
    paths["dir"] = root
    paths["missing.pt"] = root / "missing.pt"
    return sd, paths


SD_CASES = {
    "missing key": (lambda sd: {k: v for k, v in sd.items() if k != "bias_hh_l1"}, {}, "missing keys ['bias_hh_l1']"),
    "unexpected key": (lambda sd: {**sd, "weight_hr_l0": np.zeros((2, 5))}, {}, "unexpected keys ['weight_hr_l0']"),
    "mis-shaped key": (
        lambda sd: {**sd, "weight_hh_l0": np.zeros((20, 4))}, {}, "weight_hh_l0: expected (20, 5), got (20, 4)"
    ),
    "mis-shaped, not strict": (
        lambda sd: {**sd, "weight_hh_l0": np.zeros((20, 4))}, {"strict": False}, "expected (20, 5), got (20, 4)"
    ),
    "wrong prefix given": (lambda sd: sd, {"prefix": "lstm."}, "missing keys ['lstm.weight_ih_l0'", "pass prefix=''"),
    "no LSTM keys at all": (
        lambda sd: {"fc.weight": np.zeros(2)}, {}, "missing keys ['weight_ih_l0'", "unexpected keys ['fc.weight']"
    ),
    "prefix not given": (
        lambda sd: {f"lstm.{k}": v for k, v in sd.items()}, {}, "missing keys", "pass prefix='lstm.'"
    ),
    "other prefix given": (
        lambda sd: {f"enc.lstm.{k}": v for k, v in sd.items()}, {"prefix": "lstm."}, "pass prefix='enc.lstm.'"
    ),
}


def _assert_unchanged(model, before):
    for k, v in jaxlstm.torch_state_dict(model).items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{k} changed by a failed load")


@pytest.mark.parametrize("case", SD_CASES.values(), ids=SD_CASES.keys())
def test_load_state_dict_errors_leave_the_model_unchanged(case, files):
    make, kwargs, *fragments = case
    sd, _ = files
    model = jaxlstm.LSTM(3, 5, num_layers=2, rngs=nnx.Rngs(0))
    before = jaxlstm.torch_state_dict(model)
    expect(ValueError, lambda: jaxlstm.load_torch_state_dict(model, make(sd), **kwargs), *fragments)
    _assert_unchanged(model, before)


FILE_CASES = {
    "text as .pt": ("text.pt", ValueError, "is not a torch checkpoint"),
    "truncated .pt": ("truncated.pt", ValueError, "is not a torch checkpoint"),
    "pickled module .pt": ("pickled-module.pt", ValueError, "weights_only=True"),
    "list in .pt": ("list.pt", ValueError, "holds a list, expected a state_dict"),
    "text as .safetensors": ("text.safetensors", ValueError, "is not a valid .safetensors file"),
    "truncated .safetensors": ("truncated.safetensors", ValueError, "is not a valid .safetensors file"),
    "empty .safetensors": ("empty.safetensors", ValueError, "is not a valid .safetensors file"),
    "directory": ("dir", ValueError, "is a directory, expected a .pt/.pth or .safetensors file"),
    "missing file": ("missing.pt", FileNotFoundError, "does not exist"),
}


@pytest.mark.parametrize("case", FILE_CASES.values(), ids=FILE_CASES.keys())
def test_load_bad_file_errors_name_the_file_and_leave_the_model_unchanged(case, files):
    name, exc, fragment = case
    _, paths = files
    model = jaxlstm.LSTM(3, 5, num_layers=2, rngs=nnx.Rngs(0))
    before = jaxlstm.torch_state_dict(model)
    expect(exc, lambda: jaxlstm.load_torch_state_dict(model, paths[name]), repr(str(paths[name])), fragment)
    _assert_unchanged(model, before)


def test_load_good_files_work(files):
    """The broken files are broken versions of files that load (so the cases above can pass)."""
    sd, paths = files
    for kind in ("pt", "safetensors"):
        model = jaxlstm.LSTM(3, 5, num_layers=2, rngs=nnx.Rngs(0))
        jaxlstm.load_torch_state_dict(model, paths[kind])
        for k, v in jaxlstm.torch_state_dict(model).items():
            np.testing.assert_array_equal(v, sd[k])


def test_load_argument_type_errors():
    model = jaxlstm.LSTM(3, 5, rngs=nnx.Rngs(0))
    expect(TypeError, lambda: jaxlstm.load_torch_state_dict(model, [1, 2]),
           "state_dict_or_path", "mapping of tensors or a file path", "got list")
    expect(TypeError, lambda: jaxlstm.load_torch_state_dict(object(), {}),
           "model", "jaxlstm.LSTM or jaxlstm.LSTMCell", "got object")
    cell = jaxlstm.LSTMCell(3, 5, rngs=nnx.Rngs(0))
    expect(ValueError, lambda: jaxlstm.load_torch_state_dict(cell, jaxlstm.torch_state_dict(model)),
           "missing keys ['weight_ih'", "unexpected keys ['weight_ih_l0'")
