"""One test per supported op and attribute variant (issue: convert, done-when "tests").

Every model is built with onnx.helper, converted with ``snnconv.convert`` calibrated on random data
of the input's range, and checked by ``helpers.check_model``: float64 SNN vs the float64 reference
(1e-9 relative per sample), vs onnxruntime on the float32 model (first-order float32 error bound,
see helpers), top-1 agreement.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from .helpers import G, check_model, uniform

N = 40  # test samples per model


def data(shape, lo=-1.0, hi=1.0, seed=1, n=N):
    """Test inputs and separate calibration data of the same range."""
    rng = np.random.default_rng(seed)
    return uniform(rng, (n, *shape), lo, hi), uniform(rng, (128, *shape), lo, hi)


def run(g: G, out, lo=-1.0, hi=1.0, label="", inits_as_inputs=False, **kw):
    x, cal = data(g.in_shape, lo, hi)
    return check_model(g.model(out, inits_as_inputs=inits_as_inputs), x, cal, label=label, **kw)


def head(g: G, x, c, classes=10):
    """Flatten + Gemm to logits."""
    f = g.op("Flatten", [x], axis=1)
    return g.gemm(f, c, classes)


# --- Conv ---------------------------------------------------------------------------------------

CONV_VARIANTS = {
    "plain": dict(k=3),
    "pads_sym": dict(k=3, pads=[1, 1, 1, 1]),
    "pads_asym": dict(k=3, pads=[0, 1, 2, 0]),
    "stride2": dict(k=3, strides=[2, 2], pads=[1, 1, 1, 1]),
    "stride21_asym": dict(k=2, strides=[2, 1], pads=[1, 0, 0, 1]),
    "dilation2": dict(k=3, dilations=[2, 2], pads=[2, 2, 2, 2]),
    "dilation_stride": dict(k=3, dilations=[2, 1], strides=[1, 2], pads=[1, 0, 1, 1]),
    "same_upper": dict(k=4, auto_pad="SAME_UPPER"),
    "same_lower": dict(k=4, auto_pad="SAME_LOWER"),
    "same_upper_s2": dict(k=3, auto_pad="SAME_UPPER", strides=[2, 2]),
    "same_lower_s2": dict(k=2, auto_pad="SAME_LOWER", strides=[2, 2]),
    "valid": dict(k=3, auto_pad="VALID", strides=[2, 2]),
    "groups2": dict(k=3, group=2, pads=[1, 1, 1, 1], cout=6),
    "depthwise": dict(k=3, group=4, pads=[1, 1, 1, 1], cout=4),
    "depthwise_mult": dict(k=3, group=4, pads=[0, 1, 1, 0], cout=8, strides=[2, 2]),
    "rect_kernel": dict(k=(1, 3), pads=[0, 1, 0, 1]),
}


@pytest.mark.parametrize("variant", list(CONV_VARIANTS))
@pytest.mark.parametrize("after_relu", [False, True], ids=["on_input", "after_relu"])
def test_conv(variant, after_relu):
    """Each Conv attribute variant, on the signed input (per-position bias map from the input's
    normalisation under padding) and after a ReLU layer."""
    kw = dict(CONV_VARIANTS[variant])
    k = kw.pop("k")
    cout = kw.pop("cout", 5)
    g = G((4, 9, 8), opset=13)
    x = g.input
    if after_relu:
        x = g.op("Relu", [g.conv(x, 4, 4, 1)])
    y = g.op("Relu", [g.conv(x, 4, cout, k, **kw)])
    run(g, head(g, y, cout * _spatial(g, y)), label=f"conv-{variant}")


def _spatial(g: G, t: str) -> int:
    """Product of the spatial dims of tensor t (by ONNX shape inference)."""
    m = onnx.shape_inference.infer_shapes(g.model(t))
    dims = m.graph.output[0].type.tensor_type.shape.dim
    return int(np.prod([d.dim_value for d in dims[2:]]))


def test_conv_no_bias_separate_add():
    """Conv without bias, the bias as a separate Add of a (C,1,1) constant (torch.export style)."""
    g = G((3, 8, 8), opset=18)
    c = g.conv(g.input, 3, 6, 3, bias=False, pads=[1, 1, 1, 1])
    c = g.op("Add", [c, g.const(np.linspace(-1, 1, 6).reshape(6, 1, 1))])
    y = g.op("Relu", [c])
    c2 = g.conv(y, 6, 4, 3, bias=False, strides=[2, 2])
    c2 = g.op("Add", [g.const(np.linspace(0.5, -0.5, 4).reshape(1, 4, 1, 1)), c2])
    run(g, head(g, g.op("Relu", [c2]), 4 * 9), label="conv-nobias-add")


@pytest.mark.parametrize("pads", [[0, 0], [1, 2]])
def test_conv1d(pads):
    g = G((3, 20), opset=13)
    y = g.op("Relu", [g.conv(g.input, 3, 6, (5,), pads=pads, strides=[2])])
    y = g.op("Relu", [g.conv(y, 6, 4, (3,), dilations=[2], pads=[1, 1])])
    run(g, head(g, y, 4 * _spatial(g, y)), label="conv1d")


def test_conv_opset7_ir3_inits_as_inputs():
    """Old model: opset 7, IR version 3, every weight also listed as a graph input."""
    g = G((2, 8, 8), opset=7, ir_version=3)
    y = g.op("Relu", [g.conv(g.input, 2, 4, 3, pads=[1, 1, 1, 1])])
    y = g.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = g.op("Relu", [g.conv(y, 4, 4, 3, auto_pad="SAME_UPPER")])
    run(g, head(g, y, 64), label="opset7-ir3", inits_as_inputs=True)


# --- Gemm / MatMul ------------------------------------------------------------------------------

@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0), (-1.5, 0.0)])
@pytest.mark.parametrize("c_shape", ["vec", "row", "scalar", "none"])
def test_gemm(trans_b, alpha, beta, c_shape):
    g = G((12,), opset=13)
    w = g.rng.normal(0, 0.3, size=(12, 7)).astype(np.float32)
    b = g.const(w.T.copy() if trans_b else w)
    c = {"vec": (7,), "row": (1, 7), "scalar": ()}.get(c_shape)
    ins = [g.input, b] + ([] if c is None else [g.const(g.rng.normal(0, 0.5, c))])
    h = g.op("Relu", [g.op("Gemm", ins, transB=trans_b, alpha=alpha, beta=beta)])
    run(g, g.gemm(h, 7, 5), label="gemm")


def test_gemm_opset7_broadcast_attr():
    """Opset 7 Gemm (C broadcast implicit); opset 6 had a 'broadcast' attribute."""
    g = G((10,), opset=7, ir_version=3)
    h = g.op("Relu", [g.gemm(g.input, 10, 8)])
    run(g, g.gemm(h, 8, 4), label="gemm-opset7", inits_as_inputs=True)


@pytest.mark.parametrize("opset", [9, 13])
def test_matmul_add(opset):
    g = G((12,), opset=opset)
    h = g.op("MatMul", [g.input, g.weight(12, 9, fan_in=12)])
    h = g.op("Relu", [g.op("Add", [h, g.bias(9)])])
    h = g.op("Add", [g.bias(6), g.op("MatMul", [h, g.weight(9, 6, fan_in=9)])])
    run(g, h, label="matmul-add")


# --- activations ----------------------------------------------------------------------------------

def _act_net(g: G, act):
    h = act(g, g.gemm(g.input, 10, 12))
    return g.gemm(h, 12, 6)


def test_relu():
    g = G((10,), opset=13)
    run(g, _act_net(g, lambda g, h: g.op("Relu", [h])), label="relu")


@pytest.mark.parametrize("opset", [7, 9])
@pytest.mark.parametrize("bounds", [(0.0, 6.0), (0.0, 0.5), (-0.3, 0.6), (-0.5, None)])
def test_clip_attributes(opset, bounds):
    """Clip before opset 11: min/max attributes (ReLU6 and general bounds)."""
    lo, hi = bounds
    g = G((10,), opset=opset)
    attrs = {"min": lo} if hi is None else {"min": lo, "max": hi}
    run(g, _act_net(g, lambda g, h: g.op("Clip", [h], **attrs)), label="clip-attr")


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("bounds", [(0.0, 6.0), (0.0, 0.4), (-0.3, 0.6), (-0.5, None),
                                    (None, 0.3), (0.2, None)])
def test_clip_inputs(opset, bounds):
    """Clip from opset 11: min/max as optional inputs (empty name = absent)."""
    lo, hi = bounds
    g = G((10,), opset=opset)

    def act(g, h):
        ins = [h, "" if lo is None else g.const(np.array(lo, np.float32)),
               "" if hi is None else g.const(np.array(hi, np.float32))]
        while ins[-1] == "":
            ins.pop()
        return g.op("Clip", ins)
    run(g, _act_net(g, act), label="clip-inputs")


def test_relu6_conv_saturates():
    """ReLU6 after a conv, scaled so that many activations saturate at the cap."""
    g = G((3, 8, 8), opset=13)
    c = g.op("Conv", [g.input, g.weight(4, 3, 3, 3, scale=8.0), g.bias(4)], pads=[1, 1, 1, 1])
    y = g.op("Clip", [c, g.const(np.array(0, np.float32)), g.const(np.array(6, np.float32))])
    run(g, head(g, y, 256), label="relu6-conv")


# --- BatchNormalization -------------------------------------------------------------------------

def _bn(g: G, x, c, negative=False, opset7=False):
    rng = g.rng
    scale = rng.uniform(0.5, 1.5, c) * (np.where(rng.random(c) < 0.5, -1, 1) if negative else 1)
    if negative:
        scale = -np.abs(scale)
    ins = [x, g.const(scale), g.const(rng.normal(0, 0.3, c)), g.const(rng.normal(0, 0.3, c)),
           g.const(rng.uniform(0.5, 2.0, c))]
    return g.op("BatchNormalization", ins, epsilon=1e-3)


@pytest.mark.parametrize("opset", [7, 9, 13, 15])
@pytest.mark.parametrize("where", ["before_relu", "after_relu", "after_relu_padded_conv"])
def test_batchnorm_4d(opset, where):
    """BN before ReLU folds into the previous conv; after ReLU into the next conv, which, when
    zero-padded, makes the folded bias position-dependent (spec section 3)."""
    g = G((3, 8, 8), opset=opset)
    c = g.conv(g.input, 3, 6, 3, pads=[1, 1, 1, 1])
    if where == "before_relu":
        y = g.op("Relu", [_bn(g, c, 6)])
        nxt = dict(pads=[0, 0, 0, 0])
    else:
        y = _bn(g, g.op("Relu", [c]), 6)
        nxt = dict(pads=[1, 0, 2, 1] if where == "after_relu_padded_conv" else [0, 0, 0, 0])
    z = g.op("Relu", [g.conv(y, 6, 4, 3, **nxt)])
    run(g, head(g, z, 4 * _spatial(g, z)), label=f"bn4d-{where}")


@pytest.mark.parametrize("where", ["before_relu", "after_relu"])
def test_batchnorm_2d(where):
    g = G((10,), opset=13)
    h = g.gemm(g.input, 10, 8)
    h = g.op("Relu", [_bn(g, h, 8)]) if where == "before_relu" else _bn(g, g.op("Relu", [h]), 8)
    run(g, g.gemm(h, 8, 5), label=f"bn2d-{where}")


@pytest.mark.parametrize("opset", [11, 13])
def test_batchnorm_1d_unsqueeze_squeeze(opset):
    """BatchNorm1d on a feature vector exported as Unsqueeze -> BN -> Squeeze."""
    g = G((10,), opset=opset)
    h = g.gemm(g.input, 10, 8)
    if opset >= 13:
        u = g.op("Unsqueeze", [h, g.const(np.array([2], np.int64))])
    else:
        u = g.op("Unsqueeze", [h], axes=[2])
    b = _bn(g, u, 8)
    s = g.op("Squeeze", [b, g.const(np.array([2], np.int64))]) if opset >= 13 else \
        g.op("Squeeze", [b], axes=[2])
    h = g.op("Relu", [s])
    # and once after the ReLU
    u = g.op("Unsqueeze", [h, g.const(np.array([-1], np.int64))]) if opset >= 13 else \
        g.op("Unsqueeze", [h], axes=[-1])
    s = g.op("Squeeze", [_bn(g, u, 8)])
    run(g, g.gemm(s, 8, 5), label="bn1d-unsqueeze")


@pytest.mark.parametrize("relu_first", [True, False])
def test_batchnorm_negative_scale_maxpool(relu_first):
    """A negative BN scale turns that channel's max-pool into a min-pool (latest spike).

    relu_first: Relu -> BN -> MaxPool -> Conv (pool of a layer value, folded into the next conv);
    else Conv -> BN -> MaxPool -> Relu (pool of a signed value, reordered with the ReLU)."""
    g = G((3, 8, 8), opset=13)
    c = g.conv(g.input, 3, 6, 3, pads=[1, 1, 1, 1])
    if relu_first:
        p = g.op("MaxPool", [_bn(g, g.op("Relu", [c]), 6, negative=True)], kernel_shape=[2, 2],
                 strides=[2, 2])
        z = g.op("Relu", [g.conv(p, 6, 4, 3, pads=[1, 1, 1, 1])])
    else:
        p = g.op("MaxPool", [_bn(g, c, 6, negative=True)], kernel_shape=[3, 3],
                 strides=[2, 2], pads=[1, 1, 1, 1])
        z = g.op("Relu", [p])
    run(g, head(g, z, int(np.prod(_shape(g, z)))), label="bn-neg-maxpool")


def _shape(g: G, t: str) -> tuple:
    m = onnx.shape_inference.infer_shapes(g.model(t))
    return tuple(d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim[1:])


# --- pooling ------------------------------------------------------------------------------------

MAXPOOL_VARIANTS = {
    "k2s2": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "k3s1": dict(kernel_shape=[3, 3]),
    "k3s2p1": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "asym_pads": dict(kernel_shape=[2, 3], strides=[1, 2], pads=[1, 0, 0, 2]),
    "ceil": dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    "ceil_pads": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    "dilation": dict(kernel_shape=[2, 2], dilations=[2, 2]),
    "dilation_ceil": dict(kernel_shape=[2, 2], dilations=[2, 1], strides=[2, 2], ceil_mode=1),
    "same_upper": dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    "same_lower": dict(kernel_shape=[2, 2], auto_pad="SAME_LOWER"),
}


@pytest.mark.parametrize("variant", list(MAXPOOL_VARIANTS))
@pytest.mark.parametrize("where", ["after_relu", "before_relu", "on_input"])
def test_maxpool(variant, where):
    """MaxPool of a layer value (earliest spike), of a signed conv output with the ReLU after it
    (reordered), and directly on the signed input."""
    attrs = MAXPOOL_VARIANTS[variant]
    opset = 12 if "dilations" in attrs else 13  # dilations from opset 10, ceil_mode from 10
    g = G((3, 9, 9), opset=opset)
    x = g.input
    if where == "on_input":
        y = g.op("MaxPool", [x], **attrs)
    else:
        c = g.conv(x, 3, 4, 3, pads=[1, 1, 1, 1])
        if where == "after_relu":
            y = g.op("MaxPool", [g.op("Relu", [c])], **attrs)
        else:
            y = g.op("Relu", [g.op("MaxPool", [c], **attrs)])
    s = _shape(g, y)
    run(g, head(g, y, int(np.prod(s))), label=f"maxpool-{variant}-{where}")


AVGPOOL_VARIANTS = {
    "k2s2": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "k3p1_excl": dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0),
    "k3p1_incl": dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
    "asym_incl": dict(kernel_shape=[2, 3], strides=[2, 1], pads=[0, 1, 1, 2],
                      count_include_pad=1),
    "ceil": dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    "ceil_pads_incl": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
                           count_include_pad=1),
    "same_upper": dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
}


@pytest.mark.parametrize("variant", list(AVGPOOL_VARIANTS))
@pytest.mark.parametrize("where", ["after_relu", "on_input", "after_bn"])
def test_averagepool(variant, where):
    """AveragePool (per-position divisors for count_include_pad=0 / ceil_mode), after a ReLU,
    on the signed input, and after ReLU -> BN (an affine map folded across the padded pool)."""
    g = G((3, 9, 9), opset=13)
    x = g.input
    if where != "on_input":
        x = g.op("Relu", [g.conv(x, 3, 4, 3, pads=[1, 1, 1, 1])])
        if where == "after_bn":
            x = _bn(g, x, 4)
    y = g.op("AveragePool", [x], **AVGPOOL_VARIANTS[variant])
    z = g.op("Relu", [g.conv(y, 3 if where == "on_input" else 4, 4, 3, pads=[1, 1, 1, 1])])
    run(g, head(g, z, int(np.prod(_shape(g, z)))), label=f"avgpool-{variant}-{where}")


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("opset", [13, 22])
def test_pool_ceil_last_window_in_padding(op, opset):
    """ceil_mode where the extra window would start in the end padding: runtimes drop it, ONNX
    shape inference before opset 22 keeps it (the importer must not trust that shape)."""
    g = G((2, 7, 7), opset=opset)
    y = g.op("Relu", [g.conv(g.input, 2, 3, 2)])  # 6 x 6
    p = g.op(op, [y], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    run(g, head(g, g.op("GlobalAveragePool", [p]), 3), label="ceil-last-window")


@pytest.mark.parametrize("opset", [7, 13])
def test_global_average_pool(opset):
    g = G((3, 7, 6), opset=opset)
    y = g.op("Relu", [g.conv(g.input, 3, 8, 3, pads=[1, 1, 1, 1])])
    p = g.op("GlobalAveragePool", [y])
    run(g, head(g, p, 8), label="gap")


@pytest.mark.parametrize("form", ["attr13", "input18"])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", [[2, 3], [-1, -2]])
def test_reducemean_spatial(form, keepdims, axes):
    opset = 13 if form == "attr13" else 18
    g = G((3, 6, 6), opset=opset)
    y = g.op("Relu", [g.conv(g.input, 3, 8, 3, pads=[1, 1, 1, 1])])
    if form == "attr13":
        p = g.op("ReduceMean", [y], axes=axes, keepdims=keepdims)
    else:
        p = g.op("ReduceMean", [y, g.const(np.array(axes, np.int64))], keepdims=keepdims)
    out = g.gemm(p, 8, 5) if keepdims == 0 else head(g, p, 8, 5)
    run(g, out, label="reducemean")


def test_reducemean_one_axis():
    """ReduceMean over one spatial axis only (a 1 x W average), keepdims=1."""
    g = G((3, 6, 5), opset=13)
    y = g.op("Relu", [g.conv(g.input, 3, 4, 3, pads=[1, 1, 1, 1])])
    p = g.op("ReduceMean", [y], axes=[3], keepdims=1)
    run(g, head(g, p, 24), label="reducemean-1axis")


# --- Pad ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [7, 11, 13, 18])
@pytest.mark.parametrize("where", ["on_input", "after_relu"])
def test_pad_constant_zero(opset, where):
    g = G((3, 7, 7), opset=opset)
    x = g.input
    if where == "after_relu":
        x = g.op("Relu", [g.conv(x, 3, 3, 1)])
    pads = [0, 0, 1, 2, 0, 0, 2, 0]
    if opset < 11:
        p = g.op("Pad", [x], pads=pads, mode="constant", value=0.0)
    elif opset < 18:
        p = g.op("Pad", [x, g.const(np.array(pads, np.int64)),
                         g.const(np.array(0.0, np.float32))], mode="constant")
    else:  # axes input: only the spatial axes
        p = g.op("Pad", [x, g.const(np.array([1, 2, 2, 0], np.int64)), "",
                         g.const(np.array([2, 3], np.int64))])
    y = g.op("Relu", [g.conv(p, 3, 4, 3, strides=[2, 2])])
    run(g, head(g, y, int(np.prod(_shape(g, y)))), label="pad")


# --- shape ops ----------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [1, -3])
def test_flatten(axis):
    g = G((2, 4, 4), opset=13)
    y = g.op("Relu", [g.conv(g.input, 2, 3, 3, pads=[1, 1, 1, 1])])
    f = g.op("Flatten", [y], axis=axis)
    run(g, g.gemm(f, 48, 6), label="flatten")


@pytest.mark.parametrize("target", [[-1, 48], [0, -1], [0, 48]])
def test_reshape_flatten(target):
    g = G((3, 4, 4), opset=13)
    y = g.op("Relu", [g.conv(g.input, 3, 3, 3, pads=[1, 1, 1, 1])])
    r = g.op("Reshape", [y, g.const(np.array(target, np.int64))])
    run(g, g.gemm(r, 48, 6), label="reshape")


@pytest.mark.parametrize("batch", ["N", 1, 10])
@pytest.mark.parametrize("opset", [9, 13])
def test_shape_gather_concat_reshape_flatten(batch, opset):
    """torch's x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    g = G((3, 4, 4), opset=opset, batch=batch)
    y = g.op("Relu", [g.conv(g.input, 3, 4, 3, pads=[1, 1, 1, 1])])
    shp = g.op("Shape", [y])
    n = g.op("Gather", [shp, g.const(np.array(0, np.int64))], axis=0)
    if opset >= 13:
        u = g.op("Unsqueeze", [n, g.const(np.array([0], np.int64))])
    else:
        u = g.op("Unsqueeze", [n], axes=[0])
    cat = g.op("Concat", [u, g.const(np.array([-1], np.int64))], axis=0)
    r = g.op("Reshape", [y, cat])
    run(g, g.gemm(r, 64, 6), label="shape-chain")


