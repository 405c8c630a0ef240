"""``verify``: prove that an SNN reproduces its ReLU network, layer by layer (spec section 4).

Three references, all reported:
- mapping exactness: the SNN simulated in float64 vs the imported network evaluated in float64
  (``ir.Graph.forward``), ~1e-9 relative;
- importer correctness: vs onnxruntime on the original file (float32), within a forward error bound
  derived from the network (about n * eps32 * (|W||x| + |b|) per layer, accumulated);
- an independent float64 reference: the original file cast to float64 and run by ``onnx.reference``
  on a subset (onnxruntime has no float64 Conv).
Errors are per sample: max|a - b| / max|ref|.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import data as data_mod, ir, modelfile
from .errors import DataError, UsageError
from .fileio import sha256_file
from .importer import import_onnx
from .progress import bar
from .snn import SNN, InputLayer, Layer, NeuronLayer, ReadoutLayer, chain_apply

EPS32 = 2.0 ** -24
DEFAULT_RTOL64 = 1e-9


# --- float32 forward error bound ---------------------------------------------------------------

def _gamma(n: int) -> float:
    return n * EPS32 / (1 - n * EPS32)


class Float32Bound:
    """Per-element bound on |float32 result - exact result| of a graph's output, computed while
    the graph is evaluated in float64 (``Graph.forward``'s ``after`` hook), for the actual inputs.

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
        self.last_use = graph.last_uses()
        # per rounding node: gamma, the node with |W| (float32, no bias / shift), gamma |b|
        self.terms: dict[int, tuple[float, ir.Node, torch.Tensor | None]] = {}
        widen = 0.0
        for node, n in _compute_nodes(graph):
            g = _gamma(n)
            widen += g
            if isinstance(node, (ir.Conv, ir.Dense, ir.ConvTranspose)):
                an = dataclasses.replace(node, weight=np.abs(node.weight).astype(np.float32),
                                         bias=None)
                b = None if node.bias is None else torch.as_tensor(
                    g * np.abs(node.bias), dtype=torch.float32)
            elif isinstance(node, ir.Affine):
                an = dataclasses.replace(node, scale=np.abs(node.scale).astype(np.float32),
                                         shift=np.zeros_like(node.shift, np.float32))
                b = torch.as_tensor(g * np.abs(node.shift), dtype=torch.float32)
            else:  # average pool: linear with positive weights
                an, b = node, None
            self.terms[id(node)] = (g, an, b)
        self.headroom = 1.0 + widen + len(graph.nodes) * EPS32

    @torch.no_grad()
    def __call__(self, x, keep: set[str] | None = None):
        """The float64 output, the tensors in ``keep`` (as ``graph.forward``) and the bound."""
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float64)
        E = {self.graph.input: torch.zeros_like(x, dtype=torch.float32)}

        def after(idx, node, xs, y):
            E[node.output] = self._error(node, xs, [E[i] for i in node.inputs], y)
            for i in node.inputs:  # keep memory to what later nodes read
                if self.last_use.get(i) == idx and i != self.graph.output:
                    E.pop(i, None)

        out, kept = self.graph.forward(x, keep=keep, after=after)
        return out, kept, E[self.graph.output].to(torch.float64) * self.headroom

    def _error(self, node, xs, es, y) -> torch.Tensor:
        if id(node) in self.terms:
            g, an, b = self.terms[id(node)]
            e = an.forward(xs[0].to(torch.float32).abs_().mul_(g).add_(es[0]))
            if b is not None:  # an Affine's shift broadcasts as stored; a bias is per channel
                e = e + (b if isinstance(node, ir.Affine) else
                         b.reshape((1, -1) + (1,) * (e.dim() - 2)))
            return e
        if isinstance(node, ir.Add):
            return y.to(torch.float32).abs_().mul_(EPS32).add_(es[0]).add_(es[1])
        if isinstance(node, ir.PRelu):  # Lipschitz max(1, |slope|), one rounded product
            lip = torch.clamp(torch.as_tensor(np.abs(node.slope), dtype=torch.float32), min=1.0)
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


# --- report ---------------------------------------------------------------------------------------

