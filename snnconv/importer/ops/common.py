"""Helpers several op families share: padding rules, constant operands, chains of IR nodes.

Handlers stay short by pushing the ONNX conventions that recur across ops (auto_pad, per-sample
constants, a node that becomes several IR nodes or a mere alias) into these few functions.
"""

from __future__ import annotations

import math

import numpy as np

from ... import ir
from ...errors import ModelImportError
from ..context import Ctx


def pads(ctx: Ctx, node, in_spatial, kernel, stride, dilation):
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


def per_sample_const(ctx: Ctx, node, c: np.ndarray, rank: int) -> np.ndarray:
    """A constant operand of a broadcasting op, aligned to a per-sample tensor of this rank."""
    c = np.asarray(c, dtype=np.float64)
    if c.ndim == rank + 1:
        if c.shape[0] != 1:
            raise ctx.fail(node, f"constant of shape {c.shape} varies along the batch axis")
        c = c[0]
    elif c.ndim > rank + 1:
        raise ctx.fail(node, f"constant of shape {c.shape} has a higher rank than the tensor")
    return c


def activation_inputs(ctx: Ctx, node):
    return [i for i in node.input if i and ctx.is_act(i)]


def require_finite(ctx: Ctx, node, w) -> None:
    """Weights, biases and constant operands must be finite numbers."""
    if not np.all(np.isfinite(w)):
        raise ctx.fail(node, "weights contain NaN or Inf", cls=ModelImportError)


def emit_steps(ctx: Ctx, node, x: str, steps, out: str) -> str:
    """Emit IR nodes (class, kwargs) one after another from x; the last one produces out."""
    cur = ctx.name(x)
    for k, (cls, kw) in enumerate(steps):
        name = out if k == len(steps) - 1 else ctx.fresh(out)
        cur = ctx.emit(cls(node.name, node.op_type, (cur,), name, **kw))
    if not steps:
        ctx.set_alias(out, x)
    return cur


def reshape_to(ctx: Ctx, node, shape, src=None) -> None:
    """Reshape the node's input (or src) to a per-sample shape; an alias if nothing changes."""
    x = node.input[0] if src is None else src
    shape = tuple(int(d) for d in shape)
    if shape == ctx.shape(x):
        ctx.set_alias(node.output[0], x)
        return
    ctx.emit(ir.Reshape(node.name, node.op_type, (ctx.name(x),), node.output[0], shape=shape))