def test_squeeze_unsqueeze_flatten():
    """GAP output (N,C,1,1) squeezed to (N,C), and an unsqueeze/squeeze round trip."""
    g = G((3, 5, 5), opset=13)
    y = g.op("Relu", [g.conv(g.input, 3, 6, 3, pads=[1, 1, 1, 1])])
    p = g.op("GlobalAveragePool", [y])
    s = g.op("Squeeze", [p, g.const(np.array([2, 3], np.int64))])
    u = g.op("Unsqueeze", [s, g.const(np.array([1], np.int64))])
    s2 = g.op("Squeeze", [u, g.const(np.array([1], np.int64))])
    run(g, g.gemm(s2, 6, 4), label="squeeze")


# --- branches -------------------------------------------------------------------------------------

@pytest.mark.parametrize("long_skip", [False, True])
def test_residual_add(long_skip):
    """Identity skip: a = relu(conv(x)); out = relu(a + conv(relu(conv(a)))). With long_skip the
    skip's source has a much larger window than the layer before the Add (its values are large)."""
    g = G((3, 8, 8), opset=13)
    scale = 20.0 if long_skip else 1.0
    a = g.op("Relu", [g.op("Conv", [g.input, g.weight(4, 3, 3, 3, scale=scale), g.bias(4)],
                           pads=[1, 1, 1, 1])])
    b = g.op("Relu", [g.op("Conv", [a, g.weight(4, 4, 3, 3, scale=1.0 / scale), g.bias(4)],
                           pads=[1, 1, 1, 1])])
    b = g.conv(b, 4, 4, 3, pads=[1, 1, 1, 1])
    r = g.op("Relu", [g.op("Add", [a, b])])
    # a second block with a projection skip (conv 1x1 stride 2), added before the ReLU
    c = g.op("Relu", [g.conv(r, 4, 6, 3, strides=[2, 2], pads=[1, 1, 1, 1])])
    c = g.conv(c, 6, 6, 3, pads=[1, 1, 1, 1])
    proj = g.conv(r, 4, 6, 1, strides=[2, 2])
    r2 = g.op("Relu", [g.op("Add", [proj, c])])
    p = g.op("GlobalAveragePool", [r2])
    run(g, head(g, p, 6), label="residual")


