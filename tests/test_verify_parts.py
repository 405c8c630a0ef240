"""The parts of verify on their own: the recorded-file check, the float32 bound's walk, the
accumulators' report fields and the renderings the CLI prints."""

import hashlib

import numpy as np
import pytest
import torch

from snnconv import render
from snnconv.errors import DataError, UsageError
from snnconv.fileio import recorded_file
from snnconv.importer import import_onnx
from snnconv.verify import Float32Bound, VerifyReport, float32_bound
from snnconv.verify.inputs import resolve
from snnconv.verify.report import build, judge

from .conftest import SAMPLES


def test_recorded_file_states(tmp_path):
    f = tmp_path / "a.npz"
    f.write_bytes(b"abc")
    sha = hashlib.sha256(b"abc").hexdigest()
    assert recorded_file(None) == (None, "absent")
    assert recorded_file({"sha256": sha}) == (None, "absent")
    assert recorded_file({"path": str(f), "sha256": sha}) == (f, "ok")
    assert recorded_file({"path": str(f)}) == (f, "ok")
    assert recorded_file({"path": str(f), "sha256": "0" * 64}) == (f, "changed")
    assert recorded_file({"path": str(f), "sha256": "0" * 64}, check_hash=False) == (f, "ok")
    assert recorded_file({"path": str(tmp_path / "gone.npz")})[1] == "gone"


class _Meta:
    def __init__(self, meta):
        self.meta = meta


def test_resolve_refuses_what_the_model_cannot_supply(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"model")
    with pytest.raises(UsageError, match="records no source ONNX file"):
        resolve(_Meta({}), None, None, [])
    with pytest.raises(DataError, match="recorded at conversion is gone"):
        resolve(_Meta({"source": {"path": str(tmp_path / "x.onnx")}}), None, None, [])
    with pytest.raises(DataError, match="changed since conversion"):
        resolve(_Meta({"source": {"path": str(onnx), "sha256": "0" * 64}}), None, None, [])
    with pytest.raises(UsageError, match="records no calibration data"):
        resolve(_Meta({"source": {"path": str(onnx)}}), None, None, [])
    warnings = []
    got = resolve(_Meta({"source": {"path": str(onnx), "sha256": "0" * 64}}), onnx, "d.npz",
                  warnings)
    assert got == (onnx, "d.npz")
    assert warnings == [f"{onnx} is not the file this SNN was converted from"]


def test_bound_pass_computes_the_float64_network_as_graph_forward():
    """The bound rides along its own walk: the output and kept tensors are graph.forward's."""
    graph = import_onnx(SAMPLES / "resnet.onnx")
    x = torch.as_tensor(np.load(SAMPLES / "digits_test.npz")["x"][:8], dtype=torch.float64)
    keep = {graph.input, graph.nodes[2].output, graph.output}
    out, kept, bound = Float32Bound(graph)(x, keep=keep)
    ref, ref_kept = graph.forward(x, keep=keep)
    assert torch.equal(out, ref)
    assert kept.keys() == ref_kept.keys() and all(torch.equal(kept[k], ref_kept[k])
                                                  for k in kept)
    assert torch.equal(bound, float32_bound(graph, x))
    assert bool((bound > 0).all()) and bool(torch.isfinite(bound).all())


class _Layer:
    def __init__(self, name, kind, size):
        self.name, self.kind, self.size, self.relation = name, kind, size, None


class _SNN:
    latency = 3.0
    layers = [_Layer("input", "input", 4), _Layer("h", "neuron", 2), _Layer("output", "readout",
                                                                           3)]


def test_report_merges_results_per_layer_and_judges():
    rep = build(_SNN(), [{"layers": {"h": {"clipped": 2, "spikes": 3, "samples": 1}}},
                         {"layers": {"h": {"err_rel64": 1e-3}}, "mapping_err_max": 0.5}],
                1e-9, model="m", onnx="o", data="d", simulator="closed")
    assert isinstance(rep, VerifyReport) and rep.latency == 3.0
    h = rep.layers[1]
    assert (h.clipped, h.spikes, h.err_rel64, h.spikes_per_neuron) == (2, 3, 1e-3, 1.5)
    assert not rep.ok and rep.first_mismatch == "h" and len(rep.failures) == 3
    d = rep.to_dict()
    assert d["layers"][1]["spikes_per_neuron"] == 1.5
    ok = VerifyReport("m", "o", "d", "closed")
    judge(ok, 1e-9)
    assert ok.ok and ok.first_mismatch is None


def test_render_lines_of_a_verify_report():
    rep = VerifyReport("m.snn", "m.onnx", "d.npz", "closed", samples=3, ok=False,
                       failures=["output: x"], first_mismatch="output",
                       tolerances={"mapping_rtol64": 1e-9}, noise=[
                           {"sigma": 0.1, "top1_agreement": 0.5, "accuracy": None}]).to_dict()
    lines = render.verify_report(rep)
    assert lines[1] == "samples            3 from d.npz (simulator: closed)"
    assert "noise sigma 0.1: agreement 50.00%" in lines
    assert lines[-2:] == ["[bold red]MISMATCH[/] (first at output):", "  - output: x"]
    integer = render.verify_report({"kind": "integer", "samples": 2, "data": "d",
                                    "logit_mismatches": 0, "layer_mismatches": {},
                                    "overflow_total": 0, "latency_ticks": 9, "ok": True})
    assert integer[-1] == "[bold green]BIT-EXACT[/] integer models agree"
    assert render.to_json({"a": np.arange(2), "b": np.float32(0.5)}) == \
        '{\n  "a": [\n    0,\n    1\n  ],\n  "b": 0.5\n}\n'
