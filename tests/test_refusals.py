"""Ops with no exact TTFS mapping are refused with a message naming file, node and op; the CLI exits
with code 2 and writes nothing."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import snnconv
from snnconv.cli import app
from snnconv.errors import UnsupportedOpError

from .helpers import G


def _mlp(build):
    """Gemm -> (op under test) -> Gemm on 10 features; ``build(g, h)`` returns (tensor, node)."""
    g = G((10,), opset=13)
    h = g.gemm(g.input, 10, 8)
    y, node, op = build(g, h)
    return g, g.gemm(y, 8, 4), node, op


def _single(op_type, opset=13, **attrs):
    def build(g, h):
        g.opset = max(g.opset, opset)
        name = f"my_{op_type.lower()}"
        return g.op(op_type, [h], name=name, **attrs), name, op_type
    return build


def _gelu_erf(g, h):
    """GELU as the legacy exporter writes it: x * 0.5 * (1 + erf(x / sqrt(2)))."""
    d = g.op("Div", [h, g.const(np.array(np.sqrt(2.0), np.float32))])
    e = g.op("Erf", [d], name="gelu_erf")
    a = g.op("Add", [e, g.const(np.array(1.0, np.float32))])
    m = g.op("Mul", [h, a])
    return g.op("Mul", [m, g.const(np.array(0.5, np.float32))]), "gelu_erf", "Erf"


def _mul_two(g, h):
    r = g.op("Relu", [h])
    return g.op("Mul", [r, h], name="gate_mul"), "gate_mul", "Mul"


CASES = {
    "sigmoid_inside": _single("Sigmoid"),
    "tanh_inside": _single("Tanh"),
    "gelu_opset20": _single("Gelu", opset=20),
    "gelu_erf_pattern": _gelu_erf,
    "mul_two_tensors": _mul_two,
    "unknown_op_sin": _single("Sin"),
    "softmax_inside": _single("Softmax", axis=1),
    "softplus": _single("Softplus"),
}


def _maxpool_indices():
    """MaxPool whose Indices output feeds the network (unpooling-style use)."""
    g = G((2, 6, 6), opset=13)
    c = g.op("Relu", [g.conv(g.input, 2, 3, 3, pads=[1, 1, 1, 1])])
    p, idx = g.op("MaxPool", [c], n_out=2, name="pool_with_indices", kernel_shape=[2, 2],
                  strides=[2, 2])
    f = g.op("Cast", [idx], to=onnx.TensorProto.FLOAT)
    s = g.op("Add", [p, f])
    out = g.gemm(g.op("Flatten", [s]), 27, 4)
    return g, out, "pool_with_indices", "MaxPool"


def _model(case, tmp_path):
    if case == "maxpool_indices":
        g, out, node, op = _maxpool_indices()
    else:
        g, out, node, op = _mlp(CASES[case])
    path = tmp_path / f"{case}.onnx"
    onnx.save(g.model(out), str(path))
    return path, node, op, g.in_shape


ALL = [*CASES, "maxpool_indices"]


@pytest.mark.parametrize("case", ALL)
def test_refused_with_file_node_op(case, tmp_path):
    path, node, op, shape = _model(case, tmp_path)
    calib = np.random.default_rng(0).uniform(-1, 1, (16, *shape)).astype(np.float32)
    with pytest.raises(UnsupportedOpError) as ei:
        snnconv.convert(path, calib)
    msg = str(ei.value)
    assert str(path) in msg, msg
    assert f"'{node}'" in msg and f"({op})" in msg, msg
    assert ei.value.node == node and ei.value.op == op
    assert ei.value.exit_code == 2


@pytest.mark.parametrize("case", ["sigmoid_inside", "gelu_erf_pattern", "mul_two_tensors",
                                  "maxpool_indices"])
def test_cli_refusal_exit_2_no_output(case, tmp_path):
    path, node, op, _ = _model(case, tmp_path)
    out = tmp_path / "out.snn"
    res = CliRunner().invoke(app, ["convert", str(path), "-o", str(out), "--input-range", "-1",
                                   "1"])
    assert res.exit_code == 2, res.output
    assert not out.exists()
    assert not any(p.suffix == ".snn" for p in tmp_path.iterdir())
    text = res.output + (res.stderr if hasattr(res, "stderr") else "")
    flat = " ".join(text.split())
    assert node in flat and op in flat and path.name in flat, text


def test_sigmoid_at_output_is_a_head_not_a_refusal():
    """The same op is fine as the last op (monotone head: compared before it)."""
    g = G((10,), opset=13)
    out = g.op("Sigmoid", [g.gemm(g.op("Relu", [g.gemm(g.input, 10, 8)]), 8, 4)])
    x = np.random.default_rng(0).uniform(-1, 1, (16, 10)).astype(np.float32)
    snn = snnconv.convert(g.model(out), x)
    assert snn.head == "Sigmoid"


def _refusal(g: G, out, match: str, node_op: str):
    x = np.random.default_rng(0).uniform(-1, 1, (8, *g.in_shape)).astype(np.float32)
    with pytest.raises(UnsupportedOpError, match=match) as ei:
        snnconv.convert(g.model(out), x)
    assert ei.value.op == node_op


def test_flatten_axis2_merging_into_batch_refused():
    """Flatten(axis=2) of (N, C, L) is (N*C, L): it mixes features into the batch axis."""
    g = G((3, 5), opset=13)
    f = g.op("Flatten", [g.op("Relu", [g.conv(g.input, 3, 4, (1,))])], axis=2)
    _refusal(g, f, "batch axis", "Flatten")


def test_gemm_bias_per_batch_row_refused():
    g = G((6,), opset=13, batch=4)
    out = g.op("Gemm", [g.input, g.weight(6, 3, fan_in=6), g.const(np.zeros((4, 3)))])
    _refusal(g, out, "batch axis", "Gemm")


def test_dropout_training_mode_refused():
    g = G((6,), opset=13)
    d = g.op("Dropout", [g.op("Relu", [g.gemm(g.input, 6, 6)]),
                         g.const(np.array(0.5, np.float32)), g.const(np.array(True))])
    _refusal(g, g.gemm(d, 6, 2), "training mode", "Dropout")
