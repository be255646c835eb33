"""python -m jaxlstm.convert: bit-exact round trips between torch, safetensors and orbax; bad files."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from jaxlstm.config import LSTMConfig
from jaxlstm.convert import convert, detect_format, main, read_lstm_weights
from jaxlstm.torch_io import read_safetensors, write_safetensors

torch = pytest.importorskip("torch")


def _torch_lstm_state_dict(dtype=torch.float32, **kwargs):
    torch.manual_seed(0)
    sd = torch.nn.LSTM(3, 5, **kwargs).to(dtype).state_dict()
    # Values a lossy path would change: -0.0, a NaN with a payload, a subnormal, an infinity.
    w = sd["weight_ih_l0"].view(-1)
    w[0] = -0.0
    w[1] = float("inf")
    w[2] = torch.finfo(dtype).tiny / 4
    if dtype == torch.float32:
        w.view(torch.int32)[3] = 0x7FC0BEEF  # NaN with payload bits
    return sd


def _assert_bitwise_equal(got: dict, want: dict):
    assert list(got) == list(want)
    for k in want:
        g, w = got[k], want[k]
        assert g.dtype == w.dtype and g.shape == w.shape, k
        bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[w.element_size()]
        assert torch.equal(g.contiguous().view(bits), w.contiguous().view(bits)), k


CASES = {
    "bi_proj_2layers_f32": (torch.float32, dict(num_layers=2, bidirectional=True, proj_size=2)),
    "no_bias_bf16": (torch.bfloat16, dict(bias=False)),
    "f64": (torch.float64, dict(num_layers=2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_torch_orbax_torch_round_trip_is_bitwise(case, tmp_path, capsys):
    dtype, kwargs = CASES[case]
    sd = _torch_lstm_state_dict(dtype, **kwargs)
    torch.save(sd, tmp_path / "lstm.pt")
    assert main([str(tmp_path / "lstm.pt"), str(tmp_path / "ckpt")]) == 0
    printed = capsys.readouterr().out
    want_config = LSTMConfig(3, 5, **kwargs)
    assert f"inferred {want_config}" in printed
    assert main([str(tmp_path / "ckpt"), str(tmp_path / "back.pt")]) == 0
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    _assert_bitwise_equal(back, sd)
    torch.nn.LSTM(3, 5, **kwargs).to(dtype).load_state_dict(back)


def test_safetensors_legs_and_prefix(tmp_path):
    sd = _torch_lstm_state_dict(num_layers=2)
    whole = {f"encoder.lstm.{k}": v for k, v in sd.items()} | {"head.weight": torch.zeros(2, 5)}
    torch.save(whole, tmp_path / "model.pth")
    config = convert(tmp_path / "model.pth", tmp_path / "lstm.safetensors", prefix="encoder.lstm.")
    assert config == LSTMConfig(3, 5, num_layers=2)
    from safetensors.torch import load_file

    _assert_bitwise_equal(load_file(tmp_path / "lstm.safetensors"), sd)  # torch's own reader
    convert(tmp_path / "lstm.safetensors", tmp_path / "ckpt", batch_first=True)
    convert(tmp_path / "ckpt", tmp_path / "again.safetensors")
    again = read_safetensors(tmp_path / "again.safetensors")
    assert list(again) == list(sd)
    for k in sd:
        np.testing.assert_array_equal(again[k].view(np.int32), sd[k].numpy().view(np.int32))
    # batch_first was recorded in the orbax checkpoint and survives the next conversion.
    _, recorded = read_lstm_weights(tmp_path / "ckpt")
    assert recorded.batch_first is True
    assert convert(tmp_path / "ckpt", tmp_path / "x.pt").batch_first is True


def test_reads_nested_orbax_pytrees_with_prefix(tmp_path):
    import orbax.checkpoint as ocp

    sd = {k: v.numpy() for k, v in _torch_lstm_state_dict(bidirectional=True).items()}
    tree = {"params": {"lstm": sd, "head": {"kernel": np.zeros((10, 2), np.float32)}}}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.abspath(tmp_path / "model_ckpt"), tree)
    state, config = read_lstm_weights(tmp_path / "model_ckpt", prefix="params.lstm.")
    assert config == LSTMConfig(3, 5, bidirectional=True)
    for k in sd:
        np.testing.assert_array_equal(state[k].view(np.int32), sd[k].view(np.int32))
    # A CheckpointManager step (one item, here "default") is read through; its root is explained.
    with ocp.CheckpointManager(os.path.abspath(tmp_path / "runs")) as manager:
        manager.save(7, args=ocp.args.StandardSave(sd))
        manager.wait_until_finished()
    state, _ = read_lstm_weights(tmp_path / "runs" / "7")
    np.testing.assert_array_equal(state["weight_hh_l0_reverse"], sd["weight_hh_l0_reverse"])
    with pytest.raises(ValueError, match="CheckpointManager directory: pass one step"):
        read_lstm_weights(tmp_path / "runs")


def test_module_entry_point_prints_config(tmp_path):
    # safetensors -> orbax: the command needs neither torch nor anything but the package.
    write_safetensors(tmp_path / "a.safetensors", {k: v.numpy() for k, v in _torch_lstm_state_dict().items()})
    result = subprocess.run(
        [sys.executable, "-m", "jaxlstm.convert", str(tmp_path / "a.safetensors"), str(tmp_path / "ckpt"), "--batch-first"],
        capture_output=True, text=True, check=False, cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert result.returncode == 0, result.stderr
    assert "LSTMConfig(input_size=3, hidden_size=5, num_layers=1" in result.stdout
    assert "batch_first=True" in result.stdout
    assert "wrote orbax" in result.stdout
    assert read_lstm_weights(tmp_path / "ckpt")[1].batch_first is True


def _bad_files(tmp_path):
    sd = _torch_lstm_state_dict(num_layers=2)
    torch.save(sd, tmp_path / "good.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip file at all")
    write_safetensors(tmp_path / "trunc.safetensors", {k: v.numpy() for k, v in sd.items()})
    data = (tmp_path / "trunc.safetensors").read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    os.mkdir(tmp_path / "empty_dir")
    torch.save(dict(sd, weight_hh_l1=torch.zeros(20, 4)), tmp_path / "mismatch.pt")
    torch.save({"lstm." + k: v for k, v in sd.items()}, tmp_path / "prefixed.pt")
    torch.save(dict(sd, **{"fc.weight": torch.zeros(2, 5)}), tmp_path / "extra.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    (tmp_path / "exists.safetensors").write_bytes(b"")


BAD = {
    "missing_src": (["nope.pt", "out.safetensors"], "does not exist"),
    "garbage_pt": (["garbage.pt", "out.safetensors"], "not a torch checkpoint"),
    "truncated_safetensors": (["trunc.safetensors", "out.pt"], "not a valid .safetensors"),
    "not_a_checkpoint_dir": (["empty_dir", "out.pt"], "not a readable orbax checkpoint"),
    "shape_mismatch": (["mismatch.pt", "out.pt"], r"weight_hh_l1: expected \(20, 5\), got \(20, 4\)"),
    "needs_prefix": (["prefixed.pt", "out.pt"], "found under --prefix 'lstm.'"),
    "extra_keys": (["extra.pt", "out.pt"], r"unexpected keys \['fc.weight'\]"),
    "not_a_state_dict": (["tensor.pt", "out.pt"], "expected a state_dict"),
    "unknown_dst_suffix": (["good.pt", "out.npz"], "cannot tell the format"),
    "dst_exists": (["good.pt", "exists.safetensors"], "already exists"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_give_a_clear_error(case, tmp_path, capsys, monkeypatch):
    _bad_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    args, message = BAD[case]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert args[0] in err or args[1] in err  # names the file
    assert __import__("re").search(message, err), err
    assert not os.path.exists(tmp_path / args[1]) or case == "dst_exists"


def test_force_overwrites_and_detect_format(tmp_path):
    torch.save(_torch_lstm_state_dict(), tmp_path / "a.pt")
    (tmp_path / "b.safetensors").write_bytes(b"old")
    assert main([str(tmp_path / "a.pt"), str(tmp_path / "b.safetensors"), "--force"]) == 0
    assert set(read_safetensors(tmp_path / "b.safetensors")) == {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}
    assert [detect_format(p) for p in ("m.PT", "m.pth", "pytorch_model.bin", "m.safetensors", "ckpt", "run/step_100", "m.v2")] == [
        "torch", "torch", "torch", "safetensors", "orbax", "orbax", "orbax",
    ]
