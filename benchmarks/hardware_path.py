"""The hardware path on trained networks only: float vs post-training quantisation vs fine-tuning.

Data: the MNIST test file set in ../shared/data/mnist (or $SNNCONV_MNIST). Float networks train
on images 0-7,999 (as ../shared/models/resnet20_mnist.onnx did); conversion, quantisation and
fine-tuning see images 0-3,999 (3,600 train, 400 validation picking the best epoch); every
accuracy is on images 8,000-9,999. Nets: the 784-340-10 MLP and the small CNN of
mnist_finetune.py, the shared ResNet-20, an all-conv net (stride-2 convolutions, no pooling) and
a VGG-style net (max-pooling), the last two with mean/std-normalised (signed) input.

    python benchmarks/hardware_path.py --out build/hardware_path.json [--nets resnet20 ...]
    python benchmarks/hardware_path.py --ranges        # activation-range rules, PTQ only

Prints markdown tables for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import snnconv  # noqa: E402
from benchmarks import mnist_finetune as mb  # noqa: E402
from snnconv import finetune as ft  # noqa: E402

SHARED_RESNET = ROOT.parent / "shared" / "models" / "resnet20_mnist.onnx"
MEAN, STD = 0.1307, 0.3081
NETS = ["mlp", "cnn", "resnet20", "allconv", "vgg"]
SIGNED = {"resnet20", "allconv", "vgg"}
EPOCHS = 5


def make(kind: str) -> nn.Module:
    if kind in ("mlp", "cnn"):
        return mb.make_model(kind)
    if kind == "allconv":
        return nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, 2, 1),
                             nn.ReLU(), nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(),
                             nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(), nn.Conv2d(64, 10, 1),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, 1, 1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def float_net(kind: str, x, y, work: Path, epochs: int) -> Path:
    """The trained float net as ONNX (the shared ResNet-20 as it is)."""
    if kind == "resnet20":
        return SHARED_RESNET
    path = work / f"hw_{kind}.onnx"
    if path.is_file():
        return path
    torch.manual_seed(0)
    m = make(kind)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            j = perm[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(m(xt[j]), yt[j]).backward()
            opt.step()
    m.eval()
    torch.onnx.export(m, (xt[:1],), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    return path


def data(kind: str, work: Path) -> dict[str, Path]:
    (xtr, ytr), (xte, yte) = mb.load_mnist()
    tag = "signed" if kind in SIGNED else "unit"
    if kind in SIGNED:
        xtr, xte = (xtr - MEAN) / STD, (xte - MEAN) / STD
    out = {"float": (xtr, ytr)}
    for name, (a, b) in (("train", (xtr[:3600], ytr[:3600])),
                         ("val", (xtr[3600:4000], ytr[3600:4000])), ("test", (xte, yte))):
        p = work / f"hw_{tag}_{name}.npz"
        if not p.is_file():
            np.savez(p, x=a.astype(np.float32), y=b)
        out[name] = p
    return out


def run(snn, d, **opts) -> dict:
    t = time.perf_counter()
    res = ft.finetune(snn, d["train"], val=d["val"], test=d["test"], seed=0, **opts)
    rows = {r["model"]: r for r in res.report["rows"]}
    fit = res.report["fit"]["layers"]
    return {"ann": rows["ANN (float)"]["accuracy"],
            "ptq": rows["post-training quantised"]["accuracy"],
            "ft": rows["fine-tuned"]["accuracy"],
            "spn_ann": rows["ANN (float)"]["spikes_per_neuron"],
            "spn": rows["fine-tuned"]["spikes_per_neuron"],
            "latency": res.report["latency_ticks"],
            "v_bits": max(r["V_bits"] for r in fit), "i_bits": max(r["I_bits"] for r in fit),
            "max_ramp": max(r["ramp"][1] for r in res.report["layers"] if "ramp" in r),
            "epoch_s": float(np.median(res.report["epoch_seconds"]))
            if res.report["epoch_seconds"] else None,
            "agree": res.report["layer_errors"]["top1_agreement"],
            "warnings": [w for w in res.warnings if "loses" in w],
            "seconds": time.perf_counter() - t}


def bench(kind: str, work: Path, epochs: int, float_epochs: int) -> dict:
    d = data(kind, work)
    onnx_path = float_net(kind, *d["float"], work, float_epochs)
    snn = snnconv.convert(onnx_path, d["train"])
    rec = {"net": kind}
    rec["w8t8"] = run(snn, d, quantize=8, time_bits=8, epochs=0)
    rec["w4t4"] = run(snn, d, quantize=4, time_bits=4, epochs=epochs)
    rec["binary"] = run(snn, d, quantize=1, first_last_bits=8, time_bits=4, epochs=epochs)
    return rec


def ranges(work: Path, nets: list[str]) -> list[dict]:
    """PTQ accuracy and top-1 agreement with the float SNN per activation-range rule, with and
    without the GPTQ/bias-correction refinement (the quantisation API directly: no training)."""
    from snnconv import intmodel, quant
    from snnconv.quant import ptq

    out = []
    for kind in nets:
        d = data(kind, work)
        snn = snnconv.convert(float_net(kind, *d["float"], work, 3), d["train"])
        xtr = np.load(d["train"])["x"].astype(np.float64)
        te = np.load(d["test"])
        xte, yte = te["x"].astype(np.float64), te["y"]

        def predict(net, xte=xte):
            return np.concatenate([intmodel.golden(net, xte[i:i + 500]).logits.argmax(1).numpy()
                                   for i in range(0, len(xte), 500)])

        ref = np.concatenate([snn.simulate(xte[i:i + 500]).logits.argmax(1).numpy()
                              for i in range(0, len(xte), 500)])
        stats = quant.act_stats(snn, [torch.as_tensor(xtr[i:i + 512])
                                      for i in range(0, 2048, 512)])
        for rule in ("mse", "max", 99.99, 99.9):
            for bits, tb in ((8, 8), (4, 4)):
                net, lat = quant.build(snn, stats, quant.QuantConfig(
                    bits=bits, time_bits=tb, act_range=rule), quant.Profile())
                for method in ("none", "gptq"):
                    if method == "gptq":
                        lat = ptq.refine(net, lat, snn, xtr[:512])
                    p = predict(quant.with_latent(net, lat))
                    rec = {"net": kind, "rule": rule, "bits": bits, "time_bits": tb,
                           "ptq_method": method, "float": float((ref == yte).mean()),
                           "ptq": float((p == yte).mean()), "agree": float((p == ref).mean())}
                    out.append(rec)
                    print(json.dumps(rec), flush=True)
    return out


def pct(v):
    return f"{100 * v:.2f}"


def table(recs: list[dict]) -> str:
    lines = [f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
             "", "| net | float % | PTQ w8t8 % | PTQ w4t4 % | fine-tuned w4t4 % | binary "
             "(first/last 8-bit) t4 % | spikes/neuron float / w4t4 | latency w8t8 / w4t4 "
             "(ticks) | V bits w8t8 / w4t4 | largest R w8t8 | s/epoch w4t4 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        a, b, c = r["w8t8"], r["w4t4"], r["binary"]
        lines.append(
            f"| {r['net']} | {pct(a['ann'])} | {pct(a['ptq'])} | {pct(b['ptq'])} | "
            f"{pct(b['ft'])} | {pct(c['ft'])} | {b['spn_ann']:.3f} / {b['spn']:.3f} | "
            f"{a['latency']} / {b['latency']} | {a['v_bits']} / {b['v_bits']} | "
            f"{a['max_ramp']} | {b['epoch_s']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", nargs="+", default=NETS)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--float-epochs", type=int, default=3)
    ap.add_argument("--ranges", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "build" / "hardware_path.json"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not (mb.MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        print(f"MNIST not found in {mb.MNIST}; set SNNCONV_MNIST", file=sys.stderr)
        return 2
    if "resnet20" in args.nets and not SHARED_RESNET.is_file():
        print(f"{SHARED_RESNET} not found: skipping resnet20", file=sys.stderr)
        args.nets = [n for n in args.nets if n != "resnet20"]
    torch.set_num_threads(args.threads)
    work = Path(args.out).parent
    work.mkdir(parents=True, exist_ok=True)
    if args.ranges:
        out = ranges(work, [n for n in args.nets if n in ("resnet20", "allconv", "vgg")])
        Path(args.out).write_text(json.dumps(out, indent=1))
        return 0
    recs = []
    for kind in args.nets:
        rec = bench(kind, work, args.epochs, args.float_epochs)
        recs.append(rec)
        print(json.dumps(rec), flush=True)
        Path(args.out).write_text(json.dumps(recs, indent=1))
    print(table(recs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
