"""The closed-form simulator emitted as an ONNX graph and run by onnxruntime.

Built only from the SNN object (the model file's layers, groups, thresholds, windows and delays),
never from the original ONNX file, so it is an independent implementation of the same time-domain
computation as ``snnconv.snn.simulate``: synapse chains on spike-time offsets s = t_max - t
(delays as offsets), V - theta_rel, clamps to the window, earliest/latest-spike pools.
onnxruntime fuses Conv + Add + Clip and runs the whole batch without Python in the loop, which a
tiny network needs (its cost is per-op overhead) and a large one profits from (fused, blocked
convolutions).

The session snapshots the SNN's arrays when it is built: after editing weights or thresholds in
place, call ``forget(snn)`` (``simulate(..., backend="onnx")`` rebuilds by itself when arrays are
replaced, not when they are edited in place).

``onnx_graph`` holds the emitter, ``onnx_emit`` what each op and layer becomes; here the model is
assembled and run, and sessions are cached on the SNN.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx
import torch
from onnx import TensorProto

from ..snn import SNN, InputLayer, NeuronLayer, PoolLayer, ReadoutLayer
from ..snn.edits import edits
from ..snn.results import LayerStats, SimResult
from .input_counts import InputCounts
from .onnx_emit import emit_fire, emit_input, emit_pool, emit_potential
from .onnx_counts import CountLayout, Counts
from .onnx_graph import (
    ELEM, EXTERNAL_MIN_SIZE, NP, OPSET, Emitter, UnsupportedError, count_output, make_model,
    open_session, output,
)

#: batches up to this size run the graph that counts each stage's layers together
SMALL_BATCH = 8
__all__ = ["EXTERNAL_MIN_SIZE", "OPSET", "OnnxSimulator", "UnsupportedError", "available",
           "build_model", "compiled", "forget"]


def build_model(snn: SNN, dtype=torch.float32, record=False, stats: bool = True,
                external: dict[str, np.ndarray] | None = None, peaks: bool = True,
                group: bool = False):
    """The ONNX model of ``simulate(snn, x, dtype)``: input ``x`` (N, *input shape), outputs
    ``logits``, the spike and clip counts (``CountLayout.outputs``; with ``peaks`` the
    convolutional layers' largest offsets per channel instead of their clipped counts, and the
    input counted on the host; see onnx_counts: logits and recorded offsets are then exact only
    when ``CountLayout.reached`` is false) and ``s:<layer>`` for recorded layers;
    ``group`` counts the layers of one spatial size together. Returns (model, CountLayout,
    recorded layer names).
    With ``external`` (a dict), large arrays are left out of the model (external placeholders)
    and put there, for ``SessionOptions.add_external_initializers``."""
    if dtype not in ELEM:
        raise UnsupportedError(f"dtype {dtype} (float32 or float64 only)")
    em = Emitter(dtype, external)
    if max(la.size for la in snn.layers) >= 2 ** 24:  # pragma: no cover - 16M neurons/sample
        em.count_elem = TensorProto.DOUBLE
    env: dict[str, str] = {}
    counts = Counts(em, peaks, group, host_input=peaks) if stats else None
    outputs: list[onnx.ValueInfoProto] = []
    recorded: list[str] = []
    logits = None
    for layer in snn.layers:
        if isinstance(layer, ReadoutLayer):
            logits = emit_potential(em, layer, env, snn.by_name, float(snn.tau_c), layer.bias)
            break
        s = env[layer.name] = _emit_layer(em, snn, layer, env, counts)
        if record is True or (isinstance(record, (set, frozenset)) and layer.name in record):
            outputs.append(output(em, s, f"s:{layer.name}", em.elem))
            recorded.append(layer.name)
    if logits is None:
        raise UnsupportedError("the SNN has no readout layer")
    outs = [output(em, logits, "logits", em.elem)]
    layout = CountLayout([])
    if counts is not None:
        layout = counts.finish(lambda v, name: count_output(em, outs, v, name))
    return make_model(em, tuple(snn.input.shape), outs + outputs), layout, recorded


def _emit_layer(em: Emitter, snn: SNN, layer, env: dict[str, str], counts: Counts | None):
    """A hidden layer's offsets (its counts go to ``counts``)."""
    tau = float(snn.tau_c)
    if isinstance(layer, InputLayer):
        return emit_input(em, layer, counts, tau)
    if isinstance(layer, PoolLayer):
        src_shape = tuple(snn.by_name[layer.source].shape)
        s = emit_pool(em, layer, env[layer.source], src_shape)
        if counts is not None:
            counts.layer(layer.name, s, layer.shape, None)
        return s
    if isinstance(layer, NeuronLayer):
        theta = -np.asarray(layer.theta_rel, np.float64) if tau == 1.0 else None
        v = emit_potential(em, layer, env, snn.by_name, tau, theta)
        return emit_fire(em, layer, v, counts, tau)
    raise UnsupportedError(f"layer {layer.name}: kind {layer.kind}")  # pragma: no cover


class _Graph(NamedTuple):
    """One compiled graph of an OnnxSimulator and how to read its outputs."""

    session: object  # onnxruntime.InferenceSession
    layout: CountLayout
    names: list[str]  # outputs to fetch
    columns: list[tuple[str, int, int, int]]  # per layer: name, size, where its spikes and
    # clipped counts are in the count list (-1: none, the 0 appended to it)
    weights: list  # the buffers the session reads in place: kept as long as it


