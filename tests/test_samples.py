"""The shipped sample models convert exactly (issue: convert, done-when list)."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

import snnconv
from snnconv.importer import import_onnx

from .conftest import SAMPLES


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_sample_converts_exactly(name, digits, tmp_path):
    path = SAMPLES / f"{name}.onnx"
    snn = snnconv.convert(path, SAMPLES / "digits_train.npz")
    out = tmp_path / f"{name}.snn"
    snn.save(out)
    snn = snnconv.load(out)
    x = digits["test_x"]
    ref64, _ = import_onnx(path).forward(x)
    res = snn.simulate(x, dtype=torch.float64)
    err = ((res.logits - ref64).abs().amax(1) / ref64.abs().amax(1)).max().item()
    assert err <= 1e-9, err
    assert sum(s.clipped for s in res.stats.values()) == 0
    ort_out = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    err32 = (np.abs(res.logits.numpy() - ort_out).max(1) / np.abs(ort_out).max(1)).max()
    assert err32 < 1e-5, err32
    assert (res.logits.argmax(1).numpy() == ort_out.argmax(1)).all()
    spn = res.spikes_per_neuron(snn)
    assert 0 < spn < 1


def test_layers_name_the_onnx_nodes_they_carry(tmp_path):
    """Each layer records the ONNX tensor it reproduces and how (issue: convert, mapping pass):
    the cnn sample keeps BatchNormalization nodes, which are folded into the conv layers; every
    compute node of the graph is carried by some layer; the record survives save/load."""
    import onnx

    path = SAMPLES / "cnn.onnx"
    snn = snnconv.convert(path, SAMPLES / "digits_train.npz")
    snn.save(tmp_path / "cnn.snn")
    snn = snnconv.load(tmp_path / "cnn.snn")
    fused = {la.name: la.relation.fused for la in snn.layers if la.relation is not None}
    bn = [f for fs in fused.values() for f in fs if f.startswith("BatchNormalization")]
    assert bn and all(f.endswith("(folded)") for f in bn)
    for la in snn.neuron_layers():
        ops = [f.split()[0] for f in la.relation.fused]
        assert ops == ["Conv", "BatchNormalization", "Relu"], (la.name, ops)
    carried = {f.split()[1] for fs in fused.values() for f in fs}
    nodes = {n.name for n in onnx.load(str(path)).graph.node if n.op_type != "Constant"}
    assert nodes == carried, nodes ^ carried
    assert snn.by_name["output"].relation.how.endswith("output logits")


def test_split_layers_say_which_part_they_carry():
    """A LeakyRelu is carried by two layers (z+ and z-): both name the same nodes and their part."""
    from .helpers import G

    g = G((6,), seed=3)
    h = g.op("LeakyRelu", [g.gemm(g.input, 6, 5)], alpha=0.1, name="leaky")
    snn = snnconv.convert(g.model(g.gemm(h, 5, 3)), input_range=(-1.0, 1.0))
    parts = [la.relation for la in snn.neuron_layers()]
    assert sorted(r.note for r in parts) == ["negative part", "positive part"]
    assert {r.fused for r in parts} == {(parts[0].fused[0], "LeakyRelu leaky")}
    assert all("Gemm" in r.how and r.how.endswith("part") for r in parts)
