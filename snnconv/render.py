"""Everything the CLI prints on stdout, rendered from the API's plain dicts: rich tables and
lines (markup included) to print one by one, and JSON. Nothing here computes a result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def to_json(obj) -> str:
    """``obj`` as the JSON of --json (arrays as lists, paths and anything else as strings)."""
    return json.dumps(obj, indent=2, default=_jsonable) + "\n"


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


# --- tables ---------------------------------------------------------------------------------------

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
    """The layers of a converted network (``report.layer_rows``)."""
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


def verify_table(rep: dict):
    """Per SNN layer of a verify report: its errors, clipping and spikes."""
    from rich.table import Table

    t = Table(title=f"verify {rep['model']} against {rep['onnx']}", title_justify="left")
    for col in ("layer", "kind", "ONNX tensor (how)", "err abs (f64)", "err rel (f64)",
                "err rel (ORT)", "clipped", "spikes/neuron"):
        t.add_column(col, justify="left" if col in ("layer", "kind", "ONNX tensor (how)")
                     else "right")
    for c in rep["layers"]:
        ort_rel = c["err_rel_ort"]
        t.add_row(c["name"], c["kind"], tensor_cell(c["onnx_tensor"], c.get("fused", ()),
                                                     c.get("note", "")),
                  f"{c['err_abs64']:.2e}",
                  f"{c['err_rel64']:.2e}", "" if ort_rel is None else f"{ort_rel:.2e}",
                  str(c["clipped"]), f"{c['spikes_per_neuron']:.3f}"
                  if c["kind"] not in ("readout",) else "")
    return t


# --- what each command prints ---------------------------------------------------------------------

def convert_summary(res: dict) -> list:
    """``snnconv convert``: the layer table and the summary lines."""
    s = res["summary"]
    if s.get("coding") == "rate":
        return rate_summary(s, res["output"]) + [f"wrote         {res['output']}"]
    rng, cal = s["input_range"], s["calibration"]
    how = _windows_how(cal)
    if cal.get("percentile"):
        how += f", percentile {cal['percentile']}"
    lines = [layer_table(s["layers"], title=f"{res['output']}"),
             f"input range   {_fmt_range(rng)}  ({rng['source']})",
             f"windows       {how}",
             f"latency       {s['latency']:.6g} (tau_c = {s['tau_c']:g}), {s['stages']} stages",
             f"neurons       {s['neurons']:,}   synapses {s['synapses']:,}"]
    if s["spikes_per_neuron_calibration"] is not None:
        lines.append(f"spikes/neuron {s['spikes_per_neuron_calibration']:.3f} on the "
                     "calibration data")
    if res.get("device"):
        lines.append(f"device        {res['device']}")
    return lines + [f"wrote         {res['output']}"]


def _windows_how(cal: dict) -> str:
    """Which kind of windows a conversion used, in words."""
    if cal["method"] == "data":
        return f"{cal['samples']} calibration samples, margin {cal['margin']}"
    src = cal.get("source") or "interval"
    if cal["method"] == "bounds":
        return f"{src} bounds over the input range (guaranteed, no data)"
    from .windows.estimate import describe

    return (f"estimated from the network ({describe(src)}; not guaranteed, no data), margin "
            f"{cal['margin']}")


def _fmt_range(rng) -> str:
    lo, hi = np.asarray(rng["lo"]).reshape(-1), np.asarray(rng["hi"]).reshape(-1)
    if lo.size == 1:
        return f"[{lo[0]:.6g}, {hi[0]:.6g}]"
    return "per channel " + ", ".join(f"[{a:.4g}, {b:.4g}]" for a, b in zip(lo, hi))


def inspect_summary(s: dict, title: str, table: bool = True) -> list:
    """``snnconv inspect``: the layer table (unless quiet) and the summary line."""
    if s.get("coding") == "rate":
        return rate_summary(s, title)[0 if table else 1:]
    return ([layer_table(s["layers"], title=title)] if table else []) + [
        f"latency {s['latency']:.6g}  neurons {s['neurons']:,}  synapses {s['synapses']:,}  "
        f"source {(s.get('source') or {}).get('name', '?')}"]


def verify_report(rep: dict) -> list:
    """``snnconv verify``: a float report (table, comparisons, verdict) or an integer one."""
    if rep.get("kind") == "rate":
        return _verify_rate(rep)
    return _verify_integer(rep) if rep.get("kind") == "integer" else _verify_float(rep)


def _verify_float(rep: dict) -> list:
    tol = rep["tolerances"]
    lines = [verify_table(rep),
             f"samples            {rep['samples']} from {rep['data']} (simulator: "
             f"{rep['simulator']})",
             f"mapping (float64)  max rel err {rep['mapping_err_max']:.3g}  (tolerance "
             f"{tol['mapping_rtol64']:g})",
             f"onnxruntime (f32)  max rel err {rep['ort_err_max']:.3g}  = "
             f"{rep['ort_bound_ratio_max']:.3g} x the float32 error bound "
             f"(bound <= {rep['ort_bound_rel_max']:.3g} relative)"]
    if rep["reference64_err_max"] is not None:
        lines.append(f"onnx.reference f64 max rel err {rep['reference64_err_max']:.3g} on "
                     f"{rep['reference64_samples']} samples")
    lines.append(f"top-1 agreement    {rep['top1_agreement']:.2%}  ({rep['disagreements']} "
                 f"disagreements, {rep['near_ties']} near-ties)")
    if rep["accuracy_ann"] is not None:
        lines.append(f"accuracy           ANN {rep['accuracy_ann']:.2%}   SNN "
                     f"{rep['accuracy_snn']:.2%}")
    lines += [f"spikes/neuron      {rep['spikes_per_neuron']:.3f}   synaptic events/sample "
              f"{rep['synops_per_sample']:,.0f} vs ANN MACs {rep['macs_per_sample']:,.0f}",
              f"latency            {rep['latency']:.6g}"]
    if rep["allow_clipping"] and rep["windowed_deviation_max"] is not None:
        lines.append(f"windowed network deviates from the original by up to "
                     f"{rep['windowed_deviation_max']:.3g} (relative)")
    for r in rep["noise"]:
        acc = "" if r["accuracy"] is None else f", accuracy {r['accuracy']:.2%}"
        lines.append(f"noise sigma {r['sigma']:g}: agreement {r['top1_agreement']:.2%}{acc}")
    if rep.get("device"):
        lines.append(f"device             {rep['device']}")
    if rep["ok"]:
        return lines + ["[bold green]EQUIVALENT[/] within tolerance"]
    return lines + [f"[bold red]MISMATCH[/] (first at {rep['first_mismatch']}):"] + \
        [f"  - {f}" for f in rep["failures"]]


def _verify_integer(rep: dict) -> list:
    lines = [f"samples            {rep['samples']} from {rep['data']}",
             f"golden vs register-level: {rep['logit_mismatches']} samples with differing "
             f"logits; layers with differing spike ticks: "
             f"{', '.join(rep['layer_mismatches']) or 'none'}"]
    if "accuracy" in rep:
        lines.append(f"accuracy           {rep['accuracy']:.2%}")
    lines.append(f"register overflow  {rep['overflow_total']} events   latency "
                 f"{rep['latency_ticks']} ticks")
    if rep.get("float_comparison"):
        lines.append(quant_error_table(rep["float_comparison"], f"integer model vs the float "
                                       f"SNN {rep['float_model']}, layer by layer"))
    return lines + ["[bold green]BIT-EXACT[/] integer models agree" if rep["ok"] else
                    "[bold red]MISMATCH[/] between the integer models"]


def run_summary(res: dict) -> list:
    """``snnconv run``: predictions of the integer golden model (or of a rate model)."""
    if res.get("coding") == "rate":
        acc = f"accuracy {res['accuracy']:.4f}  " if "accuracy" in res else ""
        return [f"{res['samples']} samples  {acc}spikes/neuron {res['spikes_per_neuron']:.3f}  "
                f"T = {res['steps']} steps (rate coding, approximate)"] + \
            ([f"wrote {res['output']}"] if "output" in res else [])
    acc = f"accuracy {res['accuracy']:.4f}  " if "accuracy" in res else ""
    lines = [f"{res['samples']} samples  {acc}spikes/neuron {res['spikes_per_neuron']:.3f}  "
             f"latency {res['latency_ticks']} ticks  overflow {res['overflow']}"]
    if res.get("device"):
        lines.append(f"device {res['device']}")
    return lines + ([f"wrote {res['output']}"] if "output" in res else [])


def vectors_summary(res: dict) -> list:
    """``snnconv export-vectors``: what was written."""
    why = ", ".join(f"{v} {k}" for k, v in res["reasons"].items())
    return [f"wrote {res['files']} files for {res['samples']} samples ({why}) to "
            f"{res['output']}"]


# --- rate coding ----------------------------------------------------------------------------------

def rate_node_table(rows: list[dict], title: str):
    """The nodes of a rate-coded net (``rate.report.node_rows``)."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in ("node", "kind", "shape", "threshold", "synapses", "inputs"):
        t.add_column(col, justify="right" if col in ("threshold", "synapses") else "left")
    for r in rows:
        th = f"{r['threshold_min']:.3g}..{r['threshold_max']:.3g}" if "threshold_min" in r \
            else ""
        t.add_row(escape(r["name"]), r["kind"], "x".join(map(str, r["shape"])), th,
                  f"{r['synapses']:,}" if "synapses" in r else "",
                  escape(", ".join(r["inputs"])))
    return t


