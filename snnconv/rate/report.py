"""Summaries of a rate net as plain dicts (``convert``/``inspect`` --json; ``render`` makes the
tables)."""

from __future__ import annotations

import numpy as np

from . import model as rm
from .simulate import fanouts


def node_rows(net: rm.RateNet) -> list[dict]:
    fan = fanouts(net)
    rows = []
    for n in net.nodes:
        r = {"name": n.name, "kind": n.kind, "inputs": list(n.inputs), "shape": list(n.shape)}
        if isinstance(n, rm.IF):
            th = np.asarray(n.threshold)
            r.update(neurons=n.size, threshold_min=float(th.min()), threshold_max=float(th.max()),
                     reset=n.reset)
        if n.name in fan:
            r["synapses"] = int(fan[n.name].sum())
        rows.append(r)
    return rows


def summary(net: rm.RateNet) -> dict:
    rows = node_rows(net)
    rate = net.meta.get("rate") or {}
    return {"coding": "rate", "exact": False, "steps": net.steps, "nodes": rows,
            "neurons": net.n_neurons, "synapses": sum(r.get("synapses", 0) for r in rows),
            "reset": rate.get("reset"), "v_init": rate.get("v_init"),
            "calibration": {k: v for k, v in (net.meta.get("calibration") or {}).items()
                            if k != "thresholds"},
            "proxy": net.meta.get("proxy"), "head": net.head,
            "warnings": list(net.meta.get("warnings") or [])}
