"""python -m jaxlstm.convert: every source form, --list, cells, bit-exact round trips, and one-line
errors with exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

import jaxlstm
import jaxlstm.convert
from jaxlstm.config import LSTMCellConfig, LSTMConfig
from jaxlstm.convert import convert, main
from jaxlstm.state_dict import read_orbax, read_safetensors, write_safetensors
from tests.harness import ROOT, assert_close, subprocess_env

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Converting a tensor to a Python"),
]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(
            3, 5, num_layers=2, batch_first=True, dropout=0.25, bidirectional=True
        )
        self.cell = torch.nn.LSTMCell(10, 4)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.cell(y[:, -1])[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An eval-mode Net saved in every source form: `{name: (path, LSTM prefix)}`."""
    root = tmp_path_factory.mktemp("convert")
    torch.manual_seed(0)
    net = Net().eval()
    sd = net.state_dict()
    torch.save(sd, root / "state_dict.pt")
    torch.save({"model_state": sd, "optimizer": {"lr": 0.1}, "step": 3}, root / "nested.ckpt")
    torch.save(sd, root / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.jit.save(torch.jit.script(net), root / "scripted.jit")
    torch.jit.save(
        torch.jit.trace(net, torch.randn(2, 4, 3), check_trace=False), root / "traced.pt"
    )
    write_safetensors(root / "net.safetensors", {k: v.numpy() for k, v in sd.items()})
    torch.save(net, root / "pickled_module.pt")
    (root / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(200))
    (root / "existing.safetensors").write_bytes(b"keep me")
    paths = {
        "state_dict .pt": ("state_dict.pt", "lstm."),
        "nested .ckpt": ("nested.ckpt", "model_state.lstm."),
        "legacy .pth": ("legacy.pth", "lstm."),
        "TorchScript .jit": ("scripted.jit", "lstm."),
        "traced TorchScript .pt": ("traced.pt", "lstm."),
        ".safetensors": ("net.safetensors", "lstm."),
    }
    return net, root, paths


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.dtype.str, a.shape, a.tobytes()


@pytest.mark.parametrize(
    "form",
    [
        "state_dict .pt",
        "nested .ckpt",
        "legacy .pth",
        "TorchScript .jit",
        "traced TorchScript .pt",
        ".safetensors",
    ],
)
def test_every_source_form_converts_bit_for_bit(files, form, tmp_path, capsys):
    net, root, paths = files
    name, prefix = paths[form]
    assert main([str(root / name), str(tmp_path / "lstm.pt"), "--prefix", prefix]) == 0
    printed = capsys.readouterr().out
    assert f"under prefix {prefix!r}" in printed and "bidirectional=True" in printed
    back = torch.load(
        tmp_path / "lstm.pt", weights_only=True
    )  # written without torch, read by torch
    want = net.lstm.state_dict()
    assert list(back) == list(want)
    for k in want:
        assert _bits(back[k].numpy()) == _bits(want[k].numpy()), k
    torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True).load_state_dict(back)


