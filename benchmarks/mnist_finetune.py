"""MNIST fine-tuning figures: float ANN vs exact SNN vs post-training quantised vs fine-tuned.

Data: the MNIST test file set in ../shared/data/mnist (or $SNNCONV_MNIST): the first 8,000 images
train (the float network and fine-tuning use the first 7,200; images 7,200-7,999 are the validation
set that picks the best fine-tuning epoch), the last 2,000 test. Models: a 784-340-10 MLP and a
small CNN, trained here with torch, exported to ONNX, converted, then fine-tuned per setting.

    python benchmarks/mnist_finetune.py --seeds 0 1 2 --out build/mnist_finetune.json

Prints a markdown table (mean and spread over the seeds) for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
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
from snnconv import finetune as ft  # noqa: E402

MNIST = Path(os.environ.get("SNNCONV_MNIST", ROOT.parent / "shared" / "data" / "mnist"))

SETTINGS = {
    "w4 t16": dict(quantize=4, time_bits=4),
    "w4 t16 sparsity": dict(quantize=4, time_bits=4, sparsity=1.0),
    "w1 (first/last 8 bit) t16": dict(quantize=1, time_bits=4, first_last_bits=8),
    "w1 (all layers) t16": dict(quantize=1, time_bits=4),
}


def load_mnist():
    def idx(name):
        raw = gzip.open(MNIST / name).read()
        ndim = raw[3]
        dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)

    x = idx("t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    y = idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return (x[:8000], y[:8000]), (x[8000:], y[8000:])


def make_model(kind: str) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 340), nn.ReLU(), nn.Linear(340, 10))
    return nn.Sequential(nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(512, 10))


def train_float(kind, x, y, seed, epochs=15, bs=64):
    torch.manual_seed(seed)
    m = make_model(kind)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), bs):
            j = perm[i:i + bs]
            loss = F.cross_entropy(m(xt[j]), yt[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return m.eval()


def epoch_times(kind, snn, work, bs=64, reps=3):
    """One plain PyTorch training epoch of the same ReLU network (Adam, same batch size, same
    7,200 images) and one fine-tuning epoch, interleaved so both see the same machine load."""
    m = make_model(kind)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    z = np.load(work / "mnist_train.npz")
    xt, yt = torch.as_tensor(z["x"]), torch.as_tensor(z["y"])
    plain, fine = [], []
    for r in range(reps):
        perm = torch.randperm(len(xt), generator=torch.Generator().manual_seed(r))
        t = time.perf_counter()
        for i in range(0, len(xt), bs):
            j = perm[i:i + bs]
            loss = F.cross_entropy(m(xt[j]), yt[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
        plain.append(time.perf_counter() - t)
        res = ft.finetune(snn, work / "mnist_train.npz", val=work / "mnist_val.npz", epochs=1,
                          quantize=4, time_bits=4, batch_size=bs, seed=r)
        fine.append(res.report["epoch_seconds"][0])
    return statistics.median(plain), statistics.median(fine)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--float-epochs", type=int, default=15)
    ap.add_argument("--out", default=str(ROOT / "build" / "mnist_finetune.json"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        print(f"MNIST not found in {MNIST}; set SNNCONV_MNIST", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    (xtr, ytr), (xte, yte) = load_mnist()
    work = Path(args.out).parent
    work.mkdir(parents=True, exist_ok=True)
    xva, yva = xtr[7200:], ytr[7200:]
    xtr, ytr = xtr[:7200], ytr[:7200]
    np.savez(work / "mnist_train.npz", x=xtr, y=ytr)
    np.savez(work / "mnist_val.npz", x=xva, y=yva)
    np.savez(work / "mnist_test.npz", x=xte, y=yte)
    results = []
    for kind in args.models:
        for seed in args.seeds:
            t = time.perf_counter()
            m = train_float(kind, xtr, ytr, seed, args.float_epochs)
            onnx_path = work / f"mnist_{kind}_{seed}.onnx"
            torch.onnx.export(m, (torch.as_tensor(xtr[:1]),), str(onnx_path), dynamo=False,
                              input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
            snn = snnconv.convert(onnx_path, work / "mnist_train.npz")
            print(f"{kind} seed {seed}: float training + convert {time.perf_counter() - t:.0f}"
                  " s", flush=True)
            for name in args.settings:
                opts = dict(SETTINGS[name])
                t = time.perf_counter()
                res = ft.finetune(snn, work / "mnist_train.npz", val=work / "mnist_val.npz",
                                  test=work / "mnist_test.npz", epochs=args.epochs, seed=seed,
                                  **opts)
                rows = {r["model"]: r for r in res.report["rows"]}
                rec = {"model": kind, "seed": seed, "setting": name, "options": opts,
                       "ann": rows["ANN (float)"]["accuracy"],
                       "snn": rows["exact SNN (float)"]["accuracy"],
                       "ptq": rows["post-training quantised"]["accuracy"],
                       "ft": rows["fine-tuned"]["accuracy"],
                       "ft_jitter": rows["fine-tuned"]["accuracy_jitter"],
                       "spn_ann": rows["ANN (float)"]["spikes_per_neuron"],
                       "spn_ft": rows["fine-tuned"]["spikes_per_neuron"],
                       "latency_ticks": res.report["latency_ticks"],
                       "weight_bytes": rows["fine-tuned"]["weight_bytes"],
                       "float_bytes": rows["ANN (float)"]["weight_bytes"],
                       "epoch_seconds": statistics.median(res.report["epoch_seconds"])
                       if res.report["epoch_seconds"] else None,
                       "seconds": time.perf_counter() - t}
                results.append(rec)
                print(json.dumps(rec), flush=True)
        # one epoch of plain torch training of the same network at the same batch size
        plain, fine = epoch_times(kind, snn, work)
        results.append({"model": kind, "setting": "plain torch epoch", "epoch_seconds": plain,
                        "finetune_epoch_seconds": fine})
        Path(args.out).write_text(json.dumps(results, indent=1))
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


def _ms(vals, scale=100.0, digits=2):
    vals = [v * scale for v in vals]
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def table(results) -> str:
    lines = [f"machine: {platform.machine()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__}, python {platform.python_version()}", "",
             "| model | setting | float ANN % | exact SNN % | PTQ % | fine-tuned % | loss vs "
             "float (pp) | PTQ loss (pp) | jitter 1 tick % | spikes/neuron ANN | "
             "spikes/neuron FT | latency (ticks) | weights (bytes, float32) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = []
    for r in results:
        if "ann" in r and (r["model"], r["setting"]) not in keys:
            keys.append((r["model"], r["setting"]))
    for k in keys:
        rs = [r for r in results if (r["model"], r.get("setting")) == k and "ann" in r]
        lines.append(
            f"| {k[0]} | {k[1]} | {_ms([r['ann'] for r in rs])} | {_ms([r['snn'] for r in rs])} "
            f"| {_ms([r['ptq'] for r in rs])} | {_ms([r['ft'] for r in rs])} | "
            f"{_ms([r['ann'] - r['ft'] for r in rs])} | {_ms([r['ann'] - r['ptq'] for r in rs])} "
            f"| {_ms([r['ft_jitter'] for r in rs])} | {_ms([r['spn_ann'] for r in rs], 1, 3)} | "
            f"{_ms([r['spn_ft'] for r in rs], 1, 3)} | {rs[0]['latency_ticks']} | "
            f"{rs[0]['weight_bytes']:.0f} ({rs[0]['float_bytes']}) |")
    lines += ["", "| model | fine-tune epoch (s, median of 3) | plain torch epoch (s, median of 3)"
              " | ratio |",
              "|---|---|---|---|"]
    for kind in dict.fromkeys(r["model"] for r in results):
        plain = [r["epoch_seconds"] for r in results if r["model"] == kind and
                 r.get("setting") == "plain torch epoch"]
        fte = [r["finetune_epoch_seconds"] for r in results if r["model"] == kind and
               r.get("setting") == "plain torch epoch"]
        if plain and fte:
            a, b = fte[0], plain[0]
            lines.append(f"| {kind} | {a:.2f} | {b:.2f} | {a / b:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        print(table(json.loads(Path(sys.argv[2]).read_text())))
        sys.exit(0)
    sys.exit(main())