def rate_summary(s: dict, title: str) -> list:
    """``convert``/``inspect`` of a rate model: the node table and the summary lines."""
    cal = s.get("calibration") or {}
    how = f"{cal.get('method', '?')} of {cal.get('samples', '?')} calibration samples"
    return [rate_node_table(s["nodes"], title),
            f"coding        rate (IF, reset {s['reset']}, v_init {s['v_init']} x threshold; "
            "approximate, not exact)",
            f"thresholds    {how}",
            f"steps         T = {s['steps']}" + ("   proxy-trained" if s.get("proxy") else ""),
            f"neurons       {s['neurons']:,}   synapses {s['synapses']:,}"]


def _verify_rate(rep: dict) -> list:
    from rich.table import Table

    t = Table(title=f"verify {rep['model']} against {rep['onnx']} (rate coding)",
              title_justify="left")
    for col in ("T", "agreement", "accuracy", "spikes/neuron", "synaptic events/sample"):
        t.add_column(col, justify="right")
    for r in rep["rows"]:
        acc = "" if r["accuracy"] is None else f"{r['accuracy']:.2f}%"
        t.add_row(str(r["steps"]), f"{r['agreement']:.2f}%", acc,
                  f"{r['spikes_per_neuron']:.3f}", f"{r['synaptic_events']:,.0f}")
    ann = rep["ann_accuracy"]
    need = rep["min_agreement"]
    verdict = ("[bold green]PASS[/]" if rep["ok"] else "[bold red]FAIL[/]") if need is not None \
        else "no --min-agreement: no verdict"
    return [t, f"samples   {rep['samples']} from {rep['data']}"
            + ("" if ann is None else f"   ANN accuracy {ann:.2f}%"),
            f"note      {rep['note']}",
            f"verdict   agreement {rep['agreement_at_model_steps']:.2f}% at T = "
            f"{rep['model_steps']}" + ("" if need is None else f" (min {need:g}%)")
            + f": {verdict}"]


