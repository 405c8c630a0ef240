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
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from ..snn import SNN, InputLayer, NeuronLayer, PoolLayer, ReadoutLayer
from ..snn.results import LayerStats, SimResult

OPSET = 18
_ELEM = {torch.float32: TensorProto.FLOAT, torch.float64: TensorProto.DOUBLE}
_NP = {torch.float32: np.float32, torch.float64: np.float64}


class UnsupportedError(ValueError):
    """The SNN uses something this backend does not emit."""


# arrays of at least this many elements go to onnxruntime as external initializers when the
# caller collects them (OnnxSimulator): the weights then exist once, not also in the ModelProto
# and its serialised bytes while the session is built
EXTERNAL_MIN_SIZE = 1024


class _Emitter:
    def __init__(self, dtype, external: dict[str, np.ndarray] | None = None):
        self.np = _NP[dtype]
        self.elem = _ELEM[dtype]
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0
        self._consts: dict = {}
        self.count_elem = TensorProto.FLOAT
        self.external = external

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, a, dtype=None, hint="c") -> str:
        a = np.asarray(a, dtype=dtype or self.np)
        key = None
        if a.size <= 16:  # share small constants (pads, shapes, scalars)
            key = (a.dtype.str, a.shape, a.tobytes())
            if key in self._consts:
                return self._consts[key]
        n = self.name(hint)
        if self.external is not None and a.size >= EXTERNAL_MIN_SIZE:
            t = TensorProto(name=n, data_type=helper.np_dtype_to_tensor_dtype(a.dtype),
                            dims=a.shape, data_location=TensorProto.EXTERNAL)
            t.external_data.add(key="location", value="snnconv-in-memory")
            self.inits.append(t)
            self.external[n] = np.ascontiguousarray(a)
        else:
            self.inits.append(numpy_helper.from_array(np.ascontiguousarray(a), n))
        if key is not None:
            self._consts[key] = n
        return n

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def value(self, a) -> str:
        """A per-sample array; ONNX broadcasts it against (N, *shape) as torch does."""
        return self.const(np.asarray(a, dtype=np.float64).astype(self.np))

    # -- structural helpers ------------------------------------------------------------------

    def crop_pad(self, x: str, begin, end, rank: int, value: float = 0.0) -> str:
        """Pad (positive) or crop (negative) the trailing spatial axes of (N, C, *spatial)."""
        begin, end = [int(b) for b in begin], [int(e) for e in end]
        if not any(begin) and not any(end):
            return x
        nd = len(begin)
        lead = rank - nd
        if any(b < 0 for b in begin) or any(e < 0 for e in end):
            starts = [max(0, -b) for b in begin]
            ends = [-max(0, -e) if e < 0 else np.iinfo(np.int64).max for e in end]
            axes = list(range(lead, rank))
            x = self.op("Slice", [x, self.const(starts, np.int64), self.const(ends, np.int64),
                                  self.const(axes, np.int64)])
            begin, end = [max(0, b) for b in begin], [max(0, e) for e in end]
            if not any(begin) and not any(end):
                return x
        pads = [0] * lead + begin + [0] * lead + end
        return self.op("Pad", [x, self.const(pads, np.int64), self.const(value)],
                       mode="constant")

    def slice_to(self, x: str, out_size, have_size) -> str:
        if list(out_size) == list(have_size):
            return x
        nd = len(out_size)
        return self.op("Slice", [x, self.const([0] * nd, np.int64),
                                 self.const(list(out_size), np.int64),
                                 self.const(list(range(2, 2 + nd)), np.int64)])


