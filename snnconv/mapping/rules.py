"""Rewrite rules of a synapse chain: adjacent ops that fold into one (a scale into a kernel, a pad
into a convolution's padding, moves into a dense matrix), and ops that do nothing.

A rule is (name, applies(a, b), rewrite(ops, i)): the first rule that applies to the pair
``ops[i], ops[i + 1]`` rewrites the chain, or declines with None (then the next pair is tried).
Order matters only where two rules apply to one pair; none do today.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..snn import (
    ConvOp, ConvTransposeOp, DenseOp, Op, PadOp, ReshapeOp, ScaleOp, SelectOp, SumPoolOp,
    TransposeOp, chain_apply,
)
from .arrays import column, compress, full, per_channel

#: Ops that only move, copy, pad or scale entries: a dense map after them absorbs them.
MOVES = ("scale", "reshape", "place", "pad", "transpose", "select")

Rewrite = Callable[[list[Op], int], "list[Op] | None"]


def apply_np(op: Op, a: np.ndarray) -> np.ndarray:
    """One op applied to a per-sample numpy array (a bias or a scale riding along)."""
    x = torch.as_tensor(full(a, op.in_shape))[None]
    return chain_apply([op], x)[0].numpy()


def _pairwise(fn: Callable[[Op, Op], list[Op] | None]) -> Rewrite:
    """A rewrite of the pair ops[i], ops[i + 1] alone."""
    def rewrite(ops: list[Op], i: int) -> list[Op] | None:
        new = fn(ops[i], ops[i + 1])
        return None if new is None else ops[:i] + new + ops[i + 2:]
    return rewrite


def _kinds(ka: str, kb: str | tuple[str, ...]) -> Callable[[Op, Op], bool]:
    kb = (kb,) if isinstance(kb, str) else kb
    return lambda a, b: a.kind == ka and b.kind in kb


def _grows(pad: PadOp) -> bool:
    """Zero padding composes with a conv's own padding by adding the amounts; a crop (negative
    amount) does not: it removes inputs the conv would otherwise read."""
    return min(pad.pads_begin, default=0) >= 0 and min(pad.pads_end, default=0) >= 0


def _pool_kw(p: SumPoolOp) -> dict:
    return dict(kernel=p.kernel, stride=p.stride, pads_begin=p.pads_begin, pads_end=p.pads_end,
                dilation=p.dilation, out_spatial=p.out_spatial)


def _convt(a: ConvTransposeOp, in_shape, weight) -> ConvTransposeOp:
    return ConvTransposeOp(in_shape, weight=weight, stride=a.stride, pads_begin=a.pads_begin,
                           pads_end=a.pads_end, dilation=a.dilation,
                           output_padding=a.output_padding, groups=a.groups)


def _conv(c: ConvOp, in_shape, weight, groups=None) -> ConvOp:
    return ConvOp(in_shape, weight=weight, stride=c.stride, pads_begin=c.pads_begin,
                  pads_end=c.pads_end, dilation=c.dilation,
                  groups=c.groups if groups is None else groups)


# --- pair rewrites --------------------------------------------------------------------------------

def _scale_scale(a: ScaleOp, b: ScaleOp):
    return [ScaleOp(a.in_shape, scale=compress(full(a.scale, a.in_shape) * b.scale, a.in_shape))]


def _scale_conv(a: ScaleOp, b: ConvOp):
    """conv(s * x) for a per-input-channel s: scale the kernel's input channels."""
    s = per_channel(a.scale, a.in_shape)
    if s is None:
        return None
    w = b.weight.copy()
    cin_g = w.shape[1]
    cout_g = w.shape[0] // b.groups
    for g in range(b.groups):
        sl = s[g * cin_g:(g + 1) * cin_g].reshape((1, cin_g) + (1,) * (w.ndim - 2))
        w[g * cout_g:(g + 1) * cout_g] *= sl
    return [_conv(b, a.in_shape, w)]


def _first_axis_scaled(op, s: np.ndarray) -> np.ndarray:
    """The kernel with its first axis (conv: output, convtranspose: input channels) scaled."""
    return op.weight * s.reshape(column(op.weight.shape))


