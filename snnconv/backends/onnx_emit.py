"""What each synaptic op and layer of the closed form becomes in ONNX.

The same computation as ``snnconv.snn.simulate``, in spike-time offsets s = t_max - t: a group's
ops map the source's offsets (shifted by a delay that does not line the windows up), the neuron's
offsets are clip(tau_c (V - theta_rel), 0, window), pools take the earliest (MaxPool on offsets)
or latest spike, the input is clip((x - lo)/(hi - lo), 0, 1) tau_c. Ops are emitted through a
table keyed by op class.
"""

from __future__ import annotations

import numpy as np

from ..snn import (
    ConvOp, ConvTransposeOp, DenseOp, InputLayer, Layer, NeuronLayer, Op, PadOp, PlaceOp,
    PoolLayer, ReshapeOp, ScaleOp, SelectOp, SumPoolOp, TransposeOp,
)
from .onnx_counts import Counts
from .onnx_graph import Emitter, UnsupportedError, add_const, pool_geometry


def _conv(em: Emitter, op: ConvOp, x: str) -> str:
    w = em.const(op.weight, hint="w")
    pb, pe = list(op.pads_begin), list(op.pads_end)
    if any(p < 0 for p in pb + pe):  # crops first; Conv pads must be >= 0
        x = em.crop_pad(x, [min(p, 0) for p in pb], [min(p, 0) for p in pe],
                        len(op.in_shape) + 1)
        pb, pe = [max(p, 0) for p in pb], [max(p, 0) for p in pe]
    return em.op("Conv", [x, w], strides=list(op.stride), pads=pb + pe,
                 dilations=list(op.dilation), group=int(op.groups),
                 kernel_shape=list(op.weight.shape[2:]))


def _dense(em: Emitter, op: DenseOp, x: str) -> str:
    if len(op.in_shape) != 1:
        x = em.op("Flatten", [x], axis=1)
    return em.op("Gemm", [x, em.const(op.weight, hint="w")], transB=1)


def _sumpool(em: Emitter, op: SumPoolOp, x: str) -> str:
    c = op.in_shape[0]
    nd = len(op.kernel)
    end, got = pool_geometry(op.in_shape[1:], op.kernel, op.stride, op.pads_begin,
                             op.pads_end, op.dilation, op.out_spatial)
    x = em.crop_pad(x, op.pads_begin, end, nd + 2)
    ones = np.ones((c, 1, *op.kernel))
    y = em.op("Conv", [x, em.const(ones, hint="ones")], strides=list(op.stride),
              dilations=list(op.dilation), group=int(c), kernel_shape=list(op.kernel))
    y = em.slice_to(y, op.out_spatial, got)
    return em.op("Mul", [y, em.value(op.scale)])


def _place(em: Emitter, op: PlaceOp, x: str) -> str:
    rank = len(op.in_shape) + 1
    n = op.in_shape[op.axis]
    pads = [0] * (2 * rank)
    pads[op.axis + 1] = op.offset
    pads[rank + op.axis + 1] = op.total - op.offset - n
    return em.op("Pad", [x, em.const(pads, np.int64), em.const(0.0)], mode="constant")


def _convtranspose(em: Emitter, op: ConvTransposeOp, x: str) -> str:
    """The full transposed convolution, then the crop/extension of kernels.conv_transpose."""
    y = em.op("ConvTranspose", [x, em.const(op.weight, hint="w")], strides=list(op.stride),
              dilations=list(op.dilation), group=int(op.groups),
              kernel_shape=list(op.weight.shape[2:]))
    return em.crop_pad(y, [-int(b) for b in op.pads_begin],
                       [int(o) - int(e) for e, o in zip(op.pads_end, op.output_padding)],
                       len(op.in_shape) + 1)


_OPS = {
    ConvOp: _conv,
    DenseOp: _dense,
    SumPoolOp: _sumpool,
    ScaleOp: lambda em, op, x: em.op("Mul", [x, em.value(op.scale)]),
    ReshapeOp: lambda em, op, x: em.op("Reshape", [x, em.const([-1, *op.shape], np.int64)]),
    PlaceOp: _place,
    PadOp: lambda em, op, x: em.crop_pad(x, op.pads_begin, op.pads_end, len(op.in_shape) + 1),
    ConvTransposeOp: _convtranspose,
    TransposeOp: lambda em, op, x: em.op("Transpose", [x],
                                         perm=[0] + [int(p) + 1 for p in op.perm]),
    SelectOp: lambda em, op, x: em.op(
        "Gather", [x, em.const(list(op.index), np.int64, hint="index")], axis=int(op.axis) + 1),
}


def emit_op(em: Emitter, op: Op, x: str) -> str:
    f = _OPS.get(type(op))
    if f is None:
        raise UnsupportedError(f"synaptic op {op.kind!r} has no ONNX emitter")
    return f(em, op, x)


def emit_pool(em: Emitter, layer: PoolLayer, x: str, in_shape) -> str:
    out = tuple(layer.shape[1:])
    nd = len(out)
    end, got = pool_geometry(in_shape[1:], layer.kernel, layer.stride, layer.pads_begin,
                             layer.pads_end, layer.dilation, out)
    if any(p < 0 for p in list(layer.pads_begin) + end):
        raise UnsupportedError(f"layer {layer.name}: negative pool pads")

    def maxpool(v):
        y = em.op("MaxPool", [v], kernel_shape=list(layer.kernel), strides=list(layer.stride),
                  pads=list(layer.pads_begin) + end, dilations=list(layer.dilation))
        return em.slice_to(y, out, got)

    mins = np.asarray(layer.minimum, bool).reshape(-1)
    if not mins.any():
        return maxpool(x)
    minp = em.op("Neg", [maxpool(em.op("Neg", [x]))])
    if mins.all():
        return minp
    sel = em.const(mins.reshape((-1,) + (1,) * nd), np.bool_, hint="minimum")
    return em.op("Where", [sel, minp, maxpool(x)])


