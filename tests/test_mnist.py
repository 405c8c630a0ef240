"""Fine-tuning on real MNIST (skipped when ../shared/data/mnist is absent; never shipped).

One seed of the benchmark in benchmarks/mnist_finetune.py on the 784-340-10 MLP: the judged
three-seed figures are in benchmarks/README.md; this checks that they stay reproducible in
kind (4-bit weights and 16 ticks within 1 pp of the float network, the sparsity penalty
cuts the spikes by at least 40%, the three-seed mean is 51%, without costing more than 1 pp).
"""

import numpy as np
import pytest
import torch

import snnconv
from snnconv import finetune as ft

from .conftest import MNIST

pytestmark = [pytest.mark.mnist, pytest.mark.skipif(
    not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason=f"MNIST not in {MNIST}")]


def test_mnist_mlp_4bit_16_ticks_and_sparsity(tmp_path):
    from benchmarks import mnist_finetune as mb

    torch.set_num_threads(1)  # the benchmark's setting: results do not depend on thread count
    (xtr, ytr), (xte, yte) = mb.load_mnist()
    assert xtr.shape == (8000, 1, 28, 28) and xte.shape == (2000, 1, 28, 28)
    xva, yva, xtr, ytr = xtr[7200:], ytr[7200:], xtr[:7200], ytr[:7200]
    m = mb.train_float("mlp", xtr, ytr, seed=0, epochs=15)
    onnx_path = tmp_path / "mlp.onnx"
    torch.onnx.export(m, (torch.as_tensor(xtr[:1]),), str(onnx_path), dynamo=False,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    snn = snnconv.convert(onnx_path, (xtr, ytr))
    rows = {}
    for name, opts in (("w4", {}), ("sparse", {"sparsity": 1.0})):
        res = ft.finetune(snn, (xtr, ytr), val=(xva, yva), test=(xte, yte), epochs=8, seed=0,
                          quantize=4, time_bits=4, **opts)
        rows[name] = {r["model"]: r for r in res.report["rows"]}
        assert res.report["latency_ticks"] == 32  # two stages of 16 ticks
    ann = rows["w4"]["ANN (float)"]["accuracy"]
    assert ann > 0.94  # a plainly trained MLP on 7,200 images
    assert rows["w4"]["exact SNN (float)"]["accuracy"] == ann
    assert ann - rows["w4"]["fine-tuned"]["accuracy"] <= 0.01
    assert ann - rows["sparse"]["fine-tuned"]["accuracy"] <= 0.01
    spn = rows["w4"]["ANN (float)"]["spikes_per_neuron"]
    sparse = rows["sparse"]["fine-tuned"]["spikes_per_neuron"]
    assert sparse <= 0.6 * spn
    assert sparse < rows["w4"]["fine-tuned"]["spikes_per_neuron"]
    assert np.isfinite(rows["w4"]["fine-tuned"]["accuracy_jitter"])
