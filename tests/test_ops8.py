"""Op coverage for real-world exports (issue: every piecewise-linear network converts exactly).

Each model is built with onnx.helper (or exported from torch), converted calibrated on random data
of the input's range and checked by ``helpers.check_model`` with ``events=True``: float64 SNN vs the
float64 reference (1e-9 relative per sample), vs onnxruntime on the float32 model (first-order
float32 error bound), top-1 agreement, and the event-driven simulator against the closed form
(1e-9 relative).
"""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

import snnconv
from snnconv.errors import ModelImportError, UnsupportedOpError
from snnconv.importer import import_onnx
from snnconv.importer.hints import GENERIC_HINT, NOT_PIECEWISE_LINEAR, REWRITE_HINT
from snnconv.importer.registry import HANDLERS

from .helpers import G, check_model, run_ort, uniform
from .test_ops import _shape, data, head

N = 40


def run(g: G, out, lo=-1.0, hi=1.0, label="", **kw):
    x, cal = data(g.in_shape, lo, hi)
    return check_model(g.model(out), x, cal, label=label, events=True, **kw)


def f32(v):
    return np.asarray(v, np.float32)


def conv_relu(g: G, x, cin, cout, k=3, **attrs):
    attrs.setdefault("pads", [1, 1, 1, 1] if k == 3 else [0, 0, 0, 0])
    return g.op("Relu", [g.conv(x, cin, cout, k, **attrs)])


def layer_kinds(model, x):
    snn = snnconv.convert(model, x)
    return snn, [la.kind for la in snn.layers]


def torch_onnx(model: nn.Module, x: np.ndarray, opset=13, dynamo=False) -> onnx.ModelProto:
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model.eval(), (torch.as_tensor(x[:2]),), buf, dynamo=False,
                          opset_version=opset, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return onnx.load_model_from_string(buf.getvalue())


# --- layout: Transpose and --input-shape ----------------------------------------------------------

def test_nhwc_model_tf2onnx_style():
    """NHWC input (Keras/tf2onnx): Transpose -> Conv -> ... -> Transpose back -> Reshape -> MatMul;
    the first transpose is wiring in the first layer's synapses, the last one is folded into the
    dense weights."""
    g = G((9, 8, 3), opset=13)
    t = g.op("Transpose", [g.input], perm=[0, 3, 1, 2])
    y = conv_relu(g, t, 3, 4)
    y = conv_relu(g, y, 4, 5, strides=[2, 2])
    back = g.op("Transpose", [y], perm=[0, 2, 3, 1])
    r = g.op("Reshape", [back, g.const(np.array([-1, 5 * 5 * 4], np.int64))])
    out = g.op("Add", [g.op("MatMul", [r, g.weight(100, 6, fan_in=100)]), g.bias(6)])
    m = g.model(out)
    run(g, out, label="nhwc-tf2onnx")
    x, _ = data(g.in_shape)
    snn = snnconv.convert(m, x)
    kinds = [[o.kind for o in grp.ops] for la in snn.layers[1:] for grp in la.groups]
    assert kinds[0][0] == "transpose" and kinds[-1] == ["dense"], kinds


@pytest.mark.parametrize("where", ["after_relu", "signed", "before_pool"])
def test_transpose_in_the_middle(where):
    """Swap H and W between layers: after a ReLU, on a signed conv output (no ReLU), before a
    max-pool."""
    g = G((3, 7, 6), opset=13)
    y = conv_relu(g, g.input, 3, 4)
    if where == "signed":
        y = g.conv(y, 4, 4, 1)
    t = g.op("Transpose", [y], perm=[0, 1, 3, 2])
    if where == "before_pool":
        t = g.op("MaxPool", [t], kernel_shape=[2, 2], strides=[2, 2])
    z = conv_relu(g, t, 4, 3)
    run(g, head(g, z, int(np.prod(_shape(g, z)))), label=f"transpose-{where}")


def test_transpose_channels_last_1d():
    """Keyword-spotting layout (N, T, F): Transpose to (N, F, T), Conv1d over time."""
    g = G((20, 6), opset=13)
    t = g.op("Transpose", [g.input], perm=[0, 2, 1])
    y = g.op("Relu", [g.conv(t, 6, 8, (5,), strides=[2])])
    p = g.op("GlobalMaxPool", [y])
    run(g, g.gemm(g.op("Flatten", [p]), 8, 4), label="transpose-1d")


def test_transpose_batch_axis_refused():
    g = G((4, 5), opset=13)
    t = g.op("Transpose", [g.input], perm=[1, 0, 2], name="bad_t")
    with pytest.raises(UnsupportedOpError, match="batch axis") as ei:
        import_onnx(g.model(g.op("Relu", [t])))
    assert ei.value.hint


def _dynamic_spatial_model(layout="nchw"):
    g = G((3, 8, 8), opset=13)
    x = g.input
    if layout == "nhwc":
        g.in_shape = (8, 8, 3)
        x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    y = conv_relu(g, x, 3, 6)
    y = g.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = conv_relu(g, y, 6, 5)
    p = g.op("Flatten", [g.op("GlobalAveragePool", [y])])
    m = g.model(g.gemm(p, 5, 4))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, name in zip(list(dims)[1:], ["C", "H", "W"] if layout == "nchw" else ["H", "W", "C"]):
        if name != "C":
            d.Clear()
            d.dim_param = name
    return m, g.in_shape


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_input_shape_fixes_dynamic_spatial_dims(layout):
    m, shape = _dynamic_spatial_model(layout)
    with pytest.raises(ModelImportError, match="dynamic") as ei:
        import_onnx(m)
    assert "--input-shape" in ei.value.hint
    for size in (8, 12):
        shp = (3, size, size) if layout == "nchw" else (size, size, 3)
        x, cal = data(shp)
        rec = check_model(m, x, cal, label=f"input-shape-{layout}", events=True,
                          convert_kw={"input_shape": shp})
        assert rec["n"] == N
    snn = snnconv.convert(m, cal, input_shape=shp)
    assert snn.input.shape == shp


