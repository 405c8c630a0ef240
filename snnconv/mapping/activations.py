"""Lowering of the piecewise-linear activations: each is a sum of monotone pieces
``out_bias + out_scale * clip(sign * x + shift, 0, cap)``, one neuron layer per piece
(``Mapper.activation``), except where a piece is the identity or a cap on an existing layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import ir
from ..snn import NeuronLayer, Relation
from .arrays import compress
from .expressions import Expr, combine, nonneg
from .finish import describe

if TYPE_CHECKING:
    from .mapper import Mapper


def lower_relu(m: Mapper, n: ir.Relu) -> Expr:
    return m.activation(n.inputs[0], n)


def lower_clip(m: Mapper, n: ir.Clip) -> Expr:
    lo, hi = n.lo, n.hi
    if lo is None and hi is None:
        return m.exprs[n.inputs[0]]
    if lo is None:  # min(z, hi) = hi - relu(hi - z), or a cap on the layer carrying z
        short = _bound_of_layer(m, n.inputs[0], n, np.array(hi), mx=False)
        if short is not None:
            return short
        return m.activation(n.inputs[0], n, sign=-1, shift=hi, out_scale=-1.0, out_bias=hi)
    cap = None if hi is None else hi - lo
    return m.activation(n.inputs[0], n, shift=-lo, cap=cap, out_bias=lo)


def lower_prelu(m: Mapper, n: ir.PRelu) -> Expr:
    """LeakyRelu / PRelu(x) = relu(x) - a relu(-x) (spec section 3)."""
    return _split_pieces(m, n, -np.asarray(n.slope, np.float64))


def lower_abs(m: Mapper, n: ir.Abs) -> Expr:
    """|x| = relu(x) + relu(-x)."""
    return _split_pieces(m, n, 1.0)


def lower_extremum(m: Mapper, n: ir.Extremum) -> Expr:
    """max(x, y) = y + relu(x - y), min(x, y) = y - relu(y - x); with a constant c:
    c + relu(x - c) and c - relu(c - x)."""
    mx = n.kind == "max"
    cur = n.inputs[0]
    for k, other in enumerate(n.inputs[1:]):
        x, y = m.resolved(cur, n), m.resolved(other, n)
        d = f"{n.output}::d{k}"
        m.exprs[d] = combine(x, y, -1.0) if mx else combine(y, x, -1.0)
        r = m.activation(d, n, relation=None, suffix=f"/{n.kind}{k}")
        cur = f"{n.output}::{n.kind}{k}"
        m.exprs[cur] = combine(y, r, 1.0 if mx else -1.0)
    if n.const is None:
        return m.exprs[cur]
    c = compress(n.const, m.exprs[cur].shape)
    short = _bound_of_layer(m, cur, n, c, mx) if len(n.inputs) == 1 else None
    if short is not None:
        return short
    if mx:
        return m.activation(cur, n, shift=-c, out_bias=c)
    return m.activation(cur, n, sign=-1, shift=c, out_scale=-1.0, out_bias=c)


def _piece(tensor: str, sign: int, node: ir.Node) -> Relation | None:
    """Relation of a piece relu(sign * x) of ``node``, an activation of tensor x."""
    if "::" in tensor:
        return None
    return Relation(tensor, scale=np.array(float(sign)), note="positive part" if sign > 0
                    else "negative part", fused=(describe(node),))


def _split_pieces(m: Mapper, n: ir.Node, neg_scale) -> Expr:
    """relu(x) + neg_scale * relu(-x): two neuron layers from the same expression (a max-pool
    before it is pooled piece by piece: max for relu(x), min for relu(-x))."""
    x = n.inputs[0]
    e = m.exprs[x]
    neg_scale = compress(neg_scale, e.shape)
    if e.pending is None and nonneg(e):  # x >= 0: relu(-x) = 0
        return Expr(e.shape, list(e.terms), e.bias)
    pos = m.activation(x, n, relation=_piece(x, 1, n), suffix="+")
    if np.all(neg_scale == 0):
        return pos
    neg = m.activation(x, n, sign=-1, out_scale=neg_scale, relation=_piece(x, -1, n),
                       suffix="-")
    return combine(pos, neg)


def _bound_of_layer(m: Mapper, name: str, n: ir.Node, c: np.ndarray, mx: bool) -> Expr | None:
    """max/min of s * L + b and a constant, L >= 0 a neuron layer made for this tensor only:
    no new layer. It is s * L + b itself when the constant is on L's silent side
    (Max(Relu(x), 0)), else a cap on L (Relu then Min(., 6), ReLU6 as Min/Max pairs)."""
    e = m.exprs[name]
    if e.pending is not None or len(e.terms) != 1 or np.ndim(c) or np.ndim(e.bias):
        return None
    t = e.terms[0]
    layer = m.layers[t.source]
    if t.ops and (len(t.ops) > 1 or t.ops[0].kind != "scale" or np.ndim(t.ops[0].scale)):
        return None
    s = float(t.ops[0].scale) if t.ops else 1.0
    if not isinstance(layer, NeuronLayer) or s == 0:
        return None
    k = (float(c) - float(e.bias)) / s  # the constant in units of L
    if k <= 0 and mx == (s > 0):  # max with L's floor, or min with the ceiling of -L
        return Expr(e.shape, list(e.terms), e.bias)
    sole = [u for u in m.g.nodes if name in u.inputs] == [n]
    if k <= 0 or not sole or layer.relation is None or layer.relation.tensor != name:
        return None
    layer.cap = k if layer.cap is None else min(layer.cap, k)
    layer.saturating = True
    return Expr(e.shape, list(e.terms), e.bias)