def _pool_geometry(in_size, kernel, stride, begin, end, dilation, out_size):
    """End pads including the ceil-mode extension, and the size the padded pool yields."""
    end2, got = [], []
    for n, b, e, k, s, d, o in zip(in_size, begin, end, kernel, stride, dilation, out_size):
        need = (o - 1) * s + d * (k - 1) + 1
        e2 = e + max(0, need - (n + b + e))
        end2.append(e2)
        got.append((n + b + e2 - d * (k - 1) - 1) // s + 1)
    return end2, got


def _add_const(em: _Emitter, v: str, a, hint: str) -> str:
    """v + a; when v is the fresh output of a Gemm, as its C input (one fused kernel)."""
    a = np.asarray(a, np.float64)
    last = em.nodes[-1] if em.nodes else None
    if last is not None and last.op_type == "Gemm" and last.output[0] == v and \
            len(last.input) == 2 and a.ndim <= 1:
        last.input.append(em.value(a))
        return v
    return em.op("Add", [v, em.value(a)], hint=hint)


def _emit_op(em: _Emitter, op, x: str) -> str:
    k = op.kind
    if k == "conv":
        w = em.const(op.weight, hint="w")
        pb, pe = list(op.pads_begin), list(op.pads_end)
        if any(p < 0 for p in pb + pe):  # crops first; Conv pads must be >= 0
            x = em.crop_pad(x, [min(p, 0) for p in pb], [min(p, 0) for p in pe],
                            len(op.in_shape) + 1)
            pb, pe = [max(p, 0) for p in pb], [max(p, 0) for p in pe]
        return em.op("Conv", [x, w], strides=list(op.stride), pads=pb + pe,
                     dilations=list(op.dilation), group=int(op.groups),
                     kernel_shape=list(op.weight.shape[2:]))
    if k == "dense":
        if len(op.in_shape) != 1:
            x = em.op("Flatten", [x], axis=1)
        return em.op("Gemm", [x, em.const(op.weight, hint="w")], transB=1)
    if k == "sumpool":
        c = op.in_shape[0]
        nd = len(op.kernel)
        end, got = _pool_geometry(op.in_shape[1:], op.kernel, op.stride, op.pads_begin,
                                  op.pads_end, op.dilation, op.out_spatial)
        x = em.crop_pad(x, op.pads_begin, end, nd + 2)
        ones = np.ones((c, 1, *op.kernel))
        y = em.op("Conv", [x, em.const(ones, hint="ones")], strides=list(op.stride),
                  dilations=list(op.dilation), group=int(c), kernel_shape=list(op.kernel))
        y = em.slice_to(y, op.out_spatial, got)
        return em.op("Mul", [y, em.value(op.scale)])
    if k == "scale":
        return em.op("Mul", [x, em.value(op.scale)])
    if k == "reshape":
        return em.op("Reshape", [x, em.const([-1, *op.shape], np.int64)])
    if k == "place":
        rank = len(op.in_shape) + 1
        n = op.in_shape[op.axis]
        pads = [0] * (2 * rank)
        pads[op.axis + 1] = op.offset
        pads[rank + op.axis + 1] = op.total - op.offset - n
        return em.op("Pad", [x, em.const(pads, np.int64), em.const(0.0)], mode="constant")
    if k == "pad":
        return em.crop_pad(x, op.pads_begin, op.pads_end, len(op.in_shape) + 1)
    if k == "convtranspose":
        # the full transposed convolution, then the crop/extension of kernels.conv_transpose
        y = em.op("ConvTranspose", [x, em.const(op.weight, hint="w")], strides=list(op.stride),
                  dilations=list(op.dilation), group=int(op.groups),
                  kernel_shape=list(op.weight.shape[2:]))
        return em.crop_pad(y, [-int(b) for b in op.pads_begin],
                           [int(o) - int(e) for e, o in zip(op.pads_end, op.output_padding)],
                           len(op.in_shape) + 1)
    if k == "transpose":
        return em.op("Transpose", [x], perm=[0] + [int(p) + 1 for p in op.perm])
    if k == "select":
        return em.op("Gather", [x, em.const(list(op.index), np.int64, hint="index")],
                     axis=int(op.axis) + 1)
    raise UnsupportedError(f"synaptic op {k!r} has no ONNX emitter")


def _count(em: _Emitter, mask: str, shape) -> str:
    """Per-sample number of true entries of a boolean (N, *shape) tensor, shape (N,).

    The sum runs in floating point (exact for 0/1 entries below 2^24 per sample, in any order):
    onnxruntime's integer ReduceSum is ten times slower than its float one.
    """
    c = em.op("Cast", [mask], to=em.count_elem)
    return em.op("ReduceSum", [c, em.const(list(range(1, len(shape) + 1)), np.int64)],
                 keepdims=0, hint="count")


def _emit_pool(em: _Emitter, layer: PoolLayer, x: str, in_shape) -> str:
    out = tuple(layer.shape[1:])
    nd = len(out)
    end, got = _pool_geometry(in_shape[1:], layer.kernel, layer.stride, layer.pads_begin,
                              layer.pads_end, layer.dilation, out)
    if any(p < 0 for p in list(layer.pads_begin) + end):
        raise UnsupportedError(f"layer {layer.name}: negative pool pads")

    def maxpool(v):
        y = em.op("MaxPool", [v], kernel_shape=list(layer.kernel), strides=list(layer.stride),
                  pads=list(layer.pads_begin) + end, dilations=list(layer.dilation))
        return em.slice_to(y, out, got)

    mins = np.asarray(layer.minimum, bool).reshape(-1)
    if not mins.any():
        return maxpool(x)
    minp = em.op("Neg", [maxpool(em.op("Neg", [x]))])
    if mins.all():
        return minp
    sel = em.const(mins.reshape((-1,) + (1,) * nd), np.bool_, hint="minimum")
    return em.op("Where", [sel, minp, maxpool(x)])


def _emit_input(em: _Emitter, layer: InputLayer, stats: bool, tau: float):
    """s = clip((x - lo) / (hi - lo), 0, 1) * tau_c, with the torch simulator's float ops;
    steps that are exact identities (x - 0, x / 1, x * 1) are left out."""
    lo = np.asarray(layer.lo, np.float64).astype(em.np)
    span = np.asarray(layer.hi, np.float64).astype(em.np) - lo
    u = "x"
    if np.any(lo != 0):
        u = em.op("Sub", [u, em.value(lo)])
    if np.any(span != 1):
        u = em.op("Div", [u, em.value(span)], hint="u")
    zero, one = em.const(0.0), em.const(1.0)
    clipped = None
    if stats:
        clipped = _count(em, em.op("Or", [em.op("Less", [u, zero]),
                                          em.op("Greater", [u, one])]), layer.shape)
    s = em.op("Clip", [u, zero, one])
    if tau != 1:  # inputs are coded on tau_c (the window, rounded up, covers it)
        s = em.op("Mul", [s, em.const(tau)], hint="s")
    return s, clipped


def build_model(snn: SNN, dtype=torch.float32, record=False, stats: bool = True,
                external: dict[str, np.ndarray] | None = None):
    """The ONNX model of ``simulate(snn, x, dtype)``: input ``x`` (N, *input shape), outputs
    ``logits``, ``stats`` (k * N per-sample spike and clip counts, k = len(stat_names)) and
    ``s:<layer>`` for recorded layers. Returns (model, stat_names, recorded layer names).
    With ``external`` (a dict), large arrays are left out of the model (external placeholders)
    and put there, for ``SessionOptions.add_external_initializers``."""
    if dtype not in _ELEM:
        raise UnsupportedError(f"dtype {dtype} (float32 or float64 only)")
    em = _Emitter(dtype, external)
    if max(la.size for la in snn.layers) >= 2 ** 24:  # pragma: no cover - 16M neurons/sample
        em.count_elem = TensorProto.DOUBLE
    tau = float(snn.tau_c)
    env: dict[str, str] = {}
    shapes = {la.name: tuple(la.shape) for la in snn.layers}
    counts: list[str] = []
    stat_names: list[tuple[str, str]] = []
    outputs: list[onnx.ValueInfoProto] = []
    recorded: list[str] = []
    zero = em.const(0.0)
    logits = None
    for layer in snn.layers:
        clipped = None
        if isinstance(layer, InputLayer):
            s, clipped = _emit_input(em, layer, stats, tau)
        elif isinstance(layer, PoolLayer):
            s = _emit_pool(em, layer, env[layer.source], shapes[layer.source])
        elif isinstance(layer, (NeuronLayer, ReadoutLayer)):
            v = None
            for g in layer.groups:
                src = snn.by_name[g.source]
                y = env[g.source]
                lag = layer.t_min - g.delay - src.t_max
                if lag != 0.0:  # delays that do not line the windows up: shift spikes only;
                    # a spike arriving at or after t_min adds nothing
                    y = em.op("Where", [em.op("Greater", [y, zero]),
                                        em.op("Max", [em.op("Add", [y, em.const(lag)]), zero]),
                                        zero])
                for o in g.ops:
                    y = _emit_op(em, o, y)
                if tau != 1.0:
                    y = em.op("Div", [y, em.const(tau)])
                v = y if v is None else em.op("Add", [v, y], hint="v")
            if isinstance(layer, ReadoutLayer):
                logits = _add_const(em, v, layer.bias, "logits")
                break
            # v + (-theta) is v - theta exactly; as an Add onnxruntime folds it into Conv/Gemm
            raw = _add_const(em, v, -np.asarray(layer.theta_rel, np.float64), "raw")
            if tau != 1.0:
                raw = em.op("Mul", [raw, em.const(tau)], hint="raw")
            w = em.const(layer.window)
            s = em.op("Clip", [raw, zero, w], hint="s")
            if stats and not layer.saturating:
                # s == window, not raw > window: counting from the clamped offsets keeps
                # Conv + Add + Clip one fused kernel (raw never leaves it). They differ only for
                # raw exactly equal to the window, a value within rounding of its boundary.
                clipped = _count(em, em.op("GreaterOrEqual", [s, w]), layer.shape)
        else:  # pragma: no cover - the SNN class has no other layer kinds
            raise UnsupportedError(f"layer {layer.name}: kind {layer.kind}")
        if stats:
            counts.append(_count(em, em.op("Greater", [s, zero]), layer.shape))
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
    em.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    outs = [helper.make_tensor_value_info("logits", em.elem, None)]
    if stats:
        em.nodes.append(helper.make_node("Concat", counts, ["stats"], axis=0))
        outs.append(helper.make_tensor_value_info("stats", em.count_elem, None))
    x_info = helper.make_tensor_value_info("x", em.elem, ["N", *snn.input.shape])
    graph = helper.make_graph(em.nodes, "snn_closed_form", [x_info], outs + outputs, em.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="snnconv")
    model.ir_version = 8
    return model, stat_names, recorded


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
        x = np.ascontiguousarray(x, dtype=_NP[self.dtype])
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
            sig += [id(getattr(o, "weight", getattr(o, "scale", None))) for o in g.ops]
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