def test_list_prints_every_lstm_with_prefix_and_config(files, capsys):
    _, root, _ = files
    assert main(["--list", str(root / "nested.ckpt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"'model_state.cell.': {LSTMCellConfig(10, 4)}",
        f"'model_state.lstm.': {LSTMConfig(3, 5, 2, bidirectional=True)}",
    ]
    assert main(["--list", str(root / "scripted.jit")]) == 0
    assert "batch_first=True, dropout=0.25" in capsys.readouterr().out  # the module's flags


def test_orbax_directory_loads_with_from_torch_and_load_torch_state_dict(files, tmp_path):
    net, root, _ = files
    weights = convert(root / "scripted.jit", tmp_path / "lstm_ckpt", prefix="lstm.")
    assert weights.config == LSTMConfig(3, 5, 2, batch_first=True, dropout=0.25, bidirectional=True)
    _, recorded = read_orbax(tmp_path / "lstm_ckpt")
    assert recorded["format"] == "jaxlstm.LSTMConfig" and recorded["batch_first"] is True
    model = jaxlstm.from_torch(tmp_path / "lstm_ckpt")
    assert model.config == weights.config and model.deterministic  # weights alone: eval mode
    x = torch.randn(2, 4, 3)
    with torch.no_grad():
        want = net.lstm(x)[0].numpy()
    assert_close(model(x.numpy())[0], want, "float32", "out")
    other = jaxlstm.LSTM(3, 5, 2, bidirectional=True, rngs=nnx.Rngs(1))
    assert jaxlstm.load_torch_state_dict(other, tmp_path / "lstm_ckpt") == ([], [])
    for k, v in net.lstm.state_dict().items():
        assert _bits(np.asarray(other.params[k])) == _bits(v.numpy()), k
    variables = {"params": {k: np.zeros_like(v) for k, v in other.params.items()}}
    variables, _ = jaxlstm.torch_io.linen_load_torch_state_dict(variables, tmp_path / "lstm_ckpt")
    np.testing.assert_array_equal(
        np.asarray(variables["params"]["weight_hh_l1_reverse"]),
        net.lstm.weight_hh_l1_reverse.detach().numpy(),
    )


def test_lstm_cell_weights_convert(files, tmp_path):
    net, root, _ = files
    assert (
        main(
            [
                str(root / "nested.ckpt"),
                str(tmp_path / "cell_ckpt"),
                "--prefix",
                "model_state.cell.",
            ]
        )
        == 0
    )
    cell = jaxlstm.from_torch(tmp_path / "cell_ckpt")
    assert isinstance(cell, jaxlstm.LSTMCell) and cell.config == LSTMCellConfig(10, 4)
    x = torch.randn(2, 10)
    with torch.no_grad():
        want_h, want_c = net.cell(x)
    h, c = cell(x.numpy())
    assert_close(h, want_h.numpy(), "float32", "h")
    assert_close(c, want_c.numpy(), "float32", "c")
    assert main([str(tmp_path / "cell_ckpt"), str(tmp_path / "cell.safetensors")]) == 0
    assert list(read_safetensors(tmp_path / "cell.safetensors")) == [
        "weight_ih",
        "weight_hh",
        "bias_ih",
        "bias_hh",
    ]


def _special_values(dtype, **kwargs):
    torch.manual_seed(0)
    sd = torch.nn.LSTM(3, 5, **kwargs).to(dtype).state_dict()
    # Values a lossy path would change: -0.0, a NaN with a payload, a subnormal, an infinity.
    w = sd["weight_ih_l0"].view(-1)
    w[0], w[1], w[2] = -0.0, float("inf"), torch.finfo(dtype).tiny / 4
    if dtype == torch.float32:
        w.view(torch.int32)[3] = 0x7FC0BEEF
    return sd


@pytest.mark.parametrize(
    ("dtype", "kwargs"),
    [
        (torch.float32, dict(num_layers=2, bidirectional=True, proj_size=2)),
        (torch.bfloat16, dict(bias=False)),
        (torch.float64, dict(num_layers=2)),
    ],
    ids=["bi_proj_2layers_f32", "no_bias_bf16", "f64"],
)
def test_torch_orbax_safetensors_torch_round_trip_is_bitwise(dtype, kwargs, tmp_path):
    sd = _special_values(dtype, **kwargs)
    torch.save(sd, tmp_path / "lstm.pt")
    assert main([str(tmp_path / "lstm.pt"), str(tmp_path / "ckpt"), "--batch-first"]) == 0
    assert main([str(tmp_path / "ckpt"), str(tmp_path / "lstm.safetensors")]) == 0
    assert main([str(tmp_path / "lstm.safetensors"), str(tmp_path / "back.pt")]) == 0
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert list(back) == list(sd)
    for k in sd:
        assert back[k].dtype == sd[k].dtype and _bits(back[k].view(torch.uint8).numpy()) == _bits(
            sd[k].view(torch.uint8).numpy()
        )
    assert read_orbax(tmp_path / "ckpt")[1]["batch_first"] is True


def test_force_overwrites(files, tmp_path):
    _, root, _ = files
    (tmp_path / "b.safetensors").write_bytes(b"old")
    assert (
        main(
            [
                str(root / "state_dict.pt"),
                str(tmp_path / "b.safetensors"),
                "--prefix",
                "cell.",
                "--force",
            ]
        )
        == 0
    )
    assert set(read_safetensors(tmp_path / "b.safetensors")) == {
        "weight_ih",
        "weight_hh",
        "bias_ih",
        "bias_hh",
    }


USER_ERRORS = {
    "bad flag": (
        ["{state_dict.pt}", "{out}.pt", "--frobnicate"],
        "unrecognized arguments: --frobnicate",
    ),
    "missing DST": (["{state_dict.pt}"], "DST is required"),
    "--list with DST": (["--list", "{state_dict.pt}", "{out}.pt"], "--list takes SRC alone"),
    "missing source": (["{missing.pt}", "{out}.pt"], "does not exist"),
    "garbage source": (["{garbage.pt}", "{out}.pt", "--prefix", "lstm."], "unrecognised content"),
    "pickled module": (["{pickled_module.pt}", "{out}.pt"], "pickled torch.nn.Module"),
    "source suffix": (["{state_dict.npz}", "{out}.pt"], "cannot tell the format"),
    "destination suffix": (["{garbage.pt}", "{out}.npz"], "cannot tell the format"),
    "destination exists": (
        ["{garbage.pt}", "{existing.safetensors}"],
        "already exists (pass --force",
    ),
    "no LSTM under prefix": (
        ["{state_dict.pt}", "{out}.pt", "--prefix", "encoder."],
        "under prefix='encoder.'",
    ),
    "several LSTMs": (["{state_dict.pt}", "{out}.pt"], "pass prefix= one of: 'cell.'"),
    "--batch-first for a cell": (
        ["{state_dict.pt}", "{out}.pt", "--prefix", "cell.", "--batch-first"],
        "applies to an nn.LSTM",
    ),
}


@pytest.mark.parametrize("case", USER_ERRORS.values(), ids=USER_ERRORS.keys())
def test_user_errors_print_one_line_and_exit_2(files, case, tmp_path, capsys):
    _, root, _ = files
    template, fragment = case
    args = [a.replace("{out}", str(tmp_path / "out")) for a in template]
    args = [str(root / a[1:-1]) if a.startswith("{") else a for a in args]
    try:
        status = main(args)
    except SystemExit as e:  # argparse's errors exit from parse_args
        status = e.code
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment in err, err
    assert not any(p.startswith("out") for p in os.listdir(tmp_path))  # nothing written
    assert (root / "existing.safetensors").read_bytes() == b"keep me"


def test_errors_from_the_file_are_not_user_errors_when_unexpected(files, tmp_path, monkeypatch):
    _, root, _ = files

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(jaxlstm.convert, "read_lstm", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # a bug keeps its traceback
        main([str(root / "state_dict.pt"), str(tmp_path / "x.pt"), "--prefix", "lstm."])


def test_module_entry_point_exit_status(files, tmp_path):
    _, root, _ = files
    result = subprocess.run(
        [sys.executable, "-m", "jaxlstm.convert", str(root / "garbage.pt"), str(tmp_path / "x.pt")],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=subprocess_env(JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert repr(str(root / "garbage.pt")) in result.stderr
