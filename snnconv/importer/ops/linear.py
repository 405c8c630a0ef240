"""Weighted layers: Conv, ConvTranspose, Gemm, MatMul. They become the synapses of the SNN.

The weight must be a constant and the activation the data operand; a matrix product along any
per-sample axis is lowered to a 1x1 convolution between transposes and reshapes (pure wiring).
"""

from __future__ import annotations

import math

import numpy as np

from ... import ir
from ..context import Ctx
from ..hints import REWRITE_HINT
from ..registry import register
from .common import emit_steps, pads, require_finite, reshape_to


def _conv_layer(ctx: Ctx, node, what: str, pads_of) -> dict:
    """The parts Conv and ConvTranspose share: data input, weight, bias, strides, dilations,
    kernel shape, pads (from ``pads_of(ctx, node, in_spatial, kernel, stride, dilation)``) and
    group, as keyword arguments of the IR node."""
    x = node.input[0]
    if not ctx.is_act(x):
        raise ctx.fail(node, f"the {what}'s data input must be the activation")
    w = ctx.const(node, node.input[1], "the weight").astype(np.float64)
    b = ctx.opt_const(node, 2)
    require_finite(ctx, node, w)
    nd = w.ndim - 2
    if nd < 1 or nd > 3:
        raise ctx.fail(node, f"{nd}-d {what} is not supported (1-d to 3-d are)")
    stride = tuple(ctx.attr(node, "strides", [1] * nd))
    dil = tuple(ctx.attr(node, "dilations", [1] * nd))
    ks = tuple(ctx.attr(node, "kernel_shape", w.shape[2:]))
    if ks != tuple(w.shape[2:]):
        raise ctx.fail(node, f"kernel_shape {ks} differs from the weight's {w.shape[2:]}")
    pb, pe = pads_of(ctx, node, ctx.shape(x)[1:], ks, stride, dil)
    if b is not None:
        b = b.astype(np.float64).reshape(-1)
        require_finite(ctx, node, b)
    return dict(weight=w, bias=b, stride=stride, pads_begin=pb, pads_end=pe, dilation=dil,
                group=int(ctx.attr(node, "group", 1)))


@register("Conv")
def conv(ctx: Ctx, node):
    kw = _conv_layer(ctx, node, "convolution", pads)
    ctx.emit(ir.Conv(node.name, node.op_type, (ctx.name(node.input[0]),), node.output[0], **kw))


def _output_padding(ctx: Ctx, node, nd: int) -> tuple:
    return tuple(ctx.attr(node, "output_padding", [0] * nd))


def _convt_pads(ctx: Ctx, node, in_spatial, kernel, stride, dilation):
    """Begin/end pads of ConvTranspose from pads, auto_pad or output_shape (ONNX rules)."""
    nd = len(kernel)
    out_pad = _output_padding(ctx, node, nd)
    auto = ctx.attr(node, "auto_pad", "NOTSET")
    out_shape = ctx.attr(node, "output_shape", None)
    if out_shape is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = [n * s for n, s in zip(in_spatial, stride)]
    if out_shape is not None:
        out_shape = list(out_shape)[-nd:]
        b, e = [], []
        for n, k, s, d, op, o in zip(in_spatial, kernel, stride, dilation, out_pad, out_shape):
            total = s * (n - 1) + op + (k - 1) * d + 1 - int(o)
            small, big = total // 2, total - total // 2
            b.append(small if auto == "SAME_UPPER" else big)
            e.append(big if auto == "SAME_UPPER" else small)
        return tuple(b), tuple(e)
    if auto == "VALID":
        return (0,) * nd, (0,) * nd
    if auto not in ("NOTSET", ""):
        raise ctx.fail(node, f"unknown auto_pad '{auto}'")
    p = list(ctx.attr(node, "pads", [0] * (2 * nd)))
    if len(p) != 2 * nd:
        raise ctx.fail(node, f"pads {p} do not fit a {nd}-d kernel")
    return tuple(p[:nd]), tuple(p[nd:])


@register("ConvTranspose")
def conv_transpose(ctx: Ctx, node):
    kw = _conv_layer(ctx, node, "transposed convolution", _convt_pads)
    ctx.emit(ir.ConvTranspose(node.name, node.op_type, (ctx.name(node.input[0]),),
                              node.output[0], output_padding=_output_padding(
                                  ctx, node, len(kw["stride"])), **kw))


def _gemm_bias(ctx: Ctx, node, c, beta: float, n_out: int):
    c = np.asarray(c, np.float64)
    if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
        raise ctx.fail(node, f"bias C of shape {c.shape} varies along the batch axis")
    try:
        bias = beta * np.broadcast_to(c.reshape(c.shape[-1:]), (n_out,)).copy()
    except ValueError:
        raise ctx.fail(node, f"bias C of shape {c.shape} does not broadcast to "
                       f"{n_out} outputs") from None
    require_finite(ctx, node, bias)
    return bias