def test_residual_with_sub():
    """Sub of two branches (a - b = a + (-1) b)."""
    g = G((8,), opset=13)
    a = g.op("Relu", [g.gemm(g.input, 8, 6)])
    b = g.op("Relu", [g.gemm(a, 6, 6)])
    d = g.op("Relu", [g.op("Sub", [a, g.gemm(b, 6, 6)])])
    run(g, g.gemm(d, 6, 3), label="residual-sub")


def test_concat_channels_different_depth():
    g = G((3, 8, 8), opset=13)
    a = g.op("Relu", [g.conv(g.input, 3, 4, 3, pads=[1, 1, 1, 1])])
    b = g.op("Relu", [g.conv(a, 4, 5, 3, pads=[1, 1, 1, 1])])
    b = g.op("Relu", [g.conv(b, 5, 3, 1)])
    cat = g.op("Concat", [a, b], axis=1)
    y = g.op("Relu", [g.conv(cat, 7, 4, 3, pads=[1, 1, 1, 1], strides=[2, 2])])
    # a second concat of a signed branch (no ReLU) with a layer value, then a max-pool
    cat2 = g.op("Concat", [g.conv(y, 4, 2, 1), y], axis=1)
    p = g.op("MaxPool", [g.op("Relu", [cat2])], kernel_shape=[2, 2], strides=[2, 2])
    run(g, head(g, p, 6 * 4), label="concat")


