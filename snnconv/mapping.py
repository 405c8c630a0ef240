"""Mapping pass: IR graph -> TTFS layers (spec sections 2 and 3), before windows are chosen.

Every IR tensor is tracked as an affine expression over non-negative layer values,
``sum_k map_k(value of layer k) + bias``. Linear ops and affine maps act on the expression (folding
BatchNorm, input normalisation and average pooling into the synapses); a ReLU-like op turns an
expression into a neuron layer whose threshold is the negated bias. An expression that a linear op
cannot absorb (two weighted maps in a row with no ReLU between) is split into two neuron layers
carrying z+ and z- (exact: z = z+ - z-). Max-pooling acts on spike times directly when it pools a
layer's value; a max-pool of a signed expression waits for the ReLU after it (they commute).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import ir
from .errors import UnsupportedOpError
from .snn import (
    WEIGHTED, ConvOp, ConvTransposeOp, DenseOp, Group, InputLayer, Layer, NeuronLayer, Op, PadOp,
    PlaceOp, PoolLayer, ReadoutLayer, Relation, ReshapeOp, ScaleOp, SelectOp, SumPoolOp,
    TransposeOp, chain_apply, chain_interval,
)

#: Ops that only move, copy, pad or scale entries: a dense map after them absorbs them.
MOVES = ("scale", "reshape", "place", "pad", "transpose", "select")

#: Fusing two dense maps materialises their product; above this many entries we split instead.
FUSE_LIMIT = 4_000_000


# --- small array helpers --------------------------------------------------------------------------

def full(a, shape) -> np.ndarray:
    return np.broadcast_to(np.asarray(a, np.float64), shape).copy()


def compress(a: np.ndarray, shape) -> np.ndarray:
    """The smallest broadcastable form of a per-sample array: scalar, per-channel or full."""
    a = full(a, shape)
    if a.size == 0 or np.all(a == a.flat[0]):
        return np.array(a.flat[0] if a.size else 0.0)
    if len(shape) > 1:
        per_c = a[(slice(None),) + (slice(0, 1),) * (len(shape) - 1)]
        if np.all(a == per_c):
            return per_c.copy()
    return a


def per_channel(a, shape) -> np.ndarray | None:
    """The (C,) vector if ``a`` varies only along axis 0 of ``shape``, else None."""
    a = compress(a, shape)
    if a.ndim == 0:
        return np.full(shape[0], float(a))
    if len(shape) == 1 or all(d == 1 for d in a.shape[1:]):
        return a.reshape(shape[0]) if a.shape[0] == shape[0] else None
    return None


def _apply_np(op: Op, a: np.ndarray) -> np.ndarray:
    x = torch.as_tensor(full(a, op.in_shape))[None]
    return chain_apply([op], x)[0].numpy()


def op_nonneg(op: Op) -> bool:
    if op.kind in ("conv", "dense", "convtranspose"):
        return bool(np.all(op.weight >= 0))
    if op.kind in ("scale", "sumpool"):
        return bool(np.all(op.scale >= 0))
    return True


# --- composing synaptic maps ----------------------------------------------------------------------

def _fold_in_channels(conv: ConvOp, s: np.ndarray) -> ConvOp:
    """conv(s * x) for a per-input-channel s: scale the kernel's input channels."""
    w = conv.weight.copy()
    cin_g = w.shape[1]
    cout_g = w.shape[0] // conv.groups
    for g in range(conv.groups):
        sl = s[g * cin_g:(g + 1) * cin_g].reshape((1, cin_g) + (1,) * (w.ndim - 2))
        w[g * cout_g:(g + 1) * cout_g] *= sl
    return ConvOp(conv.in_shape, weight=w, stride=conv.stride, pads_begin=conv.pads_begin,
                  pads_end=conv.pads_end, dilation=conv.dilation, groups=conv.groups)


def _select_into_conv(sel: SelectOp, conv: ConvOp) -> ConvOp:
    """conv(x[index]) along channels: each selected channel's kernel slice moves to its source
    channel (summed where a channel is selected twice)."""
    w = np.zeros((conv.weight.shape[0], sel.in_shape[0], *conv.weight.shape[2:]))
    np.add.at(w.transpose(1, 0, *range(2, w.ndim)), np.asarray(sel.index),
              conv.weight.transpose(1, 0, *range(2, w.ndim)))
    return ConvOp(sel.in_shape, weight=w, stride=conv.stride, pads_begin=conv.pads_begin,
                  pads_end=conv.pads_end, dilation=conv.dilation, groups=1)


def _convt(a: ConvTransposeOp, in_shape, weight) -> ConvTransposeOp:
    return ConvTransposeOp(in_shape, weight=weight, stride=a.stride, pads_begin=a.pads_begin,
                           pads_end=a.pads_end, dilation=a.dilation,
                           output_padding=a.output_padding, groups=a.groups)


