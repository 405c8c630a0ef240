"""Affine expressions over layer values, and the algebra of the synapse chains inside them.

A tensor is ``sum_k chain_k(value of layer k) + bias``: each term's chain is a list of synaptic ops
(spec section 2). Chains compose op by op and simplify by the rules in ``rules``; two weighted maps
in a row do not compose (except a small dense pair, fused exactly), which makes the mapper split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .. import ir
from ..snn import WEIGHTED, DenseOp, Op, ScaleOp, chain_apply
from .arrays import compress, full
from .rules import simplify_once

#: Fusing two dense maps materialises their product; above this many entries we split instead.
FUSE_LIMIT = 4_000_000


def simplify(ops: list[Op]) -> list[Op]:
    while True:
        new = simplify_once(ops)
        if new is None:
            return ops
        ops = new


def dense_matrix(ops: list[Op]) -> np.ndarray:
    """The matrix of a chain (out_size x in_size), by applying it to the identity."""
    src = ops[0].in_shape
    n = int(np.prod(src))
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *src)
    return chain_apply(ops, eye).reshape(n, -1).numpy().T.copy()


def compose(ops: list[Op], op: Op) -> list[Op] | None:
    """ops followed by op as one synapse chain, or None if that needs two weighted maps.

    A dense map after another weighted map is fused into one dense matrix when that matrix is
    small (exact); any other pair of weighted maps makes the caller split the signed value.
    """
    if op.kind in WEIGHTED:
        wi = next((i for i, o in enumerate(ops) if o.kind in WEIGHTED), None)
        if wi is not None:
            if op.kind != "dense":
                return None
            tail = ops[wi:]
            n_in = int(np.prod(tail[0].in_shape))
            n_mid = int(np.prod(op.in_shape))
            if n_in * n_mid > FUSE_LIMIT or n_in * op.weight.shape[0] > FUSE_LIMIT:
                return None
            fused = op.weight @ dense_matrix(tail)
            return simplify(ops[:wi] + [DenseOp(tail[0].in_shape, weight=fused)])
    return simplify(list(ops) + [op])


@dataclass
class Term:
    source: str
    ops: list[Op]


@dataclass
class Pending:
    """A max-pool of a signed expression, waiting for the monotone activation after it."""

    pool: ir.Pool
    inner: Expr
    minimum: np.ndarray  # per channel: True where the pool takes the minimum


@dataclass
class Expr:
    shape: tuple
    terms: list[Term]
    bias: np.ndarray = field(default_factory=lambda: np.array(0.0))
    pending: Pending | None = None


def nonneg(e: Expr) -> bool:
    """Layer values are >= 0, so non-negative maps and biases keep the value >= 0."""
    return bool(np.all(e.bias >= 0)) and all(o.nonneg() for t in e.terms for o in t.ops)


def scaled(e: Expr, scale, bias) -> Expr:
    """``scale * e + bias``, in place (no pending pool)."""
    scale = compress(scale, e.shape)
    if not np.all(scale == 1.0):
        e.terms = [Term(t.source, simplify(t.ops + [ScaleOp(e.shape, scale=scale)]))
                   for t in e.terms]
    e.bias = compress(full(e.bias, e.shape) * full(scale, e.shape) + full(bias, e.shape),
                      e.shape)
    return e


def combine(a: Expr, b: Expr, sign: float = 1.0) -> Expr:
    """a + sign * b (no pending pools)."""
    terms = list(a.terms) + [Term(t.source, t.ops if sign == 1.0 else simplify(
        list(t.ops) + [ScaleOp(b.shape, scale=np.array(sign))])) for t in b.terms]
    return Expr(a.shape, terms, compress(full(a.bias, a.shape) + sign * full(b.bias, a.shape),
                                         a.shape))


def plus_bias(e: Expr, bias: np.ndarray) -> Expr:
    """``e`` with a per-sample constant added to its bias, in place."""
    e.bias = compress(full(e.bias, e.shape) + bias, e.shape)
    return e
