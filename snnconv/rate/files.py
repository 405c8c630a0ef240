"""File-level entry points of the rate target (``snnconv.api`` dispatches to them on
``--coding rate`` or on the model file's format)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .. import data as data_mod
from ..errors import UsageError
from ..fileio import atomic_write, check_output
from . import file as rate_file
from .convert import convert_rate
from .report import summary
from .simulate import simulate
from .verify import verify_rate

#: options of the TTFS conversion that mean nothing for rate coding (their CLI defaults)
TTFS_ONLY = {"input_range": None, "margin": 1.5, "tau_c": 1.0, "windows": "auto",
             "preprocess": None, "device": "cpu"}
TTFS_VERIFY = {"atol": None, "rtol": None, "rtol64": 1e-9, "allow_clipping": False,
               "simulator": "closed", "reference_n": 16, "noise": None}


def convert_rate_file(model, output, **kw) -> dict:
    """Convert an ONNX file to a rate-coded .snn. Refuses TTFS-only options given to it."""
    for k, default in TTFS_ONLY.items():
        if kw.pop(k, default) != default:
            raise UsageError(f"--{k.replace('_', '-')} applies to --coding ttfs only")
    check_output(output, [model, kw.get("calib")])
    net = convert_rate(model, **kw)
    rate_file.save(net, output)
    return {"output": str(output), "summary": summary(net)}


def inspect_rate_file(path) -> dict:
    return summary(rate_file.load(path))


def verify_rate_file(model, *, report_json=None, steps=None, min_agreement=None, onnx=None,
                     data=None, n=None, batch_size=256, progress=False, **ignored) -> dict:
    """Verify a rate model; TTFS-only options that were set are reported as ignored."""
    net = rate_file.load(model)
    kw = {} if steps is None else {"steps": steps}
    d = verify_rate(net, onnx, data, n=n, min_agreement=min_agreement, batch_size=batch_size,
                    progress=progress, **kw)
    d["model"] = str(model)
    d["warnings"] += [f"--{k.replace('_', '-')} applies to TTFS models only; ignored"
                      for k, v in ignored.items() if k in TTFS_VERIFY and v != TTFS_VERIFY[k]]
    if report_json is not None:
        atomic_write(report_json, json.dumps(d, indent=2).encode())
    return d


def run_rate_file(path, data, out=None, batch_size: int = 512, steps: int | None = None) -> dict:
    """Predictions of a rate model for its T (or ``steps``); optional PRED.npz with the
    readout (membrane / T) and the predictions."""
    net = rate_file.load(path)
    t = net.steps if steps is None else steps
    ds = data_mod.load(data, tuple(net.input.shape))
    if out is not None:
        check_output(out, [path, data])
    logits, spikes = [], 0.0
    for xb, _ in ds.batches(batch_size):
        r = simulate(net, np.asarray(xb, np.float32), t)
        logits.append(r.readout[t].numpy())
        spikes += sum(r.spikes[t].values())
    logits = np.concatenate(logits)
    pred = logits.argmax(1)
    res = {"model": str(path), "coding": "rate", "samples": len(pred), "steps": t,
           "spikes_per_neuron": spikes / max(1, len(pred) * net.n_neurons)}
    if ds.y is not None:
        res["accuracy"] = float((pred == np.asarray(ds.y)).mean())
    if out is not None:
        buf = io.BytesIO()
        np.savez(buf, pred=pred, logits=logits)
        atomic_write(Path(out), buf.getvalue())
        res["output"] = str(out)
    return res


#: finetune options of the integer (TTFS) path that mean nothing for proxy learning
INTEGER_ONLY = ("time_bits", "noise", "latency", "sparsity", "first_last_bits", "target", "ptq",
                "warn_loss", "config", "resume")


def finetune_proxy_file(model, output, data=None, *, val=None, progress=False, log=None,
                        **kw) -> dict:
    """Load a rate .snn, proxy-train it, write the fine-tuned rate .snn. Returns the report."""
    from .train import train_proxy

    given = [k for k in INTEGER_ONLY if kw.pop(k, None) not in (None, False)]
    if given:
        raise UsageError(f"--{given[0].replace('_', '-')} applies to the integer fine-tuning "
                         "(without --proxy) only")
    if kw.pop("device", "cpu") != "cpu":
        raise UsageError("proxy learning runs on the CPU only")
    output = Path(output)
    if output.suffix != ".snn":
        raise UsageError(f"-o {output}: a proxy-trained rate model is a .snn file")
    check_output(output, [model, data, val])
    net = rate_file.load(model)
    if data is None:
        rec = (net.meta.get("calibration") or {}).get("data") or {}
        if not rec.get("path"):
            raise UsageError(f"{model}: no --data given and the model records no data file")
        data = rec["path"]
    out, rep = train_proxy(net, data, val, progress=progress, log=log, **kw)
    out.meta["proxy"]["data"] = str(data)
    rate_file.save(out, output)
    d = rep.as_dict()
    d.update(output=str(output), model=str(model), coding="rate", warnings=[])
    return d
