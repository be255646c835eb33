"""jaxlstm.onnx_io: ONNX LSTM nodes built with onnx.helper, compared with onnxruntime and with
the onnx package's reference implementation."""

from __future__ import annotations

import numpy as np
import pytest

from jaxlstm import convert
from jaxlstm.onnx_io import from_onnx, read_onnx
from jaxlstm.state_dict import StateDictError, find_lstms
from tests.harness import assert_close, expect

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

T, B, I, H = 5, 3, 3, 4
LENGTHS = np.array([5, 2, 4], np.int32)


def _lstm_model(
    direction="forward",
    layout=0,
    bias=True,
    opset=14,
    with_lengths=False,
    with_state=False,
    peepholes=None,
    name="enc",
    seed=0,
    **attributes,
):
    """A graph of one LSTM node, weights as initializers, X (and lengths, states) as inputs."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    init = [
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, (D, 4 * H, I)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, (D, 4 * H, H)).astype(np.float32), "R"),
    ]
    inputs = ["X", "W", "R", "", "", "", "", ""]
    if bias:
        init.append(
            numpy_helper.from_array(rng.uniform(-0.5, 0.5, (D, 8 * H)).astype(np.float32), "B")
        )
        inputs[3] = "B"
    x_shape = [B, T, I] if layout else [T, B, I]
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    if with_lengths:
        inputs[4] = "lens"
        graph_inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, [B]))
    if with_state:
        state_shape = [B, D, H] if layout else [D, B, H]
        inputs[5:7] = ["h0", "c0"]
        graph_inputs += [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, state_shape) for n in ("h0", "c0")
        ]
    if peepholes is not None:
        init.append(numpy_helper.from_array(np.full((D, 3 * H), peepholes, np.float32), "P"))
        inputs[7] = "P"
    while inputs and not inputs[-1]:
        inputs.pop()
    if layout:
        attributes["layout"] = layout
    node = helper.make_node(
        "LSTM",
        inputs,
        ["Y", "Y_h", "Y_c"],
        name=name,
        hidden_size=H,
        direction=direction,
        **attributes,
    )
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, list(dims))
        for n, dims in (("Y", "tdbh"), ("Y_h", "dbh"), ("Y_c", "dbh"))
    ]
    graph = helper.make_graph([node], "lstm", graph_inputs, outputs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _feeds(model, layout, with_lengths, with_state, direction):
    rng = np.random.default_rng(7)
    D = 2 if direction == "bidirectional" else 1
    feeds = {"X": rng.standard_normal((B, T, I) if layout else (T, B, I)).astype(np.float32)}
    if with_lengths:
        feeds["lens"] = LENGTHS
    if with_state:
        shape = (B, D, H) if layout else (D, B, H)
        feeds["h0"] = rng.standard_normal(shape).astype(np.float32)
        feeds["c0"] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _run(runner, model, feeds):
    if runner == "onnxruntime":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        return session.run(None, feeds)
    return ReferenceEvaluator(model).run(None, feeds)


def _port_outputs(port, feeds, layout, direction):
    """The port's out, h_n, c_n in ONNX's Y, Y_h, Y_c layouts."""
    hx = None
    if "h0" in feeds:
        hx = tuple(f.transpose(1, 0, 2) if layout else f for f in (feeds["h0"], feeds["c0"]))
    out, (h_n, c_n) = port(feeds["X"], hx, seq_lengths=feeds.get("lens"))
    out, h_n, c_n = (np.asarray(a) for a in (out, h_n, c_n))
    D = 2 if direction == "bidirectional" else 1
    if layout:
        y = out.reshape(B, T, D, H)
        return y, h_n.transpose(1, 0, 2), c_n.transpose(1, 0, 2)
    return out.reshape(T, B, D, H).transpose(0, 2, 1, 3), h_n, c_n


CASES = {
    "forward": dict(),
    "forward opset 7": dict(opset=7),
    "bidirectional": dict(direction="bidirectional"),
    "bidirectional lengths states": dict(
        direction="bidirectional", with_lengths=True, with_state=True
    ),
    "forward no bias lengths": dict(bias=False, with_lengths=True),
    "layout 1 bidirectional": dict(direction="bidirectional", layout=1, with_state=True),
    "layout 1 lengths": dict(layout=1, with_lengths=True),
}


def _onnx_outputs(runner, kwargs, feeds):
    """Y, Y_h, Y_c as `runner` computes them for the model `kwargs` describes.

    onnxruntime does not run layout=1: it runs the layout-0 twin (same weights) on the
    transposed inputs, its outputs transposed back. onnx.reference ignores sequence_lens.
    """
    layout = kwargs.get("layout", 0)
    if runner == "reference" and kwargs.get("with_lengths"):
        pytest.skip("onnx.reference's LSTM ignores sequence_lens (onnxruntime checks it)")
    if runner == "reference" or not layout:
        return _run(runner, _lstm_model(**kwargs), feeds)
    twin = _lstm_model(**(kwargs | {"layout": 0}))
    swapped = {k: v.swapaxes(0, 1) if v.ndim == 3 else v for k, v in feeds.items()}
    y, y_h, y_c = _run(runner, twin, swapped)
    return [y.transpose(2, 0, 1, 3), y_h.swapaxes(0, 1), y_c.swapaxes(0, 1)]


@pytest.mark.parametrize("runner", ["onnxruntime", "reference"])
@pytest.mark.parametrize("case", list(CASES))
def test_lstm_node_runs_like_onnx(case, runner):
    kwargs = CASES[case]
    layout, direction = kwargs.get("layout", 0), kwargs.get("direction", "forward")
    model = _lstm_model(**kwargs)
    feeds = _feeds(model, layout, kwargs.get("with_lengths"), kwargs.get("with_state"), direction)
    want = _onnx_outputs(runner, kwargs, feeds)
    port = from_onnx(model)
    assert port.batch_first == bool(layout)
    got = _port_outputs(port, feeds, layout, direction)
    for name, a, b in zip(("Y", "Y_h", "Y_c"), got, want, strict=True):
        assert_close(a, b, "float32", f"{case} {runner} {name}")


def test_reverse_direction_runs_on_reversed_input():
    model = _lstm_model(direction="reverse")
    feeds = _feeds(model, 0, False, False, "reverse")
    want = _run("reference", model, feeds)
    with pytest.warns(UserWarning, match="reverse"):
        port = from_onnx(model)
    out, (h_n, _) = port(feeds["X"][::-1])
    assert_close(np.asarray(out)[::-1], want[0][:, 0], "float32", "Y")
    assert_close(np.asarray(h_n), want[1], "float32", "Y_h")


def test_files_are_listed_and_converted(tmp_path):
    first = _lstm_model(name="enc")
    second = _lstm_model(direction="bidirectional", name="", seed=1)
    graph = first.graph
    node = second.graph.node[0]
    for t in second.graph.initializer:
        t.name = f"{t.name}2"
    node.input[:] = ["X", "W2", "R2", "B2"]
    node.output[:] = ["Y2", "Y_h2", "Y_c2"]
    graph.initializer.extend(second.graph.initializer)
    graph.node.append(node)
    graph.output.append(helper.make_tensor_value_info("Y2", TensorProto.FLOAT, list("tdbh")))
    onnx.save(first, tmp_path / "two.onnx")
    found = find_lstms(tmp_path / "two.onnx")
    assert list(found) == ["LSTM_1.", "enc."] and found["LSTM_1."].bidirectional
    feeds = {"X": np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)}
    want = _run("reference", first, feeds)
    port = from_onnx(tmp_path / "two.onnx", node="LSTM_1")
    got = _port_outputs(port, feeds, 0, "bidirectional")
    assert_close(got[0], want[3], "float32", "Y of the unnamed node")
    expect(StateDictError, lambda: from_onnx(tmp_path / "two.onnx"), "2 LSTMs", "'enc.'")
    assert (
        convert.main(
            [str(tmp_path / "two.onnx"), str(tmp_path / "enc.safetensors"), "--prefix", "enc."]
        )
        == 0
    )


def test_constant_initial_state_is_kept_with_a_note():
    model = _lstm_model()
    h0 = numpy_helper.from_array(np.full((1, B, H), 0.5, np.float32), "h0")
    model.graph.initializer.append(h0)
    model.graph.node[0].input[:] = ["X", "W", "R", "B", "", "h0"]
    checkpoint = read_onnx(model)
    assert np.all(checkpoint.tensors["enc.initial_h"] == 0.5)
    assert any("pass it as hx" in n for n in checkpoint.notes["enc."])


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(peepholes=0.1), "input P (peephole"),
        (dict(clip=3.0), "clip=3.0"),
        (dict(input_forget=1), "input_forget=1"),
        (dict(activations=["Sigmoid", "Relu", "Tanh"]), "activations="),
    ],
    ids=["peepholes", "clip", "input_forget", "activations"],
)
def test_what_torch_cannot_express_is_refused_by_name(kwargs, named):
    model = _lstm_model(**kwargs)
    assert find_lstms(model) == {}
    expect(StateDictError, lambda: from_onnx(model), "'enc.'", named)


def test_zero_peepholes_and_default_activations_are_accepted():
    model = _lstm_model(peepholes=0.0, activations=["Sigmoid", "Tanh", "Tanh"])
    assert list(find_lstms(read_onnx(model))) == ["enc."]


def test_computed_weights_are_refused():
    model = _lstm_model()
    node = helper.make_node("Identity", ["W"], ["W_copy"])
    model.graph.node.insert(0, node)
    model.graph.node[1].input[1] = "W_copy"
    expect(StateDictError, lambda: from_onnx(model), "input W", "computed in the graph")


def test_without_onnx_the_error_names_the_extra(tmp_path, monkeypatch):
    onnx.save(_lstm_model(), tmp_path / "m.onnx")
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    expect(ImportError, lambda: find_lstms(tmp_path / "m.onnx"), "jaxlstm[onnx]")
