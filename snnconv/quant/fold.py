"""Synapse chains the integer model can hold: one array per chain, scales folded into it.

A group's chain is wiring (reshape, place, pad, transpose, select: free in hardware) around at
most one op that holds numbers. Equalisation factors and tick sizes arrive as per-element scales
at either end of a chain; they must end up inside that one array, so each scale is moved in
front of the wiring op before it (``SCALE_BEFORE``) until it meets the weighted op and
``mapping.simplify`` merges them. A chain that still holds two arrays becomes one dense matrix.
"""

from __future__ import annotations


import numpy as np

from ..errors import UsageError
from ..mapping import compress, dense_matrix, full, simplify
from ..snn import SNN, WEIGHTED, DenseOp, Op, ReshapeOp, ScaleOp

#: Synapse ops the integer model holds: weighted maps and every wiring op (a permutation or
#: selection of lines is free in hardware; scales move through it to the weighted map).
INTEGER_OPS = ("conv", "dense", "sumpool", "scale", "reshape", "place", "pad", "transpose",
               "select")

#: a chain this large (inputs x outputs) is not turned into one dense matrix
DENSE_LIMIT = 8_000_000
#: rounds of simplify + sink before giving up on a shorter chain
FOLD_ROUNDS = 4


def check_supported(snn: SNN) -> None:
    """Refuse, before any work, a network whose synapses the integer model cannot hold."""
    for la in snn.layers:
        for g in getattr(la, "groups", []):
            bad = [o.kind for o in g.ops if o.kind not in INTEGER_OPS]
            if bad:
                raise UsageError(
                    f"layer {la.name} (input from {g.source}) uses {bad[0]} synapses, which the "
                    "integer model of finetune does not support yet",
                    hint="supported synapse ops: " + ", ".join(INTEGER_OPS) + "; the float "
                    ".snn model still converts, verifies and simulates")


def channel_full(a: np.ndarray, shape) -> np.ndarray:
    """A per-channel vector (or scalar) broadcast to a per-sample shape."""
    a = np.asarray(a, np.float64)
    if a.ndim == 0:
        return np.full(shape, float(a))
    return np.broadcast_to(a.reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()


# --- a scale after a wiring op as a scale before it (None: it cannot move) -----------------------

def _before_reshape(s: np.ndarray, op: Op) -> np.ndarray:
    return s.reshape(op.in_shape)


def _before_transpose(s: np.ndarray, op: Op) -> np.ndarray:
    return s.transpose(np.argsort(op.perm))


def _before_place(s: np.ndarray, op: Op) -> np.ndarray:
    idx = [slice(None)] * len(op.in_shape)
    idx[op.axis] = slice(op.offset, op.offset + op.in_shape[op.axis])
    return s[tuple(idx)]


def _before_pad(s: np.ndarray, op: Op) -> np.ndarray | None:
    if min(op.pads_begin, default=0) < 0 or min(op.pads_end, default=0) < 0:
        return None
    idx = [slice(None)] + [slice(pb, pb + n) for pb, n in zip(op.pads_begin, op.in_shape[1:])]
    return s[tuple(idx)]


def _before_select(s: np.ndarray, sel: Op) -> np.ndarray | None:
    """Every copy of an input must carry the same factor (inputs no output copies get 1). None
    if copies disagree."""
    s_in = np.ones(sel.in_shape)
    seen = np.zeros(sel.in_shape[sel.axis], bool)
    for j, i in enumerate(sel.index):
        v = np.take(s, j, axis=sel.axis)
        if seen[i] and not np.array_equal(np.take(s_in, i, axis=sel.axis), v):
            return None
        idx = [slice(None)] * len(sel.in_shape)
        idx[sel.axis] = i
        s_in[tuple(idx)] = v
        seen[i] = True
    return s_in


SCALE_BEFORE = {"reshape": _before_reshape, "transpose": _before_transpose,
                "place": _before_place, "pad": _before_pad, "select": _before_select}


def _sink_scales(ops: list[Op]) -> list[Op]:
    """Move every scale that follows a wiring op in front of it (so it can meet the weighted
    op and fold into it)."""
    ops = list(ops)
    changed = True
    while changed:
        changed = False
        for i in range(1, len(ops)):
            a, b = ops[i - 1], ops[i]
            if b.kind != "scale" or a.kind not in SCALE_BEFORE:
                continue
            s_in = SCALE_BEFORE[a.kind](full(b.scale, b.in_shape), a)
            if s_in is None:
                continue
            ops = ops[:i - 1] + [ScaleOp(tuple(a.in_shape), scale=compress(s_in, a.in_shape)),
                                 a] + ops[i + 1:]
            changed = True
            break
    return ops


def fold_chain(ops: list[Op], in_shape, out_shape, s_in=None, s_out=None,
               dense_limit: int = DENSE_LIMIT) -> list[Op]:
    """``s_out * chain(s_in * x)`` as one chain with at most one op that holds an array."""
    ops = list(ops)
    if s_in is not None:
        ops = [ScaleOp(tuple(in_shape), scale=compress(s_in, in_shape))] + ops
    if s_out is not None:
        ops = ops + [ScaleOp(tuple(out_shape), scale=compress(s_out, out_shape))]
    for _ in range(FOLD_ROUNDS):
        new = simplify(_sink_scales(simplify(ops)))
        if [o.kind for o in new] == [o.kind for o in ops]:
            ops = new
            break
        ops = new
    holders = [o for o in ops if o.kind in WEIGHTED or o.kind == "scale"]
    if len(holders) <= 1:
        return ops
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    if n_in * n_out > dense_limit:
        raise UsageError(f"a synapse chain ({' -> '.join(o.kind for o in ops)}) cannot be "
                         "written as one integer weight array")
    out = [DenseOp(tuple(in_shape), weight=dense_matrix(ops))]
    if len(out_shape) != 1:
        out.append(ReshapeOp((n_out,), shape=tuple(out_shape)))
    return out