def test_concat_features():
    g = G((10,), opset=13)
    a = g.op("Relu", [g.gemm(g.input, 10, 6)])
    b = g.op("Relu", [g.gemm(a, 6, 4)])
    cat = g.op("Concat", [b, a, g.input], axis=-1)
    run(g, g.gemm(cat, 20, 5), label="concat-features")


@pytest.mark.parametrize("opset", [7, 10, 13])
def test_dropout_identity(opset):
    g = G((10,), opset=opset)
    h = g.op("Relu", [g.gemm(g.input, 10, 8)])
    if opset < 12:
        d = g.op("Dropout", [h], ratio=0.3)
    else:
        d = g.op("Dropout", [h, g.const(np.array(0.3, np.float32))])
    d = g.op("Identity", [d])
    run(g, g.gemm(d, 8, 4), label="dropout")


def test_dropout_with_unused_mask_output():
    g = G((10,), opset=13)
    h = g.op("Relu", [g.gemm(g.input, 10, 8)])
    d, _mask = g.op("Dropout", [h], n_out=2)
    run(g, g.gemm(d, 8, 4), label="dropout-mask")


# --- input normalisation --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["scalar", "per_channel_4d", "per_channel_3d", "mul_add",
                                  "negative_scale"])
def test_input_normalisation(kind):
    """(x - mean) / std at the input (scalar and per channel), folded into every consumer of the
    input, with zero padding after it (per-position bias map), on inputs of both signs."""
    g = G((3, 7, 7), opset=13)
    x = g.input
    if kind == "scalar":
        y = g.op("Div", [g.op("Sub", [x, g.const(np.array(0.3, np.float32))]),
                         g.const(np.array(0.4, np.float32))])
    elif kind.startswith("per_channel"):
        shp = (1, 3, 1, 1) if kind.endswith("4d") else (3, 1, 1)
        y = g.op("Div", [g.op("Sub", [x, g.const(np.array([0.1, -0.4, 0.3]).reshape(shp))]),
                         g.const(np.array([0.2, 0.5, 1.3]).reshape(shp))])
    elif kind == "mul_add":
        y = g.op("Add", [g.op("Mul", [g.const(np.array([2.0, 0.5, 1.5]).reshape(3, 1, 1)), x]),
                         g.const(np.array(-0.2, np.float32))])
    else:
        y = g.op("Sub", [g.const(np.array(0.5, np.float32)),
                         g.op("Mul", [x, g.const(np.array([-1.0, 2.0, -0.5]).reshape(3, 1, 1))])])
    c = g.op("Relu", [g.conv(y, 3, 4, 3, pads=[1, 1, 1, 1])])
    skip = g.op("Relu", [g.conv(y, 3, 4, 1)])  # a second consumer of the normalised input
    s = g.op("Add", [c, skip])
    run(g, head(g, s, 4 * 49), lo=-2.0, hi=1.0, label=f"norm-{kind}")