def _conv_scale(a: ConvOp, b: ScaleOp):
    s = per_channel(b.scale, b.in_shape)
    return None if s is None else [_conv(a, a.in_shape, _first_axis_scaled(a, s))]


def _dense_scale(a: DenseOp, b: ScaleOp):
    return [DenseOp(a.in_shape, weight=a.weight * full(b.scale, b.in_shape)[:, None])]


def _sumpool_scale(a: SumPoolOp, b: ScaleOp):
    return [SumPoolOp(a.in_shape, **_pool_kw(a),
                      scale=compress(full(a.scale, a.out_shape) * b.scale, a.out_shape))]


def _scale_sumpool(a: ScaleOp, b: SumPoolOp):
    s = per_channel(a.scale, a.in_shape)
    if s is None:
        return None
    sc = full(b.scale, b.out_shape) * s.reshape(column(b.out_shape))
    return [SumPoolOp(a.in_shape, **_pool_kw(b), scale=compress(sc, b.out_shape))]


def _added_pads(a: PadOp, b) -> dict:
    return dict(pads_begin=tuple(x + y for x, y in zip(a.pads_begin, b.pads_begin)),
                pads_end=tuple(x + y for x, y in zip(a.pads_end, b.pads_end)))


def _pad_conv(a: PadOp, b: ConvOp):
    return [ConvOp(a.in_shape, weight=b.weight, stride=b.stride, dilation=b.dilation,
                   groups=b.groups, **_added_pads(a, b))]


def _pad_sumpool(a: PadOp, b: SumPoolOp):
    kw = _pool_kw(b)
    kw.update(_added_pads(a, b))
    return [SumPoolOp(a.in_shape, **kw, scale=b.scale)]


def _place_conv(a, b: ConvOp):
    """A conv over a channel concatenation reads only this part's slice of its kernel."""
    return [_conv(b, a.in_shape, b.weight[:, a.offset:a.offset + a.in_shape[0]].copy(), 1)]


def _reshape_reshape(a: ReshapeOp, b: ReshapeOp):
    return [ReshapeOp(a.in_shape, shape=b.shape)]


def _scale_move(a: ScaleOp, b):
    """A pure move: the scale moves with its entries, towards the next weighted map."""
    return [b, ScaleOp(b.out_shape, scale=compress(apply_np(b, a.scale), b.out_shape))]


def _transpose_transpose(a: TransposeOp, b: TransposeOp):
    return [TransposeOp(a.in_shape, perm=tuple(a.perm[p] for p in b.perm))]


def _select_conv(a: SelectOp, b: ConvOp):
    """conv(x[index]) along channels: each selected channel's kernel slice moves to its source
    channel (summed where a channel is selected twice)."""
    w = np.zeros((b.weight.shape[0], a.in_shape[0], *b.weight.shape[2:]))
    np.add.at(w.transpose(1, 0, *range(2, w.ndim)), np.asarray(a.index),
              b.weight.transpose(1, 0, *range(2, w.ndim)))
    return [_conv(b, a.in_shape, w, 1)]


def _scale_convt(a: ScaleOp, b: ConvTransposeOp):
    s = per_channel(a.scale, a.in_shape)
    return None if s is None else [_convt(b, a.in_shape, _first_axis_scaled(b, s))]


def _convt_scale(a: ConvTransposeOp, b: ScaleOp):
    s = per_channel(b.scale, b.in_shape)
    if s is None:
        return None
    w = a.weight.reshape(a.groups, -1, *a.weight.shape[1:]) * s.reshape(
        (a.groups, 1, -1) + (1,) * (a.weight.ndim - 2))
    return [_convt(a, a.in_shape, w.reshape(a.weight.shape))]