def emit_input(em: Emitter, layer: InputLayer, counts: Counts | None, tau: float) -> str:
    """s = clip((x - lo) / (hi - lo), 0, 1) * tau_c, with the torch simulator's float ops;
    steps that are exact identities (x - 0, x / 1, x * 1) are left out."""
    lo = np.asarray(layer.lo, np.float64).astype(em.np)
    span = np.asarray(layer.hi, np.float64).astype(em.np) - lo
    u = "x"
    if np.any(lo != 0):
        u = em.op("Sub", [u, em.value(lo)])
    if np.any(span != 1):
        u = em.op("Div", [u, em.value(span)], hint="u")
    zero, one = em.const(0.0), em.const(1.0)
    s = em.op("Clip", [u, zero, one])
    if tau != 1:  # inputs are coded on tau_c (the window, rounded up, covers it)
        s = em.op("Mul", [s, em.const(tau)], hint="s")
    if counts is not None:
        counts.input(layer.name, s, u, layer.shape)
    return s


def emit_potential(em: Emitter, layer: Layer, env: dict[str, str], by_name: dict[str, Layer],
                   tau: float, bias=None) -> str:
    """V(t_min) of a neuron or readout layer: the sum of its groups' synaptic maps, plus
    ``bias`` (an array broadcast per sample) if given. With tau_c = 1 the bias goes onto the
    first group that ends in a Conv or Gemm, before the other groups are added: onnxruntime then
    folds it into that kernel and fuses the residual Add and the clamp after it (the ANN's
    Conv + Add + ReLU pattern)."""
    zero = em.const(0.0)
    v = None
    for g in layer.groups:
        src = by_name[g.source]
        y = env[g.source]
        lag = layer.t_min - g.delay - src.t_max
        if lag != 0.0:  # delays that do not line the windows up: shift spikes only;
            # a spike arriving at or after t_min adds nothing
            y = em.op("Where", [em.op("Greater", [y, zero]),
                                em.op("Max", [em.op("Add", [y, em.const(lag)]), zero]),
                                zero])
        for o in g.ops:
            y = emit_op(em, o, y)
        if tau != 1.0:
            y = em.op("Div", [y, em.const(tau)])
        elif bias is not None and em.nodes and em.nodes[-1].op_type in _BIAS_KERNELS and \
                em.nodes[-1].output[0] == y:
            y = add_const(em, y, bias, "v")
            bias = None
        v = y if v is None else em.op("Add", [v, y], hint="v")
    return v if bias is None else add_const(em, v, bias, "v")


# kernels onnxruntime folds a following constant Add into (as bias or Gemm's C)
_BIAS_KERNELS = ("Conv", "Gemm")


def emit_fire(em: Emitter, layer: NeuronLayer, v: str, counts: Counts | None,
              tau: float) -> str:
    """Offsets s = clip(tau_c (V - theta_rel), 0, window); with ``counts``, the layer's
    spikes and (unless it saturates) its neurons at the window are counted."""
    raw = v  # with tau_c = 1, emit_potential added -theta_rel (see there)
    if tau != 1.0:
        raw = add_const(em, v, -np.asarray(layer.theta_rel, np.float64), "raw")
        raw = em.op("Mul", [raw, em.const(tau)], hint="raw")
    if counts is not None and counts.checks_peaks(layer.shape, _window(layer)):
        # the clamp to the window is the identity until an offset reaches it, which the
        # layer's peaks tell (OnnxSimulator then runs the clamped graph): a ReLU, as in the
        # ANN, which onnxruntime fuses into the convolution (with a residual Add) and applies
        # inside its kernel, where a Clip would be a second pass
        s = em.op("Relu", [raw], hint="s")
        counts.layer(layer.name, s, layer.shape, _window(layer))
        return s
    last = em.nodes[-1]
    if len(layer.shape) == 3 and last.op_type == "Add" and last.output[0] == raw and \
            not any(em.is_const(i) for i in last.input):
        # a residual sum: onnxruntime fuses the Add into the convolution before it but not
        # the clamp after it; an identity depthwise convolution takes the clamp, so the
        # offsets stay in the blocked layout instead of a round trip through NCHW
        c = int(layer.shape[0])
        raw = em.op("Conv", [raw, em.const(np.ones((c, 1, 1, 1)), hint="identity")], group=c,
                    kernel_shape=[1, 1])
    # s == window, not raw > window: counted from the clamped offsets, which keeps Conv +
    # Clip one fused kernel. They differ only for raw exactly equal to the window.
    s = em.op("Clip", [raw, em.const(0.0), em.const(layer.window)], hint="s")
    if counts is not None:
        counts.layer(layer.name, s, layer.shape, _window(layer))
    return s


def _window(layer: NeuronLayer) -> float | None:
    """The window its clipped neurons are counted at (a saturating layer's are not)."""
    return None if layer.saturating else layer.window
