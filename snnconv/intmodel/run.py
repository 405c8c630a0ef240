"""``snnconv run``: the golden model's predictions on a data file, from the .snnq file alone."""

from __future__ import annotations

import io

import numpy as np
import torch

from .. import data as data_mod, images
from ..fileio import atomic_write, check_output
from .common import Compiled
from .golden import golden
from .snnq import load


def batches(x, batch_size: int):
    """(first index, float64 batch) over ``x``."""
    for i in range(0, len(x), batch_size):
        yield i, np.asarray(x[i:i + batch_size], dtype=np.float64)


def run_file(path, data, out=None, batch_size: int = 512, noise: float = 0.0,
             seed: int = 0, preprocess=None) -> dict:
    """Predictions of the golden model from the file alone; optional PRED.npz. An image folder
    is read with the preprocessing recorded in the file, changed by ``preprocess``."""
    net = load(path)
    warnings: list[str] = []
    ds = data_mod.load(data, tuple(net.input.shape),
                       preprocess=images.resolve(preprocess, net.meta, warnings))
    warnings += ds.notes
    if out is not None:
        check_output(out, [path, data])
    comp = Compiled(net, None)  # per-layer precision: exact, and float32 where it can be
    gen = torch.Generator().manual_seed(seed)
    logits, preds = [], []
    spikes = {la.name: 0 for la in net.hidden()}
    ovf = 0
    for _, xb in batches(ds.x, batch_size):
        r = golden(net, xb, compiled=comp, noise=noise, generator=gen)
        logits.append(r.logits.numpy())
        preds.append(r.logits.argmax(1).numpy())
        for k in spikes:
            spikes[k] += r.spikes.get(k, 0)
        ovf += sum(r.overflow.values())
    logits = np.concatenate(logits)
    pred = np.concatenate(preds)
    n = len(pred)
    hid = net.hidden()
    spn = sum(spikes.values()) / max(1, n * sum(la.size for la in hid))
    res = {"model": str(path), "samples": n, "latency_ticks": net.latency,
           "spikes_per_neuron": spn, "overflow": ovf, "warnings": warnings}
    if ds.y is not None:
        res["accuracy"] = float((pred == ds.y).mean())
    if out is not None:
        buf = io.BytesIO()
        np.savez(buf, pred=pred, logits=logits,
                 real_logits=logits * np.asarray(net.output.scale, np.float64))
        atomic_write(out, buf.getvalue())
        res["output"] = str(out)
    return res
