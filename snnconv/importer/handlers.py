"""One small handler per ONNX op. A handler reads one NodeProto and emits IR nodes (or an alias).

Adding an op means adding one function with ``@register("OpType")``. Handlers read both the old
(attribute) and new (input) layouts where opsets differ, so old models import even when the
version converter cannot upgrade them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .. import ir
from ..errors import UnsupportedOpError
from .builder import Ctx

HANDLERS: dict[str, Callable[[Ctx, object], None]] = {}


def register(*ops: str):
    def deco(fn):
        for op in ops:
            HANDLERS[op] = fn
        return fn
    return deco


#: Ops with no exact TTFS mapping, and why (the refusal message names them).
NOT_PIECEWISE_LINEAR = {
    "Sigmoid": "Sigmoid is not piecewise linear (allowed only as the last op)",
    "Tanh": "Tanh is not piecewise linear (allowed only as the last op)",
    "Gelu": "GELU is not piecewise linear", "Erf": "Erf is not piecewise linear",
    "Softplus": "Softplus is not piecewise linear", "Elu": "ELU is not piecewise linear",
    "Selu": "SELU is not piecewise linear", "Celu": "CELU is not piecewise linear",
    "Mish": "Mish is not piecewise linear", "HardSwish": "HardSwish is quadratic in places",
    "Exp": "Exp is not piecewise linear", "Log": "Log is not piecewise linear",
    "Sqrt": "Sqrt is not piecewise linear", "Pow": "Pow is not piecewise linear",
    "Reciprocal": "1/x is not piecewise linear",
    "Softmax": "Softmax is allowed only at the output", "LogSoftmax":
    "LogSoftmax is allowed only at the output", "LSTM": "recurrent layers are not feed-forward",
    "GRU": "recurrent layers are not feed-forward", "RNN": "recurrent layers are not feed-forward",
    "LRN": "local response normalisation is not piecewise linear",
    "InstanceNormalization": "instance normalisation depends on the input's statistics",
    "LayerNormalization": "layer normalisation depends on the input's statistics",
    "GroupNormalization": "group normalisation depends on the input's statistics",
    "Attention": "attention multiplies activations", "Einsum": "Einsum of activations",
    "ThresholdedRelu": "ThresholdedRelu jumps at its threshold (not continuous)",
    "Sign": "Sign is a step function", "Round": "Round is a step function",
    "Floor": "Floor is a step function", "Ceil": "Ceil is a step function",
    "MaxUnpool": "unpooling places values at run-time indices",
}

_SMOOTH = "replace it by ReLU (or LeakyReLU / ReLU6) and fine-tune the ANN before converting"
_BATCH_FIRST = "keep the batch axis first and untouched, e.g. torch.flatten(x, 1) / x.view(N, -1)"
_EVAL = "export the model in eval mode (model.eval())"

#: Rewrites a user can apply before converting, per op: for ops with no exact mapping and for
#: configurations of supported ops that have none. Every refusal carries one.
REWRITE_HINT = {
    "Sigmoid": "replace hidden Sigmoid by HardSigmoid (piecewise linear) or ReLU and fine-tune",
    "Tanh": "replace hidden Tanh by Clip(-1, 1) (HardTanh) or ReLU and fine-tune",
    "Gelu": "replace GELU by ReLU and fine-tune the ANN before converting",
    "Erf": "Erf usually comes from GELU: replace GELU by ReLU and fine-tune before converting",
    "Softplus": _SMOOTH, "Elu": _SMOOTH, "Selu": _SMOOTH, "Celu": _SMOOTH, "Mish": _SMOOTH,
    "HardSwish": "replace HardSwish by ReLU6 or HardSigmoid (piecewise linear) and fine-tune",
    "Exp": "move the non-linear pre/post-processing out of the exported model",
    "Log": "move the non-linear pre/post-processing out of the exported model",
    "Sqrt": "move the non-linear pre/post-processing out of the exported model",
    "Pow": "move the non-linear pre/post-processing out of the exported model",
    "Reciprocal": "divide by constants only; move the rest out of the exported model",
    "Mul": "multiplying two activations is not linear; gate with a constant instead",
    "Div": "divide activations by constants only",
    "Add": "add constants of the tensor's shape (or broadcastable to it) or two activations",
    "Sub": "subtract constants of the tensor's shape (or broadcastable to it) or activations",
    "MatMul": "multiply activations by constant matrices only (x @ W or W @ x)",
    "Gemm": "export the layer as Gemm(x, W, b) with the activation as input A, or as x @ W",
    "Softmax": "Softmax/LogSoftmax are accepted as the last op only",
    "LogSoftmax": "Softmax/LogSoftmax are accepted as the last op only",
    "LSTM": "replace the recurrent layer by 1-d convolutions over time (a TCN) and retrain",
    "GRU": "replace the recurrent layer by 1-d convolutions over time (a TCN) and retrain",
    "RNN": "replace the recurrent layer by 1-d convolutions over time (a TCN) and retrain",
    "LRN": "remove LRN or replace it by BatchNormalization (folded exactly) and fine-tune",
    "InstanceNormalization": "use BatchNormalization (folded exactly) and fine-tune",
    "LayerNormalization": "use BatchNormalization (folded exactly) and fine-tune",
    "GroupNormalization": "use BatchNormalization (folded exactly) and fine-tune",
    "Attention": "replace attention by convolutions or constant-weight mixing and retrain",
    "Einsum": "write the contraction as MatMul/Conv with constant weights",
    "ThresholdedRelu": "replace it by Relu (or Relu(x - alpha)) and fine-tune",
    "Sign": "replace step functions by Clip or ReLU and fine-tune",
    "Round": "quantisation belongs to the hardware step (snnconv finetune), not the model",
    "Floor": "quantisation belongs to the hardware step (snnconv finetune), not the model",
    "Ceil": "quantisation belongs to the hardware step (snnconv finetune), not the model",
    "MaxUnpool": "upsample with Resize (mode 'nearest') or a ConvTranspose instead",
    "Conv": "give the convolution a constant weight (1-d, 2-d or 3-d) and the activation as X",
    "ConvTranspose": "give the transposed convolution a constant weight (1-d, 2-d or 3-d)",
    "BatchNormalization": _EVAL, "Dropout": _EVAL,
    "MaxPool": "do not use the pooling indices; upsample with Resize (mode 'nearest') instead",
    "AveragePool": "pool over the spatial axes of an (N, C, *spatial) tensor",
    "GlobalAveragePool": "pool over the spatial axes of an (N, C, *spatial) tensor",
    "GlobalMaxPool": "pool over the spatial axes of an (N, C, *spatial) tensor",
    "ReduceMean": "reduce over the spatial axes only (keep batch and channels)",
    "ReduceMax": "reduce over the spatial axes only (keep batch and channels)",
    "Reshape": _BATCH_FIRST, "Flatten": _BATCH_FIRST, "Squeeze": _BATCH_FIRST,
    "Unsqueeze": _BATCH_FIRST, "Transpose": _BATCH_FIRST, "Slice": _BATCH_FIRST,
    "Split": _BATCH_FIRST, "Gather": "gather feature axes at constant indices",
    "Concat": "concatenate activations along a feature axis (add constants with Add)",
    "Pad": "pad the spatial axes with zeros (mode 'constant', value 0)",
    "Cast": "keep activations in a float type",
    "Resize": "use mode 'nearest' (spikes are copied), or learn the upsampling as ConvTranspose",
    "Upsample": "use mode 'nearest' (spikes are copied), or learn the upsampling as "
                "ConvTranspose",
    "ArgMax": "ArgMax is accepted as the last op only, over the classes of (N, classes)",
    "PRelu": "use a constant slope broadcastable to the tensor (per channel or scalar)",
    "Max": "take the max of activations of one shape and constants",
    "Min": "take the min of activations of one shape and constants",
}

#: For ops snnconv has never heard of.
GENERIC_HINT = ("rewrite the node with supported ops (README, 'Supported ONNX ops'): every "
                "piecewise-linear function is a sum of ReLUs; otherwise replace it by a ReLU "
                "variant and fine-tune")


def unsupported(ctx: Ctx, node) -> UnsupportedOpError:
    why = NOT_PIECEWISE_LINEAR.get(node.op_type)
    msg = (f"cannot be mapped exactly to a TTFS network: {why}" if why else
           f"op {node.op_type} has no TTFS mapping in snnconv")
    hint = REWRITE_HINT.get(node.op_type) or GENERIC_HINT
    return ctx.fail(node, msg, hint=hint)


# --- helpers ------------------------------------------------------------------------------------

def _pads(ctx: Ctx, node, in_spatial, kernel, stride, dilation, ceil=False):
    """Begin/end pads from pads or auto_pad (NOTSET, VALID, SAME_UPPER, SAME_LOWER)."""
    nd = len(kernel)
    auto = ctx.attr(node, "auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        p = list(ctx.attr(node, "pads", [0] * (2 * nd)))
        if len(p) != 2 * nd:
            raise ctx.fail(node, f"pads {p} do not fit a {nd}-d kernel")
        return tuple(p[:nd]), tuple(p[nd:])
    if auto == "VALID":
        return (0,) * nd, (0,) * nd
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        b, e = [], []
        for n, k, s, d in zip(in_spatial, kernel, stride, dilation):
            out = math.ceil(n / s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
            small = total // 2
            big = total - small
            b.append(small if auto == "SAME_UPPER" else big)
            e.append(big if auto == "SAME_UPPER" else small)
        return tuple(b), tuple(e)
    raise ctx.fail(node, f"unknown auto_pad '{auto}'")


def _per_sample_const(ctx: Ctx, node, c: np.ndarray, rank: int) -> np.ndarray:
    """A constant operand of a broadcasting op, aligned to a per-sample tensor of this rank."""
    c = np.asarray(c, dtype=np.float64)
    if c.ndim == rank + 1:
        if c.shape[0] != 1:
            raise ctx.fail(node, f"constant of shape {c.shape} varies along the batch axis")
        c = c[0]
    elif c.ndim > rank + 1:
        raise ctx.fail(node, f"constant of shape {c.shape} has a higher rank than the tensor")
    return c


def _activation_inputs(ctx: Ctx, node):
    return [i for i in node.input if i and ctx.is_act(i)]


def _require_float_weights(ctx, node, w):
    if not np.all(np.isfinite(w)):
        raise ctx.fail(node, "weights contain NaN or Inf", cls=__import__(
            "snnconv.errors", fromlist=["ModelImportError"]).ModelImportError)


# --- linear layers ------------------------------------------------------------------------------

@register("Conv")
def conv(ctx: Ctx, node):
    x = node.input[0]
    if not ctx.is_act(x):
        raise ctx.fail(node, "the convolution's data input must be the activation")
    w = ctx.const(node, node.input[1], "the weight").astype(np.float64)
    b = ctx.opt_const(node, 2)
    _require_float_weights(ctx, node, w)
    nd = w.ndim - 2
    if nd < 1 or nd > 3:
        raise ctx.fail(node, f"{nd}-d convolution is not supported (1-d to 3-d are)")
    stride = tuple(ctx.attr(node, "strides", [1] * nd))
    dil = tuple(ctx.attr(node, "dilations", [1] * nd))
    ks = tuple(ctx.attr(node, "kernel_shape", w.shape[2:]))
    if ks != tuple(w.shape[2:]):
        raise ctx.fail(node, f"kernel_shape {ks} differs from the weight's {w.shape[2:]}")
    pb, pe = _pads(ctx, node, ctx.shape(x)[1:], ks, stride, dil)
    if b is not None:
        b = b.astype(np.float64).reshape(-1)
        _require_float_weights(ctx, node, b)
    ctx.emit(ir.Conv(node.name, node.op_type, (ctx.name(x),), node.output[0], weight=w, bias=b,
                     stride=stride, pads_begin=pb, pads_end=pe, dilation=dil,
                     group=int(ctx.attr(node, "group", 1))))


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
    _require_float_weights(ctx, node, w)
    c = ctx.opt_const(node, 2)
    bias = None
    if c is not None:
        c = np.asarray(c, np.float64)
        if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
            raise ctx.fail(node, f"bias C of shape {c.shape} varies along the batch axis")
        try:
            bias = beta * np.broadcast_to(c.reshape(c.shape[-1:]), (w.shape[0],)).copy()
        except ValueError:
            raise ctx.fail(node, f"bias C of shape {c.shape} does not broadcast to "
                           f"{w.shape[0]} outputs") from None
        _require_float_weights(ctx, node, bias)
    _dense(ctx, node, a, w, bias)


def _dense(ctx: Ctx, node, a, w, bias):
    s = ctx.shape(a)
    if len(s) != 1:
        raise ctx.fail(node, f"matrix product on a per-sample tensor of shape {s}; snnconv "
                       "supports it on flat feature vectors", hint="flatten before the layer")
    ctx.emit(ir.Dense(node.name, node.op_type, (ctx.name(a),), node.output[0], weight=w,
                      bias=bias))


def _emit_steps(ctx: Ctx, node, x: str, steps, out: str) -> str:
    """Emit IR nodes (class, kwargs) one after another from x; the last one produces out."""
    cur = ctx.name(x)
    for k, (cls, kw) in enumerate(steps):
        name = out if k == len(steps) - 1 else ctx.fresh(out)
        cur = ctx.emit(cls(node.name, node.op_type, (cur,), name, **kw))
    if not steps:
        ctx.set_alias(out, x)
    return cur


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
    _emit_steps(ctx, node, x, steps, out)


def _matmul_weight(ctx: Ctx, node, t: str, rank: int) -> np.ndarray:
    """The constant operand as a matrix; leading broadcast axes must have size 1."""
    w = ctx.const(node, t, "the weight").astype(np.float64)
    if w.ndim > 2 and w.ndim == rank + 1 and w.shape[0] != 1:  # its first axis meets the batch
        raise ctx.fail(node, f"constant operand of shape {w.shape} varies along the batch axis")
    if w.ndim > rank + 1 or any(d != 1 for d in w.shape[:-2]):
        raise ctx.fail(node, f"constant operand of shape {w.shape} is a batch of different "
                       f"matrices for a per-sample tensor of rank {rank}",
                       hint="use one weight matrix (or a grouped 1x1 Conv)")
    _require_float_weights(ctx, node, w)
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
            return _reshape_to(ctx, node, s[:-1], src=tmp)
        if len(s) == 1:
            return _dense(ctx, node, a, w.T.copy(), None)
        return _linear_on_axis(ctx, node, a, w.T.copy(), len(s) - 1, node.output[0])
    if w.ndim == 1 or len(s) < 2:  # W @ x
        raise ctx.fail(node, f"constant @ activation with per-sample shape {s} would contract "
                       "the batch axis", hint="write the layer as x @ W^T")
    _linear_on_axis(ctx, node, b, w, len(s) - 2, node.output[0])


# --- elementwise --------------------------------------------------------------------------------

@register("Add", "Sub", "Mul", "Div")
def arith(ctx: Ctx, node):
    a, b = node.input[0], node.input[1]
    op = node.op_type
    out = node.output[0]
    if ctx.is_act(a) and ctx.is_act(b):
        if op == "Add":
            ctx.emit(ir.Add(node.name, op, (ctx.name(a), ctx.name(b)), out))
        elif op == "Sub":
            neg = ctx.emit(ir.Affine(node.name, op, (ctx.name(b),), ctx.fresh(out),
                                     scale=np.array(-1.0), shift=np.array(0.0)))
            ctx.emit(ir.Add(node.name, op, (ctx.name(a), neg), out))
        else:
            raise ctx.fail(node, f"{op} of two activations is not piecewise linear",
                           hint=REWRITE_HINT["Mul"])
        return
    act_first = ctx.is_act(a)
    x, c = (a, b) if act_first else (b, a)
    rank = len(ctx.shape(x))
    cv = _per_sample_const(ctx, node, ctx.const(node, c, "the constant operand"), rank)
    _require_float_weights(ctx, node, cv)
    one, zero = np.array(1.0), np.array(0.0)
    if op == "Add":
        scale, shift = one, cv
    elif op == "Sub":
        scale, shift = (one, -cv) if act_first else (-one, cv)
    elif op == "Mul":
        scale, shift = cv, zero
    else:
        if not act_first:
            raise ctx.fail(node, "dividing a constant by an activation is not piecewise linear")
        if np.any(cv == 0):
            raise ctx.fail(node, "division by zero in the constant")
        scale, shift = 1.0 / cv, zero
    ctx.emit(ir.Affine(node.name, op, (ctx.name(x),), out, scale=np.asarray(scale, np.float64),
                       shift=np.asarray(shift, np.float64)))


@register("BatchNormalization")
def batchnorm(ctx: Ctx, node):
    x = node.input[0]
    if ctx.attr(node, "training_mode", 0):
        raise ctx.fail(node, "BatchNormalization in training mode uses batch statistics",
                       hint="export the model in eval mode")
    for extra in node.output[1:]:
        if extra and ctx.consumers.get(extra):
            raise ctx.fail(node, "the running-statistics outputs of BatchNormalization are used")
    sc, bias, mean, var = (ctx.const(node, node.input[i], nm).astype(np.float64)
                           for i, nm in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
    eps = float(ctx.attr(node, "epsilon", 1e-5))
    s = ctx.shape(x)
    if len(s) < 1 or sc.shape != (s[0],):
        raise ctx.fail(node, f"per-channel parameters of shape {sc.shape} for input {s}")
    a = sc / np.sqrt(var + eps)
    shift = bias - mean * a
    for arr in (a, shift):
        _require_float_weights(ctx, node, arr)
    bshape = (s[0],) + (1,) * (len(s) - 1)
    ctx.emit(ir.Affine(node.name, node.op_type, (ctx.name(x),), node.output[0],
                       scale=a.reshape(bshape), shift=shift.reshape(bshape)))


# --- activations --------------------------------------------------------------------------------

@register("Relu")
def relu(ctx: Ctx, node):
    ctx.emit(ir.Relu(node.name, node.op_type, (ctx.name(node.input[0]),), node.output[0]))


@register("Clip")
def clip(ctx: Ctx, node):
    if ctx.opset < 11:
        lo = ctx.attr(node, "min", None)
        hi = ctx.attr(node, "max", None)
    else:
        lo = ctx.opt_const(node, 1)
        hi = ctx.opt_const(node, 2)
        lo = None if lo is None else float(np.asarray(lo).reshape(()))
        hi = None if hi is None else float(np.asarray(hi).reshape(()))
    lo = None if lo is None or lo <= -3.4e38 else float(lo)
    hi = None if hi is None or hi >= 3.4e38 else float(hi)
    ctx.emit(ir.Clip(node.name, node.op_type, (ctx.name(node.input[0]),), node.output[0],
                     lo=lo, hi=hi))


# --- pooling ------------------------------------------------------------------------------------

def _pool(ctx: Ctx, node, kind: str):
    x = node.input[0]
    if len(node.output) > 1 and node.output[1] and ctx.consumers.get(node.output[1]):
        raise ctx.fail(node, "the Indices output of MaxPool is used (unpooling)")
    s = ctx.shape(x)
    ks = tuple(ctx.attr(node, "kernel_shape"))
    nd = len(ks)
    if len(s) != nd + 1:
        raise ctx.fail(node, f"{nd}-d pooling on a per-sample tensor of shape {s}")
    stride = tuple(ctx.attr(node, "strides", [1] * nd))
    dil = tuple(ctx.attr(node, "dilations", [1] * nd))
    pb, pe = _pads(ctx, node, s[1:], ks, stride, dil)
    ctx.emit(ir.Pool(node.name, node.op_type, (ctx.name(x),), node.output[0], kind=kind,
                     kernel=ks, stride=stride, pads_begin=pb, pads_end=pe, dilation=dil,
                     ceil_mode=bool(ctx.attr(node, "ceil_mode", 0)),
                     count_include_pad=bool(ctx.attr(node, "count_include_pad", 0))))


@register("MaxPool")
def maxpool(ctx: Ctx, node):
    _pool(ctx, node, "max")


@register("AveragePool")
def avgpool(ctx: Ctx, node):
    _pool(ctx, node, "avg")


def _global(ctx: Ctx, node, kind: str, axes=None, keepdims=True):
    x = ctx.name(node.input[0])
    s = ctx.shape(x)
    if len(s) < 2:
        raise ctx.fail(node, f"global pooling needs spatial axes, the tensor has shape {s}")
    axes = set(range(1, len(s))) if axes is None else axes
    ks = tuple(s[i] if i in axes else 1 for i in range(1, len(s)))
    nd = len(ks)
    out = node.output[0] if keepdims else ctx.fresh(node.output[0])
    y = ctx.emit(ir.Pool(node.name, node.op_type, (x,), out, kind=kind, kernel=ks,
                         stride=(1,) * nd, pads_begin=(0,) * nd, pads_end=(0,) * nd,
                         dilation=(1,) * nd))
    if not keepdims:
        shp = tuple(d for i, d in enumerate(ctx.shape(y)) if i == 0 or (i not in axes))
        ctx.emit(ir.Reshape(node.name, node.op_type, (y,), node.output[0], shape=shp))


@register("GlobalAveragePool")
def global_avgpool(ctx: Ctx, node):
    _global(ctx, node, "avg")


@register("GlobalMaxPool")
def global_maxpool(ctx: Ctx, node):
    _global(ctx, node, "max")


@register("ReduceMean", "ReduceMax")
def reduce_spatial(ctx: Ctx, node):
    s = ctx.shape(node.input[0])
    rank = len(s) + 1
    if (ctx.opset >= 18 or node.op_type == "ReduceMean" and ctx.opset >= 18) and \
            len(node.input) > 1 and node.input[1]:
        axes = ctx.const(node, node.input[1], "axes").reshape(-1).tolist()
    else:
        axes = ctx.attr(node, "axes", None)
    if axes is None or len(axes) == 0:
        if ctx.attr(node, "noop_with_empty_axes", 0):
            ctx.set_alias(node.output[0], node.input[0])
            return
        axes = list(range(rank))
    axes = sorted({a % rank for a in axes})
    if 0 in axes or 1 in axes:
        raise ctx.fail(node, f"reduces over axes {axes}; snnconv supports reducing the spatial "
                       "axes (2 and up) only")
    kind = "avg" if node.op_type == "ReduceMean" else "max"
    _global(ctx, node, kind, axes={a - 1 for a in axes},
            keepdims=bool(ctx.attr(node, "keepdims", 1)))


# --- shape and wiring ---------------------------------------------------------------------------

def _reshape_to(ctx: Ctx, node, shape, src=None):
    x = node.input[0] if src is None else src
    shape = tuple(int(d) for d in shape)
    if shape == ctx.shape(x):
        ctx.set_alias(node.output[0], x)
        return
    ctx.emit(ir.Reshape(node.name, node.op_type, (ctx.name(x),), node.output[0], shape=shape))


def _target_shape(ctx: Ctx, node, full_target) -> tuple:
    """Resolve a full (batch-first) ONNX target shape into a per-sample one."""
    s = ctx.shape(node.input[0])
    probe = ctx.probe_batch
    full_in = (probe, *s)
    allowzero = ctx.attr(node, "allowzero", 0)
    t = [full_in[i] if (d == 0 and not allowzero and i < len(full_in)) else int(d)
         for i, d in enumerate(full_target)]
    if t.count(-1) > 1:
        raise ctx.fail(node, f"target shape {list(full_target)} has several -1")
    if -1 in t:
        known = math.prod(d for d in t if d != -1)
        t[t.index(-1)] = math.prod(full_in) // known if known else 0
    if math.prod(t) != math.prod(full_in) or t[0] != probe:
        raise ctx.fail(node, f"reshape to {list(full_target)} mixes the batch axis into the "
                       "features", hint="reshape with the batch size first, e.g. (N, -1)")
    return tuple(t[1:])


@register("Reshape")
def reshape(ctx: Ctx, node):
    want = ctx.inferred(node.output[0])
    target = ctx.shape_value(node.input[1])
    if target is not None:
        shape = _target_shape(ctx, node, target.reshape(-1).tolist())
    elif want is not None:
        shape = want
    else:
        raise ctx.fail(node, "the target shape is computed at run time and shape inference "
                       "could not resolve it", hint="fix the input shape with --input-shape")
    _reshape_to(ctx, node, shape)


@register("Shape")
def shape_of(ctx: Ctx, node):
    """The shape of an activation: a constant, or a probe value when the batch is dynamic."""
    full = np.array([ctx.probe_batch, *ctx.shape(node.input[0])], dtype=np.int64)
    rank = len(full)
    start = int(ctx.attr(node, "start", 0))
    end = ctx.attr(node, "end", None)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = rank if end is None else min(max(int(end) + rank if int(end) < 0 else int(end), 0),
                                       rank)
    value = full[start:end]
    if isinstance(ctx.batch, int) and ctx.batch > 0 or start > 0:
        ctx.consts[node.output[0]] = value
    else:
        ctx.probes[node.output[0]] = value


@register("Flatten")
def flatten(ctx: Ctx, node):
    s = ctx.shape(node.input[0])
    axis = int(ctx.attr(node, "axis", 1))
    axis = axis % (len(s) + 1) if axis < 0 else axis
    if axis == 0:
        raise ctx.fail(node, "Flatten(axis=0) merges the batch axis into the features")
    if math.prod(s[: axis - 1]) != 1:  # output dim 0 is N * prod(s[:axis-1])
        raise ctx.fail(node, f"Flatten(axis={axis}) of a (N, {', '.join(map(str, s))}) tensor "
                       "merges feature axes into the batch axis",
                       hint="flatten with axis=1, e.g. torch.flatten(x, 1)")
    _reshape_to(ctx, node, (math.prod(s),))


@register("Squeeze", "Unsqueeze")
def squeeze(ctx: Ctx, node):
    s = ctx.shape(node.input[0])
    if len(node.input) > 1 and node.input[1]:
        axes = ctx.const(node, node.input[1], "axes").reshape(-1).tolist()
    else:
        axes = ctx.attr(node, "axes", None)
    full = [None, *s]
    if node.op_type == "Squeeze":
        if axes is None:
            axes = [i for i, d in enumerate(full) if d == 1 and i > 0]
        axes = {a % len(full) for a in axes}
        if 0 in axes:
            raise ctx.fail(node, "squeezes the batch axis")
        out = [d for i, d in enumerate(full) if i not in axes]
    else:
        rank = len(full) + len(axes)
        axes = {a % rank for a in axes}
        if 0 in axes:
            raise ctx.fail(node, "unsqueezes before the batch axis")
        it = iter(full)
        out = [1 if i in axes else next(it) for i in range(rank)]
    _reshape_to(ctx, node, out[1:])


@register("Concat")
def concat(ctx: Ctx, node):
    ins = [i for i in node.input if i]
    if not all(ctx.is_act(i) for i in ins):
        raise ctx.fail(node, "concatenates constants with activations")
    rank = len(ctx.shape(ins[0])) + 1
    axis = int(ctx.attr(node, "axis")) % rank
    if axis == 0:
        raise ctx.fail(node, "concatenates along the batch axis")
    if len(ins) == 1:
        ctx.set_alias(node.output[0], ins[0])
        return
    ctx.emit(ir.Concat(node.name, node.op_type, tuple(ctx.name(i) for i in ins),
                       node.output[0], axis=axis - 1))


@register("Pad")
def pad(ctx: Ctx, node):
    s = ctx.shape(node.input[0])
    rank = len(s) + 1
    mode = ctx.attr(node, "mode", "constant")
    if mode != "constant":
        raise ctx.fail(node, f"Pad mode '{mode}' is not supported (constant zeros are)")
    if ctx.opset < 11:
        pads = list(ctx.attr(node, "pads"))
        value = float(ctx.attr(node, "value", 0.0))
        axes = list(range(rank))
    else:
        pads = ctx.const(node, node.input[1], "pads").reshape(-1).tolist()
        v = ctx.opt_const(node, 2)
        value = 0.0 if v is None else float(np.asarray(v).reshape(()))
        ax = ctx.opt_const(node, 3)
        axes = list(range(rank)) if ax is None else [int(a) % rank for a in ax.reshape(-1)]
    if value != 0.0:
        raise ctx.fail(node, f"padding with {value}; only zero padding is supported")
    n = len(axes)
    begin = dict(zip(axes, pads[:n]))
    end = dict(zip(axes, pads[n:]))
    if begin.get(0, 0) or end.get(0, 0) or begin.get(1, 0) or end.get(1, 0):
        raise ctx.fail(node, "pads the batch or channel axis; only spatial padding is supported")
    if rank < 3:
        raise ctx.fail(node, "pads a tensor without spatial axes")
    pb = tuple(int(begin.get(a, 0)) for a in range(2, rank))
    pe = tuple(int(end.get(a, 0)) for a in range(2, rank))
    if not any(pb) and not any(pe):
        ctx.set_alias(node.output[0], node.input[0])
        return
    ctx.emit(ir.Pad(node.name, node.op_type, (ctx.name(node.input[0]),), node.output[0],
                    pads_begin=pb, pads_end=pe))


def _dropout_active(ctx: Ctx, node) -> bool:
    """Training-mode Dropout (opset 12+: training_mode input) with a non-zero ratio."""
    mode = ctx.opt_const(node, 2)
    if mode is None or not bool(np.asarray(mode).reshape(())):
        return False
    ratio = ctx.opt_const(node, 1)
    return float(np.asarray(0.5 if ratio is None else ratio).reshape(())) != 0.0


@register("Identity", "Dropout")
def identity(ctx: Ctx, node):
    if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1] and \
            ctx.consumers.get(node.output[1]):
        raise ctx.fail(node, "the Dropout mask output is used")
    if node.op_type == "Dropout" and _dropout_active(ctx, node):
        raise ctx.fail(node, "Dropout in training mode drops random activations",
                       hint="export the model in eval mode")
    ctx.set_alias(node.output[0], node.input[0])


@register("Cast")
def cast(ctx: Ctx, node):
    import onnx

    to = ctx.attr(node, "to")
    if to not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
        raise ctx.fail(node, "casts the activation to a non-float type")
    ctx.set_alias(node.output[0], node.input[0])


def _feeds_only_output(ctx: Ctx, t: str, allowed_after: tuple[str, ...] = ()) -> bool:
    if t == ctx.graph_output:
        return True
    cons = ctx.consumers.get(t, [])
    return len(cons) == 1 and cons[0].op_type in allowed_after and \
        _feeds_only_output(ctx, cons[0].output[0])


@register("Softmax", "LogSoftmax", "Sigmoid", "Tanh", "Log")
def head(ctx: Ctx, node):
    """Argmax-preserving output ops: stripped; verify compares the tensor before them."""
    after = ("Log", "ArgMax") if node.op_type == "Softmax" else ("ArgMax",)
    if node.op_type == "Log":
        if ctx.head != "Softmax" or not _feeds_only_output(ctx, node.output[0], ("ArgMax",)):
            raise unsupported(ctx, node)
    elif not _feeds_only_output(ctx, node.output[0], after):
        raise unsupported(ctx, node)
    if node.op_type in ("Softmax", "LogSoftmax"):
        rank = len(ctx.shape(node.input[0])) + 1
        default = 1 if ctx.opset < 13 else -1
        axis = int(ctx.attr(node, "axis", default)) % rank
        if rank != 2 or axis != 1:
            raise ctx.fail(node, f"{node.op_type} over axis {axis} of a rank-{rank} tensor; "
                           "snnconv strips it only over the class axis of (N, classes)")
    ctx.head = node.op_type if ctx.head is None else f"{ctx.head}+{node.op_type}"
    ctx.set_alias(node.output[0], node.input[0])


# --- piecewise-linear activations (spec section 3: sums of monotone ReLU pieces) ---------------

@register("LeakyRelu")
def leaky_relu(ctx: Ctx, node):
    alpha = float(ctx.attr(node, "alpha", 0.01))
    ctx.emit(ir.PRelu(node.name, node.op_type, (ctx.name(node.input[0]),), node.output[0],
                      slope=np.array(alpha)))


@register("PRelu")
def prelu(ctx: Ctx, node):
    x = node.input[0]
    slope = _per_sample_const(ctx, node, ctx.const(node, node.input[1], "the slope"),
                              len(ctx.shape(x)))
    _require_float_weights(ctx, node, slope)
    ctx.emit(ir.PRelu(node.name, node.op_type, (ctx.name(x),), node.output[0], slope=slope))


@register("Abs")
def abs_(ctx: Ctx, node):
    ctx.emit(ir.Abs(node.name, node.op_type, (ctx.name(node.input[0]),), node.output[0]))


@register("Max", "Min")
def extremum(ctx: Ctx, node):
    acts = _activation_inputs(ctx, node)
    rank = len(ctx.shape(acts[0]))
    const = None
    f = np.maximum if node.op_type == "Max" else np.minimum
    for i in node.input:
        if i and not ctx.is_act(i):
            c = _per_sample_const(ctx, node, ctx.const(node, i, "a constant operand"), rank)
            const = c.astype(np.float64) if const is None else f(const, c)
    ctx.emit(ir.Extremum(node.name, node.op_type, tuple(ctx.name(i) for i in acts),
                         node.output[0], kind=node.op_type.lower(), const=const))


@register("Neg")
def neg(ctx: Ctx, node):
    ctx.emit(ir.Affine(node.name, node.op_type, (ctx.name(node.input[0]),), node.output[0],
                       scale=np.array(-1.0), shift=np.array(0.0)))


@register("HardSigmoid")
def hard_sigmoid(ctx: Ctx, node):
    """max(0, min(1, alpha x + beta)): an affine map and a saturating ReLU."""
    a = float(ctx.attr(node, "alpha", 0.2))
    b = float(ctx.attr(node, "beta", 0.5))
    t = ctx.emit(ir.Affine(node.name, node.op_type, (ctx.name(node.input[0]),),
                           ctx.fresh(node.output[0]), scale=np.array(a), shift=np.array(b)))
    ctx.emit(ir.Clip(node.name, node.op_type, (t,), node.output[0], lo=0.0, hi=1.0))


@register("Sum")
def sum_(ctx: Ctx, node):
    acts = _activation_inputs(ctx, node)
    rank = len(ctx.shape(acts[0]))
    cur = ctx.name(acts[0])
    consts = [i for i in node.input if i and not ctx.is_act(i)]
    for k, t in enumerate(acts[1:]):
        last = k == len(acts) - 2 and not consts
        cur = ctx.emit(ir.Add(node.name, node.op_type, (cur, ctx.name(t)),
                              node.output[0] if last else ctx.fresh(node.output[0])))
    if consts:
        c = sum(_per_sample_const(ctx, node, ctx.const(node, i), rank) for i in consts)
        ctx.emit(ir.Affine(node.name, node.op_type, (cur,), node.output[0], scale=np.array(1.0),
                           shift=np.asarray(c, np.float64)))
    elif len(acts) == 1:
        ctx.set_alias(node.output[0], acts[0])


# --- transposed convolution ---------------------------------------------------------------------

def _convt_pads(ctx: Ctx, node, in_spatial, kernel, stride, dilation, out_pad):
    """Begin/end pads of ConvTranspose from pads, auto_pad or output_shape (ONNX rules)."""
    nd = len(kernel)
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
    x = node.input[0]
    if not ctx.is_act(x):
        raise ctx.fail(node, "the transposed convolution's data input must be the activation")
    w = ctx.const(node, node.input[1], "the weight").astype(np.float64)
    b = ctx.opt_const(node, 2)
    _require_float_weights(ctx, node, w)
    nd = w.ndim - 2
    if nd < 1 or nd > 3:
        raise ctx.fail(node, f"{nd}-d transposed convolution is not supported (1-d to 3-d are)")
    stride = tuple(ctx.attr(node, "strides", [1] * nd))
    dil = tuple(ctx.attr(node, "dilations", [1] * nd))
    out_pad = tuple(ctx.attr(node, "output_padding", [0] * nd))
    ks = tuple(ctx.attr(node, "kernel_shape", w.shape[2:]))
    if ks != tuple(w.shape[2:]):
        raise ctx.fail(node, f"kernel_shape {ks} differs from the weight's {w.shape[2:]}")
    pb, pe = _convt_pads(ctx, node, ctx.shape(x)[1:], ks, stride, dil, out_pad)
    if b is not None:
        b = b.astype(np.float64).reshape(-1)
        _require_float_weights(ctx, node, b)
    ctx.emit(ir.ConvTranspose(node.name, node.op_type, (ctx.name(x),), node.output[0],
                              weight=w, bias=b, stride=stride, pads_begin=pb, pads_end=pe,
                              dilation=dil, output_padding=out_pad,
                              group=int(ctx.attr(node, "group", 1))))


# --- layout and selection (wiring: every output copies one input) -------------------------------

@register("Transpose")
def transpose(ctx: Ctx, node):
    x = node.input[0]
    rank = len(ctx.shape(x)) + 1
    perm = ctx.attr(node, "perm", None)
    perm = list(range(rank))[::-1] if perm is None else [int(p) % rank for p in perm]
    if perm[0] != 0:
        raise ctx.fail(node, f"perm {perm} moves the batch axis",
                       hint="transpose only the feature axes (perm[0] = 0), e.g. NHWC <-> NCHW")
    per = tuple(p - 1 for p in perm[1:])
    if per == tuple(range(rank - 1)):
        ctx.set_alias(node.output[0], x)
        return
    ctx.emit(ir.Transpose(node.name, node.op_type, (ctx.name(x),), node.output[0], perm=per))


def _select_steps(ctx: Ctx, node, shape, picks: dict[int, list[int]]):
    """Select nodes for {per-sample axis: indices}, skipping identities."""
    return [(ir.Select, dict(axis=a, index=tuple(int(i) for i in idx)))
            for a, idx in sorted(picks.items()) if list(idx) != list(range(shape[a]))]


def _batch_untouched(ctx: Ctx, node, idx) -> None:
    if list(idx) != list(range(ctx.probe_batch)):
        raise ctx.fail(node, "selects along the batch axis",
                       hint="slice only the feature axes (channels or space)")


@register("Slice")
def slice_(ctx: Ctx, node):
    x = node.input[0]
    s = ctx.shape(x)
    rank = len(s) + 1
    if ctx.opset < 10:
        starts, ends = ctx.attr(node, "starts"), ctx.attr(node, "ends")
        axes, steps = ctx.attr(node, "axes", None), None
    else:
        starts, ends = (ctx.const(node, node.input[i], nm).reshape(-1).tolist()
                        for i, nm in ((1, "starts"), (2, "ends")))
        ax, st = ctx.opt_const(node, 3), ctx.opt_const(node, 4)
        axes = None if ax is None else ax.reshape(-1).tolist()
        steps = None if st is None else st.reshape(-1).tolist()
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in axes]
    steps = [1] * len(starts) if steps is None else [int(v) for v in steps]
    picks: dict[int, list[int]] = {}
    for a, b, e, st in zip(axes, starts, ends, steps):
        if st == 0:
            raise ctx.fail(node, "slice step 0")
        n = ctx.probe_batch if a == 0 else s[a - 1]
        prev = picks.get(a - 1, list(range(n))) if a > 0 else list(range(n))
        idx = [prev[i] for i in range(*slice(int(b), int(e), st).indices(len(prev)))]
        if a == 0:
            _batch_untouched(ctx, node, idx)
        else:
            picks[a - 1] = idx
    _emit_steps(ctx, node, x, _select_steps(ctx, node, s, picks), node.output[0])


@register("Split")
def split(ctx: Ctx, node):
    x = node.input[0]
    s = ctx.shape(x)
    rank = len(s) + 1
    axis = int(ctx.attr(node, "axis", 0)) % rank
    if axis == 0:
        raise ctx.fail(node, "splits the batch axis", hint="split only the feature axes")
    n = s[axis - 1]
    sizes = ctx.opt_const(node, 1) if ctx.opset >= 13 else ctx.attr(node, "split", None)
    outs = list(node.output)
    if sizes is None:
        k = int(ctx.attr(node, "num_outputs", len(outs)))
        chunk = -(-n // k)
        sizes = [chunk] * (k - 1) + [n - chunk * (k - 1)]
    sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
    if sum(sizes) != n or len(sizes) != len(outs) or min(sizes) < 0:
        raise ctx.fail(node, f"split sizes {sizes} do not cover the axis of size {n}")
    off = 0
    for out, k in zip(outs, sizes):
        if out:
            idx = list(range(off, off + k))
            _emit_steps(ctx, node, x, _select_steps(ctx, node, s, {axis - 1: idx}), out)
        off += k


@register("Gather")
def gather(ctx: Ctx, node):
    x, ind = node.input[0], node.input[1]
    if ctx.is_act(ind):
        raise ctx.fail(node, "gathers at indices computed from the input",
                       hint="use constant indices")
    s = ctx.shape(x)
    rank = len(s) + 1
    axis = int(ctx.attr(node, "axis", 0)) % rank
    if axis == 0:
        raise ctx.fail(node, "gathers along the batch axis", hint="gather feature axes only")
    i = np.asarray(ctx.const(node, ind, "the indices")).astype(np.int64)
    n = s[axis - 1]
    if np.any(i < -n) or np.any(i >= n):
        raise ctx.fail(node, f"indices out of range for an axis of size {n}")
    i = i % n
    steps = [(ir.Select, dict(axis=axis - 1, index=tuple(int(v) for v in i.reshape(-1))))]
    out_shape = (*s[:axis - 1], *i.shape, *s[axis:])
    if out_shape != (*s[:axis - 1], i.size, *s[axis:]):
        steps.append((ir.Reshape, dict(shape=out_shape)))
    _emit_steps(ctx, node, x, steps, node.output[0])


@register("Resize", "Upsample")
def resize(ctx: Ctx, node):
    """Nearest-neighbour resizing copies spikes: a selection per axis. The indices come from
    running the node itself (onnx.reference) on index-valued probes, so every coordinate
    transformation and rounding mode is ONNX's own."""
    from .builder import _eval_constant_node

    x = node.input[0]
    mode = ctx.attr(node, "mode", "nearest")
    if mode != "nearest":
        raise ctx.fail(node, f"{node.op_type} mode '{mode}' interpolates between neighbours; "
                       "snnconv maps mode 'nearest' (spikes are copied)",
                       hint="export with mode='nearest', or learn the upsampling as a "
                       "ConvTranspose (exact, a weighted layer)")
    s = ctx.shape(x)
    values = {i: ctx.const(node, i, "the resize parameters") for i in node.input[1:] if i}
    sizes_name = node.input[3] if len(node.input) > 3 and node.input[3] else None
    if sizes_name is not None and ctx.attr(node, "axes", None) is None:
        sz = np.asarray(values[sizes_name]).copy()
        if len(sz) == len(s) + 1:
            sz[0] = 1  # probe with one sample
            values[sizes_name] = sz
    picks: dict[int, list[int]] = {}
    out = None
    for a in range(len(s)):
        along = [1] * len(s)
        along[a] = s[a]
        probe = np.broadcast_to(np.arange(1, s[a] + 1, dtype=np.float32).reshape(along),
                                s)[None].copy()
        try:
            y = _eval_constant_node(node, ctx, {x: probe, **values})[0]
        except Exception as e:  # noqa: BLE001 - reported with the node
            raise ctx.fail(node, f"cannot evaluate the resize pattern: {e}") from None
        if y.shape[0] != 1:
            raise ctx.fail(node, "resizes the batch axis", hint="resize only the spatial axes")
        out = y.shape[1:]
        line = y[(0,) + tuple(slice(None) if i == a else 0 for i in range(len(s)))]
        if not np.all((line == np.round(line)) & (line >= 1) & (line <= s[a])) or \
                not np.array_equal(y[0], np.broadcast_to(line.reshape(
                    (1,) * a + (-1,) + (1,) * (len(s) - a - 1)), out)):
            raise ctx.fail(node, "this resize does not copy inputs (extrapolated values)",
                           hint="use a coordinate mode without extrapolation")
        picks[a] = (line.astype(np.int64) - 1).tolist()
    steps = _select_steps(ctx, node, s, picks)
    _emit_steps(ctx, node, x, steps, node.output[0])
    if tuple(ctx.shape(node.output[0])) != tuple(out):  # pragma: no cover - consistency guard
        raise ctx.fail(node, f"resize to {out} imported as {ctx.shape(node.output[0])}")


# --- output heads -------------------------------------------------------------------------------

@register("ArgMax")
def argmax(ctx: Ctx, node):
    """ArgMax over the classes at the end: the head; the logits before it are compared."""
    if not _feeds_only_output(ctx, node.output[0]):
        raise ctx.fail(node, "ArgMax inside the network produces indices, not activations",
                       hint=REWRITE_HINT["ArgMax"])
    rank = len(ctx.shape(node.input[0])) + 1
    axis = int(ctx.attr(node, "axis", 0)) % rank
    if rank != 2 or axis != 1:
        raise ctx.fail(node, f"ArgMax over axis {axis} of a rank-{rank} tensor; snnconv strips "
                       "it only over the class axis of (N, classes)",
                       hint="flatten the logits to (N, classes) before the ArgMax")
    ctx.head = node.op_type if ctx.head is None else f"{ctx.head}+{node.op_type}"
    ctx.untrusted.add(node.output[0])  # indices, not the logits' shape
    ctx.set_alias(node.output[0], node.input[0])
