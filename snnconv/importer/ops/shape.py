"""Shape and wiring: Reshape, Shape, Flatten, Squeeze/Unsqueeze, Transpose, Concat, Pad, and the
ops that disappear (Identity, inference Dropout, float Cast).

No arithmetic happens here: every output value is a copy of one input value (or zero padding).
The batch axis must stay first and untouched; shapes computed from a dynamic batch are resolved
on probe values (see ``Ctx.probes``). Pad moved its pads from attributes to inputs at opset 11.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from ... import ir
from ..context import Ctx
from ..registry import register
from .common import reshape_to


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
    reshape_to(ctx, node, shape)


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
    reshape_to(ctx, node, (math.prod(s),))


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
    reshape_to(ctx, node, out[1:])


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


def _check_pad_mode(ctx: Ctx, node) -> int:
    """The full rank, after refusing padding modes other than constant."""
    mode = ctx.attr(node, "mode", "constant")
    if mode != "constant":
        raise ctx.fail(node, f"Pad mode '{mode}' is not supported (constant zeros are)")
    return len(ctx.shape(node.input[0])) + 1


def _pad(ctx: Ctx, node, rank: int, pads, value: float, axes) -> None:
    """Zero padding of the spatial axes (2 and up) of the listed axes; an alias if none."""
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


@register("Pad")
def pad_v1(ctx: Ctx, node):
    """Pads and value as attributes, over all axes."""
    rank = _check_pad_mode(ctx, node)
    _pad(ctx, node, rank, list(ctx.attr(node, "pads")), float(ctx.attr(node, "value", 0.0)),
         list(range(rank)))


@register("Pad", since=11)
def pad_v11(ctx: Ctx, node):
    """Pads, value and (opset 18) axes as inputs 1 to 3."""
    rank = _check_pad_mode(ctx, node)
    pads = ctx.const(node, node.input[1], "pads").reshape(-1).tolist()
    v = ctx.opt_const(node, 2)
    value = 0.0 if v is None else float(np.asarray(v).reshape(()))
    ax = ctx.opt_const(node, 3)
    axes = list(range(rank)) if ax is None else [int(a) % rank for a in ax.reshape(-1)]
    _pad(ctx, node, rank, pads, value, axes)


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
    to = ctx.attr(node, "to")
    if to not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
        raise ctx.fail(node, "casts the activation to a non-float type")
    ctx.set_alias(node.output[0], node.input[0])
