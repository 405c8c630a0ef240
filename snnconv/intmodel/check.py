"""The integer check behind ``snnconv verify X.snnq``: golden model against register-level
simulator on every sample, bit for bit."""

from __future__ import annotations

from .. import data as data_mod, distributed, images
from ..progress import bar
from .golden import golden
from .layers import QNet, QNeuron, QPool
from .regsim import regsim
from .run import batches
from .snnq import load


def verify_integer(path, data, batch_size: int = 256, limit: int | None = None,
                   progress: bool = False, preprocess=None) -> dict:
    """Golden model vs register-level simulator on every sample: logits and every layer's spike
    ticks must agree bit for bit; overflow counts are reported. ``ok`` is the verdict. Under
    torchrun the processes share the batches and all return the merged counts."""
    net = load(path) if not isinstance(path, QNet) else path
    ds = data_mod.load(data, tuple(net.input.shape), preprocess=images.resolve(preprocess,
                                                                               net.meta),
                       progress=progress)
    n = len(ds) if limit is None else min(limit, len(ds))
    world = distributed.join()
    start, stop = distributed.shard(n, batch_size, world)
    parts = distributed.gather(_check_part(net, ds, start, stop, batch_size,
                                           progress and world.main), world)
    diff_layers: dict[str, int] = {}
    overflow: dict[str, int] = {}
    for p in parts:  # integer counts: exact in any order
        for total, add in ((diff_layers, p["diff_layers"]), (overflow, p["overflow"])):
            for k, v in add.items():
                total[k] = total.get(k, 0) + v
    logit_diff = sum(p["logit_diff"] for p in parts)
    ok = logit_diff == 0 and not diff_layers
    res = {"model": str(path), "samples": n, "ok": ok, "logit_mismatches": logit_diff,
           "layer_mismatches": diff_layers, "overflow": overflow,
           "overflow_total": sum(overflow.values()), "latency_ticks": net.latency}
    if ds.y is not None:
        res["accuracy"] = sum(p["correct"] for p in parts) / max(1, n)
    return res


def _check_part(net: QNet, ds, start: int, stop: int, batch_size: int, progress: bool) -> dict:
    """Golden vs regsim on samples [start, stop): mismatch, overflow and correct counts."""
    names = {la.name for la in net.layers if isinstance(la, (QNeuron, QPool))}
    diff_layers: dict[str, int] = {}
    logit_diff = correct = 0
    overflow: dict[str, int] = {}
    with bar("verifying (integer)", stop - start, progress) as adv:
        for i, xb in batches(ds.x, batch_size, start, stop):
            g = golden(net, xb, record=names)
            r = regsim(net, xb, record=names)
            logit_diff += int((g.logits != r.logits).any(1).sum())
            for k in names:
                d = int((g.ticks[k] != r.ticks[k]).reshape(len(xb), -1).any(1).sum())
                if d:
                    diff_layers[k] = diff_layers.get(k, 0) + d
            for k, v in r.overflow.items():
                overflow[k] = overflow.get(k, 0) + v + g.overflow.get(k, 0)
            if ds.y is not None:
                correct += int((g.logits.argmax(1).numpy() == ds.y[i:i + len(xb)]).sum())
            adv(len(xb))
    return {"diff_layers": diff_layers, "overflow": overflow, "logit_diff": logit_diff,
            "correct": correct}
