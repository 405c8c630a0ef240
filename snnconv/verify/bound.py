"""The float32 forward error bound: how far onnxruntime's float32 output may lie from the exact
one by rounding alone, for the actual inputs, and the tolerances verify judges onnxruntime by."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import ir
from ..walk import walk

EPS32 = 2.0 ** -24
DEFAULT_RTOL64 = 1e-9


def _gamma(n: int) -> float:
    return n * EPS32 / (1 - n * EPS32)


class Float32Bound:
    """Per-element bound on |float32 result - exact result| of a graph's output, computed while
    the graph is evaluated in float64, for the actual inputs.

    Running error analysis on the actual activations of each layer: a layer with fan-in n adds
    gamma(n + 2) (|W| |x| + |b|) (the +2 covers weights folded in float32, e.g. BatchNorm merged
    into a convolution by the runtime), and errors of its input propagate through |W|; ReLU and
    max-pool do not increase errors, and a ReLU whose input is below -E passes none. Both terms
    go through |W| at once, |W| (E + gamma |x|) + gamma |b|, and are magnitudes: they are
    computed in float32 (a fraction of a float64 pass) with |W| prepared once, and the result is
    widened by the float32 rounding of that computation, at most the sum of gamma(n) over the
    layers.
    """

    def __init__(self, graph: ir.Graph):
        self.graph = graph
        # per rounding node: gamma, the node with |W| (float32, no bias / shift), gamma |b|
        self.terms: dict[int, tuple[float, ir.Node, torch.Tensor | None]] = {}
        widen = 0.0
        for node, n in _compute_nodes(graph):
            g = _gamma(n)
            widen += g
            self.terms[id(node)] = (g, *_magnitudes(node, g))
        self.headroom = 1.0 + widen + len(graph.nodes) * EPS32

    @torch.no_grad()
    def __call__(self, x, keep: set[str] | None = None):
        """The float64 output, the tensors in ``keep`` (as ``graph.forward``) and the bound."""
        g = self.graph
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float64)
        if tuple(x.shape[1:]) != tuple(g.input_shape):
            raise ValueError(f"input shape {tuple(x.shape[1:])} != {g.input_shape}")
        keep = set(keep or ())

        def step(node, env):  # every value rides with its error bound
            xs = [env[i][0] for i in node.inputs]
            y = node.forward(*xs)
            return y, self._error(node, xs, [env[i][1] for i in node.inputs], y)

        env = walk(g.nodes, step, name=lambda n: n.output, sources=lambda n: n.inputs,
                   env={g.input: (x, torch.zeros_like(x, dtype=torch.float32))},
                   keep=keep | {g.output})
        out, err = env[g.output]
        kept = {k: env[k][0] for k in keep if k in env}
        return out, kept, err.to(torch.float64) * self.headroom

    def _error(self, node, xs, es, y) -> torch.Tensor:
        if id(node) in self.terms:
            g, an, b = self.terms[id(node)]
            e = an.forward(xs[0].to(torch.float32).abs_().mul_(g).add_(es[0]))
            if b is not None:  # an Affine's shift broadcasts as stored; a bias is per channel
                b = b.to(e.device)
                e = e + (b if isinstance(node, ir.Affine) else
                         b.reshape((1, -1) + (1,) * (e.dim() - 2)))
            return e
        if isinstance(node, ir.Add):
            return y.to(torch.float32).abs_().mul_(EPS32).add_(es[0]).add_(es[1])
        if isinstance(node, ir.PRelu):  # Lipschitz max(1, |slope|), one rounded product
            lip = torch.clamp(torch.as_tensor(np.abs(node.slope), dtype=torch.float32,
                                              device=y.device), min=1.0)
            return y.to(torch.float32).abs_().mul_(EPS32).add_(lip * es[0])
        if isinstance(node, ir.Abs):
            return es[0]
        if isinstance(node, ir.Extremum):  # max and min are 1-Lipschitz in every argument
            e = es[0]
            for other in es[1:]:
                e = torch.maximum(e, other)
            return e
        if isinstance(node, ir.Relu):
            # an input below -E stays cut off in both computations: no error passes
            return torch.where(xs[0] > -es[0].to(xs[0].dtype), es[0], torch.zeros_like(es[0]))
        if isinstance(node, ir.Clip):
            lo = -math.inf if node.lo is None else node.lo
            hi = math.inf if node.hi is None else node.hi
            e64 = es[0].to(xs[0].dtype)
            return torch.where((xs[0] > lo - e64) & (xs[0] < hi + e64), es[0],
                               torch.zeros_like(es[0]))
        return node.forward(*es)  # max-pool, reshape, pad, concat: move values, add no rounding


def _magnitudes(node: ir.Node, g: float) -> tuple[ir.Node, torch.Tensor | None]:
    """The node with |W| in float32 and no bias (or shift), and gamma |b| (or None)."""
    if isinstance(node, (ir.Conv, ir.Dense, ir.ConvTranspose)):
        an = dataclasses.replace(node, weight=np.abs(node.weight).astype(np.float32), bias=None)
        b = None if node.bias is None else torch.as_tensor(g * np.abs(node.bias),
                                                           dtype=torch.float32)
        return an, b
    if isinstance(node, ir.Affine):
        an = dataclasses.replace(node, scale=np.abs(node.scale).astype(np.float32),
                                 shift=np.zeros_like(node.shift, np.float32))
        return an, torch.as_tensor(g * np.abs(node.shift), dtype=torch.float32)
    return node, None  # average pool: linear with positive weights


def _compute_nodes(graph: ir.Graph) -> list[tuple[ir.Node, int]]:
    """Nodes that round, with the n of their gamma(n): fan-in + 2 for weighted layers."""
    out = []
    for node in graph.nodes:
        if isinstance(node, ir.ConvTranspose):  # (Cin, Cout/group, *kernel)
            out.append((node, node.weight.shape[0] // node.group *
                        int(np.prod(node.weight.shape[2:])) + 2))
        elif isinstance(node, (ir.Conv, ir.Dense)):
            out.append((node, int(np.prod(node.weight.shape[1:])) + 2))
        elif isinstance(node, ir.Affine):
            out.append((node, 4))
        elif isinstance(node, ir.Pool) and node.kind == "avg":
            out.append((node, int(np.prod(node.kernel)) + 1))
    return out


def float32_bound(graph: ir.Graph, x: torch.Tensor) -> torch.Tensor:
    """Per-element bound on |float32 result - exact result| of the graph's output
    (``Float32Bound``)."""
    return Float32Bound(graph)(x)[2]


@dataclass(frozen=True)
class Tolerance:
    """How onnxruntime's output is judged: the float32 bound (plus ``rtol64`` of the float64
    output's size, for the float64 evaluation's own rounding), or ``atol``/``rtol`` if given."""

    atol: float | None = None
    rtol: float | None = None
    rtol64: float = DEFAULT_RTOL64

    @property
    def uses_bound(self) -> bool:
        return self.atol is None and self.rtol is None

    def as_dict(self) -> dict:
        return {"mapping_rtol64": self.rtol64, "ort": "float32 forward error bound" if
                self.uses_bound else {"atol": self.atol or 0.0, "rtol": self.rtol or 0.0},
                "reference64_rtol": self.rtol64}

    def elementwise(self, ort_y: torch.Tensor, ref64: torch.Tensor,
                    bound32: torch.Tensor | None) -> torch.Tensor:
        """The allowed |snn - ort| per output element (``ort_y``'s shape)."""
        if self.uses_bound:
            return bound32.reshape(ort_y.shape) + \
                self.rtol64 * ref64.reshape(ort_y.shape).abs().amax(1, keepdim=True)
        return (self.atol or 0.0) + (self.rtol or 0.0) * ort_y.abs().amax(1, keepdim=True) \
            .expand_as(ort_y)