def _monomial_into_dense(prefix: list[Op], dense: DenseOp) -> DenseOp:
    """Fold moves/pads/scales before a dense map into its columns (each input lands once)."""
    src = prefix[0].in_shape
    n = int(np.prod(src))
    idx = torch.arange(1, n + 1, dtype=torch.float64).reshape(1, *src)
    moved = idx
    for op in prefix:
        moved = moved if op.kind == "scale" else op.apply(moved)
    moved = moved.reshape(-1).numpy().astype(np.int64)
    mult = chain_apply(prefix, torch.ones((1, *src), dtype=torch.float64)).reshape(-1).numpy()
    w = np.zeros((dense.weight.shape[0], n))
    hit = moved > 0
    np.add.at(w.T, moved[hit] - 1, (dense.weight * mult[None, :]).T[hit])
    return DenseOp(tuple(src), weight=w)


def _simplify_once(ops: list[Op]) -> list[Op] | None:
    for i in range(len(ops) - 1):
        a, b = ops[i], ops[i + 1]
        new = None
        if a.kind == "scale" and b.kind == "scale":
            new = [ScaleOp(a.in_shape, scale=compress(full(a.scale, a.in_shape) * b.scale,
                                                      a.in_shape))]
        elif a.kind == "scale" and b.kind == "conv":
            s = per_channel(a.scale, a.in_shape)
            if s is not None:
                new = [_fold_in_channels(b, s)]
                new[0].in_shape = a.in_shape
        elif a.kind == "conv" and b.kind == "scale":
            s = per_channel(b.scale, b.in_shape)
            if s is not None:
                w = a.weight * s.reshape((-1,) + (1,) * (a.weight.ndim - 1))
                new = [ConvOp(a.in_shape, weight=w, stride=a.stride, pads_begin=a.pads_begin,
                              pads_end=a.pads_end, dilation=a.dilation, groups=a.groups)]
        elif a.kind == "dense" and b.kind == "scale":
            s = full(b.scale, b.in_shape)
            new = [DenseOp(a.in_shape, weight=a.weight * s[:, None])]
        elif a.kind == "sumpool" and b.kind == "scale":
            new = [SumPoolOp(a.in_shape, **_pool_kw(a),
                             scale=compress(full(a.scale, a.out_shape) * b.scale, a.out_shape))]
        elif a.kind == "scale" and b.kind == "sumpool":
            s = per_channel(a.scale, a.in_shape)
            if s is not None:
                sc = full(b.scale, b.out_shape) * s.reshape((-1,) + (1,) * (len(b.out_shape) - 1))
                new = [SumPoolOp(a.in_shape, **_pool_kw(b), scale=compress(sc, b.out_shape))]
        elif a.kind == "pad" and b.kind == "conv" and _grows(a):
            new = [ConvOp(a.in_shape, weight=b.weight, stride=b.stride, dilation=b.dilation,
                          groups=b.groups,
                          pads_begin=tuple(x + y for x, y in zip(a.pads_begin, b.pads_begin)),
                          pads_end=tuple(x + y for x, y in zip(a.pads_end, b.pads_end)))]
        elif a.kind == "pad" and b.kind == "sumpool" and _grows(a):
            kw = _pool_kw(b)
            kw["pads_begin"] = tuple(x + y for x, y in zip(a.pads_begin, b.pads_begin))
            kw["pads_end"] = tuple(x + y for x, y in zip(a.pads_end, b.pads_end))
            new = [SumPoolOp(a.in_shape, **kw, scale=b.scale)]
        elif a.kind == "place" and a.axis == 0 and b.kind == "conv" and b.groups == 1:
            w = b.weight[:, a.offset:a.offset + a.in_shape[0]].copy()
            new = [ConvOp(a.in_shape, weight=w, stride=b.stride, pads_begin=b.pads_begin,
                          pads_end=b.pads_end, dilation=b.dilation, groups=1)]
        elif a.kind == "reshape" and b.kind == "reshape":
            new = [ReshapeOp(a.in_shape, shape=b.shape)]
        elif a.kind == "scale" and b.kind in ("transpose", "select"):
            # a pure move: the scale moves with its entries, towards the next weighted map
            new = [b, ScaleOp(b.out_shape, scale=compress(_apply_np(b, a.scale), b.out_shape))]
        elif a.kind == "transpose" and b.kind == "transpose":
            new = [TransposeOp(a.in_shape, perm=tuple(a.perm[p] for p in b.perm))]
        elif a.kind == "select" and a.axis == 0 and b.kind == "conv" and b.groups == 1:
            new = [_select_into_conv(a, b)]
        elif a.kind == "scale" and b.kind == "convtranspose":
            s = per_channel(a.scale, a.in_shape)
            if s is not None:
                w = b.weight * s.reshape((-1,) + (1,) * (b.weight.ndim - 1))
                new = [_convt(b, a.in_shape, w)]
        elif a.kind == "convtranspose" and b.kind == "scale":
            s = per_channel(b.scale, b.in_shape)
            if s is not None:
                w = a.weight.reshape(a.groups, -1, *a.weight.shape[1:]) * s.reshape(
                    (a.groups, 1, -1) + (1,) * (a.weight.ndim - 2))
                new = [_convt(a, a.in_shape, w.reshape(a.weight.shape))]
        elif b.kind == "dense" and a.kind in MOVES:
            j = i
            while j > 0 and ops[j - 1].kind in MOVES:
                j -= 1
            return ops[:j] + [_monomial_into_dense(ops[j:i + 1], b)] + ops[i + 2:]
        if new is not None:
            return ops[:i] + new + ops[i + 2:]
    for i, op in enumerate(ops):  # drop no-ops
        if (op.kind == "scale" and np.all(op.scale == 1.0)) or \
                (op.kind == "reshape" and tuple(op.shape) == tuple(op.in_shape)) or \
                (op.kind == "transpose" and tuple(op.perm) == tuple(range(len(op.perm)))) or \
                (op.kind == "select" and tuple(op.index) == tuple(range(op.in_shape[op.axis]))):
            return ops[:i] + ops[i + 1:]
    return None


