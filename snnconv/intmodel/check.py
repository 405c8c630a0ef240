"""The integer check behind ``snnconv verify X.snnq``: golden model against register-level
simulator on every sample, bit for bit."""

from __future__ import annotations

from .. import data as data_mod, images
from ..progress import bar
from .golden import golden
from .layers import QNet, QNeuron, QPool
from .regsim import regsim
from .run import batches
from .snnq import load


def verify_integer(path, data, batch_size: int = 256, limit: int | None = None,
                   progress: bool = False, preprocess=None) -> dict:
    """Golden model vs register-level simulator on every sample: logits and every layer's spike
    ticks must agree bit for bit; overflow counts are reported. ``ok`` is the verdict."""
    net = load(path) if not isinstance(path, QNet) else path
    ds = data_mod.load(data, tuple(net.input.shape), preprocess=images.resolve(preprocess,
                                                                               net.meta),
                       progress=progress)
    n = len(ds) if limit is None else min(limit, len(ds))
    names = {la.name for la in net.layers if isinstance(la, (QNeuron, QPool))}
    diff_layers: dict[str, int] = {}
    logit_diff = 0
    overflow: dict[str, int] = {}
    correct = 0
    with bar("verifying (integer)", n, progress) as adv:
        for i, xb in batches(ds.x[:n], batch_size):
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
    ok = logit_diff == 0 and not diff_layers
    res = {"model": str(path), "samples": n, "ok": ok, "logit_mismatches": logit_diff,
           "layer_mismatches": diff_layers, "overflow": overflow,
           "overflow_total": sum(overflow.values()), "latency_ticks": net.latency}
    if ds.y is not None:
        res["accuracy"] = correct / max(1, n)
    return res