class OnnxSimulator:
    """A compiled closed-form simulator: ``OnnxSimulator(snn)(x) -> SimResult``."""

    def __init__(self, snn: SNN, dtype=torch.float32, record=False, stats: bool = True,
                 threads: int | None = None):
        self.snn, self.dtype, self.stats, self._threads = snn, dtype, stats, threads
        self._record = record
        self._sizes = [(la.name, la.size) for la in snn.layers]
        self.recorded: list[str] = []
        self._main = self._open(stats, peaks=True)
        self.session = self._main.session
        self._small: _Graph | None = None  # the graph for small batches, made when one comes
        self._exact: _Graph | None = None  # the graph that clamps and counts every clipped
        # neuron, made when a batch reaches a window
        self._input_counts = InputCounts(snn.input, NP[dtype], float(snn.tau_c))

    def _open(self, stats: bool, peaks: bool, group: bool = False) -> _Graph:
        external: dict[str, np.ndarray] = {}
        model, layout, self.recorded = build_model(self.snn, self.dtype, self._record, stats,
                                                   external, peaks, group)
        session, weights = open_session(model, external, self._threads,
                                        f"this SNN in {self.dtype}")
        names = ["logits"] + layout.outputs + [f"s:{n}" for n in self.recorded]
        at = {key: i for i, key in enumerate(layout.names)}
        columns = [(name, size, at.get((name, "spikes"), -1), at.get((name, "clipped"), -1))
                   for name, size in self._sizes]
        return _Graph(session, layout, names, columns, weights)

    def _graph(self, n: int) -> _Graph:
        """The graph for a batch of ``n``: up to SMALL_BATCH samples the one that counts each
        stage's layers together (fewer nodes; each node costs onnxruntime a few
        microseconds, which a small batch cannot hide), else the one that counts each layer
        on its own (no copies of the offsets)."""
        if n > SMALL_BATCH or not self.stats:
            return self._main
        if self._small is None:
            self._small = self._open(True, peaks=True, group=True)
        return self._small

    def __call__(self, x) -> SimResult:
        if torch.is_tensor(x):
            x = x.numpy(force=True)  # detached, on the CPU; a view when it already is
        x = np.ascontiguousarray(x, dtype=NP[self.dtype])
        g = self._graph(x.shape[0])
        outs = g.session.run(g.names, {"x": x})
        counted = g.layout.read(outs[1:]) if self.stats else []
        if self.stats and g.layout.reached(counted):  # some neuron reached its window: run
            if self._exact is None:  # the graph that clamps and counts every clipped neuron
                self._exact = self._open(True, peaks=False)
            g = self._exact
            outs = g.session.run(g.names, {"x": x})
            counted = g.layout.read(outs[1:])
        res = SimResult(logits=torch.from_numpy(outs[0]))
        if self.stats:
            res.stats = self._stats(g, counted, x)
        for name, a in zip(self.recorded, outs[len(g.names) - len(self.recorded):]):
            res.offsets[name] = torch.from_numpy(a)
        return res

    def _stats(self, g: _Graph, counted: list[float], x: np.ndarray):
        """Per layer spikes and clipped counts, in few Python steps: after a run this code
        runs from cold caches, at a few times its usual cost, which a batch of one notices."""
        n = x.shape[0]
        counted.append(0.0)  # what index -1 reads
        stats = {name: LayerStats(size, int(counted[s]), int(counted[c]), n)
                 for name, size, s, c in g.columns}
        if g.layout.host_input is not None:
            st = stats[g.layout.host_input]
            st.spikes, st.clipped = self._input_counts(x)
        return stats


def _signature(snn: SNN) -> tuple:
    """Identity of everything the graph bakes in (arrays by identity, not content)."""
    sig = [float(snn.tau_c)]
    for la in snn.layers:
        sig += [la.name, la.t_min, la.t_max, id(getattr(la, "theta_rel", None)),
                id(getattr(la, "bias", None)), id(getattr(la, "lo", None)),
                id(getattr(la, "hi", None)), getattr(la, "saturating", None)]
        for g in getattr(la, "groups", ()):
            sig += [g.source, g.delay, id(g.ops)]
            sig += [id(o.array()) for o in g.ops]
    return tuple(sig)


#: where compiled sessions live on the SNN (``SNN.CACHE_PREFIX``: copies and pickles drop it)
_CACHE_ATTR = SNN.CACHE_PREFIX + "onnx_backend"


def compiled(snn: SNN, dtype=torch.float32, record=False) -> OnnxSimulator:
    """A cached OnnxSimulator for this SNN, rebuilt when layers, times or arrays are replaced.
    The signature walk (tens of microseconds, which a batch of one notices) runs only after
    some SNN object had an attribute assigned (``snn.edits``)."""
    key = (dtype, record if not isinstance(record, set) else frozenset(record))
    cache = snn.__dict__.setdefault(_CACHE_ATTR, {})
    hit = cache.get(key)
    now = edits()
    if hit is not None and hit[0] == now:
        return hit[2]
    sig = _signature(snn)
    if hit is not None and hit[1] == sig:
        cache[key] = (now, sig, hit[2])
        return hit[2]
    sim = OnnxSimulator(snn, dtype, record=key[1])
    cache[key] = (now, sig, sim)
    return sim


def forget(snn: SNN) -> None:
    """Drop compiled sessions (after editing the SNN's arrays in place)."""
    snn.__dict__.pop(_CACHE_ATTR, None)


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return False
    return True