def test_raw_255_inputs():
    """Raw pixel values in [0, 255], divided by 255 inside the model."""
    g = G((1, 8, 8), opset=13)
    y = g.op("Div", [g.input, g.const(np.array(255.0, np.float32))])
    y = g.op("Relu", [g.conv(y, 1, 4, 3, pads=[1, 1, 1, 1])])
    run(g, head(g, y, 256), lo=0.0, hi=255.0, label="raw255")


def test_raw_255_inputs_no_scaling():
    """Raw [0, 255] inputs straight into a conv (the model's weights are small)."""
    g = G((1, 8, 8), opset=13)
    c = g.op("Conv", [g.input, g.weight(4, 1, 3, 3, scale=1 / 255), g.bias(4)], pads=[1, 1, 1, 1])
    run(g, head(g, g.op("Relu", [c]), 256), lo=0.0, hi=255.0, label="raw255-direct")


# --- output heads ---------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Softmax+Log"])
@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_head(op, opset):
    g = G((10,), opset=opset)
    logits = g.gemm(g.op("Relu", [g.gemm(g.input, 10, 8)]), 8, 5)
    if op == "Softmax+Log":
        out = g.op("Log", [g.op("Softmax", [logits], axis=1)])
    else:
        out = g.op(op, [logits], axis=-1 if opset >= 13 else 1)
    run(g, out, label="head", head=op)