def finetune_tables(rep: dict) -> list:
    """``snnconv finetune``: the integer report's tables, or a proxy learning history."""
    if rep.get("coding") != "rate":
        from .finetune import report_tables

        return report_tables(rep)
    from rich.table import Table

    cfg = rep["config"]
    t = Table(title=f"proxy learning of {rep['model']} at T = {cfg['steps']} "
                    f"({rep['train_samples']} training, {rep['val_samples']} validation samples)",
              title_justify="left")
    for col in ("epoch", "loss", "train acc (SNN)", "val acc (SNN)", "val agreement"):
        t.add_column(col, justify="right")
    for e in rep["history"]:
        mark = " *" if e["epoch"] == rep["best_epoch"] else ""
        t.add_row(f"{e['epoch']}{mark}", "" if e["loss"] is None else f"{e['loss']:.4f}",
                  "" if e["train_accuracy"] is None else f"{e['train_accuracy']:.2f}%",
                  f"{e['val_accuracy']:.2f}%", f"{e['val_agreement']:.2f}%")
    q = f", weights {cfg['quantize']} bits" if cfg.get("quantize") else ""
    return [t, f"kept epoch {rep['best_epoch']} (best validation SNN accuracy; 0 = as "
               f"converted){q}; thresholds kept as converted"]


def nir_summary(res: dict) -> list:
    """``snnconv export-nir``: what was written."""
    kinds = ", ".join(f"{v} {k}" for k, v in res["nodes"].items())
    return [f"wrote {res['output']}: NIR {res['nir_version']}, {kinds}, {res['edges']} edges; "
            f"run it for T = {res['steps']} steps (dt = 1), readout = output summed / T"]
