"""Piecewise-linear activations: Relu, Clip, LeakyRelu, PRelu, Abs, Max/Min, HardSigmoid.

Each is a sum of monotone ReLU pieces (spec section 3), so it maps exactly to spiking neurons.
Clip moved its bounds from attributes to inputs at opset 11: one handler per layout.
"""

from __future__ import annotations

import numpy as np

from ... import ir
from ..context import Ctx
from ..registry import register
from .common import activation_inputs, per_sample_const, require_finite


@register("Relu")
def relu(ctx: Ctx, node):
    x = ctx.name(node.input[0])
    if x in ctx.priors:  # the layer this ReLU becomes names its output: same pre-activation
        ctx.priors[node.output[0]] = ctx.priors[x]
    ctx.emit(ir.Relu(node.name, node.op_type, (x,), node.output[0]))


def _clip(ctx: Ctx, node, lo, hi) -> None:
    """Bounds at the float32 limits are no bounds."""
    lo = None if lo is None or lo <= -3.4e38 else float(lo)
    hi = None if hi is None or hi >= 3.4e38 else float(hi)
    ctx.emit(ir.Clip(node.name, node.op_type, (ctx.name(node.input[0]),), node.output[0],
                     lo=lo, hi=hi))


@register("Clip")
def clip_v1(ctx: Ctx, node):
    """Bounds as the min/max attributes."""
    _clip(ctx, node, ctx.attr(node, "min", None), ctx.attr(node, "max", None))


@register("Clip", since=11)
def clip_v11(ctx: Ctx, node):
    """Bounds as optional constant inputs 1 and 2."""
    lo, hi = ctx.opt_const(node, 1), ctx.opt_const(node, 2)
    _clip(ctx, node, None if lo is None else float(np.asarray(lo).reshape(())),
          None if hi is None else float(np.asarray(hi).reshape(())))


@register("LeakyRelu")
def leaky_relu(ctx: Ctx, node):
    alpha = float(ctx.attr(node, "alpha", 0.01))
    ctx.emit(ir.PRelu(node.name, node.op_type, (ctx.name(node.input[0]),), node.output[0],
                      slope=np.array(alpha)))


@register("PRelu")
def prelu(ctx: Ctx, node):
    x = node.input[0]
    slope = per_sample_const(ctx, node, ctx.const(node, node.input[1], "the slope"),
                             len(ctx.shape(x)))
    require_finite(ctx, node, slope)
    ctx.emit(ir.PRelu(node.name, node.op_type, (ctx.name(x),), node.output[0], slope=slope))


@register("Abs")
def abs_(ctx: Ctx, node):
    ctx.emit(ir.Abs(node.name, node.op_type, (ctx.name(node.input[0]),), node.output[0]))


@register("Max", "Min")
def extremum(ctx: Ctx, node):
    acts = activation_inputs(ctx, node)
    rank = len(ctx.shape(acts[0]))
    const = None
    f = np.maximum if node.op_type == "Max" else np.minimum
    for i in node.input:
        if i and not ctx.is_act(i):
            c = per_sample_const(ctx, node, ctx.const(node, i, "a constant operand"), rank)
            const = c.astype(np.float64) if const is None else f(const, c)
    ctx.emit(ir.Extremum(node.name, node.op_type, tuple(ctx.name(i) for i in acts),
                         node.output[0], kind=node.op_type.lower(), const=const))


@register("HardSigmoid")
def hard_sigmoid(ctx: Ctx, node):
    """max(0, min(1, alpha x + beta)): an affine map and a saturating ReLU."""
    a = float(ctx.attr(node, "alpha", 0.2))
    b = float(ctx.attr(node, "beta", 0.5))
    t = ctx.emit(ir.Affine(node.name, node.op_type, (ctx.name(node.input[0]),),
                           ctx.fresh(node.output[0]), scale=np.array(a), shift=np.array(b)))
    ctx.emit(ir.Clip(node.name, node.op_type, (t,), node.output[0], lo=0.0, hi=1.0))
