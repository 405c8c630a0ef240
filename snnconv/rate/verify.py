"""``verify`` of a rate net: top-1 agreement with the ANN (onnxruntime on the ONNX file) and
accuracy as a function of T, spikes per neuron and synaptic events per sample.

Rate coding approximates the ReLU network, so there is no exactness to prove: the verdict is the
agreement at the model's own T against the threshold the user sets (``min_agreement``, percent).
"""

from __future__ import annotations

import numpy as np

from .. import data as data_mod
from ..errors import DataError, UsageError
from ..progress import bar
from ..verify.inputs import resolve
from ..verify.runners import OrtRunner
from .model import RateNet
from .simulate import simulate

STEPS = (2, 4, 8, 16, 32)
NOT_EXACT = ("rate coding is not exact: the SNN approximates the ReLU network, closer with more "
             "steps; the verdict is top-1 agreement at the model's T against --min-agreement")


def verify_rate(net: RateNet, onnx=None, data=None, *, steps=STEPS, n: int | None = None,
                min_agreement: float | None = None, batch_size: int = 256,
                progress: bool = False) -> dict:
    """Simulate ``net`` once for max(steps, net.steps) steps on the data and compare the
    prediction at every T with the ANN's. Returns the report (``ok`` per ``min_agreement``)."""
    if min_agreement is not None and not 0 <= min_agreement <= 100:
        raise UsageError(f"--min-agreement {min_agreement} is not a percentage in [0, 100]")
    if not steps or min(int(t) for t in steps) < 1 or any(int(t) != t for t in steps):
        raise UsageError(f"--steps {list(steps)}: expected whole numbers >= 1")
    warnings: list[str] = []
    onnx_path, data_src = resolve(net, onnx, data, warnings)
    ds = data_mod.load(data_src, tuple(net.input.shape))
    total = len(ds) if n is None else min(n, len(ds))
    if total <= 0:
        raise DataError(f"{ds.name}: no samples to verify")
    ts = tuple(sorted({int(t) for t in steps} | {net.steps}))
    out_name = (net.meta.get("onnx") or {}).get("compared_output")
    ort = OrtRunner(onnx_path, [out_name] if out_name else [])
    out_name = out_name or ort.names[0]
    agree = {t: 0 for t in ts}
    correct = {t: 0 for t in ts}
    spikes = {t: 0.0 for t in ts}
    events = {t: 0.0 for t in ts}
    ann_correct, labelled = 0, 0
    with bar("simulating", total, progress) as adv:
        for xb, yb in ds.batches(batch_size, total):
            xb = np.asarray(xb, np.float32)
            ref = ort.run(xb, [out_name])[out_name].reshape(len(xb), -1).argmax(1)
            res = simulate(net, xb, ts)
            for t in ts:
                pred = res.readout[t].argmax(1).numpy()
                agree[t] += int((pred == ref).sum())
                spikes[t] += sum(res.spikes[t].values())
                events[t] += res.events[t]
                if yb is not None:
                    correct[t] += int((pred == np.asarray(yb)).sum())
            if yb is not None:
                ann_correct += int((ref == np.asarray(yb)).sum())
                labelled += len(xb)
            adv(len(xb))
    rows = [{"steps": t, "agreement": 100.0 * agree[t] / total,
             "accuracy": 100.0 * correct[t] / labelled if labelled else None,
             "spikes_per_neuron": spikes[t] / total / max(net.n_neurons, 1),
             "spikes_per_sample": spikes[t] / total, "synaptic_events": events[t] / total}
            for t in ts]
    at = next(r for r in rows if r["steps"] == net.steps)
    ok = min_agreement is None or at["agreement"] >= min_agreement
    return {"kind": "rate", "exact": False, "note": NOT_EXACT, "ok": ok,
            "onnx": str(onnx_path), "data": str(data_src), "samples": total,
            "model_steps": net.steps, "min_agreement": min_agreement,
            "agreement_at_model_steps": at["agreement"],
            "ann_accuracy": 100.0 * ann_correct / labelled if labelled else None,
            "neurons": net.n_neurons, "rows": rows, "warnings": warnings}