# --- linear layers without ReLU between them ------------------------------------------------------

def test_conv_reshape_gemm_no_relu():
    g = G((3, 6, 6), opset=13)
    c = g.conv(g.op("Relu", [g.conv(g.input, 3, 4, 3, pads=[1, 1, 1, 1])]), 4, 4, 3)
    r = g.op("Reshape", [c, g.const(np.array([-1, 64], np.int64))])
    run(g, g.gemm(g.op("Relu", [g.gemm(r, 64, 8)]), 8, 4), label="conv-reshape-gemm")


def test_gemm_gemm_no_relu():
    g = G((10,), opset=13)
    h = g.gemm(g.gemm(g.op("Relu", [g.gemm(g.input, 10, 8)]), 8, 7), 7, 6)
    run(g, g.gemm(g.op("Relu", [h]), 6, 4), label="gemm-gemm")


@pytest.mark.parametrize("pads", [[0, 0, 0, 0], [1, 1, 1, 1]])
def test_conv_conv_no_relu(pads):
    g = G((3, 7, 7), opset=13)
    c = g.conv(g.conv(g.input, 3, 4, 3, pads=pads), 4, 4, 3, pads=pads, strides=[2, 2])
    y = g.op("Relu", [c])
    run(g, head(g, y, int(np.prod(_shape(g, y)))), label="conv-conv")


