"""Rate-coded IF nets from snnconv (``convert --coding rate``), plain and proxy-learned, against
the exact TTFS SNN on the MNIST nets of the fine-tuning benchmark.

Data and nets as ``benchmarks/mnist_finetune.py``: MNIST t10k from ../shared/data/mnist (or
$SNNCONV_MNIST), the first 8,000 images train (7,200 for training and calibration, 7,200-7,999
validation, which picks the proxy epoch), the last 2,000 test; the 784-340-10 MLP and the
Conv5-ReLU-MaxPool x2 CNN, trained with torch per seed and exported to ONNX. For each net:

- the ANN (onnxruntime) and the TTFS SNN (exact: accuracy, latency, spikes/neuron);
- plain rate conversion (thresholds: max or 99.9th percentile of the training activations, per
  layer; v_init 0 or 0.5 x threshold) at T = 2, 4, 8, 16, 32 (one run to T = 32);
- proxy learning (``finetune --proxy``) from the 99.9% conversion, trained for each T.

    python benchmarks/rate_proxy.py --seeds 0 1 2 --out build/rate_proxy.json
    python benchmarks/rate_proxy.py --table build/rate_proxy.json [more.json ...]

SpikingJelly's rate conversion of the same CNN is ``make bench-ratecoded`` (its table in
benchmarks/README.md); this script does not need SpikingJelly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import snnconv  # noqa: E402
from benchmarks import mnist_finetune as mb  # noqa: E402
from snnconv.rate import convert_rate, simulate  # noqa: E402
from snnconv.rate.train import train_proxy  # noqa: E402

T_SWEEP = (2, 4, 8, 16, 32)
PLAIN = {"max": dict(percentile=None, v_init=0.0), "99.9%": dict(percentile=99.9, v_init=0.0),
         "99.9%, v_init 0.5": dict(percentile=99.9, v_init=0.5),
         "99.9%, reset to zero": dict(percentile=99.9, v_init=0.0, reset="zero")}
DEFAULT_PLAIN = ["max", "99.9%", "99.9%, v_init 0.5"]


def _ann(onnx_path, x):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0].argmax(1)


def _rate_rows(net, x, y, ref, ts, batch=500) -> dict:
    """Accuracy, agreement, spikes/neuron at every T of one run to max(ts)."""
    hits = {t: 0 for t in ts}
    agree = {t: 0 for t in ts}
    spikes = {t: 0.0 for t in ts}
    for i in range(0, len(x), batch):
        r = simulate(net, x[i:i + batch], ts)
        for t in ts:
            p = r.readout[t].argmax(1).numpy()
            hits[t] += int((p == y[i:i + batch]).sum())
            agree[t] += int((p == ref[i:i + batch]).sum())
            spikes[t] += sum(r.spikes[t].values())
    return {t: {"accuracy": hits[t] / len(x), "agreement": agree[t] / len(x),
                "spikes_per_neuron": spikes[t] / len(x) / net.n_neurons} for t in ts}


def _ttfs(onnx_path, work, x, y, ref) -> dict:
    snn = snnconv.convert(onnx_path, work / "mnist_train.npz")
    preds, spn = [], []
    for i in range(0, len(x), 500):
        r = snn.simulate(x[i:i + 500].astype(np.float64))
        preds.append(r.logits.argmax(1).numpy())
        spn.append(r.spikes_per_neuron(snn) * len(x[i:i + 500]))
    p = np.concatenate(preds)
    return {"accuracy": float((p == y).mean()), "agreement": float((p == ref).mean()),
            "spikes_per_neuron": sum(spn) / len(x), "latency": snn.latency,
            "stages": len({la.stage for la in snn.layers})}


def run_net(kind, seed, args, work, data) -> list[dict]:
    (xtr, ytr), (xte, yte) = data
    t0 = time.perf_counter()
    onnx_path = work / f"rate_{kind}_{seed}.onnx"
    if not (args.reuse and onnx_path.is_file()):
        m = mb.train_float(kind, xtr, ytr, seed, args.float_epochs)
        torch.onnx.export(m, (torch.as_tensor(xtr[:1]),), str(onnx_path), dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    ref = _ann(onnx_path, xte)
    base = {"model": kind, "seed": seed, "ann": float((ref == yte).mean())}
    out = [{**base, "method": "TTFS (exact)", **_ttfs(onnx_path, work, xte, yte, ref)}]
    print(json.dumps(out[-1]), flush=True)
    nets = {}
    for name in dict.fromkeys([*args.plain, args.proxy_from]):
        kw = PLAIN[name]
        net = convert_rate(onnx_path, work / "mnist_train.npz", steps=max(T_SWEEP), **kw)
        nets[name] = net
        for t, r in _rate_rows(net, xte, yte, ref, T_SWEEP).items():
            out.append({**base, "method": f"rate, plain ({name})", "steps": t, **r})
    print(f"{kind} seed {seed}: float training, TTFS and plain rate "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    for t in args.proxy_steps:
        t1 = time.perf_counter()
        tuned, rep = train_proxy(nets[args.proxy_from], work / "mnist_train.npz",
                                 work / "mnist_val.npz", steps=t, epochs=args.epochs,
                                 lr=args.lr, batch_size=64, seed=seed,
                                 quantize=args.quantize)
        r = _rate_rows(tuned, xte, yte, ref, (t,))[t]
        out.append({**base, "method": f"rate, proxy-learned (from {args.proxy_from}"
                                      f"{args.tag})",
                    "steps": t, **r, "best_epoch": rep.best_epoch,
                    "val_history": [e.val_accuracy for e in rep.history],
                    "seconds": time.perf_counter() - t1,
                    "epochs": args.epochs, "quantize": args.quantize})
        print(json.dumps(out[-1]), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=["cnn", "mlp"])
    ap.add_argument("--proxy-steps", type=int, nargs="*", default=[2, 4, 8])
    ap.add_argument("--proxy-from", default="99.9%", choices=list(PLAIN))
    ap.add_argument("--plain", nargs="*", default=DEFAULT_PLAIN, choices=list(PLAIN))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--tag", default="", help="appended to the proxy rows' method")
    ap.add_argument("--quantize", type=int, default=None)
    ap.add_argument("--float-epochs", type=int, default=15)
    ap.add_argument("--out", default=str(ROOT / "build" / "rate_proxy.json"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reuse", action="store_true",
                    help="take the nets of an earlier run (build/rate_KIND_SEED.onnx)")
    args = ap.parse_args()
    if not (mb.MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        print(f"MNIST not found in {mb.MNIST}; set SNNCONV_MNIST", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    (xtr, ytr), (xte, yte) = mb.load_mnist()
    work = Path(args.out).parent
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "mnist_train.npz", x=xtr[:7200], y=ytr[:7200])
    np.savez(work / "mnist_val.npz", x=xtr[7200:], y=ytr[7200:])
    results = []
    for kind in args.models:
        for seed in args.seeds:
            results += run_net(kind, seed, args, work,
                               ((xtr[:7200], ytr[:7200]), (xte, yte)))
            Path(args.out).write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


_ms = mb._ms  # mean ± sd over seeds, as the fine-tuning benchmark prints it


def table(results) -> str:
    """Markdown: per net, accuracy % (mean ± sd over seeds) by method and T. A row repeated by a
    later run (same net, method and T) replaces the earlier one."""
    results = list({(r["model"], r["seed"], r["method"], r.get("steps")): r
                    for r in results}.values())
    lines = [f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"]
    for kind in dict.fromkeys(r["model"] for r in results):
        rs = [r for r in results if r["model"] == kind]
        seeds = sorted({r["seed"] for r in rs})
        lines += ["", f"**{kind}** (seeds {', '.join(map(str, seeds))}; accuracy %, and top-1 "
                  "agreement with the ANN % in brackets; spikes/neuron at T = 8 / 32)", "",
                  "| method | " + " | ".join(f"T = {t}" for t in T_SWEEP) + " | spikes/neuron |",
                  "|---" * (len(T_SWEEP) + 2) + "|"]
        ann = [r["ann"] for r in rs if r["method"] == "TTFS (exact)"]
        lines.append(f"| ANN (onnxruntime) | {_ms(ann)} (all T) |" + " |" * len(T_SWEEP))
        tt = [r for r in rs if r["method"] == "TTFS (exact)"]
        lat = statistics.mean(r["latency"] for r in tt)
        lines.append(f"| TTFS SNN (exact; latency {lat:.3g} tau_c, "
                     f"{tt[0]['stages']} stages) | {_ms([r['accuracy'] for r in tt])} "
                     f"({_ms([r['agreement'] for r in tt])}), one spike at most |"
                     + " |" * (len(T_SWEEP) - 1)
                     + f" {_ms([r['spikes_per_neuron'] for r in tt], 1, 3)} |")
        for meth in dict.fromkeys(r["method"] for r in rs if "steps" in r):
            cells = []
            for t in T_SWEEP:
                c = [r for r in rs if r["method"] == meth and r.get("steps") == t]
                cells.append(f"{_ms([r['accuracy'] for r in c])} "
                             f"({_ms([r['agreement'] for r in c])})" if c else "")
            spn = [f"{statistics.mean(r['spikes_per_neuron'] for r in rs if r['method'] == meth and r.get('steps') == t):.2f}"  # noqa: E501
                   for t in (8, 32) if any(r["method"] == meth and r.get("steps") == t
                                           for r in rs)]
            lines.append(f"| {meth} | " + " | ".join(cells) + f" | {' / '.join(spn)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        print(table([r for f in sys.argv[2:] for r in json.loads(Path(f).read_text())]))
        sys.exit(0)
    sys.exit(main())
