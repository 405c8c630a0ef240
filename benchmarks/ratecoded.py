"""Rate-coded contrast: SpikingJelly ann2snn vs snnconv's TTFS SNN on the same MNIST CNN.

A rate-coded converter replaces each ReLU by an integrate-and-fire neuron and reads the ANN's
activations as firing rates, so it needs many time steps T (each a full network pass) and many
spikes per neuron; snnconv's TTFS SNN fires at most once per neuron and is exact. This script
trains the MNIST CNN of ``benchmarks/mnist_finetune.py`` (two Conv-ReLU-MaxPool blocks, seed 0,
first 7,200 of the first 8,000 images), converts it both ways and sweeps T = 4..256 on the last
2,000 images. Every time is measured in this process next to onnxruntime on the same images.

    make bench-ratecoded     # installs SpikingJelly --no-deps beside the pinned torch, runs this
    python benchmarks/ratecoded.py --out build/bench_ratecoded.json

SpikingJelly is optional and not a dependency of snnconv: its own requirements pull CUDA builds
and GUI libraries, so it is installed with ``--no-deps`` (plus tqdm and loguru, which it imports).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import mnist_finetune as mb  # noqa: E402

T_SWEEP = (4, 8, 16, 32, 64, 128, 256)


def _median_seconds(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _ort_session(onnx_path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def _batches(x, batch):
    return [x[i:i + batch] for i in range(0, len(x), batch)]


def rate_coded_sweep(model, xtr, xte, yte, ann_pred, mode, batch, t_max=max(T_SWEEP)) -> list:
    """Accuracy, agreement with the ANN, spikes per neuron and time at each T of the sweep.

    The input is fed as a constant current at every step (SpikingJelly's own MNIST example);
    the output layer's potentials are summed over the steps and read out by argmax. The
    network runs once to ``t_max``; the figures at smaller T are read on the way, and the time
    at T is the time spent up to step T.
    """
    import copy

    from spikingjelly.activation_based import ann2snn, functional
    from spikingjelly.activation_based.neuron import BaseNode

    calib = [torch.as_tensor(b) for b in _batches(xtr[:2048], 256)]
    recipe = ann2snn.RateCodingRecipe(dataloader=calib, mode=mode)
    snn = ann2snn.FXConverter(recipe=recipe, device="cpu").convert(copy.deepcopy(model)).eval()
    neurons = [m for m in snn.modules() if isinstance(m, BaseNode)]
    counts = {"spikes": 0.0, "neurons": 0}

    def hook(_m, _inp, out):
        counts["spikes"] += float(out.sum())
        counts["neurons"] += out[0].numel()

    handles = [m.register_forward_hook(hook) for m in neurons]
    checkpoints = set(T_SWEEP)
    rows = {t: {"correct": 0, "agree": 0, "spikes": 0.0, "seconds": 0.0} for t in T_SWEEP}
    n_neurons = 0
    try:
        with torch.no_grad():
            for _ in range(3):  # warm-up: first calls allocate and dispatch lazily
                snn(torch.as_tensor(xte[:batch]))
            functional.reset_net(snn)
            for xb, yb, ab in zip(_batches(xte, batch), _batches(yte, batch),
                                  _batches(ann_pred, batch), strict=True):
                functional.reset_net(snn)
                xb = torch.as_tensor(xb)
                acc = None
                counts["spikes"], counts["neurons"] = 0.0, 0
                elapsed = 0.0
                for t in range(1, t_max + 1):
                    t0 = time.perf_counter()
                    out = snn(xb)
                    acc = out if acc is None else acc + out
                    elapsed += time.perf_counter() - t0
                    if t == 1:
                        n_neurons = counts["neurons"]
                    if t in checkpoints:
                        pred = acc.argmax(1).numpy()
                        r = rows[t]
                        r["correct"] += int((pred == yb).sum())
                        r["agree"] += int((pred == ab).sum())
                        r["spikes"] += counts["spikes"]
                        r["seconds"] += elapsed
    finally:
        for h in handles:
            h.remove()
    n = len(xte)
    return [{"mode": str(mode), "T": t, "accuracy": rows[t]["correct"] / n,
             "agreement": rows[t]["agree"] / n,
             "spikes_per_neuron": rows[t]["spikes"] / (n_neurons * n),
             "seconds": rows[t]["seconds"]} for t in T_SWEEP]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "build" / "bench_ratecoded.json"))
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--reps", type=int, default=5, help="repetitions of the reference timings")
    ap.add_argument("--modes", nargs="+", default=["max", "99.9%"],
                    help="SpikingJelly normalisation modes (max activation, percentile)")
    a = ap.parse_args(argv)
    if importlib.util.find_spec("spikingjelly") is None:
        print("SpikingJelly is not installed: `make bench-ratecoded` installs it (--no-deps)",
              file=sys.stderr)
        return 2
    if not (mb.MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        print(f"MNIST not found in {mb.MNIST}; set SNNCONV_MNIST", file=sys.stderr)
        return 2
    import snnconv
    from snnconv.snn.simulate import simulate

    t_all = time.perf_counter()
    (xtr, ytr), (xte, yte) = mb.load_mnist()
    xtr, ytr = xtr[:7200], ytr[:7200]
    model = mb.train_float("cnn", xtr, ytr, seed=0)
    print(f"[{time.perf_counter() - t_all:5.0f}s] MNIST CNN trained", file=sys.stderr)
    res = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                       "spikingjelly": _version("spikingjelly")},
           "images": len(xte), "batch": a.batch, "rows": []}
    with tempfile.TemporaryDirectory() as d:
        onnx_path = Path(d) / "mnist_cnn.onnx"
        torch.onnx.export(model, (torch.as_tensor(xtr[:1]),), str(onnx_path), dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
        sess = _ort_session(onnx_path)
        batches = _batches(xte, a.batch)
        ann_logits = np.concatenate([sess.run(None, {"x": b})[0] for b in batches])
        ann_pred = ann_logits.argmax(1)
        t_ort = _median_seconds(lambda: [sess.run(None, {"x": b}) for b in batches], a.reps)
        with torch.no_grad():
            t_torch = _median_seconds(lambda: [model(torch.as_tensor(b)) for b in batches],
                                      a.reps)
        res["onnxruntime_seconds"] = t_ort
        res["rows"].append({"method": "ANN, onnxruntime", "accuracy": float(
            (ann_pred == yte).mean()), "agreement": 1.0, "seconds": t_ort})
        res["rows"].append({"method": "ANN, PyTorch", "seconds": t_torch})

        snn = snnconv.convert(onnx_path, (xtr, ytr))
        for backend in ("onnx", "torch"):
            def run(backend=backend):
                return [simulate(snn, b, dtype=torch.float32, backend=backend).logits
                        for b in batches]
            secs = _median_seconds(run, a.reps)
            pred = torch.cat(run()).argmax(1).numpy()
            res["rows"].append({"method": f"snnconv TTFS, closed form f32 ({backend})",
                                "accuracy": float((pred == yte).mean()),
                                "agreement": float((pred == ann_pred).mean()),
                                "seconds": secs})
        sim = [simulate(snn, b) for b in batches]  # float64: the spike counts
        spikes = sum(sum(r.stats[la.name].spikes for la in snn.neuron_layers()) for r in sim)
        neurons = sum(la.size for la in snn.neuron_layers())
        for r in res["rows"][-2:]:
            r["spikes_per_neuron"] = spikes / (neurons * len(xte))
            r["latency_ticks"] = None
        print(f"[{time.perf_counter() - t_all:5.0f}s] references and snnconv timed",
              file=sys.stderr)
        for mode in a.modes:
            for r in rate_coded_sweep(model, xtr, xte, yte, ann_pred, mode, a.batch):
                r["method"] = f"SpikingJelly rate-coded, {r['mode']}, T={r['T']}"
                res["rows"].append(r)
            print(f"[{time.perf_counter() - t_all:5.0f}s] SpikingJelly mode {mode} swept",
                  file=sys.stderr)
    for r in res["rows"]:
        r["ratio_to_onnxruntime"] = r["seconds"] / t_ort
    res["total_s"] = time.perf_counter() - t_all
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(out)
    print(markdown(res))
    print(f"JSON: {out}")
    return 0


def _version(pkg: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def markdown(res: dict) -> str:
    def pct(v):
        return "" if v is None else f"{100 * v:.2f}"

    lines = [f"MNIST CNN (Conv5-ReLU-MaxPool x2, Linear), {res['images']} test images, batch "
             f"{res['batch']}; onnxruntime {1e3 * res['onnxruntime_seconds']:.1f} ms for all",
             "", "| method | accuracy % | top-1 agreement with ANN % | spikes/neuron | "
             "time (ms) | x onnxruntime |", "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        spn = r.get("spikes_per_neuron")
        lines.append(f"| {r['method']} | {pct(r.get('accuracy'))} | {pct(r.get('agreement'))} "
                     f"| {'' if spn is None else f'{spn:.3f}'} | {1e3 * r['seconds']:.1f} | "
                     f"{r['ratio_to_onnxruntime']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
