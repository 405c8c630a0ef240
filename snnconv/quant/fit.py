"""Does an integer model fit a chip? Each layer against each limit of the hardware profile.

Quantisation respects the limits it can choose (bits, ticks, ramps); fan-in, delays, register
widths, thresholds and memory follow from the network and are only reported here, so a
hardware team sees what does not fit before deploying.
"""

from __future__ import annotations

import numpy as np
import torch

from ..intmodel import QLayer, QNet, op_array
from .profile import Profile


def fit_report(net: QNet, prof: Profile) -> dict:
    """Check an integer model against a profile; each row says ok or what exceeds."""
    rows = [_layer_row(net, la, prof) for la in net.layers if la.kind in ("neuron", "readout")]
    mem = net.weight_count()[1]
    mem_ok = prof.weight_memory_bytes is None or mem <= prof.weight_memory_bytes
    return {"profile": prof.name, "layers": rows, "weight_memory_bytes": mem,
            "memory_ok": mem_ok, "ok": mem_ok and all(r["ok"] for r in rows)}


def _layer_row(net: QNet, la: QLayer, prof: Profile) -> dict:
    """One report row: the layer's fan-in and register widths, and every limit it exceeds."""
    r = {"layer": la.name, "issues": []}
    for g in la.groups:
        if g.weighted is not None and g.weighted.kind in ("conv", "dense") and \
                g.bits > prof.max_weight_bits:
            r["issues"].append(f"{g.bits}-bit weights > {prof.max_weight_bits}")
        if prof.max_delay is not None and g.delay > prof.max_delay:
            r["issues"].append(f"delay {g.delay} > {prof.max_delay} ticks")
    fan = fan_in(net, la)
    r["fan_in"] = fan
    if prof.max_fan_in is not None and fan > prof.max_fan_in:
        r["issues"].append(f"fan-in {fan} > {prof.max_fan_in}")
    for reg, lim in (("I", prof.i_bits), ("V", prof.v_bits)):
        need = la.widths.get(f"{reg}_needed", la.widths[reg])
        r[f"{reg}_bits"] = need
        if lim is not None and need > lim:
            r["issues"].append(f"{reg} needs {need} bits > {lim} (overflow possible: "
                               f"{prof.overflow})")
    if la.kind == "neuron" and prof.threshold_bits is not None:
        th = int(np.abs(la.theta).max())
        if th >= 2 ** (prof.threshold_bits - 1):
            r["issues"].append(f"threshold {th} needs more than {prof.threshold_bits} bits")
    if la.kind == "neuron" and la.ticks > prof.max_ticks:
        r["issues"].append(f"{la.ticks} ticks > {prof.max_ticks}")
    r["ok"] = not r["issues"]
    return r


def fan_in(net: QNet, la: QLayer, structural: bool = False) -> int:
    """Largest number of synapses of one neuron: non-zero weights, or (``structural``) every
    weight slot, which training may fill."""
    tot = None
    for g in la.groups:
        src = net.by_name[g.source]
        x = torch.ones((1, *src.shape), dtype=torch.float64)
        for op in g.ops:
            a = op_array(op)
            if a is not None:
                op = op.with_array(np.ones_like(np.asarray(a, np.float64)) if structural
                                else (np.asarray(a) != 0).astype(np.float64))
            x = op.apply(x)
        tot = x if tot is None else tot + x
    return int(tot.max()) if tot is not None else 0
