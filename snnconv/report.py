"""Summaries of a converted network as plain dicts (--json; ``render`` makes the tables)."""

from __future__ import annotations


import numpy as np
import torch

from .render import quant_error_table  # noqa: F401 - finetune.report_tables imports it here
from .snn import SNN, NeuronLayer, PoolLayer, ReadoutLayer, chain_apply


def indicator_ops(ops) -> list:
    """A synapse chain's 0/1 connectivity (|W| > 0): it counts synapses."""
    return [o.indicator() for o in ops]


def _synapses(g, src_shape) -> int:
    """Number of non-zero synapses of a group (one pass of ones through |W| > 0)."""
    x = torch.ones((1, *src_shape), dtype=torch.float64)
    return int(chain_apply(indicator_ops(g.ops), x).sum())


def layer_rows(snn: SNN) -> list[dict]:
    cal = snn.meta.get("calibration", {})
    maxima = cal.get("maxima", {})
    active = cal.get("active") or {}
    rows = []
    for la in snn.layers:
        r = {"name": la.name, "kind": la.kind, "shape": list(la.shape), "neurons": la.size,
             "stage": la.stage, "t_min": la.t_min, "t_max": la.t_max, "window": la.window}
        if la.relation is not None:
            r["onnx_tensor"] = la.relation.tensor
            if la.relation.how:
                r["relation"] = la.relation.how
                r["fused"] = list(la.relation.fused)
                r["note"] = la.relation.note
        if isinstance(la, NeuronLayer):
            theta = np.asarray(la.theta_rel) + la.window / snn.tau_c
            r.update(threshold_min=float(theta.min()), threshold_max=float(theta.max()),
                     saturating=la.saturating)
            if la.name in maxima:
                r["calib_max"] = maxima[la.name]
                if maxima[la.name] > 0:
                    r["window_value_ratio"] = la.window / (snn.tau_c * maxima[la.name])
            if la.name in active:
                r["spikes_per_neuron"] = active[la.name]
        if isinstance(la, (NeuronLayer, ReadoutLayer)):
            r["groups"] = [{"source": g.source, "delay": g.delay,
                            "ops": [o.kind for o in g.ops],
                            "synapses": _synapses(g, snn.by_name[g.source].shape)}
                           for g in la.groups]
        if isinstance(la, PoolLayer):
            r["source"] = la.source
            r["pool"] = "min/max" if np.any(la.minimum) and not np.all(la.minimum) else (
                "min (latest spike)" if np.all(la.minimum) else "max (earliest spike)")
        rows.append(r)
    return rows


def summary(snn: SNN) -> dict:
    rows = layer_rows(snn)
    hidden = [r for r in rows if r["kind"] == "neuron"]
    active = snn.meta.get("calibration", {}).get("active") or {}
    spn = None
    if active:
        tot = sum(r["neurons"] for r in hidden)
        spn = sum(active.get(r["name"], 0.0) * r["neurons"] for r in hidden) / max(1, tot)
    return {
        "latency": snn.latency, "tau_c": snn.tau_c, "stages": snn.output.stage,
        "neurons": snn.n_neurons,
        "synapses": sum(g["synapses"] for r in rows for g in r.get("groups", [])),
        "spikes_per_neuron_calibration": spn,
        "input_range": snn.meta.get("input_range"),
        "calibration": {k: v for k, v in snn.meta.get("calibration", {}).items()
                        if k not in ("maxima", "active")},
        "source": snn.meta.get("source"), "head": snn.head,
        "warnings": snn.meta.get("warnings", []),
        "layers": rows,
    }
