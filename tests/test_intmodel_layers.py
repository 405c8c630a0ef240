"""The typed layers of the integer model and the .snnq format they read and write: a file
written before the layer types existed loads, simulates and writes back unchanged."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from snnconv import intmodel, modelfile
from snnconv.errors import ModelFileError
from snnconv.intmodel import QInput, QLayer, QNeuron, QPool, QReadout

from .conftest import SAMPLES

#: cnn.onnx quantised to 4-bit weights / 16 ticks by snnconv 2758316 (one untyped layer class)
V1 = Path(__file__).parent / "data" / "cnn_v1.snnq"


def test_untyped_constructor_builds_the_layer_type():
    la = QLayer("h", "neuron", (1,), stage=1, t_min=4, t_max=8, bias=np.array([1]),
                ramp=np.array([2]))
    assert type(la) is QNeuron and la.kind == "neuron" and la.theta.tolist() == [7]
    assert type(QLayer("p", "pool", (1, 2, 2), source="h")) is QPool
    assert type(QLayer("o", kind="readout", shape=(3,))) is QReadout
    assert type(dataclasses.replace(la, bias=np.array([0]))) is QNeuron
    with pytest.raises(ValueError, match="unknown layer kind"):
        QLayer("x", "spiking", (1,))
    with pytest.raises(TypeError):
        QInput("i", (2,), ramp=np.array([1]))  # an input has no ramp
    # layers without synapses read as having no groups and no bias
    assert QInput("i", (2,)).groups == () and QPool("p", (1,)).bias is None
    assert "ramp" not in {f.name for f in dataclasses.fields(QReadout)}


def test_file_from_before_the_layer_types_round_trips():
    header, tensors = modelfile.unpack(V1, intmodel.FORMAT, intmodel.FORMAT_VERSION)
    net = intmodel.load(V1)
    assert [type(la) for la in net.layers] == [QInput, QNeuron, QPool, QNeuron, QPool, QReadout]
    h2, t2 = intmodel.to_header(net)
    assert json.dumps(h2, sort_keys=True) == json.dumps(header, sort_keys=True)
    assert set(t2) == set(tensors)
    for k, a in tensors.items():
        assert t2[k].dtype == a.dtype and np.array_equal(t2[k], a), k


def test_file_from_before_the_layer_types_simulates_bit_for_bit():
    net = intmodel.load(V1)
    x = np.load(SAMPLES / "digits_test.npz")["x"][:64]
    g = intmodel.golden(net, x, record=True)
    r = intmodel.regsim(net, x, record=True)
    assert torch.equal(g.logits, r.logits)
    assert set(g.ticks) == {"input", *(la.name for la in net.layers[1:-1])} == set(r.ticks)
    for k in g.ticks:
        assert torch.equal(g.ticks[k], r.ticks[k]), k
    assert g.spikes == r.spikes and set(g.spikes) == {la.name for la in net.layers[1:-1]}


def test_unknown_layer_kind_in_a_file_is_named():
    header, tensors = modelfile.unpack(V1, intmodel.FORMAT, intmodel.FORMAT_VERSION)
    header["layers"][2]["kind"] = "spiking"
    with pytest.raises(ModelFileError, match="unknown layer kind 'spiking'"):
        intmodel.from_header(header, tensors, "x")