# --- affine maps by constants anywhere ------------------------------------------------------------

def _affine(g: G, x, kind, c):
    """x * s + b in the ONNX spellings exporters use; c: channels."""
    s = np.linspace(-1.5, 2.0, c).reshape(c, 1, 1)  # a negative scale too
    b = np.linspace(0.4, -0.3, c).reshape(1, c, 1, 1)
    if kind == "mul_add":
        return g.op("Add", [g.op("Mul", [x, g.const(s)]), g.const(b)])
    if kind == "sub_div":
        return g.op("Div", [g.op("Sub", [x, g.const(b)]), g.const(np.where(s == 0, 1, s))])
    if kind == "scalar":
        return g.op("Sub", [g.const(f32(0.25)), g.op("Mul", [g.const(f32(-0.7)), x])])
    full = np.random.default_rng(5).uniform(0.5, 1.5, (c, *_shape(g, x)[1:]))
    return g.op("Mul", [x, g.const(full)])  # a different constant per position


AFFINES = ["mul_add", "sub_div", "scalar", "per_position"]


@pytest.mark.parametrize("kind", AFFINES)
@pytest.mark.parametrize("where", ["before_relu", "after_relu_padded_conv", "after_relu_avgpool",
                                   "before_maxpool", "before_gemm"])
def test_affine_anywhere(kind, where):
    """Mul/Add/Sub/Div by constants in the middle of a network: before a ReLU (into the previous
    layer), after a ReLU before a zero-padded conv or a count_include_pad average pool (per-position
    bias), before a max-pool (negative scales: min-pool), and before a dense layer."""
    g = G((3, 8, 8), opset=13)
    y = conv_relu(g, g.input, 3, 4)
    if where == "before_relu":
        z = g.op("Relu", [_affine(g, g.conv(y, 4, 4, 3, pads=[1, 1, 1, 1]), kind, 4)])
    elif where == "after_relu_padded_conv":
        z = conv_relu(g, _affine(g, y, kind, 4), 4, 4, pads=[2, 1, 0, 1])
    elif where == "after_relu_avgpool":
        a = g.op("AveragePool", [_affine(g, y, kind, 4)], kernel_shape=[3, 3], strides=[2, 2],
                 pads=[1, 1, 1, 1], count_include_pad=1)
        z = conv_relu(g, a, 4, 4)
    elif where == "before_maxpool":
        p = g.op("MaxPool", [_affine(g, y, kind, 4)], kernel_shape=[2, 2], strides=[2, 2])
        z = conv_relu(g, p, 4, 4)
    else:
        f = g.op("Flatten", [_affine(g, y, kind, 4)])
        run(g, g.gemm(g.op("Relu", [g.gemm(f, 256, 8)]), 8, 5), label=f"affine-{kind}-{where}")
        return
    run(g, head(g, z, int(np.prod(_shape(g, z)))), label=f"affine-{kind}-{where}")


def test_affine_chain_between_dense_layers():
    """Several affine maps in a row on feature vectors, between two Gemm layers with no ReLU."""
    g = G((10,), opset=13)
    h = g.gemm(g.op("Relu", [g.gemm(g.input, 10, 8)]), 8, 8)
    h = g.op("Div", [g.op("Add", [g.op("Mul", [h, g.const(np.linspace(-1, 1, 8))]),
                                  g.const(f32(0.3))]), g.const(f32(-2.0))])
    run(g, g.gemm(g.op("Relu", [h]), 8, 4), label="affine-dense-chain")


# --- activations by the +/- split -----------------------------------------------------------------

def _slope(g: G, kind, c=4):
    if kind == "scalar":
        return g.const(f32([0.25]))
    if kind == "per_channel":
        return g.const(np.array([0.1, -0.4, 0.0, 1.5][:c]).reshape(c, 1, 1))
    return g.const(np.random.default_rng(2).uniform(-0.5, 0.5, (c, 8, 8)))


ACTS = {
    "leaky_0.1": lambda g, x: g.op("LeakyRelu", [x], alpha=0.1),
    "leaky_default": lambda g, x: g.op("LeakyRelu", [x]),
    "leaky_negative": lambda g, x: g.op("LeakyRelu", [x], alpha=-0.3),
    "leaky_above_1": lambda g, x: g.op("LeakyRelu", [x], alpha=1.5),
    "prelu_scalar": lambda g, x: g.op("PRelu", [x, _slope(g, "scalar")]),
    "prelu_channel": lambda g, x: g.op("PRelu", [x, _slope(g, "per_channel")]),
    "prelu_full": lambda g, x: g.op("PRelu", [x, _slope(g, "full")]),
    "abs": lambda g, x: g.op("Abs", [x]),
    "neg_relu": lambda g, x: g.op("Relu", [g.op("Neg", [x])]),
    "clip_min_only": lambda g, x: g.op("Clip", [x, g.const(f32(-0.2))]),
    "clip_max_only": lambda g, x: g.op("Clip", [x, "", g.const(f32(0.3))]),
    "clip_negative_band": lambda g, x: g.op("Clip", [x, g.const(f32(-0.6)), g.const(f32(-0.1))]),
    "max_0": lambda g, x: g.op("Max", [x, g.const(f32(0.0))]),
    "max_c_channel": lambda g, x: g.op("Max", [g.const(np.array([0.1, -0.2, 0.3, -0.5])
                                                       .reshape(4, 1, 1)), x]),
    "min_c": lambda g, x: g.op("Min", [x, g.const(f32(0.2))]),
    "min_c_position": lambda g, x: g.op("Min", [x, g.const(np.random.default_rng(3).uniform(
        -0.3, 0.3, (1, 1, 8, 8)))]),
    "relu6_as_min_max": lambda g, x: g.op("Min", [g.op("Max", [x, g.const(f32(0.0))]),
                                                  g.const(f32(0.4))]),
    "relu6_as_max_min": lambda g, x: g.op("Max", [g.op("Min", [x, g.const(f32(0.4))]),
                                                  g.const(f32(0.0))]),
    "hard_sigmoid": lambda g, x: g.op("HardSigmoid", [x], alpha=0.5, beta=0.4),
}


