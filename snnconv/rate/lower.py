"""IR graph -> rate net: each IR node becomes rate nodes; each ReLU becomes an IF layer.

A tensor of the IR is carried as ``Val``: the rate node that produces it and a ``gain``. An IF
layer with threshold lambda spikes at rate ~ activation / lambda, so its spikes stand for the
activation divided by lambda; the gain (lambda, per channel) is folded into the weights of the
next Linear/Conv2d (W' = W * lambda over its input channels), or made explicit by a ``Scale``
node where it cannot be folded (before an Add, a Concat of unequal gains, the Output).
BatchNorm (an IR ``Affine`` right after a Conv/Dense it alone reads) is folded into that layer's
weights and bias; an input normalisation into the ``Input`` node.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .. import ir
from ..errors import UnsupportedOpError
from . import model as rm

SUPPORTED = ("Conv (2-d, symmetric pads)", "Gemm/MatMul", "BatchNormalization and elementwise "
             "Mul/Add", "Relu", "MaxPool/AveragePool (2-d)", "Flatten", "residual Add",
             "Concat")


@dataclass
class Val:
    node: str
    gain: np.ndarray | None = None  # None = 1; else broadcastable to the tensor's shape
    spikes: bool = False  # a 0/1 spike train (IF or max-pool output)
    nonneg: bool = False


def _per_channel(g: np.ndarray | None, shape) -> np.ndarray | None:
    """The gain as one value per channel (C,), or None when it varies within a channel."""
    c = shape[0]
    g = np.asarray(1.0 if g is None else g, np.float64)
    if g.ndim == 0:
        return np.full(c, float(g))
    if g.shape[0] == c and all(s == 1 for s in g.shape[1:]):
        return g.reshape(c)
    if g.shape[0] == 1 and all(s == 1 for s in g.shape[1:]):
        return np.full(c, float(g.reshape(-1)[0]))
    return None


def _pair(node: ir.Node, pb, pe, what: str) -> tuple[int, int]:
    if tuple(pb) != tuple(pe):
        raise UnsupportedOpError(f"asymmetric {what} pads {tuple(pb)} / {tuple(pe)}",
                                 node=node.name, op=node.op_type,
                                 hint="rate coding takes symmetric (PyTorch/NIR) padding only")
    return tuple(int(p) for p in pb)


class Lowering:
    """The conversion state: rate nodes so far, the Val of every IR tensor, lambdas."""

    def __init__(self, graph: ir.Graph, lam: dict[str, np.ndarray], reset: str, v_init: float):
        self.g, self.lam, self.reset, self.v_init = graph, lam, reset, v_init
        self.readers = Counter(i for n in graph.nodes for i in n.inputs)
        self.readers[graph.output] += 1
        self.nodes: list[rm.Node] = [rm.Input("input", (), tuple(graph.input_shape))]
        self.vals = {graph.input: Val("input")}
        self.names = {"input"}

    def add(self, node: rm.Node) -> str:
        base, i = node.name, 1
        while node.name in self.names:
            node.name, i = f"{base}#{i}", i + 1
        self.names.add(node.name)
        self.nodes.append(node)
        return node.name

    def plain(self, v: Val, name: str, shape) -> str:
        """The node of ``v`` with its gain made explicit (a Scale node) where it is not 1."""
        if v.gain is None or np.all(np.asarray(v.gain) == 1.0):
            return v.node
        g = _per_channel(v.gain, shape)
        scale = g.reshape((-1,) + (1,) * (len(shape) - 1)) if g is not None else v.gain
        return self.add(rm.Scale(f"{name}.scale", (v.node,), tuple(shape),
                                 np.asarray(scale, np.float64)))

    def run(self) -> list[rm.Node]:
        for n in self.g.nodes:
            fn = HANDLERS.get(type(n))
            if fn is None:
                raise UnsupportedOpError("has no rate-coded form", node=n.name, op=n.op_type,
                                         hint="rate coding supports " + ", ".join(SUPPORTED))
            self.vals[n.output] = fn(self, n, [self.vals[i] for i in n.inputs])
        out = self.vals[self.g.output]
        src = self.plain(out, "output", self.g.output_shape)
        self.nodes.append(rm.Output("output", (src,), tuple(self.g.output_shape)))
        return self.nodes

    def shape(self, n: ir.Node):
        return tuple(self.g.shapes[n.output])

    def in_shape(self, n: ir.Node, i: int = 0):
        return tuple(self.g.shapes[n.inputs[i]])


def _conv(lo: Lowering, n: ir.Conv, vs: list[Val]) -> Val:
    (v,) = vs
    if n.weight.ndim != 4:
        raise UnsupportedOpError(f"{n.weight.ndim - 2}-d convolution", node=n.name, op=n.op_type,
                                 hint="rate coding takes 2-d convolutions (Conv2d) only")
    pad = _pair(n, n.pads_begin, n.pads_end, "convolution")
    w = np.array(n.weight, np.float64)
    src, g = v.node, _per_channel(v.gain, lo.in_shape(n))
    if g is None:
        src, g = lo.plain(v, n.name, lo.in_shape(n)), np.ones(lo.in_shape(n)[0])
    cout, cin_g = w.shape[0], w.shape[1]
    per_group = cout // n.group
    for o in range(n.group):  # input channel of w[o*per_group + j, i] is o * cin_g + i
        w[o * per_group:(o + 1) * per_group] *= g[o * cin_g:(o + 1) * cin_g][None, :, None, None]
    bias = None if n.bias is None else np.array(n.bias, np.float64)
    lo.add(rm.Conv2d(n.name, (src,), lo.shape(n), w, bias, tuple(n.stride), pad,
                     tuple(n.dilation), int(n.group)))
    return Val(lo.nodes[-1].name)


def _dense(lo: Lowering, n: ir.Dense, vs: list[Val]) -> Val:
    (v,) = vs
    w = np.array(n.weight, np.float64)
    if v.gain is not None:
        w = w * np.broadcast_to(np.asarray(v.gain, np.float64), lo.in_shape(n))[None, :]
    bias = None if n.bias is None else np.array(n.bias, np.float64)
    lo.add(rm.Linear(n.name, (v.node,), lo.shape(n), w, bias))
    return Val(lo.nodes[-1].name)


def _affine(lo: Lowering, n: ir.Affine, vs: list[Val]) -> Val:
    """BatchNorm or an elementwise Mul/Add: folded where it is exact, else a Scale node."""
    (v,) = vs
    shape = lo.shape(n)
    prev = lo.nodes[-1] if lo.nodes[-1].name == v.node else None
    s = np.broadcast_to(np.asarray(n.scale, np.float64), shape)
    b = np.broadcast_to(np.asarray(n.shift, np.float64), shape)
    sc, bc = _per_channel(n.scale, shape), _per_channel(n.shift, shape)
    alone = lo.readers[n.inputs[0]] == 1
    if isinstance(prev, (rm.Conv2d, rm.Linear)) and alone and sc is not None and bc is not None:
        prev.weight = prev.weight * sc.reshape((-1,) + (1,) * (prev.weight.ndim - 1))
        bias = np.zeros(shape[0]) if prev.bias is None else prev.bias
        prev.bias = bias * sc + bc
        return Val(prev.name)
    if isinstance(prev, rm.Input) and alone:
        prev.scale = s * (1.0 if prev.scale is None else prev.scale)
        prev.shift = b + s * (0.0 if prev.shift is None else prev.shift)
        return Val(prev.name)
    gain = np.broadcast_to(np.asarray(1.0 if v.gain is None else v.gain), shape)
    lo.add(rm.Scale(n.name, (v.node,), shape, np.array(s * gain), np.array(b)))
    return Val(lo.nodes[-1].name, nonneg=v.nonneg and bool(np.all(s >= 0) and np.all(b >= 0)))


def _relu(lo: Lowering, n: ir.Relu, vs: list[Val]) -> Val:
    (v,) = vs
    if v.nonneg:  # ReLU of spikes (or their pools) changes nothing
        return v
    shape = lo.shape(n)
    src = lo.plain(v, n.name, shape)
    lam = np.asarray(lo.lam[n.output], np.float64)
    lo.add(rm.IF(n.name, (src,), shape, lam, lo.reset, np.array(lo.v_init * lam)))
    gain = lam if lam.ndim == 0 else lam.reshape((-1,) + (1,) * (len(shape) - 1))
    return Val(lo.nodes[-1].name, gain, spikes=True, nonneg=True)


def _pool(lo: Lowering, n: ir.Pool, vs: list[Val]) -> Val:
    (v,) = vs
    shape = lo.shape(n)
    if len(n.kernel) != 2:
        raise UnsupportedOpError(f"{len(n.kernel)}-d pooling", node=n.name, op=n.op_type,
                                 hint="rate coding takes 2-d pooling only")
    pad = _pair(n, n.pads_begin, n.pads_end, "pooling")
    floor = tuple((i + 2 * p - d * (k - 1) - 1) // s + 1 for i, p, d, k, s in zip(
        lo.in_shape(n)[1:], pad, n.dilation, n.kernel, n.stride))
    if floor != tuple(shape[1:]):
        raise UnsupportedOpError("ceil_mode changes the output size", node=n.name, op=n.op_type,
                                 hint="export the pool with ceil_mode=False")
    kw = dict(kernel=tuple(n.kernel), stride=tuple(n.stride), padding=pad)
    if n.kind == "max":
        if not v.spikes:
            raise UnsupportedOpError("max-pooling of a value that is not a ReLU output (no "
                                     "spikes to gate)", node=n.name, op=n.op_type,
                                     hint="put the ReLU before the MaxPool (they commute)")
        lo.add(rm.MaxPool2d(n.name, (v.node,), shape, dilation=tuple(n.dilation), **kw))
        return Val(lo.nodes[-1].name, v.gain, spikes=True, nonneg=True)
    if any(d != 1 for d in n.dilation) or (any(pad) and n.count_include_pad):
        raise UnsupportedOpError("dilated or pad-counting average pooling", node=n.name,
                                 op=n.op_type, hint="rate coding takes plain AvgPool2d")
    g = _per_channel(v.gain, lo.in_shape(n))
    src = v.node if g is not None else lo.plain(v, n.name, lo.in_shape(n))
    gain = None if g is None else g.reshape(-1, 1, 1)
    lo.add(rm.AvgPool2d(n.name, (src,), shape, **kw))
    return Val(lo.nodes[-1].name, gain, nonneg=v.nonneg)


def _reshape(lo: Lowering, n: ir.Reshape, vs: list[Val]) -> Val:
    (v,) = vs
    shape, src_shape = lo.shape(n), lo.in_shape(n)
    if shape == src_shape:
        return v
    if len(shape) != 1:
        raise UnsupportedOpError(f"reshape {src_shape} -> {shape} is not a flatten",
                                 node=n.name, op=n.op_type,
                                 hint="rate coding takes Flatten (to one axis) only")
    gain = None if v.gain is None else np.broadcast_to(v.gain, src_shape).reshape(-1).copy()
    lo.add(rm.Flatten(n.name, (v.node,), shape))
    return Val(lo.nodes[-1].name, gain, spikes=v.spikes, nonneg=v.nonneg)


def _add(lo: Lowering, n: ir.Add, vs: list[Val]) -> Val:
    shape = lo.shape(n)
    srcs = tuple(lo.plain(v, f"{n.name}.{i}", shape) for i, v in enumerate(vs))
    lo.add(rm.Add(n.name, srcs, shape))
    return Val(lo.nodes[-1].name, nonneg=all(v.nonneg for v in vs))


def _concat(lo: Lowering, n: ir.Concat, vs: list[Val]) -> Val:
    shape = lo.shape(n)
    shapes = [lo.g.shapes[i] for i in n.inputs]
    chans = [_per_channel(v.gain, s) for v, s in zip(vs, shapes)]
    if all(v.gain is None for v in vs):
        gain = None
    elif n.axis == 0 and all(c is not None for c in chans):
        gain = np.concatenate(chans).reshape((-1,) + (1,) * (len(shape) - 1))
    else:
        gain = np.concatenate([np.broadcast_to(np.asarray(1.0 if v.gain is None else v.gain),
                                               s) for v, s in zip(vs, shapes)], axis=n.axis)
    lo.add(rm.Concat(n.name, tuple(v.node for v in vs), shape, axis=int(n.axis)))
    return Val(lo.nodes[-1].name, gain, spikes=all(v.spikes for v in vs),
               nonneg=all(v.nonneg for v in vs))


HANDLERS = {ir.Conv: _conv, ir.Dense: _dense, ir.Affine: _affine, ir.Relu: _relu,
            ir.Pool: _pool, ir.Reshape: _reshape, ir.Add: _add, ir.Concat: _concat}


def lower(graph: ir.Graph, lam: dict[str, np.ndarray], reset: str = "subtract",
          v_init: float = 0.0) -> list[rm.Node]:
    """The rate nodes of ``graph`` with thresholds ``lam`` (per ReLU output tensor)."""
    return Lowering(graph, lam, reset, v_init).run()
