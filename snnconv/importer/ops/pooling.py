"""Pooling: MaxPool, AveragePool, their global forms, and ReduceMean/ReduceMax over space.

All become one IR Pool node (a reduction over spatial axes only, so batch and channels stay
apart). ReduceMean/ReduceMax moved their axes from an attribute to an input at opset 18.
"""

from __future__ import annotations

from ... import ir
from ..context import Ctx
from ..registry import register
from .common import pads


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
    pb, pe = pads(ctx, node, s[1:], ks, stride, dil)
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


def _reduce(ctx: Ctx, node, axes) -> None:
    """Reduce over the given axes (None or empty: all, unless noop_with_empty_axes)."""
    rank = len(ctx.shape(node.input[0])) + 1
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


@register("ReduceMean", "ReduceMax")
def reduce_v1(ctx: Ctx, node):
    """Axes as an attribute."""
    _reduce(ctx, node, ctx.attr(node, "axes", None))


@register("ReduceMean", "ReduceMax", since=18)
def reduce_v18(ctx: Ctx, node):
    """Axes as the optional constant input 1."""
    has_axes = len(node.input) > 1 and node.input[1]
    _reduce(ctx, node, ctx.const(node, node.input[1], "axes").reshape(-1).tolist()
            if has_axes else None)
