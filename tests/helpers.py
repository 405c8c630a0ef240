"""Shared test helpers: small onnx.helper graph builder and the exactness check.

``check_model`` converts a model and compares
- the float64 SNN against the importer's float64 reference (``ir.Graph.forward``): per-sample
  max|snn - ref| / max|ref| <= 1e-9 (spec section 4), and no clipped neuron;
- the float64 SNN against onnxruntime on the float32 model, elementwise within a first-order forward
  error bound of float32 arithmetic (below);
- top-1 agreement with onnxruntime, except near-ties (top two onnxruntime logits closer than the
  bound), which are counted separately.

Float32 bound: an ONNX node with fan-in n (n products summed, plus bias) computes its output within
gamma_n * (|W| |x| + |b|), gamma_n ~ n * eps32, of the exact result; ReLU, max-pool and Clip are
1-Lipschitz, so the error at the output is at most sum_k gamma_k * a, where a is the "absolute
network" (every weight, bias and affine constant replaced by its absolute value, evaluated on |x|).
We use gamma_k = (n_k + 4) * eps32 (the 4 covers BatchNormalization's sub/div/mul/add and
onnxruntime's own fusions) and sum over all nodes. Every observed error is far inside this bound;
a mapping bug produces errors of the order of the output itself.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

import snnconv
from snnconv import ir
from snnconv.importer import import_onnx
from snnconv.snn import kernels

EPS32 = float(np.finfo(np.float32).eps)
TOL64 = 1e-9
ROOT = Path(__file__).resolve().parents[1]


# --- building graphs ------------------------------------------------------------------------------

class G:
    """Minimal onnx.helper graph builder with reproducible random weights."""

    def __init__(self, in_shape, opset: int = 13, batch="N", seed: int = 0, name="x",
                 ir_version: int | None = None):
        self.in_shape = tuple(in_shape)
        self.opset = opset
        self.batch = batch
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.input = name
        self.ir_version = ir_version
        self._n = 0

    def fresh(self, base="t") -> str:
        self._n += 1
        return f"{base}{self._n}"

    def const(self, arr, name: str | None = None) -> str:
        arr = np.asarray(arr)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        name = name or self.fresh("c")
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def weight(self, *shape, fan_in: int | None = None, scale: float = 1.0) -> str:
        fan_in = fan_in or int(np.prod(shape[1:])) or 1
        w = self.rng.normal(0, scale / math.sqrt(fan_in), size=shape)
        return self.const(w.astype(np.float32))

    def bias(self, n: int, scale: float = 0.3) -> str:
        return self.const(self.rng.normal(0, scale, size=(n,)).astype(np.float32))

    def op(self, op_type: str, inputs, n_out: int = 1, name: str | None = None, **attrs):
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs,
                                           name=name or self.fresh(op_type + "_"), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, cin, cout, k, group=1, bias=True, **attrs):
        ks = (k,) * 2 if isinstance(k, int) else tuple(k)
        w = self.weight(cout, cin // group, *ks)
        ins = [x, w] + ([self.bias(cout)] if bias else [])
        if group != 1:
            attrs["group"] = group
        return self.op("Conv", ins, **attrs)

    def gemm(self, x, nin, nout, **attrs):
        return self.op("Gemm", [x, self.weight(nout, nin, fan_in=nin), self.bias(nout)],
                       transB=1, **attrs)

    def model(self, out, inits_as_inputs: bool = False) -> onnx.ModelProto:
        inp = helper.make_tensor_value_info(self.input, TensorProto.FLOAT,
                                            [self.batch, *self.in_shape])
        outv = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
        inputs = [inp]
        if inits_as_inputs:  # IR <= 3: every initializer is also a graph input
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for t in self.inits]
        g = helper.make_graph(self.nodes, "test", inputs, [outv], initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)],
                              producer_name="snnconv-tests")
        if self.ir_version is not None:
            m.ir_version = self.ir_version
        else:
            m.ir_version = min(m.ir_version, 8)  # what onnxruntime reads for old opsets
        inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)  # the output's shape
        del m.graph.output[:]
        m.graph.output.extend(inferred.graph.output)
        if not m.graph.output[0].type.tensor_type.HasField("shape"):  # run it once instead
            b = self.batch if isinstance(self.batch, int) else 2
            y = run_ort(m, np.zeros((b, *self.in_shape), np.float32))
            m.graph.output[0].CopyFrom(helper.make_tensor_value_info(
                out, TensorProto.FLOAT, [self.batch, *y.shape[1:]]))
        onnx.checker.check_model(m)
        return m


# --- the exactness check --------------------------------------------------------------------------

def abs_forward(graph: ir.Graph, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The absolute network on |x| and the summed rounding factor sum_k (n_k + 4) (see above)."""
    env = {graph.input: x.abs()}
    gamma = 0.0
    for n in graph.nodes:
        xs = [env[i] for i in n.inputs]
        fan = 1
        if isinstance(n, ir.ConvTranspose):
            w = torch.as_tensor(np.abs(n.weight), dtype=x.dtype)
            b = None if n.bias is None else torch.as_tensor(np.abs(n.bias), dtype=x.dtype)
            y = kernels.conv_transpose(xs[0], w, b, n.stride, n.pads_begin, n.pads_end,
                                       n.dilation, n.group, n.output_padding)
            fan = int(np.prod(n.weight.shape[:1])) // n.group * int(np.prod(n.weight.shape[2:]))
        elif isinstance(n, ir.Conv):
            w = torch.as_tensor(np.abs(n.weight), dtype=x.dtype)
            b = None if n.bias is None else torch.as_tensor(np.abs(n.bias), dtype=x.dtype)
            y = kernels.conv(xs[0], w, b, n.stride, n.pads_begin, n.pads_end, n.dilation,
                             n.group)
            fan = int(np.prod(n.weight.shape[1:]))
        elif isinstance(n, ir.Dense):
            y = xs[0] @ torch.as_tensor(np.abs(n.weight), dtype=x.dtype).T
            if n.bias is not None:
                y = y + torch.as_tensor(np.abs(n.bias), dtype=x.dtype)
            fan = n.weight.shape[1]
        elif isinstance(n, ir.Affine):
            y = xs[0] * torch.as_tensor(np.abs(n.scale), dtype=x.dtype) + \
                torch.as_tensor(np.abs(n.shift), dtype=x.dtype)
        elif isinstance(n, (ir.Relu, ir.Abs)):
            y = xs[0]
        elif isinstance(n, ir.PRelu):
            y = xs[0] * max(1.0, float(np.abs(n.slope).max()))
        elif isinstance(n, ir.Extremum):
            y = torch.stack(xs).amax(0)
            if n.const is not None:
                y = torch.maximum(y, torch.as_tensor(np.abs(n.const), dtype=x.dtype))
        elif isinstance(n, ir.Clip):
            y = xs[0] + abs(n.lo or 0.0)
        elif isinstance(n, ir.Pool):
            y = n.forward(xs[0])
            fan = int(np.prod(n.kernel))
        else:  # Add, Concat, Reshape, Pad, Transpose, Select
            y = n.forward(*xs)
        env[n.output] = y
        gamma += fan + 4
    return env[graph.output], gamma


