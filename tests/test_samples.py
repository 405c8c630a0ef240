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
