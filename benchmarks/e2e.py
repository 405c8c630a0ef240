"""End-to-end rows, each run in its own subprocess (wall time and peak RSS together): convert,
verify, one fine-tuning epoch against one plain PyTorch training epoch, and the optional
rate-coded contrast."""

from __future__ import annotations

import importlib.util
import statistics
import time

import numpy as np

from . import models as M
from .rows import rss_now_mb, rss_peak_mb


def _ort_seconds(onnx_path, x, batch=128) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x[:batch]})
    t = time.perf_counter()
    for i in range(0, len(x), batch):
        sess.run(None, {name: x[i:i + batch]})
    return time.perf_counter() - t


def convert_main(model: str, n: int) -> dict:
    """import + calibration on n samples + write, as ``snnconv convert`` does it."""
    import tempfile

    t0 = time.perf_counter()
    from snnconv.api import convert_file
    t_import = time.perf_counter() - t0
    spec = M.SPECS[model]
    onnx_path, calib = M.onnx_path(spec), M.data_path(spec, "calib", n)
    base = rss_now_mb()
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        convert_file(onnx_path, f"{d}/out.snn", calib=calib, calib_limit=n)
        secs = time.perf_counter() - t
    peak = rss_peak_mb()
    x = np.load(calib)["x"][:n]
    return {"seconds": secs, "import_s": t_import, "baseline_mb": base, "peak_mb": peak,
            "ref_seconds": _ort_seconds(onnx_path, x), "ref": f"onnxruntime ANN on {n} samples"}


def verify_main(model: str, n: int, reference_n: int) -> dict:
    import cProfile
    import pstats

    from snnconv.verify import verify

    spec = M.SPECS[model]
    snn_path, onnx_path = M.snn_path(spec), M.onnx_path(spec)
    data = M.data_path(spec, "test", n)
    base = rss_now_mb()
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    rep = verify(snn_path, onnx_path, data, n=n, reference_n=reference_n)
    prof.disable()
    secs = time.perf_counter() - t
    peak = rss_peak_mb()
    st = pstats.Stats(prof)
    phases = {}
    for (file, _, func), (_, _, _, cum, _) in st.stats.items():
        key = f"{file.rsplit('/', 1)[-1]}:{func}"
        if key in {"bound.py:float32_bound", "simulate.py:simulate", "graph.py:forward",
                   "runners.py:run", "runners.py:reference64", "checks.py:per_sample_rel",
                   "ops.py:chain_apply", "importer/__init__.py:import_onnx",
                   "__init__.py:import_onnx", "modelfile.py:load", "data.py:load"}:
            phases[key] = phases.get(key, 0.0) + cum
    x = np.load(data)["x"][:n]
    return {"seconds": secs, "baseline_mb": base, "peak_mb": peak, "ok": rep.ok,
            "samples": rep.samples, "phases_s": phases,
            "ref_seconds": _ort_seconds(onnx_path, x), "ref": f"onnxruntime ANN on {n} samples"}


def finetune_main(model: str, n: int, batch: int, reps: int = 1) -> dict:
    """One fine-tuning epoch (snnconv.finetune: fake-quantised weights, tick-floored
    activations, straight-through gradients) vs one plain PyTorch training epoch of the same
    ReLU network (the nn.Module; Adam, cross-entropy, same n samples and batch size). Both are
    the training steps only (the fine-tune's per-epoch validation and its distillation targets,
    computed once before training, are not in the epoch time). ``make bench`` runs one
    repetition (the setup of a fine-tune run, quantisation and reports, is about a minute on
    the VGG net); with more, the median of interleaved repetitions."""
    if importlib.util.find_spec("snnconv.finetune") is None:
        return {"skip": "snnconv/finetune.py not present"}
    import torch

    import snnconv
    from snnconv import finetune as ft

    spec = M.SPECS[model]
    if spec.kind != "generated":
        return {"skip": "plain PyTorch reference needs a torch module (generated nets only)"}
    d = np.load(M.data_path(spec, "calib", n))
    x, y = d["x"][:n], d["y"][:n]
    xv, yv = M.random_data(spec.shape, 128, 7)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    snn = snnconv.load(M.snn_path(spec))
    plain, fine = [], []
    for r in range(reps):
        net = M.module(spec).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(r))
        t = time.perf_counter()
        for i in range(0, n, batch):
            j = perm[i:i + batch]
            loss = torch.nn.functional.cross_entropy(net(xt[j]), yt[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
        plain.append(time.perf_counter() - t)
        rep = ft.finetune(snn, (x, y), val=(xv, yv), epochs=1, batch_size=batch, seed=r,
                          quantize=4, time_bits=4).report
        fine.append(rep["epoch_seconds"][0])
    return {"seconds": statistics.median(fine), "ref_seconds": statistics.median(plain),
            "peak_mb": rss_peak_mb(), "train_dtype": rep.get("train_dtype"),
            "ref": f"plain PyTorch epoch of the same nn.Module, Adam, batch {batch}, {n} samples"}


def ratecoded_main() -> dict:
    """The rate-coded contrast is a separate run (its T sweep alone takes minutes)."""
    return {"skip": "separate run: `make bench-ratecoded` (benchmarks/ratecoded.py, SpikingJelly "
                    "installed --no-deps); its latest table is in benchmarks/README.md"}
