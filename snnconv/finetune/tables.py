"""Rendering a fine-tuning report for people: rich tables of the accuracy comparison, the
sensitivity of post-training quantisation, the epochs, the hardware fit and the per-layer
error against the float SNN. Rendering only: every number comes from the report dict.

rich is imported on first use (``report_tables``), so importing the package does not pay for it.
"""

from __future__ import annotations


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def report_tables(rep: dict) -> list:
    """Rich tables of a fine-tuning report: the comparison, sensitivity, epochs, hardware fit."""
    tables = [accuracy_table(rep), sensitivity_table(rep), epochs_table(rep), fit_table(rep)]
    if rep.get("layer_errors"):
        from ..report import quant_error_table

        tables.append(quant_error_table(rep["layer_errors"], "fine-tuned integer model vs the "
                                        "float SNN, layer by layer"))
    return tables


def accuracy_table(rep: dict):
    from rich.table import Table

    t = Table(title=f"accuracy on {rep['evaluated_on']} (jitter: {rep['jitter_ticks']:g} ticks)",
              title_justify="left")
    for c in ("model", "accuracy %", "spikes/neuron", "latency", "weight memory (bytes)",
              "accuracy % under jitter"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for r in rep["rows"]:
        t.add_row(r["model"], _pct(r["accuracy"]), f"{r['spikes_per_neuron']:.3f}",
                  r["latency"] or "", f"{r['weight_bytes']:,.0f}", _pct(r["accuracy_jitter"]))
    return t


def sensitivity_table(rep: dict):
    from rich.table import Table

    s = Table(title=f"post-training quantisation sensitivity (on {rep['validation']['on']})",
              title_justify="left")
    s.add_column("quantised")
    s.add_column("accuracy %", justify="right")
    s.add_column("loss (points)", justify="right")
    for r in rep["sensitivity"]:
        s.add_row(r["what"] + ("  [bold yellow]<- largest[/]" if r.get("worst") else ""),
                  _pct(r["accuracy"]), "" if "loss" not in r else f"{100 * r['loss']:.2f}")
    return s


def epochs_table(rep: dict):
    from rich.table import Table

    h = Table(title=f"epochs (best: {rep['validation']['best_epoch']})", title_justify="left")
    for c in ("epoch", "loss", "val accuracy %", "spikes/neuron", "seconds"):
        h.add_column(c, justify="right")
    for r in rep["history"]:
        h.add_row(str(r["epoch"]), f"{r['loss']:.4f}", _pct(r["val_accuracy"]),
                  f"{r['spikes_per_neuron']:.3f}", f"{r['seconds']:.1f}")
    return h


def fit_table(rep: dict):
    from rich.table import Table

    f = Table(title=f"hardware profile '{rep['fit']['profile']}': "
              f"{'fits' if rep['fit']['ok'] else 'does NOT fit'}", title_justify="left")
    for c in ("layer", "ticks", "R", "fan-in", "I bits", "V bits", "issues"):
        f.add_column(c, justify="left" if c in ("layer", "issues") else "right")
    lay = {r["name"]: r for r in rep.get("layers", [])}
    for r in rep["fit"]["layers"]:
        la = lay.get(r["layer"], {})
        ramp = la.get("ramp")
        f.add_row(r["layer"], str(la.get("ticks", "")),
                  "" if not ramp else (str(ramp[0]) if ramp[0] == ramp[1] else
                                       f"{ramp[0]}..{ramp[1]}"),
                  str(r["fan_in"]), str(r["I_bits"]), str(r["V_bits"]),
                  "; ".join(r["issues"]) or "ok")
    return f
