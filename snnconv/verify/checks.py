"""The checks of a verify, one accumulator each: ``update(batch)`` per batch of samples, then
``result()``, the report fields it fills (per-layer fields under "layers"). Errors are per
sample: max|a - b| / max|ref|.

Each accumulator's ``state()`` is plain data (numbers in dicts) and ``merge(state)`` folds in
another process's: maxima and integer counts, so merging the states of processes that verified
disjoint batches gives exactly the state one process reaches over all of them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import ir
from ..report import indicator_ops
from ..snn import SNN, InputLayer, Layer, NeuronLayer, ReadoutLayer, chain_apply
from .inputs import Inputs
from .runners import Batch, OrtRunner, reference64


def per_sample_rel(a: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample max|a - ref| and that over max|ref|."""
    a, ref = a.reshape(len(a), -1), ref.reshape(len(ref), -1)
    err = (a - ref).abs_().amax(1) if a.shape[1] else torch.zeros(len(a), dtype=a.dtype)
    den = ref.abs().amax(1) if ref.shape[1] else torch.ones(len(a), dtype=a.dtype)
    return err, err / torch.clamp(den, min=1e-300)


def _max(a, b):
    """The larger of two maxima, either of which may be None (never measured)."""
    return b if a is None else a if b is None else max(a, b)


def _merge_rows(rows: dict, other: dict, fold) -> None:
    """Fold per-layer rows of another process into ``rows``, field by field."""
    for name, row in other.items():
        mine = rows[name]
        for k, v in row.items():
            mine[k] = fold(mine[k], v)


def expected(layer: Layer, t: torch.Tensor, tau: float) -> torch.Tensor:
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
    return per_sample_rel(dec, exp)


class LayerErrors:
    """Per layer, the decoded spike times x = s / tau_c against the float64 network (or, with
    clipping allowed, the windowed network) and against onnxruntime's tensor."""

    def __init__(self, snn: SNN, compared: list[Layer], allow_clipping: bool):
        self.snn, self.tau, self.allow_clipping = snn, float(snn.tau_c), allow_clipping
        self.compared = {la.name for la in compared}
        self.rows = {la.name: {"err_abs64": 0.0, "err_rel64": 0.0, "err_abs_ort": None,
                               "err_rel_ort": None} for la in snn.layers}

    def update(self, b: Batch) -> None:
        for la in self.snn.layers:
            r = self.rows[la.name]
            dec = b.logits if isinstance(la, ReadoutLayer) else (
                b.values[la.name] if self.tau == 1.0 else b.values[la.name] / self.tau)
            if self.allow_clipping:  # the windowed network is the reference, layer by layer
                self._add(r, "64", per_sample_rel(dec, b.windowed[la.name]))
            if la.name not in self.compared:
                continue
            tensor = la.relation.tensor
            if tensor in b.kept and not self.allow_clipping:
                self._add(r, "64", _compare(dec, expected(la, b.kept[tensor], self.tau)))
            if tensor in b.ort:
                self._add(r, "_ort", _compare(dec, expected(la, torch.as_tensor(b.ort[tensor]),
                                                            self.tau)))

    @staticmethod
    def _add(row: dict, which: str, errs) -> None:
        for key, e in zip((f"err_abs{which}", f"err_rel{which}"), errs):
            row[key] = max(row[key] or 0.0, float(e.max()))

    def result(self) -> dict:
        return {"layers": self.rows}

    def state(self) -> dict:
        return {"rows": self.rows}

    def merge(self, st: dict) -> None:
        _merge_rows(self.rows, st["rows"], _max)


class LayerCounts:
    """Per layer, the simulator's counts: clipped values (for the input layer, inputs outside
    the calibrated range) and spikes."""

    def __init__(self, snn: SNN):
        self.snn = snn
        self.rows = {la.name: {"clipped": 0, "spikes": 0, "samples": 0} for la in snn.layers}

    def update(self, b: Batch) -> None:
        for la in self.snn.layers:
            st = b.stats.get(la.name)
            if st is not None:
                r = self.rows[la.name]
                r["clipped"] += st.clipped
                r["spikes"] += st.spikes if not isinstance(la, ReadoutLayer) else 0
                r["samples"] += st.samples

    def result(self) -> dict:
        return {"layers": self.rows, "clipped_inputs": self.rows[self.snn.input.name]["clipped"]}

    def state(self) -> dict:
        return {"rows": self.rows}

    def merge(self, st: dict) -> None:
        _merge_rows(self.rows, st["rows"], lambda a, b: a + b)


