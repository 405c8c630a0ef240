"""Design options for a fast float32 closed form, measured side by side (not part of make bench):
plain ``simulate`` (torch eager), the same computation with weights prepared once (eager),
that function under torch.jit.trace and under torch.compile, and the onnxruntime backend.

    python -m benchmarks.options [--models cnn vgg11-cifar] [--batches 1 128]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import models as M  # noqa: E402
from snnconv.snn import InputLayer, PoolLayer, ReadoutLayer  # noqa: E402


def prepared(snn, dtype=torch.float32):
    """The closed form (logits only) as one torch function with every array converted once."""
    tau = float(snn.tau_c)

    def conv_t(a):
        return torch.as_tensor(np.asarray(a, np.float64), dtype=dtype)

    import dataclasses

    steps = []
    for la in snn.layers:
        if isinstance(la, InputLayer):
            steps.append(("input", la.name, conv_t(la.lo), conv_t(la.hi), la.window))
        elif isinstance(la, PoolLayer):
            steps.append(("pool", la.name, la))
        else:
            groups = []
            for g in la.groups:
                ops = []
                for o in g.ops:  # weights as tensors; apply() converts them to the input dtype
                    f = {k: getattr(o, k) for k in ("weight", "scale") if getattr(o, k, None)
                         is not None}
                    ops.append(dataclasses.replace(o, **{k: np.asarray(v, np.float64).astype(
                        np.float32 if dtype == torch.float32 else np.float64) for k, v in
                        f.items()}))
                lag = la.t_min - g.delay - snn.by_name[g.source].t_max
                groups.append((g.source, ops, lag))
            if isinstance(la, ReadoutLayer):
                steps.append(("readout", la.name, groups, conv_t(la.bias)))
            else:
                steps.append(("neuron", la.name, groups, conv_t(la.theta_rel), la.window))

    def run(x):
        env = {}
        for st in steps:
            if st[0] == "input":
                _, name, lo, hi, w = st
                env[name] = torch.clamp((x - lo) / (hi - lo), 0.0, 1.0) * w
            elif st[0] == "pool":
                env[st[1]] = st[2].apply(env[st[2].source])
            else:
                v = None
                for src, ops, lag in st[2]:
                    y = env[src]
                    if lag != 0.0:
                        y = torch.where(y > 0, y + lag, torch.zeros_like(y))
                    for o in ops:
                        y = o.apply(y)
                    y = y / tau if tau != 1.0 else y
                    v = y if v is None else v + y
                if st[0] == "readout":
                    return v + st[3]
                env[st[1]] = torch.clamp(tau * (v - st[3]), 0.0, st[4])
        raise AssertionError("no readout")
    return run


def median_time(fn, reps, inner=1):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        ts.append((time.perf_counter() - t) / inner)
    return statistics.median(ts)


def measure(name, spec, snn, sess, b, reps):
    from snnconv.backends.onnx_backend import OnnxSimulator
    from snnconv.snn.simulate import simulate

    x = M.inputs(spec, b)
    xt = torch.as_tensor(x)
    inner = 100 if spec.kind == "sample" else 1
    res = {}
    res["onnxruntime ANN"] = median_time(lambda: sess.run(None, {"x": x}), reps, inner)
    res["simulate (torch eager)"] = median_time(
        lambda: simulate(snn, xt, torch.float32), reps, inner)
    plan = prepared(snn)
    with torch.no_grad():
        res["prepared weights (eager)"] = median_time(lambda: plan(xt), reps, inner)
        t = time.perf_counter()
        traced = torch.jit.trace(plan, (xt,), check_trace=False)
        traced(xt)
        jit_s = time.perf_counter() - t
        res[f"torch.jit.trace (trace {jit_s:.1f} s)"] = median_time(
            lambda: traced(xt), reps, inner)
        try:
            comp = torch.compile(plan, dynamic=False)
            t = time.perf_counter()
            comp(xt)
            comp_s = time.perf_counter() - t
            res[f"torch.compile (compile {comp_s:.0f} s)"] = median_time(
                lambda: comp(xt), reps, inner)
        except Exception as e:  # noqa: BLE001 - report, do not stop
            res[f"torch.compile failed: {type(e).__name__}"] = float("nan")
    fast = OnnxSimulator(snn)
    res["onnx backend (with counts)"] = median_time(lambda: fast(x), reps, inner)
    ref = res["onnxruntime ANN"]
    for k, v in res.items():
        print(f"{name:12s} b{b:<4d} {k:38s} {v * 1e3:10.3f} ms  {v / ref:7.2f}x",
              flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["cnn", "vgg11-cifar"])
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 128])
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args(argv)
    import onnxruntime as ort

    import snnconv

    for name in a.models:
        spec = M.SPECS[name]
        snn = snnconv.load(M.snn_path(spec))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(M.onnx_path(spec)), so,
                                    providers=["CPUExecutionProvider"])
        for b in a.batches:
            measure(name, spec, snn, sess, b, a.reps)

if __name__ == "__main__":
    main()
