"""jaxlstm.torch_format: torch's files decoded without torch, never running code from them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest

import jaxlstm
from jaxlstm.config import LSTMConfig
from jaxlstm.torch_format import (
    Placeholder,
    TorchFormatError,
    pickled_module_class,
    read_torch_file,
    script_modules,
    traced_lstm_arguments,
    write_torch_file,
)
from tests.harness import ROOT, expect, subprocess_env

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Converting a tensor to a Python"),
]


def _numpy(t):
    """A torch tensor as numpy, bfloat16 kept (as ml_dtypes.bfloat16)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _assert_same(got: np.ndarray, want):
    want = _numpy(want.contiguous())
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def _tensors():
    """One tensor per dtype, plus views: an offset slice, a transpose, two views of one storage."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    out = {
        str(dtype).removeprefix("torch."): (torch.randn(3, 2, generator=g) * 50).to(dtype)
        for dtype in (
            torch.float64,
            torch.float32,
            torch.float16,
            torch.bfloat16,
            torch.int64,
            torch.int32,
            torch.int16,
            torch.int8,
            torch.uint8,
            torch.bool,
        )
    }
    out |= {
        "slice": base[1:3, 2:],
        "transposed": base.t(),
        "whole": base,
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "parameter": torch.nn.Parameter(torch.ones(2, 2)),
    }
    return out


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reads_every_dtype_and_layout_like_torch(tmp_path, zip_format):
    tensors = _tensors()
    path = tmp_path / "t.pt"
    torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
    read = read_torch_file(path)
    assert read.kind == ("checkpoint" if zip_format else "legacy")
    assert list(read.obj) == list(tensors)
    for name, t in tensors.items():
        _assert_same(read.obj[name], t.detach())
    assert not np.shares_memory(read.obj["slice"], read.obj["whole"])  # views come out independent


def test_writer_output_is_read_by_torch_bit_for_bit(tmp_path):
    tensors = {k: _numpy(v.detach().contiguous()) for k, v in _tensors().items()}
    tensors["nan_payload"] = np.array([0x7FC0BEEF], np.uint32).view(np.float32)
    write_torch_file(tmp_path / "w.pt", tensors)
    back = torch.load(tmp_path / "w.pt", weights_only=True)
    assert list(back) == list(tensors)
    for k, v in tensors.items():
        assert _numpy(back[k]).tobytes() == v.tobytes() and tuple(back[k].shape) == v.shape, k
    mine = read_torch_file(tmp_path / "w.pt").obj
    for k, v in tensors.items():
        assert mine[k].tobytes() == v.tobytes() and mine[k].dtype == v.dtype, k
    expect(
        TypeError,
        lambda: write_torch_file(tmp_path / "c.pt", {"c": np.zeros(2, np.uint16)}),
        "dtype torch can store",
    )


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 5, num_layers=2, batch_first=True, dropout=0.25)
        self.cell = torch.nn.LSTMCell(5, 4)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.cell(y[:, -1])[0]


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_archives_give_modules_flags_and_tensors(tmp_path, how):
    net = _Net().eval()
    net.lstm.train()
    scripted = (
        torch.jit.script(net)
        if how == "script"
        else torch.jit.trace(net, torch.randn(2, 4, 3), check_trace=False)
    )
    torch.jit.save(scripted, tmp_path / "m.jit")
    read = read_torch_file(tmp_path / "m.jit")
    assert read.kind == "torchscript"
    records = {r.prefix: r for r in script_modules(read)}
    assert list(records) == ["", "lstm.", "cell."]
    assert [records[p].training for p in records] == [False, True, False]
    assert (records["lstm."].type_name, records["cell."].type_name) == ("LSTM", "LSTMCell")
    for prefix, module in (("lstm.", net.lstm), ("cell.", net.cell)):
        assert list(records[prefix].tensors) == list(module.state_dict())
        for k, v in module.state_dict().items():
            _assert_same(records[prefix].tensors[k], v)
    flags = (
        records["lstm."].constants
        if how == "script"
        else traced_lstm_arguments(records["lstm."].code)
    )
    assert (flags["batch_first"], flags["dropout"]) == (True, 0.25)


def test_traced_arguments_parse_only_literal_flags():
    plain = "    y, _3, _4 = torch.lstm(x, [h, c], [w0, w1], True, 2, 0.5, False, True, False)\n"
    assert traced_lstm_arguments(plain) == {"batch_first": False, "dropout": 0.5}
    packed = "    _0 = torch.lstm(data, sizes, [h, c], _2, True, 1, 0., False, False)\n"
    assert traced_lstm_arguments(packed) == {"dropout": 0.0}
    assert (
        traced_lstm_arguments("    y = torch.gru(x, h, p, True, 1, 0., False, False, True)\n") == {}
    )


_FOREIGN = """
import os, sys, torch
sys.path.insert(0, sys.argv[1])
import foreign_lib_for_jaxlstm_test as lib
sd = torch.nn.LSTM(3, 4).state_dict()
marker = os.path.join(sys.argv[1], "code-ran")
torch.save({"state_dict": sd, "hparams": lib.HParams(7), "bag": lib.Bag(a=torch.ones(2)),
            "evil": lib.Evil(marker)}, sys.argv[2])
