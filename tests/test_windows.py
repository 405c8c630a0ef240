"""Windows without data (guaranteed bounds, estimates, the choice between them) and the input
range convert derives from calibration data."""

import io

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snnconv
from snnconv import windows
from snnconv.snn import NeuronLayer, equivalent
from snnconv.verify import verify

from benchmarks.models import resnet20_cifar

from .conftest import MNIST

RESNET20 = MNIST.parent.parent / "models" / "resnet20_mnist.onnx"
MEAN, STD = 0.1307, 0.3081


def _onnx(module: nn.Module, shape, keep_bn: bool = False) -> bytes:
    buf = io.BytesIO()
    kw = dict(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False) if keep_bn \
        else {}
    torch.onnx.export(module.eval(), (torch.zeros(1, *shape),), buf, dynamo=False,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, **kw)
    return buf.getvalue()


def _cifar_like(n: int, seed: int) -> np.ndarray:
    """8-bit images (smooth random fields) normalised per channel, as CIFAR inputs are."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=32, mode="bilinear")
    x = torch.round(x * 255) / 255
    mean, std = torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])
    return ((x - mean[:, None, None]) / std[:, None, None]).numpy()


@pytest.fixture(scope="module")
def cifar_resnet20():
    """Random weights, BatchNorm statistics from the data it will see (realistic statistics)."""
    torch.manual_seed(0)
    net = resnet20_cifar(10)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the batches below
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    net.train()
    with torch.no_grad():
        for i in range(4):
            net(torch.as_tensor(_cifar_like(128, 100 + i), dtype=torch.float32))
    return _onnx(net, (3, 32, 32), keep_bn=True)


def test_cifar_resnet20_data_free_latency_within_10x_of_calibrated(cifar_resnet20):
    x = _cifar_like(200, 1)
    lo, hi = float(x.min()) - 0.1, float(x.max()) + 0.1
    cal = snnconv.convert(cifar_resnet20, x)
    bare = snnconv.convert(cifar_resnet20, input_range=(lo, hi))
    c = bare.meta["calibration"]
    assert c["method"] == "estimate" and "batchnorm" in c["source"]
    assert c["guaranteed_latency"] > windows.AUTO_LIMIT * c["estimated_latency"]
    assert bare.latency <= 10 * cal.latency, (bare.latency, cal.latency)
    assert any("--calib" in w and "estimate" in w for w in bare.meta["warnings"])
    guaranteed = snnconv.convert(cifar_resnet20, input_range=(lo, hi), windows="guaranteed")
    assert guaranteed.meta["calibration"]["method"] == "bounds"
    assert guaranteed.latency > 100 * bare.latency


@pytest.mark.mnist
@pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file()
                    or not RESNET20.is_file(), reason="../shared MNIST or ResNet-20 absent")
def test_shared_resnet20_data_free_latency_within_10x_of_calibrated():
    """BatchNorm folded into the convolutions: the estimate propagates moments."""
    from benchmarks import mnist_finetune as mb

    (xtr, _), _ = mb.load_mnist()
    xtr = (xtr[:1000] - MEAN) / STD
    cal = snnconv.convert(RESNET20, xtr)
    bare = snnconv.convert(RESNET20, input_range=(-MEAN / STD, (1 - MEAN) / STD))
    c = bare.meta["calibration"]
    assert c["method"] == "estimate" and c["source"] == "moments"
    assert bare.latency <= 10 * cal.latency, (bare.latency, cal.latency)


class Deep(nn.Module):
    """Convolutions, a residual add, a max-pool and a dense head: what bounds pass through."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.c3, self.fc = nn.Conv2d(6, 4, 3, padding=1), nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        a = F.relu(self.c1(x))
        b = F.relu(self.c2(a) + a)
        c = F.max_pool2d(F.relu(self.c3(b)), 2)
        return self.fc(c.flatten(1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_guaranteed_windows_never_clip_inputs_inside_the_range(seed):
    torch.manual_seed(seed)
    model = _onnx(Deep(), (2, 6, 6))
    lo, hi = -1.0, 2.0
    snn = snnconv.convert(model, input_range=(lo, hi), windows="guaranteed")
    assert snn.meta["calibration"]["source"] == "symbolic"
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(2000, 2, 6, 6, generator=g, dtype=torch.float64)
    corners = torch.randint(0, 2, (500, 2, 6, 6), generator=g).double() * (hi - lo) + lo
    res = snn.simulate(torch.cat([x, corners]))
    assert all(st.clipped == 0 for st in res.stats.values()), {
        k: st.clipped for k, st in res.stats.items()}
    # symbolic bounds are never looser than interval bounds, and tighter somewhere
    sym, _ = windows.bounds(snn.layers)
    box = equivalent.bounds(snn.layers)
    hidden = [la.name for la in snn.layers if isinstance(la, NeuronLayer)]
    assert all(np.all(sym[n] <= box[n] + 1e-9) for n in hidden)
    assert any(sym[n].max() < 0.99 * box[n].max() for n in hidden)


class Small(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1, self.fc = nn.Conv2d(c, 8, 3, padding=1), nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.c1(x)), 2).flatten(1))