@dataclass
class LayerCheck:
    name: str
    kind: str
    onnx_tensor: str | None
    neurons: int
    fused: tuple[str, ...] = ()  # the ONNX nodes fused into the layer (Relation.fused)
    note: str = ""  # +/- split, offset coding (Relation.note)
    err_abs64: float = 0.0  # decoded spike times vs the float64 network
    err_rel64: float = 0.0
    err_abs_ort: float | None = None  # vs onnxruntime's intermediate tensor
    err_rel_ort: float | None = None
    clipped: int = 0
    spikes: int = 0
    samples: int = 0

    @property
    def spikes_per_neuron(self) -> float:
        return self.spikes / max(1, self.neurons * self.samples)


@dataclass
class VerifyReport:
    model: str
    onnx: str
    data: str
    simulator: str
    samples: int = 0
    ok: bool = False
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    first_mismatch: str | None = None
    tolerances: dict = field(default_factory=dict)
    mapping_err_max: float = 0.0  # float64 SNN vs float64 network, relative per sample
    ort_err_max: float = 0.0  # float64 SNN vs onnxruntime float32, relative per sample
    ort_bound_ratio_max: float = 0.0  # max |snn - ort| / bound (<= 1 passes)
    ort_bound_rel_max: float = 0.0  # the bound itself, relative
    reference64_err_max: float | None = None
    reference64_samples: int = 0
    top1_agreement: float = 0.0
    near_ties: int = 0
    disagreements: int = 0
    accuracy_ann: float | None = None
    accuracy_snn: float | None = None
    spikes_per_neuron: float = 0.0
    synops_per_sample: float = 0.0
    macs_per_sample: float = 0.0
    latency: float = 0.0
    clipped_inputs: int = 0
    layers: list[LayerCheck] = field(default_factory=list)
    noise: list[dict] = field(default_factory=list)
    allow_clipping: bool = False
    windowed_deviation_max: float | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for la, obj in zip(d["layers"], self.layers):
            la["spikes_per_neuron"] = obj.spikes_per_neuron
        return d


# --- helpers --------------------------------------------------------------------------------------

def _resolve(snn: SNN, onnx_path, data_path, warnings: list[str]):
    src = snn.meta.get("source") or {}
    if onnx_path is None:
        if not src.get("path"):
            raise UsageError("the model file records no source ONNX file; pass --onnx")
        onnx_path = Path(src["path"])
        if not onnx_path.is_file():
            raise DataError(f"{onnx_path}: the ONNX model recorded at conversion is gone",
                            hint="pass --onnx MODEL.onnx")
        if src.get("sha256") and sha256_file(onnx_path) != src["sha256"]:
            raise DataError(f"{onnx_path}: changed since conversion (sha256 differs)",
                            hint="convert again, or pass --onnx explicitly to compare anyway")
    elif src.get("sha256") and Path(onnx_path).is_file() and \
            sha256_file(onnx_path) != src["sha256"]:
        warnings.append(f"{onnx_path} is not the file this SNN was converted from")
    cal = (snn.meta.get("calibration") or {}).get("data") or {}
    if data_path is None:
        if not cal.get("path"):
            raise UsageError("the model file records no calibration data; pass --data")
        data_path = Path(cal["path"])
        if not data_path.is_file():
            raise DataError(f"{data_path}: the calibration data recorded at conversion is gone",
                            hint="pass --data DATA")
        if cal.get("sha256") and sha256_file(data_path) != cal["sha256"]:
            raise DataError(f"{data_path}: changed since conversion (sha256 differs)",
                            hint="pass --data explicitly")
        warnings.append(f"no --data: verifying on the calibration data {data_path}")
    return Path(onnx_path), data_path


