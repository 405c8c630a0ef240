"""Affine elementwise ops: Add, Sub, Mul, Div, Neg, Sum and inference-mode BatchNormalization.

Each is an affine map of one activation by constants (scale and shift), or the sum of two
activations; a product or quotient of two activations has no exact TTFS mapping.
"""

from __future__ import annotations

import numpy as np

from ... import ir
from ..context import Ctx
from ..hints import REWRITE_HINT
from ..registry import register
from .common import activation_inputs, per_sample_const, require_finite


def _two_activations(ctx: Ctx, node, a: str, b: str) -> None:
    op, out = node.op_type, node.output[0]
    if op == "Add":
        ctx.emit(ir.Add(node.name, op, (ctx.name(a), ctx.name(b)), out))
    elif op == "Sub":
        neg = ctx.emit(ir.Affine(node.name, op, (ctx.name(b),), ctx.fresh(out),
                                 scale=np.array(-1.0), shift=np.array(0.0)))
        ctx.emit(ir.Add(node.name, op, (ctx.name(a), neg), out))
    else:
        raise ctx.fail(node, f"{op} of two activations is not piecewise linear",
                       hint=REWRITE_HINT["Mul"])


@register("Add", "Sub", "Mul", "Div")
def arith(ctx: Ctx, node):
    a, b = node.input[0], node.input[1]
    op = node.op_type
    if ctx.is_act(a) and ctx.is_act(b):
        return _two_activations(ctx, node, a, b)
    act_first = ctx.is_act(a)
    x, c = (a, b) if act_first else (b, a)
    rank = len(ctx.shape(x))
    cv = per_sample_const(ctx, node, ctx.const(node, c, "the constant operand"), rank)
    require_finite(ctx, node, cv)
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
    ctx.emit(ir.Affine(node.name, op, (ctx.name(x),), node.output[0],
                       scale=np.asarray(scale, np.float64), shift=np.asarray(shift, np.float64)))


@register("Neg")
def neg(ctx: Ctx, node):
    ctx.emit(ir.Affine(node.name, node.op_type, (ctx.name(node.input[0]),), node.output[0],
                       scale=np.array(-1.0), shift=np.array(0.0)))


@register("Sum")
def sum_(ctx: Ctx, node):
    acts = activation_inputs(ctx, node)
    rank = len(ctx.shape(acts[0]))
    cur = ctx.name(acts[0])
    consts = [i for i in node.input if i and not ctx.is_act(i)]
    for k, t in enumerate(acts[1:]):
        last = k == len(acts) - 2 and not consts
        cur = ctx.emit(ir.Add(node.name, node.op_type, (cur, ctx.name(t)),
                              node.output[0] if last else ctx.fresh(node.output[0])))
    if consts:
        c = sum(per_sample_const(ctx, node, ctx.const(node, i), rank) for i in consts)
        ctx.emit(ir.Affine(node.name, node.op_type, (cur,), node.output[0], scale=np.array(1.0),
                           shift=np.asarray(c, np.float64)))
    elif len(acts) == 1:
        ctx.set_alias(node.output[0], acts[0])


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
        require_finite(ctx, node, arr)
    bshape = (s[0],) + (1,) * (len(s) - 1)
    # the distribution the training data had after this node: mean B, std |scale| (estimates)
    ctx.priors[node.output[0]] = (bias, np.abs(sc) * np.sqrt(var / (var + eps)))
    ctx.emit(ir.Affine(node.name, node.op_type, (ctx.name(x),), node.output[0],
                       scale=a.reshape(bshape), shift=shift.reshape(bshape)))