@pytest.mark.parametrize("act", list(ACTS))
def test_activation(act):
    """Conv -> activation -> padded Conv: each activation is a sum of monotone ReLU pieces
    (neuron layers from the same expression)."""
    g = G((3, 8, 8), opset=13)
    y = ACTS[act](g, g.conv(g.input, 3, 4, 3, pads=[1, 1, 1, 1]))
    z = conv_relu(g, y, 4, 4)
    run(g, head(g, z, 256), label=f"act-{act}")


@pytest.mark.parametrize("op", ["Max", "Min"])
@pytest.mark.parametrize("n_inputs", [2, 3])
def test_max_min_of_tensors(op, n_inputs):
    """Max(x, y) = y + relu(x - y) and Min(x, y) = y - relu(y - x) of branches of different depth,
    variadic, with a constant as the last operand for three inputs."""
    g = G((3, 8, 8), opset=13)
    a = g.conv(g.input, 3, 4, 3, pads=[1, 1, 1, 1])
    b = g.conv(conv_relu(g, g.input, 3, 4), 4, 4, 3, pads=[1, 1, 1, 1])
    ins = [a, b] + ([conv_relu(g, g.input, 3, 4, 1), g.const(f32(0.1))] if n_inputs == 3 else [])
    y = g.op(op, ins)
    z = conv_relu(g, y, 4, 4)
    run(g, head(g, z, 256), label=f"{op.lower()}-{n_inputs}")


BOUNDS = {
    "min_of_max": lambda g, c: g.op("Min", [g.op("Max", [c, g.const(f32(0))]), g.const(f32(.4))]),
    "max_of_min": lambda g, c: g.op("Max", [g.op("Min", [c, g.const(f32(.4))]), g.const(f32(0))]),
    "relu_then_min": lambda g, c: g.op("Min", [g.op("Relu", [c]), g.const(f32(0.3))]),
    "relu_then_clip_max": lambda g, c: g.op("Clip", [g.op("Relu", [c]), "", g.const(f32(0.3))]),
    "relu_then_max_neg": lambda g, c: g.op("Max", [g.op("Relu", [c]), g.const(f32(-0.1))]),
}


@pytest.mark.parametrize("form", list(BOUNDS))
def test_relu6_spellings_are_one_saturating_layer(form):
    """ReLU6 written as Min/Max pairs (either order) or Relu then Min/Clip: the bound becomes the
    cap of the one layer carrying the value (no second layer, no extra stage); a Max with a
    constant below a ReLU's floor is the identity."""
    g = G((3, 8, 8), opset=13)
    y = BOUNDS[form](g, g.conv(g.input, 3, 4, 3, pads=[1, 1, 1, 1]))
    out = head(g, conv_relu(g, y, 4, 4), 256)
    run(g, out, label=f"bounds-{form}")
    snn = snnconv.convert(g.model(out), data(g.in_shape)[1])
    layers = snn.neuron_layers()
    assert len(layers) == 2, [la.name for la in layers]
    want = {"min_of_max": 0.4, "max_of_min": 0.4, "relu_then_min": 0.3,
            "relu_then_clip_max": 0.3}.get(form)
    assert (layers[0].cap is None) if want is None else abs(layers[0].cap - want) < 1e-7
    assert layers[0].saturating == (want is not None)


def test_bound_of_a_layer_used_elsewhere_is_not_a_cap():
    """Relu(x) feeds Min(., c) and a skip: the ReLU layer keeps its range, the min is a layer."""
    g = G((3, 8, 8), opset=13)
    r = g.op("Relu", [g.conv(g.input, 3, 4, 3, pads=[1, 1, 1, 1])])
    y = g.op("Add", [g.op("Min", [r, g.const(f32(0.2))]), r])
    out = head(g, conv_relu(g, y, 4, 4), 256)
    run(g, out, label="bounds-shared")
    snn = snnconv.convert(g.model(out), data(g.in_shape)[1])
    assert len(snn.neuron_layers()) == 3 and snn.neuron_layers()[0].cap is None


def test_activation_on_dense_features_pieces_layers():
    """LeakyReLU on feature vectors: two neuron layers, z+ and z-, from the same expression."""
    g = G((10,), opset=13)
    h = g.op("LeakyRelu", [g.gemm(g.input, 10, 12)], alpha=0.2)
    out = g.gemm(h, 12, 5)
    run(g, out, label="leaky-dense")
    x, _ = data((10,))
    snn = snnconv.convert(g.model(out), x)
    names = [la.name for la in snn.neuron_layers()]
    assert len(names) == 2 and names[0].endswith("+") and names[1].endswith("-"), names
    assert [g_.source for g_ in snn.neuron_layers()[0].groups] == \
        [g_.source for g_ in snn.neuron_layers()[1].groups]


def test_activation_of_nonnegative_value_needs_no_neuron():
    """Abs / LeakyReLU of a ReLU output is the identity: no extra layer."""
    g = G((10,), opset=13)
    h = g.op("Relu", [g.gemm(g.input, 10, 8)])
    h = g.op("LeakyRelu", [g.op("Abs", [h])], alpha=0.1)
    out = g.gemm(h, 8, 4)
    run(g, out, label="act-nonneg")
    x, _ = data((10,))
    assert len(snnconv.convert(g.model(out), x).neuron_layers()) == 1


@pytest.mark.parametrize("act", ["leaky_0.1", "leaky_negative", "abs", "prelu_channel",
                                 "max_c_channel", "min_c", "min_c_position", "relu6_as_min_max"])
