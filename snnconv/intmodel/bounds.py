"""Worst-case register contents: the I and V widths a layer needs, and the float dtype in which
its integer sums stay exact."""

from __future__ import annotations

import math

import numpy as np
import torch

from .layers import QNet, QNeuron, QSynaptic
from .ops import abs_op, ops_apply

#: float32 sums of integers are exact below this magnitude; float64 below 2**53.
EXACT32 = 2 ** 24
EXACT64 = 2 ** 53


def full_np(a, shape) -> np.ndarray:
    return np.broadcast_to(np.asarray(a, np.float64), shape).copy()


def abs_bounds(net: QNet) -> dict[str, dict[str, float]]:
    """Worst-case |I| and |V| per layer (over neurons), from |W|, T and b."""
    out = {}
    for la in net.layers:
        if not isinstance(la, QSynaptic):
            continue
        i_b = v_b = None
        for g in la.groups:
            src = net.by_name[g.source]
            ops = [abs_op(o) for o in g.ops]
            ones = torch.ones((1, *src.shape), dtype=torch.float64)
            gi = ops_apply(ops, ones)[0]
            i_b = gi if i_b is None else i_b + gi
            v_b = gi * src.ticks if v_b is None else v_b + gi * src.ticks
        b = torch.as_tensor(np.abs(full_np(la.bias, la.shape)))
        if isinstance(la, QNeuron):
            r = torch.as_tensor(full_np(la.ramp, la.shape))
            v_b = torch.maximum(v_b + r * la.ticks, b + r * la.ticks) + b
        else:
            v_b = v_b + b
        out[la.name] = {"I": float(i_b.max()), "V": float(v_b.max())}
    return out


def bits_for(bound: float) -> int:
    """Signed two's complement width holding every integer in [-bound, bound]."""
    return int(math.ceil(math.log2(bound + 1))) + 1 if bound > 0 else 1


def set_widths(net: QNet, i_bits: int | None = None, v_bits: int | None = None) -> None:
    """Register widths from the worst-case bounds, or the profile's fixed widths."""
    for name, b in abs_bounds(net).items():
        la = net.by_name[name]
        la.widths = {"I": i_bits or bits_for(b["I"]), "V": v_bits or bits_for(b["V"]),
                     "I_needed": bits_for(b["I"]), "V_needed": bits_for(b["V"])}


def layer_dtypes(net: QNet) -> dict[str, torch.dtype]:
    """Per layer, float32 when every partial sum of that layer stays below 2**24, else float64:
    one layer with a wide register (a huge ramp, say) does not send the whole net to float64,
    which has no fast convolution on the CPU. Layers without sums (input, pool) take float32:
    tick counts are small integers."""
    bounds = abs_bounds(net)
    out = {}
    for la in net.layers:
        worst = bounds.get(la.name, {"V": 0.0})["V"]
        if worst >= EXACT64:
            raise ValueError(f"layer {la.name}: integer sums exceed 2**53; the model cannot be "
                             "evaluated exactly")
        out[la.name] = torch.float32 if worst < EXACT32 else torch.float64
    return out


def exact_dtype(net: QNet) -> torch.dtype:
    """The one float dtype that holds every layer's sums exactly: the widest of
    ``layer_dtypes``."""
    return torch.float64 if torch.float64 in layer_dtypes(net).values() else torch.float32