@register("Gemm")
def gemm(ctx: Ctx, node):
    a = node.input[0]
    if not ctx.is_act(a):
        raise ctx.fail(node, "Gemm with the activation as its second operand is not supported",
                       hint="export the layer as x @ W (activation first)")
    if ctx.attr(node, "transA", 0):
        raise ctx.fail(node, "transA=1 on the activation would mix the batch axis")
    bmat = ctx.const(node, node.input[1], "the weight B").astype(np.float64)
    if bmat.ndim != 2:
        raise ctx.fail(node, f"weight B has rank {bmat.ndim}, expected 2")
    if ctx.attr(node, "transB", 0):
        bmat = bmat.T
    alpha = float(ctx.attr(node, "alpha", 1.0))
    beta = float(ctx.attr(node, "beta", 1.0))
    w = alpha * bmat.T  # (out, in)
    require_finite(ctx, node, w)
    c = ctx.opt_const(node, 2)
    bias = None if c is None else _gemm_bias(ctx, node, c, beta, w.shape[0])
    _dense(ctx, node, a, w, bias)


def _dense(ctx: Ctx, node, a, w, bias):
    s = ctx.shape(a)
    if len(s) != 1:
        raise ctx.fail(node, f"matrix product on a per-sample tensor of shape {s}; snnconv "
                       "supports it on flat feature vectors", hint="flatten before the layer")
    ctx.emit(ir.Dense(node.name, node.op_type, (ctx.name(a),), node.output[0], weight=w,
                      bias=bias))


def _linear_on_axis(ctx: Ctx, node, x: str, w: np.ndarray, axis: int, out: str) -> None:
    """Apply the matrix w (J, K) along one per-sample axis: the axis becomes the channels of a
    1x1 convolution (transposes and reshapes around it are wiring)."""
    s = ctx.shape(x)
    perm = [axis] + [i for i in range(len(s)) if i != axis]
    rest = [s[i] for i in perm[1:]]
    steps = []
    if perm != list(range(len(s))):
        steps.append((ir.Transpose, dict(perm=tuple(perm))))
    if len(rest) != 1:
        steps.append((ir.Reshape, dict(shape=(s[axis], math.prod(rest)))))
    steps.append((ir.Conv, dict(weight=w[:, :, None].copy(), bias=None, stride=(1,),
                                pads_begin=(0,), pads_end=(0,), dilation=(1,), group=1)))
    if len(rest) != 1:
        steps.append((ir.Reshape, dict(shape=(w.shape[0], *rest))))
    if perm != list(range(len(s))):
        steps.append((ir.Transpose, dict(perm=tuple(int(i) for i in np.argsort(perm)))))
    emit_steps(ctx, node, x, steps, out)


def _matmul_weight(ctx: Ctx, node, t: str, rank: int) -> np.ndarray:
    """The constant operand as a matrix; leading broadcast axes must have size 1."""
    w = ctx.const(node, t, "the weight").astype(np.float64)
    if w.ndim > 2 and w.ndim == rank + 1 and w.shape[0] != 1:  # its first axis meets the batch
        raise ctx.fail(node, f"constant operand of shape {w.shape} varies along the batch axis")
    if w.ndim > rank + 1 or any(d != 1 for d in w.shape[:-2]):
        raise ctx.fail(node, f"constant operand of shape {w.shape} is a batch of different "
                       f"matrices for a per-sample tensor of rank {rank}",
                       hint="use one weight matrix (or a grouped 1x1 Conv)")
    require_finite(ctx, node, w)
    return w.reshape(w.shape[-2:]) if w.ndim >= 2 else w


@register("MatMul")
def matmul(ctx: Ctx, node):
    """x @ W acts on the last axis (a dense map per row); W @ x on the second-to-last one."""
    a, b = node.input[0], node.input[1]
    if ctx.is_act(a) and ctx.is_act(b):
        raise ctx.fail(node, "MatMul of two activations is not piecewise linear",
                       hint=REWRITE_HINT["MatMul"])
    x = a if ctx.is_act(a) else b
    s = ctx.shape(x)
    w = _matmul_weight(ctx, node, b if x == a else a, len(s))
    if x == a:  # x @ W
        if w.ndim == 1:  # a vector: contracts the last axis away
            if len(s) == 1:
                return _dense(ctx, node, a, w[None, :], None)
            tmp = ctx.fresh(node.output[0])
            _linear_on_axis(ctx, node, a, w[None, :], len(s) - 1, tmp)
            return reshape_to(ctx, node, s[:-1], src=tmp)
        if len(s) == 1:
            return _dense(ctx, node, a, w.T.copy(), None)
        return _linear_on_axis(ctx, node, a, w.T.copy(), len(s) - 1, node.output[0])
    if w.ndim == 1 or len(s) < 2:  # W @ x
        raise ctx.fail(node, f"constant @ activation with per-sample shape {s} would contract "
                       "the batch axis", hint="write the layer as x @ W^T")
    _linear_on_axis(ctx, node, b, w, len(s) - 2, node.output[0])