def test_activation_after_signed_maxpool(act):
    """Conv -> MaxPool -> activation: pooled piece by piece (max for increasing pieces, min for
    decreasing ones); a per-position constant does not commute with the pool (offset coding)."""
    g = G((3, 8, 8), opset=13)
    p = g.op("MaxPool", [g.conv(g.input, 3, 4, 3, pads=[1, 1, 1, 1])], kernel_shape=[2, 2],
             strides=[1, 1], pads=[0, 0, 1, 1])
    z = conv_relu(g, ACTS[act](g, p), 4, 4)
    run(g, head(g, z, 256), label=f"pool-act-{act}")


def test_torch_activations_exported():
    """LeakyReLU, PReLU (per channel), Hardtanh, ReLU6 and abs in a torch CNN."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.c3 = nn.Conv2d(4, 4, 3, padding=1)
            self.a1, self.a2 = nn.LeakyReLU(0.05), nn.PReLU(4, init=0.2)
            self.fc = nn.Linear(4 * 16, 3)

        def forward(self, x):
            x = self.a1(self.c1(x))
            x = self.a2(self.c2(x))
            x = nn.functional.hardtanh(self.c3(x), -0.5, 0.8) + nn.functional.relu6(x).abs()
            return self.fc(torch.flatten(x, 1))

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.a2.weight.uniform_(-0.5, 0.5)
    x, cal = data((2, 4, 4))
    m = torch_onnx(net, x)
    assert {"LeakyRelu", "PRelu"} <= {n.op_type for n in m.graph.node}
    check_model(m, x, cal, label="torch-activations", events=True)


# --- pooling --------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["GlobalMaxPool", "ReduceMax13", "ReduceMax18", "ReduceMax_keep0"])
@pytest.mark.parametrize("signed", [False, True], ids=["relu", "signed"])
def test_global_max_pool(op, signed):
    """GlobalMaxPool / ReduceMax over space, of a ReLU layer and of a signed conv output (offset
    coding)."""
    g = G((3, 6, 7), opset=18 if op == "ReduceMax18" else 13)
    y = g.conv(g.input, 3, 5, 3, pads=[1, 1, 1, 1])
    if not signed:
        y = g.op("Relu", [y])
    if op == "GlobalMaxPool":
        p = g.op("Flatten", [g.op("GlobalMaxPool", [y])])
    elif op == "ReduceMax18":
        p = g.op("Flatten", [g.op("ReduceMax", [y, g.const(np.array([2, 3], np.int64))])])
    elif op == "ReduceMax13":
        p = g.op("Flatten", [g.op("ReduceMax", [y], axes=[2, 3])])
    else:
        p = g.op("ReduceMax", [y], axes=[-1, -2], keepdims=0)
    run(g, g.gemm(p, 5, 4), label=f"{op}-{'signed' if signed else 'relu'}")


SIGNED_POOL = {
    "conv_after": "Conv -> MaxPool -> Conv",
    "dense_after": "Conv -> MaxPool -> Flatten -> Gemm",
    "residual": "MaxPool added to a branch",
    "last_op": "MaxPool is the network output",
    "pool_of_pool": "MaxPool -> MaxPool of signed values",
    "bn_then_pool": "Conv -> BN (negative scales) -> MaxPool -> Conv",
    "input": "MaxPool on the signed input -> Conv",
}


@pytest.mark.parametrize("case", list(SIGNED_POOL))
def test_maxpool_of_signed_values_offset_coding(case):
    """A max-pool over values of both signs with no ReLU after it: offset coding (a neuron layer
    carries z + c, c from guaranteed interval lower bounds; the pool acts on its spikes)."""
    g = G((3, 8, 8), opset=13)
    c = g.conv(g.input, 3, 4, 3, pads=[1, 1, 1, 1]) if case != "input" else g.input
    cin = 3 if case == "input" else 4
    if case == "bn_then_pool":
        s = np.array([1.2, -0.8, -1.5, 0.6])
        c = g.op("BatchNormalization", [c, g.const(s), g.const(np.array([0.1, -0.2, 0.3, 0.0])),
                                        g.const(np.zeros(4)), g.const(np.ones(4))])
    p = g.op("MaxPool", [c], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    if case == "last_op":
        out = g.op("Flatten", [p])
    elif case == "dense_after":
        out = g.gemm(g.op("Flatten", [p]), 64, 5)
    elif case == "residual":
        out = head(g, conv_relu(g, g.op("Add", [p, g.conv(p, 4, 4, 1)]), 4, 4), 64)
    elif case == "pool_of_pool":
        q = g.op("MaxPool", [p], kernel_shape=[2, 2], strides=[2, 2])
        out = head(g, conv_relu(g, q, 4, 3), 12)
    else:
        out = head(g, conv_relu(g, p, cin, 4), 64)
    run(g, out, label=f"offset-{case}")


def test_offset_coding_exact_for_every_input_in_range():
    """Without calibration data, windows and offsets come from interval bounds: the SNN equals the
    network for any input in the declared range, including its extreme corners."""
    g = G((2, 6, 6), opset=13)
    p = g.op("MaxPool", [g.conv(g.input, 2, 3, 3, pads=[1, 1, 1, 1])], kernel_shape=[2, 2],
             strides=[2, 2])
    out = g.gemm(g.op("Flatten", [p]), 27, 4)
    m = g.model(out)
    snn = snnconv.convert(m, input_range=(-1.0, 1.0))
    offset = [la for la in snn.neuron_layers() if la.name.endswith("/offset")]
    assert len(offset) == 1
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.choice([-1.0, 1.0], (64, 2, 6, 6)), rng.uniform(-1, 1, (64, 2, 6, 6))])
    ref, _ = import_onnx(m).forward(x)
    res = snn.simulate(x)
    assert not any(s.clipped for s in res.stats.values())
    err = ((res.logits - ref).abs().amax(1) / ref.abs().amax(1)).max().item()
    assert err <= 1e-9, err
    # c = -(guaranteed lower bound of the conv output) per channel, here computed by hand: the
    # conv of inputs in [-1, 1] is >= b - sum|w| where all taps are inside the image
    w = onnx.numpy_helper.to_array(m.graph.initializer[0]).astype(np.float64)
    b = onnx.numpy_helper.to_array(m.graph.initializer[1]).astype(np.float64)
    c_hand = np.maximum(0.0, np.abs(w).reshape(3, -1).sum(1) - b)
    pool = next(la for la in snn.layers if la.kind == "pool")
    assert pool.relation.note.startswith("offset coded")
    np.testing.assert_allclose(np.asarray(pool.relation.shift).reshape(-1), c_hand, rtol=1e-12)
    z = import_onnx(m).forward(x, keep={m.graph.node[0].output[0]})[1][m.graph.node[0].output[0]]
    assert float((z + torch.as_tensor(c_hand).reshape(1, 3, 1, 1)).min()) >= 0.0


def test_conv_maxpool_bn_relu_negative_scales():
    """Conv -> MaxPool -> BN (some scales negative) -> ReLU: the pool waits for the ReLU, the
    negative channels become min-pools (latest spike)."""
    g = G((3, 8, 8), opset=13)
    p = g.op("MaxPool", [g.conv(g.input, 3, 4, 3, pads=[1, 1, 1, 1])], kernel_shape=[2, 2],
             strides=[2, 2])
    bn = g.op("BatchNormalization", [p, g.const(np.array([1.1, -0.7, -1.3, 0.5])),
                                     g.const(np.array([0.1, 0.2, -0.1, 0.0])),
                                     g.const(np.array([0.0, 0.1, 0.2, -0.1])),
                                     g.const(np.array([1.0, 0.5, 2.0, 1.5]))])
    z = g.op("Relu", [bn])
    out = head(g, z, 64)
    run(g, out, label="conv-pool-bn-relu")
    x, _ = data(g.in_shape)
    snn = snnconv.convert(g.model(out), x)
    pools = [la for la in snn.layers if la.kind == "pool"]
    assert len(pools) == 1 and pools[0].minimum.tolist() == [False, True, True, False]
    assert not any(la.name.endswith("/offset") for la in snn.layers)


def test_conv_maxpool_relu_reordered():
    g = G((3, 8, 8), opset=13)
    p = g.op("MaxPool", [g.conv(g.input, 3, 4, 3, pads=[1, 1, 1, 1])], kernel_shape=[3, 3],
             strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    z = g.op("Relu", [p])
    run(g, head(g, z, int(np.prod(_shape(g, z)))), label="conv-pool-relu")


# --- linear layers --------------------------------------------------------------------------------

class KWS(nn.Module):
    """A keyword-spotting / ECG style 1-d CNN: Conv1d-BN-ReLU-MaxPool blocks, global average."""

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(
            nn.Conv1d(4, 8, 5, stride=2, padding=2), nn.BatchNorm1d(8), nn.ReLU(),
            nn.MaxPool1d(2), nn.Conv1d(8, 8, 3, padding=1, groups=2), nn.BatchNorm1d(8),
            nn.ReLU(), nn.Conv1d(8, 6, 3, dilation=2, padding=2), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(6, 5))

    def forward(self, x):
        return self.f(x)


def _randomise_bn(model):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(-1.5, 1.5)
    return model


def test_conv1d_keyword_spotting_torch():
    torch.manual_seed(1)
    net = _randomise_bn(KWS().eval())
    x, cal = data((4, 40))
    m = torch_onnx(net, x)
    check_model(m, x, cal, label="kws-conv1d", events=True)
    with torch.no_grad():
        assert np.abs(run_ort(m, x) - net(torch.as_tensor(x)).numpy()).max() < 1e-4


def test_conv3d_torch():
    torch.manual_seed(2)
    net = _randomise_bn(nn.Sequential(
        nn.Conv3d(2, 4, 3, padding=1, stride=(1, 2, 2)), nn.BatchNorm3d(4), nn.ReLU(),
        nn.MaxPool3d(2), nn.Conv3d(4, 3, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(),
        nn.Flatten(), nn.Linear(3 * 2 * 2 * 2, 4)).eval())
    x, cal = data((2, 4, 8, 8))
    check_model(torch_onnx(net, x), x, cal, label="conv3d-torch", events=True)


CONVT_VARIANTS = {
    "plain": dict(k=3),
    "stride2": dict(k=3, strides=[2, 2]),
    "stride2_pads": dict(k=4, strides=[2, 2], pads=[1, 1, 1, 1]),
    "pads_asym": dict(k=3, strides=[2, 1], pads=[0, 1, 2, 0]),
    "output_padding": dict(k=3, strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
    "output_padding_asym": dict(k=3, strides=[3, 2], pads=[1, 0, 0, 1], output_padding=[2, 0]),
    "dilation": dict(k=3, dilations=[2, 1], strides=[2, 2], pads=[1, 1, 0, 0]),
    "group2": dict(k=3, group=2, strides=[2, 2], pads=[1, 1, 1, 1]),
    "depthwise": dict(k=2, group=4, strides=[2, 2]),
    "same_upper": dict(k=3, strides=[2, 2], auto_pad="SAME_UPPER"),
    "same_lower": dict(k=4, strides=[2, 2], auto_pad="SAME_LOWER"),
    "valid": dict(k=3, strides=[2, 2], auto_pad="VALID"),
    "output_shape": dict(k=3, strides=[2, 2], output_shape=[10, 9]),
    "no_bias": dict(k=3, strides=[2, 2], bias=False),
}


def _convt(g: G, x, cin, cout, k, group=1, bias=True, **attrs):
    ks = (k,) * 2 if isinstance(k, int) else tuple(k)
    w = g.weight(cin, cout // group, *ks, fan_in=cin * int(np.prod(ks)))
    if group != 1:
        attrs["group"] = group
    return g.op("ConvTranspose", [x, w] + ([g.bias(cout)] if bias else []), **attrs)


@pytest.mark.parametrize("variant", list(CONVT_VARIANTS))
@pytest.mark.parametrize("where", ["after_relu", "on_input"])
def test_conv_transpose(variant, where):
    kw = dict(CONVT_VARIANTS[variant])
    k = kw.pop("k")
    g = G((4, 5, 5), opset=13)
    x = conv_relu(g, g.input, 4, 4) if where == "after_relu" else g.input
    y = g.op("Relu", [_convt(g, x, 4, 4, k, **kw)])
    run(g, head(g, y, int(np.prod(_shape(g, y)))), label=f"convt-{variant}-{where}")


@pytest.mark.parametrize("nd", [1, 3])
def test_conv_transpose_1d_3d(nd):
    shape = (3, 7) if nd == 1 else (2, 3, 4, 4)
    g = G(shape, opset=13)
    k = (3,) if nd == 1 else (2, 3, 3)
    attrs = dict(strides=[2] * nd, pads=[1] * (2 * nd), output_padding=[1] * nd)
    y = g.op("Relu", [_convt(g, g.input, shape[0], 4, k, **attrs)])
    run(g, head(g, y, int(np.prod(_shape(g, y)))), label=f"convt-{nd}d")


def test_conv_transpose_torch_decoder():
    """Encoder-decoder: Conv stride 2 -> ConvTranspose stride 2 (output_padding) -> BN -> ReLU,
    then a ConvTranspose right after a conv without a ReLU between them (+/- split)."""
    torch.manual_seed(3)
    net = _randomise_bn(nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(4),
        nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1),
        nn.ConvTranspose2d(3, 2, 2, stride=2, groups=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(2 * 16 * 16, 3)).eval())
    x, cal = data((2, 8, 8))
    check_model(torch_onnx(net, x), x, cal, label="convt-torch", events=True)


RESIZE = {
    "upsample7": (7, dict(attrs=dict(mode="nearest", scales=[1.0, 1.0, 2.0, 2.0]))),
    "upsample9": (9, dict(scales=[1, 1, 2, 3])),
    "resize10": (10, dict(scales=[1, 1, 2, 2])),
    "resize11_asym": (11, dict(scales=[1, 1, 2, 2], attrs=dict(
        coordinate_transformation_mode="asymmetric", nearest_mode="floor"))),
    "resize13_half_pixel": (13, dict(scales=[1, 1, 1.5, 2.5], attrs=dict(
        coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_ceil"))),
    "resize13_sizes": (13, dict(sizes=[1, 4, 11, 7])),
    "resize13_downsample": (13, dict(scales=[1, 1, 0.5, 0.75])),
    "resize13_align_corners": (13, dict(sizes=[1, 4, 9, 12], attrs=dict(
        coordinate_transformation_mode="align_corners", nearest_mode="round_prefer_floor"))),
    "resize18_axes": (18, dict(sizes=[10, 15], attrs=dict(axes=[2, 3]))),
    "resize19_half_pixel_symmetric": (19, dict(scales=[1, 1, 2, 2], attrs=dict(
        coordinate_transformation_mode="half_pixel_symmetric"))),
}


@pytest.mark.parametrize("case", list(RESIZE))
def test_resize_nearest(case):
    """Nearest-neighbour Resize / Upsample copies spikes (a selection per axis), in every opset
    layout; the indices are ONNX's own (the node evaluated on index probes)."""
    opset, spec = RESIZE[case]
    g = G((3, 5, 5), opset=opset, batch=1 if "sizes" in spec and "axes" not in spec.get(
        "attrs", {}) else "N")
    y = conv_relu(g, g.input, 3, 4)
    attrs = dict(spec.get("attrs", {}))
    if opset >= 10 or case == "upsample9":
        attrs.setdefault("mode", "nearest")
    if case == "upsample7":
        r = g.op("Upsample", [y], **attrs)
    elif case == "upsample9":
        r = g.op("Upsample", [y, g.const(f32(spec["scales"]))], **attrs)
    elif opset == 10:
        r = g.op("Resize", [y, g.const(f32(spec["scales"]))], **attrs)
    else:
        roi = g.const(f32([])) if opset == 11 else ""  # roi is not optional in opset 11
        if "sizes" in spec:
            r = g.op("Resize", [y, roi, g.const(f32([])) if opset == 11 else "",
                                g.const(np.array(spec["sizes"], np.int64))], **attrs)
        else:
            r = g.op("Resize", [y, roi, g.const(f32(spec["scales"]))], **attrs)
    z = conv_relu(g, r, 4, 3)
    run(g, head(g, z, int(np.prod(_shape(g, z)))), label=f"resize-{case}")


