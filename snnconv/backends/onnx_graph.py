"""Building blocks of the onnxruntime backend's graph: an emitter that names values, shares small
constants and can leave large arrays out of the model, and the shape-level helpers (pad or crop,
the pool geometry, counts) that the op and layer emitters share."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from ..snn import kernels

ELEM = {torch.float32: TensorProto.FLOAT, torch.float64: TensorProto.DOUBLE}
NP = {torch.float32: np.float32, torch.float64: np.float64}

# arrays of at least this many elements go to onnxruntime as external initializers when the
# caller collects them (OnnxSimulator): the weights then exist once, not also in the ModelProto
# and its serialised bytes while the session is built
EXTERNAL_MIN_SIZE = 1024

#: the ONNX opset the backends emit
OPSET = 18


class UnsupportedError(ValueError):
    """The SNN uses something this backend does not emit."""


class Emitter:
    def __init__(self, dtype, external: dict[str, np.ndarray] | None = None):
        self.np = NP[dtype]
        self.elem = ELEM[dtype]
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

    def is_const(self, name: str) -> bool:
        return any(t.name == name for t in self.inits)

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


def pool_geometry(in_size, kernel, stride, begin, end, dilation, out_size):
    """End pads including the ceil-mode extension, and the size the padded pool yields."""
    extra = kernels.extend_for_output(in_size, begin, end, kernel, stride, dilation, out_size)
    end2 = [e + a for e, a in zip(end, extra)]
    got = [(n + b + e - d * (k - 1) - 1) // s + 1
           for n, b, e, k, s, d in zip(in_size, begin, end2, kernel, stride, dilation)]
    return end2, got


def add_const(em: Emitter, v: str, a, hint: str) -> str:
    """v + a; when v is the fresh output of a Gemm, as its C input (one fused kernel)."""
    a = np.asarray(a, np.float64)
    last = em.nodes[-1] if em.nodes else None
    if last is not None and last.op_type == "Gemm" and last.output[0] == v and \
            len(last.input) == 2 and a.ndim <= 1:
        last.input.append(em.value(a))
        return v
    return em.op("Add", [v, em.value(a)], hint=hint)


def count(em: Emitter, mask: str, shape) -> str:
    """Per-sample number of true entries of a boolean (N, *shape) tensor, shape (N,).

    The sum runs in floating point (exact for 0/1 entries below 2^24 per sample, in any order):
    onnxruntime's integer ReduceSum is ten times slower than its float one.
    """
    c = em.op("Cast", [mask], to=em.count_elem)
    return em.op("ReduceSum", [c, em.const(list(range(1, len(shape) + 1)), np.int64)],
                 keepdims=0, hint="count")


def open_session(model: onnx.ModelProto, external: dict[str, np.ndarray], threads: int | None,
                 what: str):
    """An onnxruntime CPU session of ``model`` whose large arrays are the ``external`` buffers.
    Returns (session, the OrtValues it reads in place: keep them as long as the session)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    # subnormals flushed to zero: a spike is then s >= 2^-126, which onnx_counts needs (a
    # spike time that close to t_max is within float32 rounding of silence)
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    if threads:
        so.intra_op_num_threads = threads
    weights = [ort.OrtValue.ortvalue_from_numpy(a) for a in external.values()]
    if external:
        so.add_external_initializers(list(external), weights)
    try:
        session = ort.InferenceSession(model.SerializeToString(), so,
                                       providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise UnsupportedError(f"onnxruntime cannot run {what}: {e}") from e
    return session, weights


def count_output(em: Emitter, outs: list, value: str, name: str) -> str:
    """The count output (float64: see onnx_counts.Counts.finish)."""
    outs.append(output(em, value, name, TensorProto.DOUBLE))
    return name


def output(em: Emitter, value: str, name: str, elem) -> onnx.ValueInfoProto:
    """A graph output ``name`` holding ``value``."""
    em.nodes.append(helper.make_node("Identity", [value], [name]))
    return helper.make_tensor_value_info(name, elem, None)


def make_model(em: Emitter, x_shape: tuple, outs: list[onnx.ValueInfoProto],
           x_elem=None) -> onnx.ModelProto:
    """The model of the emitted graph with input ``x`` and outputs ``outs``."""
    x_info = helper.make_tensor_value_info("x", x_elem or em.elem, ["N", *x_shape])
    graph = helper.make_graph(em.nodes, "snn_closed_form", [x_info], outs, em.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="snnconv")
    model.ir_version = 8
    return model