def _moves_into_dense(ops: list[Op], i: int) -> list[Op]:
    """Fold the run of moves/pads/scales ending at ops[i] into the dense map ops[i + 1]'s columns
    (each input lands once)."""
    j = i
    while j > 0 and ops[j - 1].kind in MOVES:
        j -= 1
    prefix, dense = ops[j:i + 1], ops[i + 1]
    src = prefix[0].in_shape
    n = int(np.prod(src))
    moved = torch.arange(1, n + 1, dtype=torch.float64).reshape(1, *src)
    for op in prefix:
        moved = moved if op.kind == "scale" else op.apply(moved)
    moved = moved.reshape(-1).numpy().astype(np.int64)
    mult = chain_apply(prefix, torch.ones((1, *src), dtype=torch.float64)).reshape(-1).numpy()
    w = np.zeros((dense.weight.shape[0], n))
    hit = moved > 0
    np.add.at(w.T, moved[hit] - 1, (dense.weight * mult[None, :]).T[hit])
    return ops[:j] + [DenseOp(tuple(src), weight=w)] + ops[i + 2:]


#: The pair rules, in the order they are tried.
RULES: list[tuple[str, Callable[[Op, Op], bool], Rewrite]] = [
    ("scale scale", _kinds("scale", "scale"), _pairwise(_scale_scale)),
    ("scale into conv", _kinds("scale", "conv"), _pairwise(_scale_conv)),
    ("conv scale", _kinds("conv", "scale"), _pairwise(_conv_scale)),
    ("dense scale", _kinds("dense", "scale"), _pairwise(_dense_scale)),
    ("sumpool scale", _kinds("sumpool", "scale"), _pairwise(_sumpool_scale)),
    ("scale into sumpool", _kinds("scale", "sumpool"), _pairwise(_scale_sumpool)),
    ("pad into conv", lambda a, b: _kinds("pad", "conv")(a, b) and _grows(a),
     _pairwise(_pad_conv)),
    ("pad into sumpool", lambda a, b: _kinds("pad", "sumpool")(a, b) and _grows(a),
     _pairwise(_pad_sumpool)),
    ("place into conv", lambda a, b: _kinds("place", "conv")(a, b) and a.axis == 0
     and b.groups == 1, _pairwise(_place_conv)),
    ("reshape reshape", _kinds("reshape", "reshape"), _pairwise(_reshape_reshape)),
    ("scale past a move", _kinds("scale", ("transpose", "select")), _pairwise(_scale_move)),
    ("transpose transpose", _kinds("transpose", "transpose"), _pairwise(_transpose_transpose)),
    ("select into conv", lambda a, b: _kinds("select", "conv")(a, b) and a.axis == 0
     and b.groups == 1, _pairwise(_select_conv)),
    ("scale into convtranspose", _kinds("scale", "convtranspose"), _pairwise(_scale_convt)),
    ("convtranspose scale", _kinds("convtranspose", "scale"), _pairwise(_convt_scale)),
    ("moves into dense", lambda a, b: b.kind == "dense" and a.kind in MOVES, _moves_into_dense),
]

#: Ops that leave their input unchanged: dropped from a chain.
NOOPS: list[tuple[str, Callable[[Op], bool]]] = [
    ("unit scale", lambda op: op.kind == "scale" and bool(np.all(op.scale == 1.0))),
    ("same-shape reshape", lambda op: op.kind == "reshape"
     and tuple(op.shape) == tuple(op.in_shape)),
    ("identity transpose", lambda op: op.kind == "transpose"
     and tuple(op.perm) == tuple(range(len(op.perm)))),
    ("select everything", lambda op: op.kind == "select"
     and tuple(op.index) == tuple(range(op.in_shape[op.axis]))),
]


def simplify_once(ops: list[Op]) -> list[Op] | None:
    """The chain after the first rule that rewrites it, or None if none does."""
    for i in range(len(ops) - 1):
        a, b = ops[i], ops[i + 1]
        rule = next((r for r in RULES if r[1](a, b)), None)
        if rule is not None:
            new = rule[2](ops, i)
            if new is not None:
                return new
    for i, op in enumerate(ops):
        if any(is_noop(op) for _, is_noop in NOOPS):
            return ops[:i] + ops[i + 1:]
    return None