def test_resize_of_signed_values_and_torch_upsample():
    """nn.Upsample(nearest) after a conv without ReLU, in a torch export."""
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Upsample(scale_factor=2),
                        nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(3 * 12 * 12, 4)).eval()
    x, cal = data((2, 6, 6))
    check_model(torch_onnx(net, x), x, cal, label="upsample-torch", events=True)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_other_modes_refused_with_hint(mode):
    g = G((3, 5, 5), opset=13)
    r = g.op("Resize", [g.input, "", g.const(f32([1, 1, 2, 2]))], mode=mode, name="up")
    with pytest.raises(UnsupportedOpError, match="nearest") as ei:
        snnconv.convert(g.model(g.op("Relu", [r])), data((3, 5, 5))[0])
    assert ei.value.node == "up" and "nearest" in ei.value.hint


SLICES = {
    "channels": dict(starts=[1], ends=[3], axes=[1]),
    "channels_negative": dict(starts=[-3], ends=[-1], axes=[-3]),
    "spatial_step": dict(starts=[0, 1], ends=[7, 100], axes=[2, 3], steps=[2, 2]),
    "reverse": dict(starts=[-1], ends=[-100], axes=[3], steps=[-1]),
    "batch_full": dict(starts=[0, 2], ends=[2 ** 62, 4], axes=[0, 1]),
    "default_axes": dict(starts=[0, 0, 1], ends=[2 ** 62, 3, 6]),
}