def _per_sample_rel(a: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, ref = a.reshape(len(a), -1), ref.reshape(len(ref), -1)
    err = (a - ref).abs_().amax(1) if a.shape[1] else torch.zeros(len(a), dtype=a.dtype)
    den = ref.abs().amax(1) if ref.shape[1] else torch.ones(len(a), dtype=a.dtype)
    return err, err / torch.clamp(den, min=1e-300)


def _expected(layer: Layer, t: torch.Tensor, tau: float) -> torch.Tensor:
    """The value a layer should carry, from the original network's tensor (Relation)."""
    rel = layer.relation
    # a copy (t may be a kept tensor other layers compare with), then in place: these are
    # full-size tensors of every layer of every batch
    v = t.reshape(len(t), *layer.shape).to(torch.float64, copy=True)
    if np.any(np.asarray(rel.scale) != 1.0):
        v.mul_(torch.as_tensor(rel.scale, dtype=torch.float64))
    if np.any(np.asarray(rel.shift) != 0.0):
        v.add_(torch.as_tensor(rel.shift, dtype=torch.float64))
    if isinstance(layer, ReadoutLayer):
        return v
    v.clamp_(min=0.0)
    cap = layer.window / tau if isinstance(layer, InputLayer) else None
    if isinstance(layer, NeuronLayer) and layer.saturating:
        cap = layer.cap
    return v if cap is None else v.clamp_(max=cap)


def _compare(dec: torch.Tensor, exp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample abs / rel error of a layer against its expected values; non-finite expected
    entries (none in the usual case) are left out."""
    finite = torch.isfinite(exp)
    if not bool(finite.all()):
        dec, exp = torch.where(finite, dec, 0.0), torch.where(finite, exp, 0.0)
    return _per_sample_rel(dec, exp)


def _macs(graph: ir.Graph) -> float:
    total = 0
    for n in graph.nodes:
        out = graph.shapes[n.output]
        if isinstance(n, ir.Conv):
            total += math.prod(out) * math.prod(n.weight.shape[1:])
        elif isinstance(n, ir.Dense):
            total += n.weight.size
        elif isinstance(n, ir.Pool) and n.kind == "avg":
            total += math.prod(out) * math.prod(n.kernel)
    return float(total)


def _fan_out(ops, src_shape) -> torch.Tensor:
    """Per source neuron, its number of non-zero synapses in a group: the column sums of the
    group's 0/1 connectivity, i.e. the gradient of sum(indicator ops(x)) (linear in x). A
    batch's synaptic events are then sum(fan-out of every spiking neuron): one elementwise
    pass instead of a convolution per batch."""
    x = torch.zeros((1, *src_shape), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        chain_apply(_indicator_ops(ops), x).sum().backward()
    return x.grad[0]


def _indicator_ops(ops):
    from .report import _indicator

    return [_indicator(o) for o in ops]


class _Runner:
    """onnxruntime on the original file, batch-size aware (fixed batch sizes are chunked)."""

    def __init__(self, onnx_path, extra):
        import onnxruntime as ort

        from .importer.runtime import runtime_model

        blob, self.extra, info = runtime_model(onnx_path, extra)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
        self.input = info["input"]
        self.batch = info["batch"]
        self.names = [o.name for o in self.sess.get_outputs()]

    def run(self, x: np.ndarray, want: list[str]) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.batch:
            outs = self.sess.run(want, {self.input: x})
            return dict(zip(want, outs))
        parts: dict[str, list] = {w: [] for w in want}
        for i in range(0, len(x), self.batch):
            chunk = x[i:i + self.batch]
            k = len(chunk)
            if k < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - k, *x.shape[1:]),
                                                        np.float32)])
            for w, o in zip(want, self.sess.run(want, {self.input: chunk})):
                parts[w].append(o[:k])
        return {w: np.concatenate(v) for w, v in parts.items()}


def _reference64(onnx_path, out_name: str, x: np.ndarray) -> np.ndarray:
    import warnings as _w

    from .importer.runtime import float64_model, reference_evaluator

    model, _, info = float64_model(onnx_path, [out_name])
    with _w.catch_warnings():
        _w.simplefilter("ignore")
        ev = reference_evaluator(model)
        outs = []
        step = info["batch"] or len(x)
        for i in range(0, len(x), step):
            chunk = x[i:i + step].astype(np.float64)
            k = len(chunk)
            if info["batch"] and k < step:
                chunk = np.concatenate([chunk, np.zeros((step - k, *x.shape[1:]))])
            outs.append(np.asarray(ev.run([out_name], {info["input"]: chunk})[0])[:k])
    return np.concatenate(outs)


# --- verify ---------------------------------------------------------------------------------------

def verify(model, onnx=None, data=None, *, n: int | None = None, atol: float | None = None,
           rtol: float | None = None, rtol64: float = DEFAULT_RTOL64,
           allow_clipping: bool = False, simulator: str = "closed", batch_size: int = 128,
           reference_n: int = 16, noise: list[float] | None = None, seed: int = 0,
           progress: bool = False, plot: str | None = None) -> VerifyReport:
    """Compare an SNN (path or object) with its ONNX model on data. ``report.ok`` says whether
    it is equivalent within tolerance; nothing is raised for a mismatch."""
    warnings: list[str] = []
    model_name = str(model) if not isinstance(model, SNN) else "<SNN>"
    snn = model if isinstance(model, SNN) else modelfile.load(model)
    if simulator not in ("closed", "event"):
        raise UsageError(f"--simulator {simulator}: choose 'closed' or 'event'")
    onnx_path, data_src = _resolve(snn, onnx, data, warnings)
    graph = import_onnx(onnx_path)
    for what, a, b in (("input", graph.input_shape, snn.input.shape),
                       ("output", graph.output_shape, snn.output.shape)):
        if tuple(a) != tuple(b):
            raise DataError(f"{onnx_path}: {what} shape {tuple(a)} differs from the SNN's "
                            f"{tuple(b)}: not the model this SNN was converted from",
                            hint="pass the ONNX file the SNN was converted from (--onnx)")
    n_classes = int(np.prod(snn.output.shape))
    ds = data_mod.load(data_src, graph.input_shape,
                       n_classes=n_classes if len(snn.output.shape) == 1 else None)
    total = len(ds) if n is None else min(n, len(ds))
    if total <= 0:
        raise DataError(f"{ds.name}: no samples to verify")

    tau = float(snn.tau_c)
    rel_layers = []
    for la in snn.layers:
        if la.relation is None:
            continue
        shp = graph.shapes.get(la.relation.tensor)
        if shp is not None and math.prod(shp) != la.size:
            warnings.append(f"layer {la.name}: ONNX tensor {la.relation.tensor} has shape "
                            f"{tuple(shp)}, not the layer's {la.shape}: not compared")
            continue
        rel_layers.append(la)
    comparable = {la.name for la in rel_layers}
    tensors = sorted({la.relation.tensor for la in rel_layers} | {graph.output})
    runner = _Runner(onnx_path, tensors)
    ort_avail = [t for t in tensors if t in runner.names]
    rep = VerifyReport(model=model_name, onnx=str(onnx_path), data=ds.name, simulator=simulator,
                       latency=snn.latency, allow_clipping=allow_clipping, warnings=warnings)
    rep.tolerances = {"mapping_rtol64": rtol64, "ort": "float32 forward error bound" if atol is
                      None and rtol is None else {"atol": atol or 0.0, "rtol": rtol or 0.0},
                      "reference64_rtol": rtol64}
    checks = {la.name: LayerCheck(la.name, la.kind, la.relation.tensor if la.relation else None,
                                  la.size, *((la.relation.fused, la.relation.note)
                                             if la.relation else ()))
              for la in snn.layers}
    correct_ann = correct_snn = agree = 0
    synops = 0.0
    fan_out: dict[tuple[str, int], torch.Tensor] = {}
    spikes = neurons = 0
    windowed_dev = 0.0
    caps = {la.name: la.window / tau for la in snn.neuron_layers()}
    bound_pass = Float32Bound(graph)  # |W| prepared once for every batch

    if simulator == "event":
        from .snn.event import simulate_events as sim_fn
    else:
        from .snn.simulate import simulate as sim_fn

    with bar("verifying", total, progress) as adv:
        for xb, yb in ds.batches(batch_size, total):
            xb32 = xb.astype(np.float32)
            x64 = torch.as_tensor(xb32.astype(np.float64))
            ort_out = runner.run(xb32, ort_avail)
            if atol is None and rtol is None:  # the float32 error bound in the same pass
                ref64, kept, bound32 = bound_pass(x64, keep=set(tensors))
            else:
                ref64, kept = graph.forward(x64, keep=set(tensors))
            layer_vals: dict[str, torch.Tensor] = {}

            def observe(layer, s, layer_vals=layer_vals):
                layer_vals[layer.name] = s

            if simulator == "event":
                res = sim_fn(snn, x64, dtype=torch.float64, record=True)
                layer_vals.update(res.offsets)
            else:
                res = sim_fn(snn, x64, dtype=torch.float64, observe=observe)
            logits = res.logits
            windowed: dict[str, torch.Tensor] = {}
            if allow_clipping:
                from .snn.equivalent import forward as eq_forward

                ref_w = eq_forward(snn.layers, x64, caps=caps,
                                   observe=lambda la, v, w=windowed: w.__setitem__(la.name, v))
                windowed[snn.output.name] = ref_w
            for la in snn.layers:
                c = checks[la.name]
                st = res.stats.get(la.name)
                if st is not None:
                    c.clipped += st.clipped
                    c.spikes += st.spikes if not isinstance(la, ReadoutLayer) else 0
                    c.samples += st.samples
                dec = logits if isinstance(la, ReadoutLayer) else (
                    layer_vals[la.name] if tau == 1.0 else layer_vals[la.name] / tau)
                if allow_clipping:  # the windowed network is the reference, layer by layer
                    e_abs, e_rel = _per_sample_rel(dec, windowed[la.name])
                    c.err_abs64 = max(c.err_abs64, float(e_abs.max()))
                    c.err_rel64 = max(c.err_rel64, float(e_rel.max()))
                if la.name not in comparable:
                    continue
                if la.relation.tensor in kept and not allow_clipping:
                    e_abs, e_rel = _compare(dec, _expected(la, kept[la.relation.tensor], tau))
                    c.err_abs64 = max(c.err_abs64, float(e_abs.max()))
                    c.err_rel64 = max(c.err_rel64, float(e_rel.max()))
                if la.relation.tensor in ort_out:
                    e_abs, e_rel = _compare(dec, _expected(
                        la, torch.as_tensor(ort_out[la.relation.tensor]), tau))
                    c.err_abs_ort = max(c.err_abs_ort or 0.0, float(e_abs.max()))
                    c.err_rel_ort = max(c.err_rel_ort or 0.0, float(e_rel.max()))
            # synaptic events: every spike of a source travels along its non-zero synapses
            for la in snn.layers:
                for g in getattr(la, "groups", []):
                    # counts of 0/1 synapses: integers, exact in float32 below 2^24
                    key = (la.name, id(g))
                    if key not in fan_out:
                        fan_out[key] = _fan_out(g.ops, snn.by_name[g.source].shape)
                    synops += float(torch.where(layer_vals[g.source] > 0, fan_out[key],
                                                0.0).sum())
                if isinstance(la, NeuronLayer):
                    spikes += int((layer_vals[la.name] > 0).sum())
                    neurons += la.size * len(xb)
            # outputs
            if allow_clipping:
                _, dev = _per_sample_rel(ref_w, ref64.reshape(ref_w.shape))
                windowed_dev = max(windowed_dev, float(dev.max()))
                ref_cmp = ref_w
            else:
                ref_cmp = ref64
            _, rel64 = _per_sample_rel(logits, ref_cmp.reshape(logits.shape))
            rep.mapping_err_max = max(rep.mapping_err_max, float(rel64.max()))
            ort_y = torch.as_tensor(ort_out[graph.output].astype(np.float64)).reshape(
                logits.shape)
            _, rel_ort = _per_sample_rel(logits, ort_y)
            rep.ort_err_max = max(rep.ort_err_max, float(rel_ort.max()))
            diff = (logits - ort_y).abs()
            if atol is None and rtol is None:
                bound = bound32.reshape(logits.shape) + \
                    rtol64 * ref64.reshape(logits.shape).abs().amax(1, keepdim=True)
            else:
                bound = (atol or 0.0) + (rtol or 0.0) * ort_y.abs().amax(1, keepdim=True) \
                    .expand_as(ort_y)
            ratio = float((diff / torch.clamp(bound, min=1e-300)).max())
            rep.ort_bound_ratio_max = max(rep.ort_bound_ratio_max, ratio)
            rep.ort_bound_rel_max = max(rep.ort_bound_rel_max, float(
                (bound.amax(1) / torch.clamp(ort_y.abs().amax(1), min=1e-300)).max()))
            if logits.dim() == 2 and logits.shape[1] > 1:
                p_snn, p_ort = logits.argmax(1), ort_y.argmax(1)
                same = p_snn == p_ort
                agree += int(same.sum())
                for i in torch.nonzero(~same).reshape(-1).tolist():
                    gap = float(ort_y[i, p_ort[i]] - ort_y[i, p_snn[i]])
                    if gap <= float(bound[i, p_ort[i]] + bound[i, p_snn[i]]):
                        rep.near_ties += 1
                    else:
                        rep.disagreements += 1
                if yb is not None:
                    yt = torch.as_tensor(yb)
                    correct_ann += int((p_ort == yt).sum())
                    correct_snn += int((p_snn == yt).sum())
            else:
                agree += len(xb)
            rep.samples += len(xb)
            adv(len(xb))

    rep.layers = list(checks.values())
    rep.clipped_inputs = checks[snn.input.name].clipped
    rep.top1_agreement = agree / max(1, rep.samples)
    if ds.y is not None and rep.samples:
        rep.accuracy_ann = correct_ann / rep.samples
        rep.accuracy_snn = correct_snn / rep.samples
    rep.spikes_per_neuron = spikes / max(1, neurons)
    rep.synops_per_sample = synops / max(1, rep.samples)
    rep.macs_per_sample = _macs(graph)
    if allow_clipping:
        rep.windowed_deviation_max = windowed_dev

    if reference_n > 0:
        k = min(reference_n, total)
        x_sub = np.asarray(ds.x[:k], dtype=np.float32)
        r64 = _reference64(onnx_path, graph.output, x_sub)
        out = snn.simulate(x_sub.astype(np.float64)).logits
        _, rel = _per_sample_rel(out, torch.as_tensor(r64).reshape(out.shape))
        rep.reference64_err_max = float(rel.max())
        rep.reference64_samples = k

    if noise:
        rep.noise = _noise_curve(snn, ds, total, noise, batch_size, seed, runner, graph.output)

    _judge(rep, rtol64)
    if plot:
        from .plots import verify_plot

        verify_plot(snn, graph, ds, plot)
    return rep


def _noise_curve(snn, ds, total, sigmas, batch_size, seed, runner, out_name) -> list[dict]:
    rows = []
    for sigma in sigmas:
        gen = torch.Generator().manual_seed(seed)
        agree = correct = count = 0
        for xb, yb in ds.batches(batch_size, total):
            ref = runner.run(xb.astype(np.float32), [out_name])[out_name]
            res = snn.simulate(xb, dtype=torch.float32, noise=float(sigma), generator=gen)
            pred = res.logits.reshape(len(xb), -1).argmax(1).numpy()
            agree += int((pred == ref.reshape(len(xb), -1).argmax(1)).sum())
            if yb is not None:
                correct += int((pred == yb).sum())
            count += len(xb)
        rows.append({"sigma": float(sigma), "top1_agreement": agree / count,
                     "accuracy": correct / count if ds.y is not None else None})
    return rows


def _judge(rep: VerifyReport, rtol64: float) -> None:
    f = rep.failures
    first = None
    for c in rep.layers:
        if c.kind == "input":
            if c.clipped and not rep.allow_clipping:
                f.append(f"{c.clipped} input values outside the calibrated input range "
                         "(clipped at encoding)")
                first = first or c.name
            continue
        if c.clipped and not rep.allow_clipping:
            f.append(f"layer {c.name}: {c.clipped} neuron values exceeded the window (clipped)")
            first = first or c.name
        if c.err_rel64 > rtol64 and c.kind != "readout":  # the readout is judged below
            f.append(f"layer {c.name}: decoded spike times differ from the network's activations"
                     f" (max rel err {c.err_rel64:.3g} > {rtol64:g})")
            first = first or c.name
    if rep.mapping_err_max > rtol64:
        f.append(f"output: float64 mapping error {rep.mapping_err_max:.3g} > {rtol64:g}")
        first = first or "output"
    if rep.allow_clipping:  # vs the original network: reported as a deviation, not judged
        rep.ok = not f
        rep.first_mismatch = first
        return
    if rep.ort_bound_ratio_max > 1.0:
        f.append(f"output: differs from onnxruntime beyond the float32 bound "
                 f"({rep.ort_bound_ratio_max:.3g} x bound)")
        first = first or "output"
    if rep.reference64_err_max is not None and rep.reference64_err_max > rtol64:
        f.append(f"output: differs from the float64 onnx.reference run of the original file "
                 f"({rep.reference64_err_max:.3g} > {rtol64:g})")
        first = first or "output"
    if rep.disagreements:
        f.append(f"output: top-1 differs from onnxruntime on {rep.disagreements} samples "
                 "(not near-ties)")
        first = first or "output"
    rep.first_mismatch = first
    rep.ok = not f
