"""Benchmark networks: the sample models plus generated VGG/ResNet nets with random weights.

Generated nets are exported to ONNX once and converted once (cached under build/bench/), with
random uniform data for calibration: weights and data do not change the cost of a forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
CACHE = ROOT / "build" / "bench"

VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def _torch():
    import torch
    from torch import nn

    return torch, nn


def vgg11(image: int, classes: int, hidden: int):
    """VGG-11 features (8 conv + BN + ReLU, 5 max-pools) and a two-layer classifier."""
    torch, nn = _torch()
    layers, c = [], 3
    for v in VGG11:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
            c = v
    side = image // 32
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512 * side * side, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))


def _resnet_cifar(plan, stem: int, classes: int):
    """A CIFAR ResNet: 3x3 stem, basic blocks (plan: (channels, stride) each), global pool."""
    torch, nn = _torch()

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.skip = nn.Sequential()
            if stride != 1 or cin != cout:
                self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            return torch.relu(self.b2(self.c2(y)) + self.skip(x))

    blocks, c = [], stem
    for cout, stride in plan:
        blocks.append(Block(c, cout, stride))
        c = cout
    return nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem),
                         nn.ReLU(), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(c, classes))


def resnet18_cifar(classes: int = 10):
    """ResNet-18 for 32x32 inputs: four stages of two basic blocks (64-512 channels)."""
    return _resnet_cifar([(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                          (512, 1)], 64, classes)


def resnet20_cifar(classes: int = 10):
    """ResNet-20 (He et al.'s CIFAR net): three stages of three basic blocks, 16/32/64
    channels: thin and deep, where per-layer fixed costs dominate."""
    return _resnet_cifar([(16, 1)] * 3 + [(32, 2), (32, 1), (32, 1)] +
                         [(64, 2), (64, 1), (64, 1)], 16, classes)


def resnet18_imagenet(classes: int = 1000):
    """ResNet-18 for 224x224 inputs: 7x7 stride-2 stem and 3x3 stride-2 max-pool, then the
    same four stages (1.8 G MACs per image)."""
    _, nn = _torch()
    body = list(resnet18_cifar(classes))[3:]
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1), *body)


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16_imagenet(classes: int = 1000):
    """VGG-16 (13 conv + BN + ReLU, 5 max-pools) with its 25088-4096-4096-1000 head
    (15.5 G MACs, 138 M weights)."""
    _, nn = _torch()
    layers, c = [], 3
    for v in VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
            c = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512 * 7 * 7, 4096), nn.ReLU(),
                         nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, classes))


def _randomise_bn(module, seed: int):
    """Non-trivial BatchNorm statistics, so folding is exercised as in a trained net."""
    torch, nn = _torch()
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@dataclass
class Spec:
    name: str
    kind: str  # "sample" | "generated"
    shape: tuple[int, ...]  # per sample
    batches: tuple[int, ...]
    calib: int  # calibration samples for the cached conversion
    build: object = None  # () -> torch module, for generated nets
    note: str = ""
    lean_at: int | None = None  # from this batch size on, only the float32 fast rows run


SPECS = {
    "mlp": Spec("mlp", "sample", (1, 8, 8), (1, 128), 1437, note="sample, 3 dense"),
    "cnn": Spec("cnn", "sample", (1, 8, 8), (1, 128), 1437, note="sample, 2 conv + BN"),
    "resnet": Spec("resnet", "sample", (1, 8, 8), (1, 128), 1437,
                   note="sample, 2 residual blocks"),
    "vgg11-cifar": Spec("vgg11-cifar", "generated", (3, 32, 32), (1, 128), 512,
                        build=lambda: vgg11(32, 10, 512),
                        note="VGG-11 (8 conv+BN, 2 dense), 3x32x32"),
    "resnet18-cifar": Spec("resnet18-cifar", "generated", (3, 32, 32), (1, 128), 128,
                           build=lambda: resnet18_cifar(10), lean_at=128,
                           note="ResNet-18 (20 conv+BN, residual), 3x32x32"),
    "resnet20-cifar": Spec("resnet20-cifar", "generated", (3, 32, 32), (1, 100), 256,
                           build=lambda: resnet20_cifar(10),
                           note="ResNet-20 (19 conv+BN, 9 residual adds, 16-64 channels), "
                                "3x32x32"),
    "vgg11-imagenet": Spec("vgg11-imagenet", "generated", (3, 224, 224), (1,), 4,
                           build=lambda: vgg11(224, 1000, 1024),
                           note="VGG-11 features, 25088-1024-1000 head, 3x224x224"),
}


def random_data(shape, n: int, seed: int, classes: int = 10):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32)
    y = rng.integers(0, classes, n)
    return x, y


def module(spec: Spec):
    torch, _ = _torch()
    torch.manual_seed(0)
    m = spec.build().eval()
    _randomise_bn(m, 1)
    return m


def onnx_path(spec: Spec) -> Path:
    if spec.kind == "sample":
        return SAMPLES / f"{spec.name}.onnx"
    p = CACHE / f"{spec.name}.onnx"
    if not p.is_file():
        torch, _ = _torch()
        p.parent.mkdir(parents=True, exist_ok=True)
        m = module(spec)
        x = torch.zeros((2, *spec.shape))
        tmp = p.with_suffix(".tmp.onnx")
        with torch.no_grad():
            torch.onnx.export(m, (x,), str(tmp), dynamo=False, opset_version=17,
                              input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
        tmp.replace(p)
    return p


def data_path(spec: Spec, which: str, n: int) -> Path:
    """Calibration ("calib") or test ("test") data: the sample digits or random images."""
    if spec.kind == "sample":
        return SAMPLES / ("digits_train.npz" if which == "calib" else "digits_test.npz")
    p = CACHE / f"{spec.name}-{which}-{n}.npz"
    if not p.is_file():
        p.parent.mkdir(parents=True, exist_ok=True)
        classes = 1000 if spec.shape[-1] == 224 else 10
        x, y = random_data(spec.shape, n, 1 if which == "calib" else 2, classes)
        np.savez(p, x=x, y=y)
    return p


def _code_stamp() -> str:
    """Hash of the converter's sources: a cached conversion is redone when they change."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted((ROOT / "snnconv").rglob("*.py")):
        if "backends" not in f.parts and f.name not in ("simulate.py", "verify.py"):
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def snn_path(spec: Spec) -> Path:
    p = CACHE / f"{spec.name}.snn"
    stamp = p.with_suffix(".stamp")
    # generated nets take uniform [0, 1) inputs: declared, so that test inputs outside the
    # calibration samples' own min/max are not clipped at encoding
    opts = {"input_range": (0.0, 1.0)} if spec.kind == "generated" else {}
    code = _code_stamp() + repr(sorted(opts.items()))
    if not p.is_file() or not stamp.is_file() or stamp.read_text() != code:
        import snnconv

        p.parent.mkdir(parents=True, exist_ok=True)
        snn = snnconv.convert(onnx_path(spec), data_path(spec, "calib", spec.calib),
                              calib_limit=spec.calib, **opts)
        snn.save(p)
        stamp.write_text(code)
    return p


def inputs(spec: Spec, batch: int) -> np.ndarray:
    if spec.kind == "sample":
        x = np.load(SAMPLES / "digits_test.npz")["x"]
        return np.ascontiguousarray(np.resize(x, (batch, *spec.shape)).astype(np.float32))
    return random_data(spec.shape, batch, 3)[0]