@pytest.mark.parametrize("case", list(SLICES))
@pytest.mark.parametrize("opset", [9, 13])
def test_slice(case, opset):
    spec = SLICES[case]
    if opset < 10 and ("steps" in spec or min(spec.get("axes", [0])) < 0):
        pytest.skip("steps and negative axes exist from opset 10 and 11")
    g = G((4, 7, 6), opset=opset)
    y = conv_relu(g, g.input, 4, 4) if case != "reverse" else g.conv(g.input, 4, 4, 1)
    if opset < 10:
        s = g.op("Slice", [y], **{k: v for k, v in spec.items()})
    else:
        ins = [y] + [g.const(np.array(spec[k], np.int64)) for k in ("starts", "ends")]
        ins += [g.const(np.array(spec[k], np.int64)) if k in spec else "" for k in
                ("axes", "steps")]
        while ins[-1] == "":
            ins.pop()
        s = g.op("Slice", ins)
    c = _shape(g, s)[0]
    z = conv_relu(g, s, c, 3)
    run(g, head(g, z, int(np.prod(_shape(g, z)))), label=f"slice-{case}")


@pytest.mark.parametrize("form", ["attr11", "input13", "equal13", "num_outputs18"])
def test_split_and_concat(form):
    """Split channels into branches, treat them differently, concat them back (Inception /
    ShuffleNet style); one branch stays signed."""
    opset = {"attr11": 11, "input13": 13, "equal13": 13, "num_outputs18": 18}[form]
    g = G((3, 6, 6), opset=opset)
    y = g.conv(g.input, 3, 6, 3, pads=[1, 1, 1, 1])
    if form == "attr11":
        a, b = g.op("Split", [y], n_out=2, axis=1, split=[2, 4])
    elif form == "input13":
        a, b = g.op("Split", [y, g.const(np.array([2, 4], np.int64))], n_out=2, axis=1)
    elif form == "equal13":
        a, b = g.op("Split", [y], n_out=2, axis=1)
    else:
        a, b = g.op("Split", [y], n_out=2, axis=1, num_outputs=2)
    ca = _shape(g, a)[0]
    a2 = conv_relu(g, g.op("Relu", [a]), ca, 3)
    cat = g.op("Concat", [b, a2], axis=1)
    z = conv_relu(g, cat, 6 - ca + 3, 4)
    run(g, head(g, z, 144), label=f"split-{form}")