def test_input_straight_to_gemm_chain():
    """No ReLU at all: the whole network is one affine map."""
    g = G((6,), opset=13)
    run(g, g.gemm(g.gemm(g.input, 6, 5), 5, 3), label="affine-only")


# --- batch sizes and input layouts ----------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 10, "N", "batch_size"])
def test_batch_sizes(batch):
    g = G((2, 6, 6), opset=13, batch=batch)
    y = g.op("Relu", [g.conv(g.input, 2, 4, 3, pads=[1, 1, 1, 1])])
    y = g.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    run(g, head(g, y, 36), label=f"batch-{batch}")


def test_input_784x1_batch1():
    """MNIST models from some converters: input (1, 784, 1), reshaped to (1, 784)."""
    g = G((784, 1), opset=9, batch=1)
    r = g.op("Reshape", [g.input, g.const(np.array([1, 784], np.int64))])
    h = g.op("Relu", [g.gemm(r, 784, 32)])
    run(g, g.gemm(h, 32, 10), lo=0.0, hi=1.0, label="784x1")


def test_input_784x1_flatten():
    g = G((784, 1), opset=13, batch=1)
    f = g.op("Flatten", [g.input])
    h = g.op("Relu", [g.gemm(f, 784, 16)])
    run(g, g.gemm(h, 16, 10), lo=0.0, hi=1.0, label="784x1-flatten")


def test_external_data(tmp_path):
    """Weights in model.onnx.data beside model.onnx (the torch.export-based exporter's layout)."""
    g = G((2, 6, 6), opset=18)
    y = g.op("Relu", [g.conv(g.input, 2, 8, 3, pads=[1, 1, 1, 1])])
    m = g.model(head(g, y, 288))
    path = tmp_path / "model.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    assert (tmp_path / "model.onnx.data").stat().st_size > 0
    loaded = onnx.load(str(path), load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in loaded.graph.initializer)
    x, cal = data((2, 6, 6))
    check_model(path, x, cal, label="external-data")


def test_constant_node_weights():
    """Weights produced by Constant and Transpose nodes are folded, not refused."""
    g = G((6,), opset=13)
    w = g.rng.normal(0, 0.4, (5, 6)).astype(np.float32)
    cw = g.op("Constant", [], value=onnx.numpy_helper.from_array(w))
    wt = g.op("Transpose", [cw], perm=[1, 0])
    h = g.op("Relu", [g.op("MatMul", [g.input, wt])])
    run(g, g.gemm(h, 5, 3), label="constant-nodes")


def test_old_opset_cnn_bn_inits_as_inputs():
    """A whole old-style CNN at opset 8 / IR 3: Conv, BN, Relu, MaxPool, Dropout, Reshape, Gemm."""
    g = G((1, 8, 8), opset=8, ir_version=3)
    c = g.conv(g.input, 1, 4, 3, pads=[1, 1, 1, 1])
    y = g.op("MaxPool", [g.op("Relu", [_bn(g, c, 4)])], kernel_shape=[2, 2], strides=[2, 2])
    y = g.op("Dropout", [y], ratio=0.5)
    r = g.op("Reshape", [y, g.const(np.array([-1, 64], np.int64))])
    out = g.op("Softmax", [g.gemm(r, 64, 10)])
    run(g, out, lo=0.0, hi=1.0, label="opset8-cnn", inits_as_inputs=True, head="Softmax")


def test_model_without_value_info_shapes():
    """An output with no declared shape and a float64-free graph: shapes come from inference."""
    g = G((4,), opset=13)
    m = g.model(g.gemm(g.op("Relu", [g.gemm(g.input, 4, 4)]), 4, 2))
    del m.graph.value_info[:]
    x, cal = data((4,))
    check_model(m, x, cal, label="no-value-info")


def test_graph_with_named_output_info():
    """Output declared with a full static shape."""
    g = G((4,), opset=13)
    out = g.gemm(g.op("Relu", [g.gemm(g.input, 4, 4)]), 4, 2)
    m = g.model(out)
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 2]))
    x, cal = data((4,))
    check_model(m, x, cal, label="output-info")


def test_flatten_axis2_with_unit_channel():
    """Flatten(axis=2) of (N, 1, L) is (N, L): allowed (the merged axis has size 1)."""
    g = G((1, 12), opset=13)
    f = g.op("Flatten", [g.input], axis=2)
    run(g, g.gemm(g.op("Relu", [g.gemm(f, 12, 6)]), 6, 3), label="flatten-axis2")


