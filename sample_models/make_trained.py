"""Train the small networks of sample_models/hardware_nets/ (tests of the hardware path).

Random weights hide quantisation collapses (a residual skip that clips, an argmax over
per-class units) that trained weights show at once, so the hardware-path tests use these:
trained on the shipped digits sample (digits_train.npz), a few seconds each on a CPU.

    python sample_models/make_trained.py      (torch, onnx, onnxruntime; writes next to it)

Architectures: resnet (BatchNorm, identity and projection shortcuts, global average pool),
allconv (stride-2 convolutions, no pooling), vgg (max-pooling), nhwc (channels-last input,
an input Transpose as TF/Keras exports have). "signed" nets take mean/std-normalised input
((x - 0.3) / 0.4, so the first layer folds an input offset); "unit" nets take x in [0, 1].
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
OUT = HERE / "hardware_nets"
MEAN, STD = 0.3, 0.4
#: (file stem, architecture, signed input, padding of the first convolution)
NETS = [("resnet_signed", "resnet", True, 1), ("resnet_unit", "resnet", False, 1),
        ("allconv_signed_p0", "allconv", True, 0), ("vgg_unit_p0", "vgg", False, 0),
        ("nhwc_signed", "nhwc", True, 1)]
EPOCHS = 20


class Block(nn.Module):
    def __init__(self, i, o, stride):
        super().__init__()
        self.c1 = nn.Conv2d(i, o, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(o)
        self.c2 = nn.Conv2d(o, o, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(o)
        self.sc = nn.Sequential() if stride == 1 and i == o else nn.Sequential(
            nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))

    def forward(self, x):
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.sc(x))


class Net(nn.Module):
    def __init__(self, arch: str, pad: int):
        super().__init__()
        self.arch = arch
        side = 8 if pad else 6
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 1, pad, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())
        if arch == "resnet":
            self.body = nn.Sequential(Block(8, 8, 1), Block(8, 16, 2), Block(16, 16, 1))
            feat = 16
        elif arch == "allconv":
            self.body = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
            feat = 16 * ((side + 3) // 4) ** 2
        else:  # vgg, nhwc
            self.body = nn.Sequential(nn.Conv2d(8, 16, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2))
            feat = 16 * (side // 2) ** 2
        self.fc = nn.Linear(feat, 10)

    def forward(self, x):
        if self.arch == "nhwc":
            x = x.permute(0, 3, 1, 2)
        h = self.body(self.stem(x))
        if self.arch == "resnet":
            h = F.adaptive_avg_pool2d(h, 1)
        return self.fc(h.flatten(1))


def digits(signed: bool, nhwc: bool = False, folder: Path = HERE):
    """(x_train, y_train, x_test, y_test) of the digits sample, as such a net takes it."""
    out = []
    for part in ("train", "test"):
        d = np.load(folder / f"digits_{part}.npz", allow_pickle=False)
        x = d["x"].astype(np.float32)
        if signed:
            x = (x - MEAN) / STD
        if nhwc:
            x = x.transpose(0, 2, 3, 1).copy()
        out += [x, d["y"].astype(np.int64)]
    return tuple(out)


def train(arch: str, signed: bool, pad: int, seed: int = 0) -> tuple[nn.Module, float]:
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = digits(signed, arch == "nhwc")
    x, y = torch.as_tensor(xtr), torch.as_tensor(ytr)
    m = Net(arch, pad)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    g = torch.Generator().manual_seed(seed)
    for _ in range(EPOCHS):
        m.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(m(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    m.eval()
    with torch.no_grad():
        acc = float((m(torch.as_tensor(xte)).argmax(1).numpy() == yte).mean())
    return m, acc


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(exist_ok=True)
    rows = []
    for stem, arch, signed, pad in NETS:
        m, acc = train(arch, signed, pad)
        xtr, _, xte, yte = digits(signed, arch == "nhwc")
        path = OUT / f"{stem}.onnx"
        torch.onnx.export(m, (torch.as_tensor(xtr[:1]),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
        got = ort.InferenceSession(str(path)).run(None, {"x": xte})[0]
        with torch.no_grad():
            diff = float(np.abs(got - m(torch.as_tensor(xte)).numpy()).max())
        assert diff < 1e-4, (stem, diff)
        ort_acc = float((got.argmax(1) == yte).mean())
        rows.append(f"| `{stem}.onnx` | {arch} | {'(x - 0.3)/0.4' if signed else '[0, 1]'} | "
                    f"{pad} | {100 * ort_acc:.2f}% |")
        print(stem, f"{100 * acc:.2f}%", file=sys.stderr)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