def test_split_spatial_and_concat_of_everything():
    """Split along H, a ConvTranspose on one half, an upsample of a pool on the other; concat of
    a transposed, a sliced and a resized tensor."""
    g = G((2, 8, 8), opset=13)
    y = conv_relu(g, g.input, 2, 4)
    top, bottom = g.op("Split", [y, g.const(np.array([4, 4], np.int64))], n_out=2, axis=2)
    t = g.op("Transpose", [top], perm=[0, 1, 3, 2])  # (4, 8, 4)
    p = g.op("MaxPool", [bottom], kernel_shape=[1, 2], strides=[1, 2])  # (4, 4, 4)
    u = g.op("Resize", [p, "", g.const(f32([1, 1, 1, 2]))], mode="nearest")  # (4, 4, 8)
    u = g.op("Transpose", [u], perm=[0, 1, 3, 2])  # (4, 8, 4)
    s = g.op("Slice", [g.conv(y, 4, 4, 1), g.const(np.array([0, 0], np.int64)),
                       g.const(np.array([8, 8], np.int64)), g.const(np.array([2, 3], np.int64)),
                       g.const(np.array([1, 2], np.int64))])  # signed (4, 8, 4)
    cat = g.op("Concat", [t, u, s], axis=1)
    z = conv_relu(g, cat, 12, 4)
    run(g, head(g, z, 128), label="concat-everything")


def test_gather_channels():
    g = G((4, 5, 5), opset=13)
    y = conv_relu(g, g.input, 4, 4)
    s = g.op("Gather", [y, g.const(np.array([3, 0, 0, -1], np.int64))], axis=1)
    c = g.op("Gather", [g.conv(y, 4, 4, 1), g.const(np.array(2, np.int64))], axis=1)  # (5, 5)
    f = g.op("Concat", [g.op("Flatten", [s]), g.op("Flatten", [c])], axis=1)
    run(g, g.gemm(f, 125, 4), label="gather")


MATMULS = {
    "x_W_rank2": ((6, 5), "right"),  # (M, K) @ (K, J): a dense map per row
    "W_x_rank2": ((5, 6), "left"),  # (J, K) @ (K, M): a 1x1 conv1d along M
    "x_W_rank3": ((2, 4, 5), "right"),
    "W_x_rank3": ((2, 5, 4), "left"),
    "x_W_broadcast": ((6, 5), "right3d"),
    "x_v": ((6, 5), "vector"),
}