def fan_out(ops, src_shape) -> torch.Tensor:
    """Per source neuron, its number of non-zero synapses in a group: the column sums of the
    group's 0/1 connectivity, i.e. the gradient of sum(indicator ops(x)) (linear in x). A
    batch's synaptic events are then sum(fan-out of every spiking neuron): one elementwise
    pass instead of a convolution per batch."""
    x = torch.zeros((1, *src_shape), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        chain_apply(indicator_ops(ops), x).sum().backward()
    return x.grad[0]


def macs(graph: ir.Graph) -> float:
    """Multiply-accumulates of one evaluation of the network."""
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


class Events:
    """Spikes per hidden neuron, and synaptic events per sample (every spike of a source
    travels along its non-zero synapses) against the network's multiply-accumulates."""

    def __init__(self, snn: SNN, graph: ir.Graph):
        self.snn, self.graph = snn, graph
        self.fan_out: dict[tuple[str, int], torch.Tensor] = {}
        self.synops = 0.0
        self.spikes = self.neurons = self.samples = 0

    def update(self, b: Batch) -> None:
        for la in self.snn.layers:
            for g in getattr(la, "groups", []):
                # counts of 0/1 synapses: integers, exact in float32 below 2^24
                key = (la.name, id(g))
                if key not in self.fan_out:
                    self.fan_out[key] = fan_out(g.ops, self.snn.by_name[g.source].shape)
                self.synops += float(torch.where(b.values[g.source] > 0, self.fan_out[key],
                                                 0.0).sum())
            if isinstance(la, NeuronLayer):
                self.spikes += int((b.values[la.name] > 0).sum())
                self.neurons += la.size * len(b)
        self.samples += len(b)

    def state(self) -> dict:
        # synops: a sum of integer fan-outs, exact in float64 below 2^53 in any order
        return {"synops": self.synops, "spikes": self.spikes, "neurons": self.neurons,
                "samples": self.samples}

    def merge(self, st: dict) -> None:
        self.synops += st["synops"]
        self.spikes += st["spikes"]
        self.neurons += st["neurons"]
        self.samples += st["samples"]

    def result(self) -> dict:
        return {"spikes_per_neuron": self.spikes / max(1, self.neurons),
                "synops_per_sample": self.synops / max(1, self.samples),
                "macs_per_sample": macs(self.graph)}


class OutputErrors:
    """The output against the float64 network (or the windowed one, whose deviation from the
    original is then reported) and against onnxruntime, also as a multiple of the tolerance."""

    def __init__(self, snn: SNN, allow_clipping: bool):
        self.out_name, self.allow_clipping = snn.output.name, allow_clipping
        self.mapping = self.ort = self.ratio = self.bound_rel = self.windowed_dev = 0.0

    def update(self, b: Batch) -> None:
        logits, ref = b.logits, b.ref64
        if self.allow_clipping:
            ref_w = b.windowed[self.out_name]
            _, dev = per_sample_rel(ref_w, ref.reshape(ref_w.shape))
            self.windowed_dev = max(self.windowed_dev, float(dev.max()))
            ref = ref_w
        _, rel64 = per_sample_rel(logits, ref.reshape(logits.shape))
        self.mapping = max(self.mapping, float(rel64.max()))
        _, rel_ort = per_sample_rel(logits, b.ort_y)
        self.ort = max(self.ort, float(rel_ort.max()))
        diff = (logits - b.ort_y).abs()
        self.ratio = max(self.ratio, float((diff / torch.clamp(b.allowed, min=1e-300)).max()))
        self.bound_rel = max(self.bound_rel, float(
            (b.allowed.amax(1) / torch.clamp(b.ort_y.abs().amax(1), min=1e-300)).max()))

    _FIELDS = ("mapping", "ort", "ratio", "bound_rel", "windowed_dev")

    def state(self) -> dict:
        return {k: getattr(self, k) for k in self._FIELDS}

    def merge(self, st: dict) -> None:
        for k in self._FIELDS:
            setattr(self, k, max(getattr(self, k), st[k]))

    def result(self) -> dict:
        return {"mapping_err_max": self.mapping, "ort_err_max": self.ort,
                "ort_bound_ratio_max": self.ratio, "ort_bound_rel_max": self.bound_rel,
                "windowed_deviation_max": self.windowed_dev if self.allow_clipping else None}


def _classes(b: Batch) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Top-1 classes of the SNN and of onnxruntime; None for an output that is not a class
    score vector."""
    if b.logits.dim() == 2 and b.logits.shape[1] > 1:
        return b.logits.argmax(1), b.ort_y.argmax(1)
    return None


class TopOne:
    """Top-1 agreement with onnxruntime. A disagreement whose top-2 gap in onnxruntime's output
    is within the tolerance of the two classes is a near-tie, counted apart."""

    def __init__(self):
        self.agree = self.near_ties = self.disagreements = self.samples = 0

    def update(self, b: Batch) -> None:
        self.samples += len(b)
        classes = _classes(b)
        if classes is None:
            self.agree += len(b)
            return
        p_snn, p_ort = classes
        same = p_snn == p_ort
        self.agree += int(same.sum())
        for i in torch.nonzero(~same).reshape(-1).tolist():
            gap = float(b.ort_y[i, p_ort[i]] - b.ort_y[i, p_snn[i]])
            if gap <= float(b.allowed[i, p_ort[i]] + b.allowed[i, p_snn[i]]):
                self.near_ties += 1
            else:
                self.disagreements += 1

    def state(self) -> dict:
        return {"agree": self.agree, "near_ties": self.near_ties,
                "disagreements": self.disagreements, "samples": self.samples}

    def merge(self, st: dict) -> None:
        for k, v in st.items():
            setattr(self, k, getattr(self, k) + v)

    def result(self) -> dict:
        return {"samples": self.samples, "top1_agreement": self.agree / max(1, self.samples),
                "near_ties": self.near_ties, "disagreements": self.disagreements}


class Accuracy:
    """Accuracy of the ANN (onnxruntime) and of the SNN, when the data has labels."""

    def __init__(self, labelled: bool):
        self.labelled = labelled
        self.ann = self.snn = self.samples = 0

    def update(self, b: Batch) -> None:
        self.samples += len(b)
        classes = _classes(b)
        if classes is not None and b.y is not None:
            yt = torch.as_tensor(b.y)
            self.snn += int((classes[0] == yt).sum())
            self.ann += int((classes[1] == yt).sum())

    def state(self) -> dict:
        return {"ann": self.ann, "snn": self.snn, "samples": self.samples}

    def merge(self, st: dict) -> None:
        for k, v in st.items():
            setattr(self, k, getattr(self, k) + v)

    def result(self) -> dict:
        if not (self.labelled and self.samples):
            return {}
        return {"accuracy_ann": self.ann / self.samples, "accuracy_snn": self.snn / self.samples}


def reference_check(snn: SNN, inputs: Inputs, k: int) -> dict:
    """The SNN against the float64 ``onnx.reference`` run of the original file, first k
    samples."""
    k = k if inputs.total is None else min(k, inputs.total)
    x_sub = inputs.ds.head_x(k).astype(np.float32)
    k = len(x_sub)
    r64 = reference64(inputs.onnx_path, inputs.graph.output, x_sub)
    out = snn.simulate(x_sub.astype(np.float64)).logits
    _, rel = per_sample_rel(out, torch.as_tensor(r64).reshape(out.shape))
    return {"reference64_err_max": float(rel.max()), "reference64_samples": k}


def noise_curve(snn: SNN, inputs: Inputs, sigmas, batch_size: int, seed: int,
                runner: OrtRunner) -> dict:
    """Top-1 agreement with onnxruntime (and accuracy) under Gaussian spike-time jitter."""
    ds, out_name = inputs.ds, inputs.graph.output
    rows = []
    for sigma in sigmas:
        gen = torch.Generator().manual_seed(seed)
        agree = correct = count = 0
        for xb, yb in ds.batches(batch_size, inputs.total):
            ref = runner.run(xb.astype(np.float32), [out_name])[out_name]
            res = snn.simulate(xb, dtype=torch.float32, noise=float(sigma), generator=gen)
            pred = res.logits.reshape(len(xb), -1).argmax(1).numpy()
            agree += int((pred == ref.reshape(len(xb), -1).argmax(1)).sum())
            if yb is not None:
                correct += int((pred == yb).sum())
            count += len(xb)
        rows.append({"sigma": float(sigma), "top1_agreement": agree / count,
                     "accuracy": correct / count if ds.labelled else None})
    return {"noise": rows}
