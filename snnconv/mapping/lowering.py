"""Lowering of each IR node type to the mapper's moves, and the table ``LOWERING`` that the
mapper dispatches on (keyed by node class; a node type missing here is an ``UnmappedNodeError``).

Linear and layout nodes become a synaptic op on the expression (``Mapper.linear``); the
activations are in ``activations``, the max-pool in ``maxpool``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .. import ir
from ..snn import (
    ConvOp, ConvTransposeOp, DenseOp, PadOp, PlaceOp, ReshapeOp, ScaleOp, SelectOp, SumPoolOp,
    TransposeOp,
)
from .activations import lower_abs, lower_clip, lower_extremum, lower_prelu, lower_relu
from .arrays import column, compress, per_channel
from .expressions import Expr, combine, plus_bias
from .maxpool import affine_through_pool, lower_maxpool

if TYPE_CHECKING:
    from .mapper import Mapper


def lower_conv(m: Mapper, n: ir.Conv) -> Expr:
    e = m.exprs[n.inputs[0]]
    op = ConvOp(e.shape, weight=n.weight, stride=n.stride, pads_begin=n.pads_begin,
                pads_end=n.pads_end, dilation=n.dilation, groups=n.group)
    out = m.linear(n.inputs[0], op, n)
    return out if n.bias is None else plus_bias(out, n.bias.reshape(column(out.shape)))


def lower_convtranspose(m: Mapper, n: ir.ConvTranspose) -> Expr:
    e = m.exprs[n.inputs[0]]
    op = ConvTransposeOp(e.shape, weight=n.weight, stride=n.stride, pads_begin=n.pads_begin,
                         pads_end=n.pads_end, dilation=n.dilation,
                         output_padding=n.output_padding, groups=n.group)
    out = m.linear(n.inputs[0], op, n)
    return out if n.bias is None else plus_bias(out, n.bias.reshape(column(out.shape)))


def lower_dense(m: Mapper, n: ir.Dense) -> Expr:
    e = m.exprs[n.inputs[0]]
    out = m.linear(n.inputs[0], DenseOp(e.shape, weight=n.weight), n)
    return out if n.bias is None else plus_bias(out, n.bias)


def lower_affine(m: Mapper, n: ir.Affine) -> Expr:
    e = m.exprs[n.inputs[0]]
    scale = compress(n.scale, e.shape)
    shift = compress(n.shift, e.shape)
    if e.pending is not None and (per_channel(scale, e.shape) is None or
                                  per_channel(shift, e.shape) is None):
        e = m.resolved(n.inputs[0], n)
    if e.pending is not None:
        return affine_through_pool(m, n, e, per_channel(scale, e.shape),
                                   per_channel(shift, e.shape))
    out = m.linear(n.inputs[0], ScaleOp(e.shape, scale=scale), n) \
        if not np.all(scale == 1.0) else Expr(e.shape, list(e.terms), e.bias)
    return plus_bias(out, shift)


def lower_pool(m: Mapper, n: ir.Pool) -> Expr:
    e = m.exprs[n.inputs[0]]
    out_shape = (e.shape[0], *n.out_spatial)
    if n.kind != "avg":
        return lower_maxpool(m, n, out_shape)
    op = SumPoolOp(e.shape, kernel=n.kernel, stride=n.stride, pads_begin=n.pads_begin,
                   pads_end=n.pads_end, dilation=n.dilation, out_spatial=n.out_spatial,
                   scale=compress(1.0 / n.divisor(), out_shape))
    return m.linear(n.inputs[0], op, n)


def lower_add(m: Mapper, n: ir.Add) -> Expr:
    a, b = (m.resolved(i, n) for i in n.inputs)
    return combine(a, b)


def lower_concat(m: Mapper, n: ir.Concat) -> Expr:
    total = sum(m.exprs[i].shape[n.axis] for i in n.inputs)
    out, off = None, 0
    for name in n.inputs:
        e = m.exprs[name]
        part = m.linear(name, PlaceOp(e.shape, axis=n.axis, offset=off, total=total), n)
        off += e.shape[n.axis]
        out = part if out is None else combine(out, part)
    return out


def lower_reshape(m: Mapper, n: ir.Reshape) -> Expr:
    e = m.exprs[n.inputs[0]]
    return m.linear(n.inputs[0], ReshapeOp(e.shape, shape=tuple(n.shape)), n)


def lower_pad(m: Mapper, n: ir.Pad) -> Expr:
    e = m.exprs[n.inputs[0]]
    return m.linear(n.inputs[0], PadOp(e.shape, pads_begin=n.pads_begin,
                                       pads_end=n.pads_end), n)


def lower_transpose(m: Mapper, n: ir.Transpose) -> Expr:
    e = m.exprs[n.inputs[0]]
    return m.linear(n.inputs[0], TransposeOp(e.shape, perm=tuple(n.perm)), n)


def lower_select(m: Mapper, n: ir.Select) -> Expr:
    e = m.exprs[n.inputs[0]]
    return m.linear(n.inputs[0], SelectOp(e.shape, axis=n.axis, index=tuple(n.index)), n)


#: How each IR node type becomes expressions and layers.
LOWERING: dict[type[ir.Node], Callable[[Mapper, ir.Node], Expr]] = {
    ir.Conv: lower_conv,
    ir.ConvTranspose: lower_convtranspose,
    ir.Dense: lower_dense,
    ir.Affine: lower_affine,
    ir.Pool: lower_pool,
    ir.Add: lower_add,
    ir.Concat: lower_concat,
    ir.Reshape: lower_reshape,
    ir.Pad: lower_pad,
    ir.Transpose: lower_transpose,
    ir.Select: lower_select,
    ir.Relu: lower_relu,
    ir.Clip: lower_clip,
    ir.PRelu: lower_prelu,
    ir.Abs: lower_abs,
    ir.Extremum: lower_extremum,
}