@pytest.mark.parametrize("which", ["gemm_gemm", "conv_reshape_gemm"])
def test_dense_pair_split_instead_of_fused(which, monkeypatch):
    """With fusion disabled (as for large layers) a dense map after another weighted map carries
    the signed value by z+ / z- populations instead (spec section 3)."""
    import snnconv.mapping.expressions as mapping

    monkeypatch.setattr(mapping, "FUSE_LIMIT", 0)
    if which == "gemm_gemm":
        g = G((10,), opset=13)
        h = g.gemm(g.gemm(g.op("Relu", [g.gemm(g.input, 10, 8)]), 8, 7), 7, 6)
        out = g.gemm(g.op("Relu", [h]), 6, 4)
    else:
        g = G((3, 6, 6), opset=13)
        c = g.conv(g.op("Relu", [g.conv(g.input, 3, 4, 3, pads=[1, 1, 1, 1])]), 4, 4, 3)
        r = g.op("Reshape", [c, g.const(np.array([-1, 64], np.int64))])
        out = g.gemm(r, 64, 5)
    x, cal = data(g.in_shape)
    m = g.model(out)
    check_model(m, x, cal, label=f"split-{which}")
    snn = __import__("snnconv").convert(m, cal)
    assert any(la.name.endswith("-") for la in snn.layers), [la.name for la in snn.layers]


def test_conv3d_and_pool3d():
    g = G((2, 5, 6, 6), opset=13)
    w = g.weight(3, 2, 3, 3, 3)
    c = g.op("Conv", [g.input, w, g.bias(3)], pads=[1, 0, 1, 1, 1, 0], strides=[1, 2, 1])
    p = g.op("MaxPool", [g.op("Relu", [c])], kernel_shape=[2, 2, 2], strides=[2, 2, 2],
             ceil_mode=1)
    run(g, head(g, p, int(np.prod(_shape(g, p)))), label="conv3d")


@pytest.mark.parametrize("where", ["on_input", "after_relu"])
def test_pad_negative_crops(where):
    """Negative Pad amounts crop (opset 11+)."""
    g = G((3, 8, 8), opset=13)
    x = g.input if where == "on_input" else g.op("Relu", [g.conv(g.input, 3, 3, 1)])
    p = g.op("Pad", [x, g.const(np.array([0, 0, -1, 1, 0, 0, 2, -2], np.int64))])
    y = g.op("Relu", [g.conv(p, 3, 4, 3, pads=[1, 1, 1, 1])])
    run(g, head(g, y, int(np.prod(_shape(g, y)))), label="pad-crop")


@pytest.mark.parametrize("op", ["Identity", "Dropout"])
def test_identity_or_dropout_as_last_op(op):
    g = G((6,), opset=13)
    out = g.op(op, [g.gemm(g.op("Relu", [g.gemm(g.input, 6, 5)]), 5, 3)])
    run(g, out, label="identity-last")


@pytest.mark.parametrize("source", ["concat", "avgpool", "add"])
def test_maxpool_of_nonnegative_combination(source):
    """MaxPool (no ReLU after it) of a concat of layer values (each part pooled on its own), of an
    average pool or of a sum of layer values (non-negative: carried by a neuron layer)."""
    g = G((3, 8, 8), opset=13)
    a = g.op("Relu", [g.conv(g.input, 3, 4, 3, pads=[1, 1, 1, 1])])
    b = g.op("Relu", [g.conv(a, 4, 4 if source == "add" else 3, 3, pads=[1, 1, 1, 1])])
    if source == "concat":
        t, c = g.op("Concat", [a, b], axis=1), 7
    elif source == "avgpool":
        t, c = g.op("AveragePool", [a], kernel_shape=[2, 2], pads=[0, 0, 1, 1]), 4
    else:
        t, c = g.op("Add", [a, b]), 4
    p = g.op("MaxPool", [t], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    y = g.op("Relu", [g.conv(p, c, 4, 3, pads=[1, 1, 1, 1])])
    run(g, head(g, y, 64), label=f"maxpool-of-{source}")


@pytest.mark.parametrize("chunk_bytes", [None, 1])
@pytest.mark.parametrize("stride,dilation,pb,pe", [((1, 1), (1, 1), (1, 1), (1, 1)),
                                                   ((2, 3), (1, 1), (1, 0), (2, 1)),
                                                   ((3, 2), (2, 1), (2, 2), (0, 1))])
def test_float64_conv_gemm_path_matches_conv2d(stride, dilation, pb, pe, chunk_bytes,
                                               monkeypatch):
    """float64 convs with a fan-in of 64 or more run as chunked GEMMs (kernels._conv2d_gemm):
    same values as torch's conv2d to float64 rounding, bias included, whole batch in one chunk
    or one sample per chunk; gradients flow (verify's fan-out counts use them)."""
    import torch
    import torch.nn.functional as F

    from snnconv.snn import kernels

    if chunk_bytes is not None:
        monkeypatch.setattr(kernels, "GEMM_CHUNK_BYTES", chunk_bytes)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 12, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 12, 3, 2, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    assert w[0].numel() >= kernels.GEMM_MIN_FAN_IN
    ref = F.conv2d(kernels.pad_spatial(x, pb, pe), w, b, stride=stride, dilation=dilation)
    got = kernels.conv(x, w, b, stride, pb, pe, dilation, 1)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-13, atol=1e-13)
    (gref,) = torch.autograd.grad(ref.sum(), x)
    (ggot,) = torch.autograd.grad(got.sum(), x)
    torch.testing.assert_close(ggot, gref, rtol=1e-13, atol=1e-13)