@pytest.mark.parametrize("case", list(MATMULS))
def test_matmul_constant_either_side(case):
    shape, side = MATMULS[case]
    g = G(shape, opset=13)
    x = g.op("Relu", [g.op("Add", [g.input, g.const(f32(0.1))])])
    if side == "left":
        y = g.op("MatMul", [g.weight(7, shape[-2], fan_in=shape[-2]), x])
        y = g.op("Add", [y, g.const(np.linspace(-0.3, 0.3, 7).reshape(7, 1))])
    elif side == "vector":
        y = g.op("MatMul", [x, g.const(np.linspace(-1, 1, shape[-1]))])
    else:
        w = g.rng.normal(0, 0.5, (shape[-1], 7))
        y = g.op("MatMul", [x, g.const(w[None] if side == "right3d" else w)])
        y = g.op("Add", [y, g.bias(7)])
    y = g.op("Relu", [y])
    n = int(np.prod(_shape(g, y)))
    out = g.gemm(g.op("Flatten", [g.op("MatMul", [g.weight(4, 7, fan_in=7), y])
                                  if side == "left" else y]),
                 n if side != "left" else n // 7 * 4, 5)
    run(g, out, label=f"matmul-{case}")


def test_matmul_constant_left_on_features_refused():
    g = G((6,), opset=13)
    y = g.op("MatMul", [g.weight(6, 6), g.input], name="wx")
    with pytest.raises(UnsupportedOpError, match="batch axis") as ei:
        import_onnx(g.model(y))
    assert ei.value.hint


# --- output heads -------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["Sigmoid", "Tanh", "ArgMax", "ArgMax_keep0", "Softmax+ArgMax"])
def test_output_heads(op):
    g = G((10,), opset=13)
    logits = g.gemm(g.op("Relu", [g.gemm(g.input, 10, 8)]), 8, 5)
    if op == "ArgMax":
        out = g.op("ArgMax", [logits], axis=1)
    elif op == "ArgMax_keep0":
        out = g.op("ArgMax", [logits], axis=-1, keepdims=0)
    elif op == "Softmax+ArgMax":
        out = g.op("ArgMax", [g.op("Softmax", [logits], axis=1)], axis=1)
    else:
        out = g.op(op, [logits])
    if "ArgMax" in op:  # an int64 output
        inp = helper.make_tensor_value_info(g.input, TensorProto.FLOAT, ["N", 10])
        outv = helper.make_tensor_value_info(out, TensorProto.INT64,
                                             ["N"] if op == "ArgMax_keep0" else ["N", 1])
        m = helper.make_model(helper.make_graph(g.nodes, "t", [inp], [outv], g.inits),
                              opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        onnx.checker.check_model(m)
    else:
        m = g.model(out)
    x, cal = data((10,))
    check_model(m, x, cal, label=f"head-{op}", head=op.replace("_keep0", ""), events=True)


def test_argmax_inside_refused():
    g = G((10,), opset=13)
    a = g.op("ArgMax", [g.gemm(g.input, 10, 5)], axis=1, name="amax")
    out = g.op("Add", [g.op("Cast", [a], to=TensorProto.FLOAT), g.gemm(g.input, 10, 1)])
    with pytest.raises(UnsupportedOpError) as ei:
        import_onnx(g.model(out))
    assert ei.value.node == "amax" and "last op" in ei.value.hint


# --- model file and refusals ----------------------------------------------------------------------

def test_new_op_kinds_round_trip_the_model_file(tmp_path):
    """transpose, select and convtranspose ops survive save/load; the loaded SNN simulates the
    same."""
    g = G((6, 6, 2), opset=13)
    t = g.op("Transpose", [g.input], perm=[0, 3, 1, 2])
    y = conv_relu(g, t, 2, 4)
    s = g.op("Slice", [y, g.const(np.array([1], np.int64)), g.const(np.array([4], np.int64)),
                       g.const(np.array([1], np.int64))])
    u = g.op("Relu", [_convt(g, s, 3, 2, 3, strides=[2, 2], pads=[1, 1, 1, 1])])
    r = g.op("Resize", [u, "", g.const(f32([1, 1, 2, 1]))], mode="nearest")
    out = g.op("MaxPool", [g.op("LeakyRelu", [g.conv(r, 2, 3, 3)], alpha=0.1)],
               kernel_shape=[2, 2], strides=[2, 2])
    out = head(g, out, int(np.prod(_shape(g, out))))
    x, cal = data(g.in_shape)
    m = g.model(out)
    check_model(m, x, cal, label="round-trip", events=True)
    snn = snnconv.convert(m, cal)
    kinds = {o.kind for la in snn.layers for grp in getattr(la, "groups", []) for o in grp.ops}
    assert {"transpose", "select", "convtranspose"} <= kinds, kinds
    path = snn.save(tmp_path / "m.snn")
    back = snnconv.load(path)
    a, b = snn.simulate(x).logits, back.simulate(x).logits
    assert torch.equal(a, b)


def test_every_refused_op_has_a_rewrite_hint():
    assert set(NOT_PIECEWISE_LINEAR) <= set(REWRITE_HINT)
    for op in HANDLERS:  # refusals of configurations of supported ops name a rewrite too
        assert op in REWRITE_HINT or op in ("Relu", "Clip", "Shape", "Identity", "Abs", "Neg",
                                            "LeakyRelu", "HardSigmoid", "Sum", "Log"), op


REFUSALS = {
    "elu": (lambda g, h: g.op("Elu", [h], name="n"), "ReLU"),
    "sin_unknown": (lambda g, h: g.op("Sin", [h], name="n"), GENERIC_HINT),
    "thresholded": (lambda g, h: g.op("ThresholdedRelu", [h], name="n"), "Relu"),
    "layernorm": (lambda g, h: g.op("LayerNormalization", [h, g.const(np.ones(8)),
                                                           g.const(np.zeros(8))], name="n",
                                    opset=17), "BatchNormalization"),
    "prelu_of_activation": (lambda g, h: g.op("PRelu", [h, g.op("Relu", [h])], name="n"),
                            "constant slope"),
    "pad_reflect": (lambda g, h: g.op("Pad", [g.op("Unsqueeze", [h, g.const(np.array(
        [2], np.int64))]), g.const(np.array([0, 0, 1, 0, 0, 1], np.int64))], mode="reflect",
        name="n"), "zeros"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_name_a_rewrite(case):
    build, want = REFUSALS[case]
    g = G((10,), opset=18)
    h = g.gemm(g.input, 10, 8)
    y = build(g, h) if case != "layernorm" else g.op("LayerNormalization", [
        h, g.const(np.ones(8, np.float32)), g.const(np.zeros(8, np.float32))], name="n")
    out = g.gemm(g.op("Flatten", [y]), int(np.prod(_shape(g, y))), 3)
    x = uniform(np.random.default_rng(0), (8, 10))
    with pytest.raises(UnsupportedOpError) as ei:
        snnconv.convert(g.model(out), x)
    assert ei.value.node == "n"
    assert ei.value.hint and want in ei.value.hint, ei.value.hint
    assert "hint:" in str(ei.value)
