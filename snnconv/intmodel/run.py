"""``snnconv run``: the golden model's predictions on a data file, from the .snnq file alone."""

from __future__ import annotations

import io

import numpy as np
import torch

from .. import data as data_mod, distributed, images
from ..devices import resolve as resolve_device
from ..fileio import atomic_write, check_output
from .common import Compiled
from .golden import golden
from .snnq import load


def batches(x, batch_size: int, start: int = 0, stop: int | None = None):
    """(first index, float64 batch) over ``x[start:stop]``."""
    stop = len(x) if stop is None else stop
    for i in range(start, stop, batch_size):
        yield i, np.asarray(x[i:min(stop, i + batch_size)], dtype=np.float64)


def run_file(path, data, out=None, batch_size: int = 512, noise: float = 0.0,
             seed: int = 0, preprocess=None, device=None) -> dict:
    """Predictions of the golden model from the file alone; optional PRED.npz. An image folder
    is read with the preprocessing recorded in the file, changed by ``preprocess``.

    ``device``: where the golden model runs (``devices.resolve``). Under torchrun the
    processes share the batches and every one returns the merged result; rank 0 writes
    PRED.npz. Jitter (``noise``) is one random stream over all samples, so rank 0 runs it alone.
    """
    dev = resolve_device(device)
    dev.require_float64("the integer golden model (exact float64 sums)")
    net = load(path)
    warnings: list[str] = []
    ds = data_mod.load(data, tuple(net.input.shape),
                       preprocess=images.resolve(preprocess, net.meta, warnings))
    warnings += ds.notes
    if out is not None:
        check_output(out, [path, data])
    world = distributed.join(dev)
    if noise and world.many:
        warnings.append("--noise is one random stream over all samples: rank 0 ran it alone")
        part = _run_part(net, ds, 0, len(ds), batch_size, noise, seed, dev) if world.main \
            else None
        parts = [distributed.from_main(part, world)]
    else:
        start, stop = distributed.shard(len(ds), batch_size, world)
        parts = distributed.gather(_run_part(net, ds, start, stop, batch_size, noise, seed, dev),
                                   world)
    logits = np.concatenate([p["logits"] for p in parts])
    pred = np.concatenate([p["pred"] for p in parts])
    spikes = sum(p["spikes"] for p in parts)
    ovf = sum(p["overflow"] for p in parts)
    n = len(pred)
    hid = net.hidden()
    spn = spikes / max(1, n * sum(la.size for la in hid))
    res = {"model": str(path), "samples": n, "latency_ticks": net.latency,
           "spikes_per_neuron": spn, "overflow": ovf, "warnings": warnings}
    if not dev.is_cpu or dev.note:
        res["device"] = dev.describe()
    if ds.y is not None:
        res["accuracy"] = float((pred == ds.y).mean())
    if out is not None:
        if world.main:
            buf = io.BytesIO()
            np.savez(buf, pred=pred, logits=logits,
                     real_logits=logits * np.asarray(net.output.scale, np.float64))
            atomic_write(out, buf.getvalue())
        res["output"] = str(out)
    return res


def _run_part(net, ds, start: int, stop: int, batch_size: int, noise: float, seed: int,
              dev) -> dict:
    """The golden model on samples [start, stop): logits, predictions and integer counts."""
    comp = Compiled(net, None, None if dev.is_cpu else dev.torch)  # per-layer precision: exact
    gen = torch.Generator().manual_seed(seed)
    logits, preds = [np.zeros((0, *net.output.shape), np.int64)], [np.zeros(0, np.int64)]
    spikes = ovf = 0
    hidden = [la.name for la in net.hidden()]
    for _, xb in batches(ds.x, batch_size, start, stop):
        r = golden(net, xb, compiled=comp, noise=noise, generator=gen)
        lg = r.logits.cpu()
        logits.append(lg.numpy())
        preds.append(lg.argmax(1).numpy())
        spikes += sum(r.spikes.get(k, 0) for k in hidden)
        ovf += sum(r.overflow.values())
    return {"logits": np.concatenate(logits), "pred": np.concatenate(preds), "spikes": spikes,
            "overflow": ovf}
