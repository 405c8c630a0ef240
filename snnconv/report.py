"""Summaries of a converted network, as plain dicts (for --json) and rich tables (for people)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .snn import SNN, NeuronLayer, PoolLayer, ReadoutLayer, chain_apply


def _indicator(op):
    if op.kind in ("conv", "dense", "convtranspose"):
        return dataclasses.replace(op, weight=(np.asarray(op.weight) != 0).astype(np.float64))
    if op.kind in ("scale", "sumpool"):
        return dataclasses.replace(op, scale=(np.asarray(op.scale) != 0).astype(np.float64))
    return op


def _synapses(g, src_shape) -> int:
    """Number of non-zero synapses of a group (one pass of ones through |W| > 0)."""
    x = torch.ones((1, *src_shape), dtype=torch.float64)
    return int(chain_apply([_indicator(o) for o in g.ops], x).sum())


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


def tensor_cell(tensor: str | None, fused=(), note: str = "") -> str:
    """The ONNX tensor a layer reproduces and, below it (dim), how: the op types fused into
    the layer (node names are in --json) and any +/- split or offset coding."""
    from rich.markup import escape

    if not tensor:
        return ""
    ops = [f.split(" ", 1)[0] + (" (folded)" if f.endswith("(folded)") else "") for f in fused]
    how = "; ".join(([" + ".join(ops)] if ops else []) + ([note] if note else []))
    return escape(tensor) + (f"\n[dim]{escape(how)}[/]" if how else "")


def layer_table(rows: list[dict], title: str = "layers"):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col, j in (("layer", "left"), ("kind", "left"), ("shape", "left"), ("stage", "right"),
                   ("t_min", "right"), ("t_max", "right"), ("window", "right"),
                   ("threshold", "right"), ("win/max", "right"), ("spk/neuron", "right"),
                   ("inputs (delay)", "left"), ("ONNX tensor (how)", "left")):
        t.add_column(col, justify=j)
    for r in rows:
        th = ""
        if "threshold_min" in r:
            th = f"{r['threshold_min']:.3g}..{r['threshold_max']:.3g}"
        ins = ", ".join(f"{g['source']}" + (f" (+{g['delay']:.4g})" if g["delay"] else "")
                        for g in r.get("groups", [])) or r.get("source", "")
        kind = r["kind"] + (" (sat)" if r.get("saturating") else "")
        t.add_row(r["name"], kind, "x".join(map(str, r["shape"])), str(r["stage"]),
                  f"{r['t_min']:.6g}", f"{r['t_max']:.6g}",
                  f"{r['window']:.6g}" if r["kind"] != "readout" else "",
                  th, f"{r['window_value_ratio']:.2f}" if "window_value_ratio" in r else "",
                  f"{r['spikes_per_neuron']:.3f}" if "spikes_per_neuron" in r else "", ins,
                  tensor_cell(r.get("onnx_tensor"), r.get("fused", ()), r.get("note", "")))
    return t


def quant_error_table(cmp: dict, title: str = "integer model vs the float SNN, layer by layer"):
    """Where quantisation hurts (``intmodel.compare.Comparison.as_dict``): per layer the error of
    x_ticks * tick value against the float SNN, in ticks and relative to the layer's largest
    value, and the share of float values beyond the integer window (clipped)."""
    from rich.table import Table

    t = Table(title=f"{title} ({cmp['samples']} samples, top-1 agreement "
                    f"{cmp['top1_agreement']:.2%})", title_justify="left")
    for col in ("layer", "kind", "ticks", "max err (ticks)", "mean err (ticks)", "err rel",
                "clipped"):
        t.add_column(col, justify="left" if col in ("layer", "kind") else "right")
    for r in cmp["layers"]:
        ro = r["kind"] == "readout"
        t.add_row(r["layer"], r["kind"], "" if ro else str(r["ticks"]),
                  "" if ro else f"{r['max_error_ticks']:.2f}",
                  "" if ro else f"{r['mean_error_ticks']:.3f}", f"{r['rel_error']:.2e}",
                  "" if ro else f"{r['clipped_share']:.2%}")
    return t