def run_ort(model, x: np.ndarray, batch=None) -> np.ndarray:
    """onnxruntime on float32 input; fixed-batch models run in chunks of their batch size."""
    if isinstance(model, onnx.ModelProto):
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    else:
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.asarray(x, np.float32)
    if not isinstance(batch, int):
        return sess.run(None, {name: x})[0]
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        k = len(chunk)
        if k < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - k, axis=0)])
        outs.append(sess.run(None, {name: chunk})[0][:k])
    return np.concatenate(outs)


def _with_output(model, tensor: str) -> onnx.ModelProto:
    """The model with ``tensor`` as its only output (to compare before a stripped head)."""
    m = onnx.ModelProto()
    m.CopyFrom(model if isinstance(model, onnx.ModelProto) else onnx.load(str(model)))
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    return m


def _log(record: dict) -> None:
    """Append observed errors to $SNNCONV_ERRLOG (JSON lines) when set, for reports."""
    path = os.environ.get("SNNCONV_ERRLOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def check_model(model, x: np.ndarray, calib: np.ndarray | None = None, *, label: str = "",
                head: str | None = None, convert_kw: dict | None = None,
                events: bool = False) -> dict:
    """Convert ``model`` (ModelProto or path) calibrated on ``calib`` (default: x plus noise-free
    copies) and check it on ``x``. Returns the observed errors. ``events``: the event-driven
    simulator must agree with the closed form to 1e-9 (relative, float64) as well."""
    x = np.asarray(x, np.float32)
    calib = x if calib is None else np.concatenate([np.asarray(calib, np.float32), x])
    snn = snnconv.convert(model, calib, **(convert_kw or {}))
    graph = import_onnx(model, input_shape=(convert_kw or {}).get("input_shape"))
    xt = torch.as_tensor(x, dtype=torch.float64)
    ref, _ = graph.forward(xt)
    res = snn.simulate(xt, dtype=torch.float64)
    out = res.logits
    assert out.shape == ref.shape, (out.shape, ref.shape)
    n = len(x)
    clipped = {k: s.clipped for k, s in res.stats.items() if s.clipped}
    assert not clipped, f"clipped neurons on calibration data: {clipped}"
    o2, r2 = out.reshape(n, -1), ref.reshape(n, -1)
    scale = r2.abs().amax(1).clamp_min(1e-300)
    err64 = ((o2 - r2).abs().amax(1) / scale).max().item()
    assert err64 <= TOL64, f"float64 SNN vs float64 reference: {err64:.3g} > {TOL64}"

    ort_model = model
    if graph.head is not None:  # compare before the argmax-preserving head
        ort_model = _with_output(model, graph.output)
        final = run_ort(model, x, graph.batch).reshape(n, -1)
        pred = final.reshape(n) if graph.head.endswith("ArgMax") else final.argmax(1)
        assert (pred == run_ort(ort_model, x, graph.batch).reshape(n, -1).argmax(1)).all()
    ort_out = run_ort(ort_model, x, graph.batch).astype(np.float64).reshape(n, -1)
    assert ort_out.shape == tuple(o2.shape), (ort_out.shape, o2.shape)
    a, gamma = abs_forward(graph, xt)
    bound = gamma * EPS32 * a.reshape(n, -1).numpy() + TOL64 * scale.numpy()[:, None]
    diff = np.abs(o2.numpy() - ort_out)
    worst = float((diff / bound).max())
    err32 = float((diff.max(1) / np.abs(ort_out).max(1).clip(1e-300)).max())
    assert worst <= 1.0, (f"SNN vs onnxruntime exceeds the float32 bound: {worst:.3g} x bound "
                          f"(relative error {err32:.3g})")
    top_s, top_o = o2.numpy().argmax(1), ort_out.argmax(1)
    srt = np.sort(ort_out, axis=1)
    gap = srt[:, -1] - srt[:, -2] if ort_out.shape[1] > 1 else np.full(n, np.inf)
    tie = gap <= 2 * bound.max(1)
    disagree = (top_s != top_o) & ~tie
    assert not disagree.any(), f"top-1 disagreement on {int(disagree.sum())} samples"
    if head is not None:
        assert graph.head == head, (graph.head, head)
    rec = {"label": label, "err64": err64, "err32": err32, "bound_ratio": worst,
           "near_ties": int(((top_s != top_o) & tie).sum()), "n": n}
    if events:
        from snnconv.snn.event import simulate_events

        ev = simulate_events(snn, xt, dtype=torch.float64).logits.reshape(n, -1)
        err_ev = ((ev - o2).abs().amax(1) / o2.abs().amax(1).clamp_min(1e-300)).max().item()
        assert err_ev <= TOL64, f"event-driven vs closed-form simulator: {err_ev:.3g} > {TOL64}"
        rec["err_event"] = err_ev
    _log(rec)
    return rec


def uniform(rng, shape, lo=-1.0, hi=1.0) -> np.ndarray:
    return rng.uniform(lo, hi, size=shape).astype(np.float32)