"""
_FOREIGN_LIB = """
import os
class HParams:
    def __init__(self, hidden):
        self.hidden = hidden
class Bag(dict):
    def __init__(self, **kw):
        super().__init__(**kw)
class Evil:
    def __init__(self, marker):
        self.marker = marker
    def __reduce__(self):
        return (os.mkdir, (self.marker,))
"""


def test_objects_of_unimportable_classes_become_placeholders_and_nothing_runs(tmp_path):
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    (lib_dir / "foreign_lib_for_jaxlstm_test.py").write_text(textwrap.dedent(_FOREIGN_LIB))
    path = tmp_path / "ckpt.pt"
    subprocess.run(
        [sys.executable, "-c", _FOREIGN, str(lib_dir), str(path)],
        check=True,
        env=subprocess_env(),
        cwd=ROOT,
    )
    obj = read_torch_file(path).obj
    assert "foreign_lib_for_jaxlstm_test" not in sys.modules
    assert not os.path.exists(lib_dir / "code-ran")
    assert isinstance(obj["hparams"], Placeholder)
    assert obj["hparams"].name() == "foreign_lib_for_jaxlstm_test.HParams"
    assert obj["hparams"].state == {"hidden": 7}
    np.testing.assert_array_equal(obj["bag"].items["a"], np.ones(2, np.float32))
    assert obj["evil"].name() == "posix.mkdir" or obj["evil"].qualname == "mkdir"
    assert list(obj["state_dict"]) == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    # Through the readers: the LSTM is found, the placeholder's tensors are still read.
    assert jaxlstm.find_lstms(path) == {"state_dict.": LSTMConfig(3, 4)}
    assert set(jaxlstm.read_state_dict(path)) >= {"bag.a", "state_dict.weight_ih_l0"}


def test_pickled_module_is_recognised(tmp_path):
    torch.save(torch.nn.LSTM(2, 3), tmp_path / "m.pt")
    assert (
        pickled_module_class(read_torch_file(tmp_path / "m.pt").obj) == "torch.nn.modules.rnn.LSTM"
    )
    torch.save({"a": torch.zeros(1)}, tmp_path / "sd.pt")
    assert pickled_module_class(read_torch_file(tmp_path / "sd.pt").obj) is None


def _bad_files(root):
    torch.save({"w": torch.zeros(40, 3)}, root / "good.pt")
    good = (root / "good.pt").read_bytes()
    torch.save({"w": torch.zeros(40, 3)}, root / "legacy.pt", _use_new_zipfile_serialization=False)
    legacy = (root / "legacy.pt").read_bytes()
    import pickle
    import zipfile

    with zipfile.ZipFile(root / "other.zip.pt", "w") as z:
        z.writestr("readme.txt", "hi")
    files = {
        "empty": (b"", "is empty (0 bytes)"),
        "text": (b"hello, I am not a checkpoint\n", "is a text file"),
        "random": (np.random.default_rng(0).bytes(300), "unrecognised content"),
        "truncated": (good[: len(good) // 2], "truncated or damaged"),
        "truncated legacy": (legacy[:-30], "not a readable torch checkpoint"),
        "plain pickle": (pickle.dumps({"a": 1}, protocol=2), "Python pickle"),
        "zip of something else": (
            (root / "other.zip.pt").read_bytes(),
            "zip archive but not a torch checkpoint",
        ),
        "escape codes": (b"\x1b[31mred\x1b[0m" * 10, "is "),
    }
    return files


def test_files_that_are_not_checkpoints_say_what_they_are(tmp_path):
    for name, (data, fragment) in _bad_files(tmp_path).items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        with pytest.raises(TorchFormatError) as info:
            read_torch_file(path)
        message = str(info.value)
        assert fragment in message and repr(str(path)) in message, (name, message)
        assert "\x1b" not in message and "\n" not in message, (name, message)
        if name not in ("truncated", "truncated legacy", "zip of something else"):
            assert "torch.save(model.state_dict(), path)" in message, (name, message)
