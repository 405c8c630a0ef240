"""Max-pooling as spike-time pooling (spec section 3).

A pool of one layer's value takes the earliest spike (the latest, per channel, where the value is
negated); a pool of a channel concatenation pools each part. A pool of a signed expression waits,
``Pending``, for the monotone activation after it (they commute) and then pools that activation's
spikes. If anything else reads the pooled tensor first, it is offset coded: a neuron layer carries
z + c, c from interval bounds so its ReLU never cuts in the input range, and the value is
pool - c (exact).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import ir
from ..snn import PlaceOp, PoolLayer, Relation, ScaleOp
from .arrays import column, compress, full, per_channel
from .expressions import Expr, Pending, Term, nonneg

if TYPE_CHECKING:
    from .mapper import Mapper


def pool_layer(m: Mapper, pool: ir.Pool, name: str, shape, source: str, minimum,
               relation: Relation | None = None) -> PoolLayer:
    """A pool layer with ``pool``'s window over ``source``'s spikes."""
    return m.add(PoolLayer(
        name, tuple(shape), source=source, kernel=pool.kernel, stride=pool.stride,
        pads_begin=pool.pads_begin, pads_end=pool.pads_end, dilation=pool.dilation,
        minimum=minimum, relation=relation))


def lower_maxpool(m: Mapper, n: ir.Pool, out_shape) -> Expr:
    e = m.resolved(n.inputs[0], n)
    out = _pool_single(m, n, e, out_shape)
    if out is None:
        out = _pool_channel_parts(m, n, e, out_shape)
    if out is None and nonneg(e):
        # a non-negative value that is no single layer's (e.g. an average or a sum of layers):
        # a neuron layer whose ReLU never cuts carries it, the pool then acts on its spikes
        carrier = m.neuron(e, n, None, suffix="/carry", note="input of a max-pool")
        out = _pool_single(m, n, Expr(e.shape, [Term(carrier.name, [])]), out_shape)
    if out is not None:
        return out
    return Expr(out_shape, [], np.array(0.0), Pending(n, e, np.zeros(e.shape[0], dtype=bool)))


def _pool_single(m: Mapper, n: ir.Pool, e: Expr, out_shape) -> Expr | None:
    """Max-pool of s_c * (one layer's value) + b_c: the earliest (s_c > 0) or latest (s_c < 0)
    spike of that layer, scaled after the pool."""
    b = per_channel(e.bias, e.shape)
    if len(e.terms) != 1 or b is None or not all(o.kind == "scale" for o in e.terms[0].ops):
        return None
    t = e.terms[0]
    s = per_channel(t.ops[0].scale, e.shape) if t.ops else np.ones(e.shape[0])
    if s is None:
        return None
    cs = column(e.shape)
    safe = np.where(s != 0, s, np.nan)
    rel = Relation(n.output, scale=compress((1.0 / safe).reshape(cs), out_shape),
                   shift=compress((-b / safe).reshape(cs), out_shape), note="pooled")
    pool = pool_layer(m, n, n.name or n.output, out_shape, m.layers[t.source].name, s < 0, rel)
    ops = [] if np.all(s == 1) else [ScaleOp(out_shape, scale=compress(
        s.reshape(cs), out_shape))]
    return Expr(out_shape, [Term(pool.name, ops)], compress(b.reshape(cs), out_shape))


def _pool_channel_parts(m: Mapper, n: ir.Pool, e: Expr, out_shape) -> Expr | None:
    """Max-pool of a channel concatenation of layer values: pool each part (pooling is per
    channel), then place the pooled parts; no neuron and no extra stage."""
    b = per_channel(e.bias, e.shape)
    if len(e.terms) < 2 or b is None:
        return None
    parts, covered = [], np.zeros(e.shape[0], dtype=int)
    for t in e.terms:
        if len(t.ops) != 1 or t.ops[0].kind != "place" or t.ops[0].axis != 0:
            return None
        op = t.ops[0]
        covered[op.offset:op.offset + op.in_shape[0]] += 1
        parts.append((t.source, op))
    if np.any(covered > 1):  # overlapping channels are sums: pool(a + b) != pool a + pool b
        return None
    terms = []
    for k, (src, op) in enumerate(parts):
        shape = (op.in_shape[0], *out_shape[1:])
        pool = pool_layer(m, n, f"{n.name or n.output}/part{k}", shape, src,
                          np.zeros(shape[0], dtype=bool))
        terms.append(Term(pool.name, [PlaceOp(shape, axis=0, offset=op.offset,
                                              total=e.shape[0])]))
    # channels no part covers hold the bias alone: the pool of a constant is that constant
    return Expr(out_shape, terms, compress(b.reshape(column(e.shape)), out_shape))


def affine_through_pool(m: Mapper, n: ir.Affine, e: Expr, s: np.ndarray, b: np.ndarray) -> Expr:
    """A per-channel ``s * pool(z) + b`` of a pending pool: pool(s * z + b), with the pool
    taking the minimum where s < 0."""
    p = e.pending
    cs = column(p.inner.shape)
    tmp = f"{n.output}::inner"
    m.exprs[tmp] = p.inner
    inner = m.linear(tmp, ScaleOp(p.inner.shape, scale=compress(
        s.reshape(cs), p.inner.shape)), n)
    inner.bias = compress(full(inner.bias, inner.shape) + b.reshape(cs), inner.shape)
    return Expr(e.shape, [], np.array(0.0), Pending(p.pool, inner, p.minimum ^ (s < 0)))


def activate_pending(m: Mapper, e: Expr, node: ir.Node, sign, shift, cap, suffix: str,
                     relation: Relation | None) -> str:
    """The activation of a pending pool: a neuron layer on the pool's input, then the pool of its
    spikes (max for an increasing activation, min for a decreasing one). ``shift`` is per
    channel. Returns the pool layer's name."""
    p = e.pending
    inner_shift = compress(per_channel(shift, e.shape).reshape(column(p.inner.shape)),
                           p.inner.shape)
    inner = m.neuron(p.inner, node, None, sign, inner_shift, cap, suffix=suffix)
    minimum = p.minimum if sign > 0 else ~p.minimum
    pool = pool_layer(m, p.pool, (node.name or node.output) + suffix + "/pool",
                      (p.inner.shape[0], *p.pool.out_spatial), inner.name, minimum.copy(),
                      relation)
    return pool.name


def offset_code(m: Mapper, name: str, e: Expr, node: ir.Node) -> Expr:
    """A pending pool made a pool layer now, by offset coding (see the module docstring)."""
    p = e.pending
    cs = column(p.inner.shape)
    lb = m.lower_bound(p.inner).reshape(p.inner.shape[0], -1).min(1)
    c = np.maximum(0.0, -lb)
    carrier = m.neuron(p.inner, node, None, shift=compress(c.reshape(cs), p.inner.shape),
                       suffix="/offset", label=p.pool.name or p.pool.output)
    rel = None
    if "::" not in name:
        rel = Relation(name, shift=compress(c.reshape(cs), e.shape),
                       note=f"offset coded (+{float(c.max()):.3g} at most)")
    pool = pool_layer(m, p.pool, p.pool.name or p.pool.output, e.shape, carrier.name,
                      p.minimum.copy(), rel)
    return Expr(e.shape, [Term(pool.name, [])], compress(-c.reshape(cs), e.shape))
