"""The mapper: walks the IR graph, keeps each tensor's expression, and builds the neuron layers.

Lowering a node (``lowering.LOWERING``) acts on expressions through three moves: ``linear`` (a
synaptic op joins every term's chain, or the tensor is split into z+ and z- first), ``activation``
(one neuron layer: a monotone piece of a piecewise-linear op) and ``resolved`` (a pending max-pool
is made a pool layer by offset coding).
"""

from __future__ import annotations

import numpy as np

from .. import ir
from ..errors import UnmappedNodeError, UnsupportedOpError
from ..snn import Group, InputLayer, Layer, NeuronLayer, Op, ReadoutLayer, Relation, ScaleOp
from .arrays import compress, full, per_channel
from .bounds import Intervals
from .expressions import Expr, Term, compose, nonneg, scaled, simplify
from .finish import prune, record_fused
from .lowering import LOWERING
from .maxpool import activate_pending, offset_code
from .rules import apply_np

OUTPUT = object()  # activation(): relate the layer to the node's output tensor


class Mapper:
    """One mapping run: the layers built so far and the expression of every IR tensor."""

    def __init__(self, graph: ir.Graph, lo: np.ndarray, hi: np.ndarray):
        self.g = graph
        self.layers: dict[str, Layer] = {}
        self.exprs: dict[str, Expr] = {}
        self._bounds = Intervals()
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

    def add(self, layer: Layer) -> Layer:
        """Add a layer under a unique name (``name#2`` and so on when taken)."""
        base, k = layer.name, 1
        while layer.name in self.layers:
            k += 1
            layer.name = f"{base}#{k}"
        self.layers[layer.name] = layer
        return layer

    def fail(self, node: ir.Node, msg: str, hint: str | None = None):
        return UnsupportedOpError(msg, file=self.file, node=node.name, op=node.op_type, hint=hint)

    def linear(self, name: str, op: Op, node: ir.Node) -> Expr:
        """The expression of ``name`` followed by the synaptic op ``op``."""
        e = self.resolved(name, node)
        terms = []
        for t in e.terms:
            ops = compose(t.ops, op)
            if ops is None:
                self.split(name, node)
                return self.linear(name, op, node)
            terms.append(Term(t.source, ops))
        bias = compress(apply_np(op, e.bias), op.out_shape)
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
        rel = _relation(node.output, out_scale, out_bias) if relation is OUTPUT else relation
        if e.pending is not None:
            src = activate_pending(self, e, node, sign, shift, cap, suffix, rel)
        else:
            if sign > 0 and np.all(shift == 0) and cap is None and nonneg(e):
                # ReLU of a non-negative value is the identity: no neuron needed
                out = Expr(e.shape, [Term(t.source, t.ops) for t in e.terms], e.bias)
                return scaled(out, out_scale, out_bias)
            layer = self.neuron(e, node, None, sign, shift, cap, suffix=suffix)
            layer.relation = rel
            src = layer.name
        return scaled(Expr(e.shape, [Term(src, [])]), out_scale, out_bias)

    def resolved(self, name: str, node: ir.Node) -> Expr:
        """The expression of ``name``, a pending max-pool in it offset coded first."""
        e = self.exprs[name]
        if e.pending is None:
            return e
        self.exprs[name] = offset_code(self, name, e, node)
        return self.exprs[name]

    def lower_bound(self, e: Expr) -> np.ndarray:
        """A guaranteed lower bound of an expression, per entry, for inputs in the input range."""
        return self._bounds.lower_bound(self.layers.values(), e)

    def run(self) -> list[Layer]:
        """Lower every node in order, read the output out, drop dead layers."""
        for node in self.g.nodes:
            lower = LOWERING.get(type(node))
            if lower is None:
                raise UnmappedNodeError(
                    f"IR node of type {type(node).__name__} has no lowering to TTFS layers",
                    file=self.file, node=node.name, op=node.op_type)
            self.exprs[node.output] = lower(self, node)
        out = self.resolved(self.g.output, self.g.nodes[-1])
        if not out.terms:
            raise UnsupportedOpError("the output does not depend on the input", file=self.file)
        readout = ReadoutLayer("output", tuple(out.shape),
                               groups=[Group(t.source, t.ops) for t in out.terms],
                               bias=compress(out.bias, out.shape),
                               relation=Relation(self.g.output, note="output logits"))
        self.add(readout)
        layers = prune(list(self.layers.values()))
        record_fused(layers, self.g)
        return layers


def _relation(tensor, out_scale, out_bias) -> Relation | None:
    if tensor is None or "::" in tensor or np.any(out_scale == 0):
        return None
    return Relation(tensor, scale=1.0 / np.asarray(out_scale, np.float64),
                    shift=-np.asarray(out_bias, np.float64) / out_scale)


def map_graph(graph: ir.Graph, lo, hi) -> list[Layer]:
    """Lower the IR to TTFS layers (windows and times still unset)."""
    return Mapper(graph, lo, hi).run()
