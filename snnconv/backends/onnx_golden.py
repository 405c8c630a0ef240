"""The integer golden model emitted as an ONNX graph and run by onnxruntime.

The same computation as ``intmodel.golden`` where no register can overflow, built from the
``QNet`` alone:

    x_ticks = clip(floor(u T + 1/2), 0, T),  u = clip((x - lo) / (hi - lo), 0, 1)   (float64)
    ticks   = clip(floor((V0 + b) / R), 0, T)                                        (float32)
    logits  = V0 + b

V0 sums integer weights times integer ticks: float32 holds every partial sum exactly when the
layer's worst case stays below 2^24 (``intmodel.bounds.layer_dtypes``), and a float division of
such integers floors exactly (see ``golden._fire_in_range``). A net outside that (a float64
layer, a register that might overflow) is refused: ``golden`` then takes its torch path, which
wraps or saturates registers exactly. Thin deep nets need this form: the torch path pays a
Python step and several kernels per layer; onnxruntime fuses the convolution with its bias.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from onnx import TensorProto

from ..intmodel.bounds import abs_bounds, bits_for, layer_dtypes
from ..intmodel.common import IntResult
from ..intmodel.layers import QInput, QNet, QNeuron, QPool, QReadout
from ..walk import walk
from .onnx_counts import Counts
from .onnx_emit import emit_pool, emit_potential
from .onnx_graph import (
    Emitter, UnsupportedError, count_output, make_model, open_session, output,
)


def unsupported(net: QNet) -> str | None:
    """Why this net cannot run as an ONNX graph exactly (None: it can)."""
    if any(d != torch.float32 for d in layer_dtypes(net).values()):
        return "a layer's integer sums need float64 (onnxruntime has no float64 convolution)"
    for name, b in abs_bounds(net).items():
        la = net.by_name[name]
        if bits_for(b["V"]) > la.widths.get("V", 0):
            return f"layer {name}: its V register might overflow"
    return None


def build_model(net: QNet, external: dict[str, np.ndarray] | None = None):
    """The ONNX model of ``golden(net, x)``: input ``x`` (N, *shape) float64, outputs
    ``logits`` (integers in float32) and the spike counts (``CountLayout.outputs``). Returns
    (model, CountLayout of the spike counts)."""
    why = unsupported(net)
    if why:
        raise UnsupportedError(why)
    em = Emitter(torch.float32, external)
    counts = Counts(em)
    out: dict[str, str] = {}

    def step(la, env):
        if isinstance(la, QInput):
            return _encode(em, la)
        if isinstance(la, QPool):
            v = emit_pool(em, _pool_view(la), env[la.source], tuple(net.by_name[la.source].shape))
        else:
            v = emit_potential(em, la, env, net.by_name, 1.0, la.bias)
            if isinstance(la, QReadout):
                out["logits"] = v
                return v
            v = _fire(em, la, v)
        counts.layer(la.name, v, la.shape, None)
        return v

    walk(net.evaluated(), step, name=lambda la: la.name, sources=lambda la: la.sources())
    outs = [output(em, out["logits"], "logits", em.elem)]
    layout = counts.finish(lambda v, name: count_output(em, outs, v, name))
    return make_model(em, tuple(net.input.shape), outs, x_elem=TensorProto.DOUBLE), layout


def _encode(em: Emitter, la: QInput) -> str:
    """encode_input's float64 steps, then the ticks as float32 (small integers)."""
    lo = np.asarray(la.lo, np.float64)
    span = np.asarray(la.hi, np.float64) - lo

    def c(a):
        return em.const(np.asarray(a, np.float64), np.float64)

    u = em.op("Div", [em.op("Sub", ["x", c(lo)]), c(span)])
    u = em.op("Clip", [u, c(0.0), c(1.0)])
    t = em.op("Floor", [em.op("Add", [em.op("Mul", [u, c(float(la.ticks))]), c(0.5)])])
    t = em.op("Clip", [t, c(0.0), c(float(la.ticks))])
    return em.op("Cast", [t], to=em.elem, hint="ticks")


def _fire(em: Emitter, la: QNeuron, v: str) -> str:
    """clip(floor((V0 + b) / R), 0, T); v already holds V0 + b."""
    ramp = np.asarray(la.ramp, np.float64)
    q = em.op("Floor", [em.op("Div", [v, em.value(ramp)])])
    return em.op("Clip", [q, em.const(0.0), em.const(float(la.ticks))], hint="ticks")


def _pool_view(la: QPool) -> SimpleNamespace:
    """A QPool in the attributes ``emit_pool`` reads (it pools ticks as it pools offsets)."""
    p = la.pool
    return SimpleNamespace(name=la.name, shape=tuple(la.shape), kernel=tuple(p["kernel"]),
                           stride=tuple(p["stride"]), pads_begin=tuple(p["pads_begin"]),
                           pads_end=tuple(p["pads_end"]), dilation=tuple(p["dilation"]),
                           minimum=la.minimum)


class OnnxGolden:
    """``OnnxGolden(net)(x) -> IntResult``, equal to ``golden(net, x)`` bit for bit."""

    def __init__(self, net: QNet, threads: int | None = None):
        external: dict[str, np.ndarray] = {}
        model, self._layout = build_model(net, external)
        self.session, self._weights = open_session(model, external, threads,
                                                   "this integer model")
        self.net = net

    def __call__(self, x) -> IntResult:
        if torch.is_tensor(x):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float64)
        outs = self.session.run(["logits"] + self._layout.outputs, {"x": x})
        res = IntResult(logits=torch.from_numpy(outs[0]).to(torch.int64), samples=x.shape[0])
        for (name, _), c in zip(self._layout.names, self._layout.read(outs[1:])):
            res.spikes[name] = res.spikes.get(name, 0) + int(c)
        for la in self.net.evaluated():
            if isinstance(la, (QNeuron, QReadout)):
                res.overflow[la.name] = 0  # unsupported() proved it cannot happen
        return res
