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

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from ..snn import SNN, InputLayer, NeuronLayer, PoolLayer, ReadoutLayer
from ..snn.results import LayerStats, SimResult
from .onnx_emit import emit_fire, emit_input, emit_pool, emit_potential
from .onnx_graph import ELEM, EXTERNAL_MIN_SIZE, NP, Emitter, UnsupportedError, add_const, count

OPSET = 18
__all__ = ["EXTERNAL_MIN_SIZE", "OPSET", "OnnxSimulator", "UnsupportedError", "available",
           "build_model", "compiled", "forget"]


def build_model(snn: SNN, dtype=torch.float32, record=False, stats: bool = True,
                external: dict[str, np.ndarray] | None = None):
    """The ONNX model of ``simulate(snn, x, dtype)``: input ``x`` (N, *input shape), outputs
    ``logits``, ``stats`` (k * N per-sample spike and clip counts, k = len(stat_names)) and
    ``s:<layer>`` for recorded layers. Returns (model, stat_names, recorded layer names).
    With ``external`` (a dict), large arrays are left out of the model (external placeholders)
    and put there, for ``SessionOptions.add_external_initializers``."""
    if dtype not in ELEM:
        raise UnsupportedError(f"dtype {dtype} (float32 or float64 only)")
    em = Emitter(dtype, external)
    if max(la.size for la in snn.layers) >= 2 ** 24:  # pragma: no cover - 16M neurons/sample
        em.count_elem = TensorProto.DOUBLE
    env: dict[str, str] = {}
    counts: list[str] = []
    stat_names: list[tuple[str, str]] = []
    outputs: list[onnx.ValueInfoProto] = []
    recorded: list[str] = []
    zero = em.const(0.0)
    logits = None
    for layer in snn.layers:
        if isinstance(layer, ReadoutLayer):
            v = emit_potential(em, layer, env, snn.by_name, float(snn.tau_c))
            logits = add_const(em, v, layer.bias, "logits")
            break
        s, clipped = _emit_layer(em, snn, layer, env, stats)
        if stats:
            counts.append(count(em, em.op("Greater", [s, zero]), layer.shape))
            stat_names.append((layer.name, "spikes"))
            if clipped is not None:
                counts.append(clipped)
                stat_names.append((layer.name, "clipped"))
        env[layer.name] = s
        if record is True or (isinstance(record, (set, frozenset)) and layer.name in record):
            em.nodes.append(helper.make_node("Identity", [s], [f"s:{layer.name}"]))
            outputs.append(helper.make_tensor_value_info(f"s:{layer.name}", em.elem, None))
            recorded.append(layer.name)
    if logits is None:
        raise UnsupportedError("the SNN has no readout layer")
    return _model(em, snn, logits, counts if stats else None, outputs), stat_names, recorded


def _emit_layer(em: Emitter, snn: SNN, layer, env: dict[str, str], stats: bool):
    """A hidden layer's offsets and its clipped-count output (None if not counted)."""
    tau = float(snn.tau_c)
    if isinstance(layer, InputLayer):
        return emit_input(em, layer, stats, tau)
    if isinstance(layer, PoolLayer):
        src_shape = tuple(snn.by_name[layer.source].shape)
        return emit_pool(em, layer, env[layer.source], src_shape), None
    if isinstance(layer, NeuronLayer):
        v = emit_potential(em, layer, env, snn.by_name, tau)
        return emit_fire(em, layer, v, stats, tau)
    raise UnsupportedError(f"layer {layer.name}: kind {layer.kind}")  # pragma: no cover


def _model(em: Emitter, snn: SNN, logits: str, counts: list[str] | None,
           outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
    """The graph's outputs (logits, the stats if counted, recorded offsets) and the model."""
    em.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    outs = [helper.make_tensor_value_info("logits", em.elem, None)]
    if counts is not None:
        em.nodes.append(helper.make_node("Concat", counts, ["stats"], axis=0))
        outs.append(helper.make_tensor_value_info("stats", em.count_elem, None))
    x_info = helper.make_tensor_value_info("x", em.elem, ["N", *snn.input.shape])
    graph = helper.make_graph(em.nodes, "snn_closed_form", [x_info], outs + outputs, em.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="snnconv")
    model.ir_version = 8
    return model


class OnnxSimulator:
    """A compiled closed-form simulator: ``OnnxSimulator(snn)(x) -> SimResult``."""

    def __init__(self, snn: SNN, dtype=torch.float32, record=False, stats: bool = True,
                 threads: int | None = None):
        import onnxruntime as ort

        self.snn, self.dtype, self.stats = snn, dtype, stats
        external: dict[str, np.ndarray] = {}
        model, self._stat_names, self.recorded = build_model(snn, dtype, record, stats,
                                                             external)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        # onnxruntime reads these buffers in place: they live as long as the session
        self._weights = [ort.OrtValue.ortvalue_from_numpy(a) for a in external.values()]
        if external:
            so.add_external_initializers(list(external), self._weights)
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), so,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise UnsupportedError(f"onnxruntime cannot run this SNN in {dtype}: {e}") from e
        self._outs = ["logits"] + (["stats"] if stats else []) + \
            [f"s:{n}" for n in self.recorded]

    def __call__(self, x) -> SimResult:
        if torch.is_tensor(x):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=NP[self.dtype])
        outs = self.session.run(self._outs, {"x": x})
        res = SimResult(logits=torch.from_numpy(outs[0]))
        n = x.shape[0]
        if self.stats:
            for la in self.snn.layers:
                res.stats[la.name] = LayerStats(neurons=la.size, samples=n)
            tot = outs[1].reshape(len(self._stat_names), n).sum(1, dtype=np.float64)
            for (name, what), c in zip(self._stat_names, tot.tolist()):
                setattr(res.stats[name], what, int(c))
        for name, a in zip(self.recorded, outs[1 + self.stats:]):
            res.offsets[name] = torch.from_numpy(a)
        return res


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


_CACHE_ATTR = "_onnx_backend_cache"


def compiled(snn: SNN, dtype=torch.float32, record=False) -> OnnxSimulator:
    """A cached OnnxSimulator for this SNN, rebuilt when layers, times or arrays are replaced."""
    key = (dtype, record if not isinstance(record, set) else frozenset(record))
    cache = snn.__dict__.setdefault(_CACHE_ATTR, {})
    sig = _signature(snn)
    hit = cache.get(key)
    if hit is not None and hit[0] == sig:
        return hit[1]
    sim = OnnxSimulator(snn, dtype, record=key[1])
    cache[key] = (sig, sim)
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