def _grows(pad: PadOp) -> bool:
    """Zero padding composes with a conv's own padding by adding the amounts; a crop (negative
    amount) does not: it removes inputs the conv would otherwise read."""
    return min(pad.pads_begin, default=0) >= 0 and min(pad.pads_end, default=0) >= 0


def _pool_kw(p: SumPoolOp) -> dict:
    return dict(kernel=p.kernel, stride=p.stride, pads_begin=p.pads_begin, pads_end=p.pads_end,
                dilation=p.dilation, out_spatial=p.out_spatial)


def simplify(ops: list[Op]) -> list[Op]:
    while True:
        new = _simplify_once(ops)
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


# --- expressions ----------------------------------------------------------------------------------

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


OUTPUT = object()  # activation(): relate the layer to the node's output tensor


class Mapper:
    def __init__(self, graph: ir.Graph, lo: np.ndarray, hi: np.ndarray):
        self.g = graph
        self.layers: dict[str, Layer] = {}
        self.exprs: dict[str, Expr] = {}
        self._ival: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.file = graph.source
        shape = graph.input_shape
        lo, hi = compress(lo, shape), compress(hi, shape)
        span = compress(np.where(full(hi, shape) > full(lo, shape),
                                 full(hi, shape) - full(lo, shape), 1.0), shape)
        rel = Relation(graph.input, scale=compress(1.0 / span, shape),
                       shift=compress(-full(lo, shape) / span, shape), note="input, normalised")
        self.add(InputLayer("input", tuple(shape), lo=lo, hi=compress(full(lo, shape) + span,
                                                                         shape), relation=rel))
        self.exprs[graph.input] = Expr(tuple(shape), [Term("input", simplify(
            [ScaleOp(tuple(shape), scale=span)]))], bias=lo)

    # layers
    def add(self, layer: Layer) -> Layer:
        base, k = layer.name, 1
        while layer.name in self.layers:
            k += 1
            layer.name = f"{base}#{k}"
        self.layers[layer.name] = layer
        return layer

    def fail(self, node: ir.Node, msg: str, hint: str | None = None):
        return UnsupportedOpError(msg, file=self.file, node=node.name, op=node.op_type, hint=hint)

    # --- expression algebra -------------------------------------------------------------------
    def linear(self, name: str, op: Op, node: ir.Node) -> Expr:
        e = self.resolved(name, node)
        terms = []
        for t in e.terms:
            ops = compose(t.ops, op)
            if ops is None:
                self.split(name, node)
                return self.linear(name, op, node)
            terms.append(Term(t.source, ops))
        bias = compress(_apply_np(op, e.bias), op.out_shape)
        return Expr(tuple(op.out_shape), terms, bias)

    def split(self, name: str, node: ir.Node) -> None:
        """Carry a signed tensor by two neuron layers, z+ and z- (spec section 3)."""
        e = self.exprs[name]
        pos = self.neuron(e, node, name, sign=1, suffix="+", note="positive part", label=name)
        neg = self.neuron(e, node, name, sign=-1, suffix="-", note="negative part", label=name)
        self.exprs[name] = Expr(e.shape, [Term(pos.name, []), Term(neg.name, [ScaleOp(
            e.shape, scale=np.array(-1.0))])])

    def neuron(self, e: Expr, node: ir.Node, tensor: str | None, sign=1, shift=0.0,
               cap: float | None = None, suffix="", note="", label=None) -> NeuronLayer:
        """A layer with value clip(sign * e + shift, 0, cap)."""
        groups = []
        for t in e.terms:
            ops = t.ops if sign > 0 else simplify(list(t.ops) + [ScaleOp(e.shape,
                                                                         scale=np.array(-1.0))])
            groups.append(Group(t.source, ops))
        if not groups:
            raise self.fail(node, "the activation does not depend on the input",
                            hint="fold the constant branch into a constant before exporting")
        rel = None
        if tensor is not None and "::" not in tensor:
            rel = Relation(tensor, scale=np.array(float(sign)),
                           shift=compress(shift, e.shape), note=note)
        layer = NeuronLayer((label or node.name or node.output) + suffix, tuple(e.shape),
                            groups=groups,
                            theta_rel=compress(-(sign * full(e.bias, e.shape) +
                                                 full(shift, e.shape)), e.shape),
                            saturating=cap is not None, cap=cap, relation=rel)
        return self.add(layer)

    def activation(self, name: str, node: ir.Node, sign=1, shift=0.0, cap=None,
                   out_scale=1.0, out_bias=0.0, relation=OUTPUT, suffix="") -> Expr:
        """out_bias + out_scale * clip(sign * x + shift, 0, cap): one neuron layer (a monotone
        piece; non-monotone activations are sums of pieces). ``shift``, ``out_scale`` and
        ``out_bias`` broadcast to the tensor. ``relation``: how the layer's value relates to an
        ONNX tensor (default: through this node's output)."""
        e = self.exprs[name]
        shape = e.shape
        shift, out_scale, out_bias = (compress(a, shape) for a in (shift, out_scale, out_bias))
        if e.pending is not None and per_channel(shift, shape) is None:
            # a position-dependent shift does not commute with the pool: offset coding first
            e = self.resolved(name, node)
        rel = self._relation(node.output, out_scale, out_bias) if relation is OUTPUT \
            else relation
        if e.pending is not None:
            p = e.pending
            cs = (-1,) + (1,) * (len(p.inner.shape) - 1)
            inner_shift = compress(per_channel(shift, shape).reshape(cs), p.inner.shape)
            inner = self.neuron(p.inner, node, None, sign, inner_shift, cap, suffix=suffix)
            minimum = p.minimum if sign > 0 else ~p.minimum
            pool = self.add(PoolLayer(
                (node.name or node.output) + suffix + "/pool",
                (p.inner.shape[0], *p.pool.out_spatial),
                source=inner.name, kernel=p.pool.kernel, stride=p.pool.stride,
                pads_begin=p.pool.pads_begin, pads_end=p.pool.pads_end,
                dilation=p.pool.dilation, minimum=minimum.copy(), relation=rel))
            src = pool.name
        else:
            if sign > 0 and np.all(shift == 0) and cap is None and self._nonneg(e):
                # ReLU of a non-negative value is the identity: no neuron needed
                out = Expr(e.shape, [Term(t.source, t.ops) for t in e.terms], e.bias)
                return self._scaled(out, out_scale, out_bias)
            layer = self.neuron(e, node, None, sign, shift, cap, suffix=suffix)
            layer.relation = rel
            src = layer.name
        return self._scaled(Expr(e.shape, [Term(src, [])]), out_scale, out_bias)

    @staticmethod
    def _relation(tensor, out_scale, out_bias) -> Relation | None:
        if tensor is None or "::" in tensor or np.any(out_scale == 0):
            return None
        return Relation(tensor, scale=1.0 / np.asarray(out_scale, np.float64),
                        shift=-np.asarray(out_bias, np.float64) / out_scale)

    @staticmethod
    def _piece(tensor: str, sign: int, node: ir.Node) -> Relation | None:
        """Relation of a piece relu(sign * x) of ``node``, an activation of tensor x."""
        if "::" in tensor:
            return None
        return Relation(tensor, scale=np.array(float(sign)), note="positive part" if sign > 0
                        else "negative part", fused=(_describe(node),))

    @staticmethod
    def _scaled(e: Expr, scale, bias) -> Expr:
        scale = compress(scale, e.shape)
        if not np.all(scale == 1.0):
            e.terms = [Term(t.source, simplify(t.ops + [ScaleOp(e.shape, scale=scale)]))
                       for t in e.terms]
        e.bias = compress(full(e.bias, e.shape) * full(scale, e.shape) + full(bias, e.shape),
                          e.shape)
        return e

    @staticmethod
    def _sum(a: Expr, b: Expr, sign: float = 1.0) -> Expr:
        """a + sign * b (no pending pools)."""
        terms = list(a.terms) + [Term(t.source, t.ops if sign == 1.0 else simplify(
            list(t.ops) + [ScaleOp(b.shape, scale=np.array(sign))])) for t in b.terms]
        return Expr(a.shape, terms, compress(full(a.bias, a.shape) + sign * full(b.bias, a.shape),
                                             a.shape))

    # --- offset coding of max-pools over signed values (spec section 3) -------------------------
    def _intervals(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Guaranteed [lo, hi] of every layer built so far, for inputs in the input range."""
        for layer in self.layers.values():
            if layer.name in self._ival:
                continue
            if isinstance(layer, InputLayer):
                z = torch.zeros((1, *layer.shape), dtype=torch.float64)
                lo, hi = z, z + 1.0
            elif isinstance(layer, PoolLayer):
                slo, shi = self._ival[layer.source]
                lo, hi = layer.apply(slo), layer.apply(shi)
            elif isinstance(layer, NeuronLayer):
                zlo = zhi = 0.0
                for g in layer.groups:
                    a, b = chain_interval(g.ops, *self._ival[g.source])
                    zlo, zhi = zlo + a, zhi + b
                th = torch.as_tensor(full(layer.theta_rel, layer.shape))[None]
                lo = torch.clamp(zlo - th, 0.0, layer.cap)
                hi = torch.clamp(zhi - th, 0.0, layer.cap)
            else:
                continue
            self._ival[layer.name] = (lo, hi)
        return self._ival

    def lower_bound(self, e: Expr) -> np.ndarray:
        """A guaranteed lower bound of an expression, per entry (interval propagation)."""
        ival = self._intervals()
        lo = torch.as_tensor(full(e.bias, e.shape))[None]
        for t in e.terms:
            a, _ = chain_interval(t.ops, *ival[t.source])
            lo = lo + a
        return lo[0].numpy()

    def resolved(self, name: str, node: ir.Node) -> Expr:
        """The expression of ``name``; a pending max-pool of signed values z is first made a
        pool layer by offset coding: a neuron layer carries z + c, c >= -(lower bound of z) per
        channel from interval bounds, so its ReLU never cuts for inputs in the input range; the
        pool acts on its spikes and the value is pool - c (exact, spec section 3)."""
        e = self.exprs[name]
        if e.pending is None:
            return e
        p = e.pending
        cs = (-1,) + (1,) * (len(p.inner.shape) - 1)
        lb = self.lower_bound(p.inner).reshape(p.inner.shape[0], -1).min(1)
        c = np.maximum(0.0, -lb)
        carrier = self.neuron(p.inner, node, None, shift=compress(c.reshape(cs), p.inner.shape),
                              suffix="/offset", label=p.pool.name or p.pool.output)
        rel = None
        if "::" not in name:
            rel = Relation(name, shift=compress(c.reshape(cs), e.shape),
                           note=f"offset coded (+{float(c.max()):.3g} at most)")
        pool = self.add(PoolLayer(
            p.pool.name or p.pool.output, e.shape, source=carrier.name, kernel=p.pool.kernel,
            stride=p.pool.stride, pads_begin=p.pool.pads_begin, pads_end=p.pool.pads_end,
            dilation=p.pool.dilation, minimum=p.minimum.copy(), relation=rel))
        out = Expr(e.shape, [Term(pool.name, [])], compress(-c.reshape(cs), e.shape))
        self.exprs[name] = out
        return out

    # --- IR nodes -----------------------------------------------------------------------------
    def run(self) -> list[Layer]:
        for node in self.g.nodes:
            fn = getattr(self, "on_" + type(node).__name__.lower())
            self.exprs[node.output] = fn(node)
        out = self.resolved(self.g.output, self.g.nodes[-1])
        if not out.terms:
            raise UnsupportedOpError("the output does not depend on the input", file=self.file)
        readout = ReadoutLayer("output", tuple(out.shape),
                               groups=[Group(t.source, t.ops) for t in out.terms],
                               bias=compress(out.bias, out.shape),
                               relation=Relation(self.g.output, note="output logits"))
        self.add(readout)
        layers = self._prune()
        record_fused(layers, self.g)
        return layers

    def _prune(self) -> list[Layer]:
        """Drop layers the readout does not depend on (dead branches of the ONNX graph)."""
        layers = list(self.layers.values())
        needed = {layers[-1].name, "input"}
        for layer in reversed(layers):
            if layer.name in needed:
                needed.update(layer.sources())
        return [la for la in layers if la.name in needed]

    def on_conv(self, n: ir.Conv) -> Expr:
        e = self.exprs[n.inputs[0]]
        op = ConvOp(e.shape, weight=n.weight, stride=n.stride, pads_begin=n.pads_begin,
                    pads_end=n.pads_end, dilation=n.dilation, groups=n.group)
        out = self.linear(n.inputs[0], op, n)
        if n.bias is not None:
            out.bias = compress(full(out.bias, out.shape) + n.bias.reshape(
                (-1,) + (1,) * (len(out.shape) - 1)), out.shape)
        return out

    def on_dense(self, n: ir.Dense) -> Expr:
        e = self.exprs[n.inputs[0]]
        out = self.linear(n.inputs[0], DenseOp(e.shape, weight=n.weight), n)
        if n.bias is not None:
            out.bias = compress(full(out.bias, out.shape) + n.bias, out.shape)
        return out

    def on_affine(self, n: ir.Affine) -> Expr:
        e = self.exprs[n.inputs[0]]
        scale = compress(n.scale, e.shape)
        shift = compress(n.shift, e.shape)
        if e.pending is not None and (per_channel(scale, e.shape) is None or
                                      per_channel(shift, e.shape) is None):
            e = self.resolved(n.inputs[0], n)
        if e.pending is not None:
            s, b = per_channel(scale, e.shape), per_channel(shift, e.shape)
            p = e.pending
            cs = (-1,) + (1,) * (len(p.inner.shape) - 1)
            tmp = f"{n.output}::inner"
            self.exprs[tmp] = p.inner
            inner = self.linear(tmp, ScaleOp(p.inner.shape, scale=compress(
                s.reshape(cs), p.inner.shape)), n)
            inner.bias = compress(full(inner.bias, inner.shape) + b.reshape(cs), inner.shape)
            return Expr(e.shape, [], np.array(0.0), Pending(p.pool, inner, p.minimum ^ (s < 0)))
        out = self.linear(n.inputs[0], ScaleOp(e.shape, scale=scale), n) \
            if not np.all(scale == 1.0) else Expr(e.shape, list(e.terms), e.bias)
        out.bias = compress(full(out.bias, e.shape) + shift, e.shape)
        return out

    def on_relu(self, n: ir.Relu) -> Expr:
        return self.activation(n.inputs[0], n)

    def on_clip(self, n: ir.Clip) -> Expr:
        lo, hi = n.lo, n.hi
        if lo is None and hi is None:
            return self.exprs[n.inputs[0]]
        if lo is None:  # min(z, hi) = hi - relu(hi - z), or a cap on the layer carrying z
            short = self._bound_of_layer(n.inputs[0], n, np.array(hi), mx=False)
            if short is not None:
                return short
            return self.activation(n.inputs[0], n, sign=-1, shift=hi, out_scale=-1.0,
                                   out_bias=hi)
        cap = None if hi is None else hi - lo
        return self.activation(n.inputs[0], n, shift=-lo, cap=cap, out_bias=lo)

    def on_pool(self, n: ir.Pool) -> Expr:
        e = self.exprs[n.inputs[0]]
        out_shape = (e.shape[0], *n.out_spatial)
        if n.kind == "avg":
            op = SumPoolOp(e.shape, kernel=n.kernel, stride=n.stride, pads_begin=n.pads_begin,
                           pads_end=n.pads_end, dilation=n.dilation, out_spatial=n.out_spatial,
                           scale=compress(1.0 / n.divisor(), out_shape))
            return self.linear(n.inputs[0], op, n)
        e = self.resolved(n.inputs[0], n)
        out = self._pool_single(n, e, out_shape)
        if out is None:
            out = self._pool_channel_parts(n, e, out_shape)
        if out is None and self._nonneg(e):
            # a non-negative value that is no single layer's (e.g. an average or a sum of layers):
            # a neuron layer whose ReLU never cuts carries it, the pool then acts on its spikes
            carrier = self.neuron(e, n, None, suffix="/carry", note="input of a max-pool")
            out = self._pool_single(n, Expr(e.shape, [Term(carrier.name, [])]), out_shape)
        if out is not None:
            return out
        return Expr(out_shape, [], np.array(0.0),
                    Pending(n, e, np.zeros(e.shape[0], dtype=bool)))

    @staticmethod
    def _nonneg(e: Expr) -> bool:
        """Layer values are >= 0, so non-negative maps and biases keep the value >= 0."""
        return bool(np.all(e.bias >= 0)) and all(op_nonneg(o) for t in e.terms for o in t.ops)

    def _pool_layer(self, n: ir.Pool, source: str, shape, minimum, name=None) -> PoolLayer:
        return self.add(PoolLayer(
            name or n.name or n.output, tuple(shape), source=source, kernel=n.kernel,
            stride=n.stride, pads_begin=n.pads_begin, pads_end=n.pads_end,
            dilation=n.dilation, minimum=minimum))

    def _pool_single(self, n: ir.Pool, e: Expr, out_shape) -> Expr | None:
        """Max-pool of s_c * (one layer's value) + b_c: the earliest (s_c > 0) or latest (s_c < 0)
        spike of that layer, scaled after the pool."""
        b = per_channel(e.bias, e.shape)
        if len(e.terms) != 1 or b is None or not all(o.kind == "scale" for o in e.terms[0].ops):
            return None
        t = e.terms[0]
        s = per_channel(t.ops[0].scale, e.shape) if t.ops else np.ones(e.shape[0])
        if s is None:
            return None
        pool = self._pool_layer(n, self.layers[t.source].name, out_shape, s < 0)
        cs = (-1,) + (1,) * (len(e.shape) - 1)
        safe = np.where(s != 0, s, np.nan)
        pool.relation = Relation(n.output, scale=compress((1.0 / safe).reshape(cs), out_shape),
                                 shift=compress((-b / safe).reshape(cs), out_shape),
                                 note="pooled")
        ops = [] if np.all(s == 1) else [ScaleOp(out_shape, scale=compress(
            s.reshape(cs), out_shape))]
        return Expr(out_shape, [Term(pool.name, ops)], compress(b.reshape(cs), out_shape))

    def _pool_channel_parts(self, n: ir.Pool, e: Expr, out_shape) -> Expr | None:
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
            pool = self._pool_layer(n, src, shape, np.zeros(shape[0], dtype=bool),
                                    name=f"{n.name or n.output}/part{k}")
            terms.append(Term(pool.name, [PlaceOp(shape, axis=0, offset=op.offset,
                                                  total=e.shape[0])]))
        cs = (-1,) + (1,) * (len(e.shape) - 1)
        # channels no part covers hold the bias alone: the pool of a constant is that constant
        return Expr(out_shape, terms, compress(b.reshape(cs), out_shape))

    def on_add(self, n: ir.Add) -> Expr:
        a, b = (self.resolved(i, n) for i in n.inputs)
        return Expr(a.shape, a.terms + b.terms, compress(full(a.bias, a.shape) +
                                                           full(b.bias, a.shape), a.shape))

    def on_concat(self, n: ir.Concat) -> Expr:
        total = sum(self.exprs[i].shape[n.axis] for i in n.inputs)
        out, off = None, 0
        for name in n.inputs:
            e = self.exprs[name]
            part = self.linear(name, PlaceOp(e.shape, axis=n.axis, offset=off, total=total), n)
            off += e.shape[n.axis]
            if out is None:
                out = part
            else:
                out = Expr(part.shape, out.terms + part.terms,
                           compress(full(out.bias, part.shape) + full(part.bias, part.shape),
                                    part.shape))
        return out

    def on_reshape(self, n: ir.Reshape) -> Expr:
        e = self.exprs[n.inputs[0]]
        return self.linear(n.inputs[0], ReshapeOp(e.shape, shape=tuple(n.shape)), n)

    def on_pad(self, n: ir.Pad) -> Expr:
        e = self.exprs[n.inputs[0]]
        return self.linear(n.inputs[0], PadOp(e.shape, pads_begin=n.pads_begin,
                                              pads_end=n.pads_end), n)


    # --- ops added for real-world exports -------------------------------------------------------
    def on_transpose(self, n: ir.Transpose) -> Expr:
        e = self.exprs[n.inputs[0]]
        return self.linear(n.inputs[0], TransposeOp(e.shape, perm=tuple(n.perm)), n)

    def on_select(self, n: ir.Select) -> Expr:
        e = self.exprs[n.inputs[0]]
        return self.linear(n.inputs[0], SelectOp(e.shape, axis=n.axis, index=tuple(n.index)), n)

    def on_convtranspose(self, n: ir.ConvTranspose) -> Expr:
        e = self.exprs[n.inputs[0]]
        op = ConvTransposeOp(e.shape, weight=n.weight, stride=n.stride, pads_begin=n.pads_begin,
                             pads_end=n.pads_end, dilation=n.dilation,
                             output_padding=n.output_padding, groups=n.group)
        out = self.linear(n.inputs[0], op, n)
        if n.bias is not None:
            out.bias = compress(full(out.bias, out.shape) + n.bias.reshape(
                (-1,) + (1,) * (len(out.shape) - 1)), out.shape)
        return out

    def _split_pieces(self, n: ir.Node, neg_scale) -> Expr:
        """relu(x) + neg_scale * relu(-x): two neuron layers from the same expression (a max-pool
        before it is pooled piece by piece: max for relu(x), min for relu(-x))."""
        x = n.inputs[0]
        e = self.exprs[x]
        neg_scale = compress(neg_scale, e.shape)
        if e.pending is None and self._nonneg(e):  # x >= 0: relu(-x) = 0
            return Expr(e.shape, list(e.terms), e.bias)
        pos = self.activation(x, n, relation=self._piece(x, 1, n), suffix="+")
        if np.all(neg_scale == 0):
            return pos
        neg = self.activation(x, n, sign=-1, out_scale=neg_scale, relation=self._piece(x, -1, n),
                              suffix="-")
        return self._sum(pos, neg)

    def on_prelu(self, n: ir.PRelu) -> Expr:
        """LeakyRelu / PRelu(x) = relu(x) - a relu(-x) (spec section 3)."""
        return self._split_pieces(n, -np.asarray(n.slope, np.float64))

    def _bound_of_layer(self, name: str, n: ir.Node, c: np.ndarray, mx: bool) -> Expr | None:
        """max/min of s * L + b and a constant, L >= 0 a neuron layer made for this tensor only:
        no new layer. It is s * L + b itself when the constant is on L's silent side
        (Max(Relu(x), 0)), else a cap on L (Relu then Min(., 6), ReLU6 as Min/Max pairs)."""
        e = self.exprs[name]
        if e.pending is not None or len(e.terms) != 1 or np.ndim(c) or np.ndim(e.bias):
            return None
        t = e.terms[0]
        layer = self.layers[t.source]
        if t.ops and (len(t.ops) > 1 or t.ops[0].kind != "scale" or np.ndim(t.ops[0].scale)):
            return None
        s = float(t.ops[0].scale) if t.ops else 1.0
        if not isinstance(layer, NeuronLayer) or s == 0:
            return None
        k = (float(c) - float(e.bias)) / s  # the constant in units of L
        if k <= 0 and mx == (s > 0):  # max with L's floor, or min with the ceiling of -L
            return Expr(e.shape, list(e.terms), e.bias)
        sole = [m for m in self.g.nodes if name in m.inputs] == [n]
        if k <= 0 or not sole or layer.relation is None or layer.relation.tensor != name:
            return None
        layer.cap = k if layer.cap is None else min(layer.cap, k)
        layer.saturating = True
        return Expr(e.shape, list(e.terms), e.bias)

    def on_abs(self, n: ir.Abs) -> Expr:
        """|x| = relu(x) + relu(-x)."""
        return self._split_pieces(n, 1.0)

    def on_extremum(self, n: ir.Extremum) -> Expr:
        """max(x, y) = y + relu(x - y), min(x, y) = y - relu(y - x); with a constant c:
        c + relu(x - c) and c - relu(c - x)."""
        mx = n.kind == "max"
        cur = n.inputs[0]
        for k, other in enumerate(n.inputs[1:]):
            x, y = self.resolved(cur, n), self.resolved(other, n)
            d = f"{n.output}::d{k}"
            self.exprs[d] = self._sum(x, y, -1.0) if mx else self._sum(y, x, -1.0)
            r = self.activation(d, n, relation=None, suffix=f"/{n.kind}{k}")
            cur = f"{n.output}::{n.kind}{k}"
            self.exprs[cur] = self._sum(y, r, 1.0 if mx else -1.0)
        if n.const is None:
            return self.exprs[cur]
        c = compress(n.const, self.exprs[cur].shape)
        short = self._bound_of_layer(cur, n, c, mx) if len(n.inputs) == 1 else None
        if short is not None:
            return short
        if mx:
            return self.activation(cur, n, shift=-c, out_bias=c)
        return self.activation(cur, n, sign=-1, shift=c, out_scale=-1.0, out_bias=c)


def _describe(node: ir.Node) -> str:
    folded = " (folded)" if isinstance(node, ir.Affine) else ""
    return f"{node.op_type} {node.name or node.output}{folded}"


def record_fused(layers: list[Layer], graph: ir.Graph) -> None:
    """Name, in each layer's relation, the ONNX nodes it carries: those between the tensors
    other layers carry (or the graph input) and the layer's own tensor, so reports can say
    "Conv c1 + BatchNormalization bn1 (folded) + Relu r1" rather than only the tensor."""
    producer = {n.output: n for n in graph.nodes}
    order = {n.output: i for i, n in enumerate(graph.nodes)}
    carried = {la.relation.tensor for la in layers if la.relation is not None} | {graph.input}
    for la in layers:
        rel = la.relation
        if rel is None or la.kind == "input":
            continue
        seen: set[str] = set()
        stack = [rel.tensor]
        while stack:
            t = stack.pop()
            if t in seen or (t != rel.tensor and t in carried) or t not in producer:
                continue
            seen.add(t)
            stack.extend(producer[t].inputs)
        walked = tuple(_describe(producer[t]) for t in sorted(seen, key=order.__getitem__))
        # a piece of a split activation relates to the activation's input: the mapper named
        # the activation itself beforehand
        rel.fused = walked + tuple(f for f in rel.fused if f not in walked)


def map_graph(graph: ir.Graph, lo, hi) -> list[Layer]:
    """Lower the IR to TTFS layers (windows and times still unset)."""
    return Mapper(graph, lo, hi).run()
