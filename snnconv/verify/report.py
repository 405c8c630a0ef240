"""The verify report: its fields (``to_dict`` is the JSON of --json and --report-json), how the
checks' results fill it, and the verdict with every failed check and the first layer to fail."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..snn import SNN


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


def build(snn: SNN, results: list[dict], rtol64: float, **fields) -> VerifyReport:
    """The judged report: ``fields`` and the checks' ``results`` (per-layer ones under
    "layers", merged into one row per SNN layer)."""
    rows = {la.name: {"name": la.name, "kind": la.kind, "neurons": la.size,
                      "onnx_tensor": la.relation.tensor if la.relation else None,
                      **({"fused": la.relation.fused, "note": la.relation.note}
                         if la.relation else {})} for la in snn.layers}
    for res in results:
        res = dict(res)
        for name, values in res.pop("layers", {}).items():
            rows[name].update(values)
        fields.update(res)
    rep = VerifyReport(latency=snn.latency, layers=[LayerCheck(**r) for r in rows.values()],
                       **fields)
    judge(rep, rtol64)
    return rep


def judge(rep: VerifyReport, rtol64: float) -> None:
    """Fill ``failures``, ``first_mismatch`` (in topological order) and ``ok``."""
    f = rep.failures
    first = None
    for c in rep.layers:
        if c.kind == "input":
            if c.clipped and not rep.allow_clipping:
                f.append(f"{c.clipped} input values outside the calibrated input range "
                         "(clipped at encoding): re-convert with --input-range LO HI covering "
                         "the data, a larger --margin, or calibration data that covers it")
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