def _bytes_images(n, c, seed):
    """8-bit images whose brightest level (255) is rare: 1,000 calibration images may miss it."""
    g = np.random.default_rng(seed)
    return np.round(255 * g.beta(2, 5, size=(n, c, 8, 8))) / 255


@pytest.mark.parametrize("normalised", [False, True])
def test_test_images_within_the_natural_range_are_not_clipped(normalised, tmp_path):
    torch.manual_seed(0)
    model = tmp_path / "m.onnx"
    model.write_bytes(_onnx(Small(3), (3, 8, 8)))
    calib, test = _bytes_images(1000, 3, 0), _bytes_images(300, 3, 1)
    test[:, :, 0, 0] = 1.0  # the brightest pixel value, beyond every calibration image
    test[:, :, 0, 1] = 0.0
    if normalised:
        mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
        calib, test = ((a - mean[:, None, None]) / std[:, None, None] for a in (calib, test))
    assert calib.max() < test.max()
    snn = snnconv.convert(model, calib.astype(np.float32))
    rng = snn.meta["input_range"]
    assert ("grid" in rng["source"]) if normalised else ("[0, 1]" in rng["source"])
    np.savez(tmp_path / "t.npz", x=test.astype(np.float32))
    rep = verify(snn, model, tmp_path / "t.npz")
    assert rep.clipped_inputs == 0 and rep.ok, rep.failures


def test_continuous_inputs_get_the_margin():
    g = np.random.default_rng(0)
    x = g.normal(size=(500, 3, 8, 8))
    torch.manual_seed(0)
    snn = snnconv.convert(_onnx(Small(3), (3, 8, 8)), x.astype(np.float32))
    lo, hi = (np.asarray(snn.meta["input_range"][k]).reshape(-1) for k in ("lo", "hi"))
    span = x.max(axis=(0, 2, 3)) - x.min(axis=(0, 2, 3))
    assert np.allclose(hi - lo, 1.5 * span, rtol=1e-6)
    assert "margin 1.5" in snn.meta["input_range"]["source"]


def test_an_input_clipping_mismatch_names_the_remedy(tmp_path):
    torch.manual_seed(0)
    model = tmp_path / "m.onnx"
    model.write_bytes(_onnx(Small(3), (3, 8, 8)))
    calib = _bytes_images(200, 3, 0)
    snn = snnconv.convert(model, calib.astype(np.float32))
    np.savez(tmp_path / "t.npz", x=(3 * calib).astype(np.float32))
    rep = verify(snn, model, tmp_path / "t.npz")
    assert not rep.ok
    assert any("--input-range" in f and "--margin" in f for f in rep.failures)
