"""The real values behind an integer model: what PTQ refines and fine-tuning trains.

Weights are kept in integer units (one unit = the layer's weight step) and biases in V units,
so rounding them (``with_latent``) gives the integer model again; frozen groups (skips) have no
latent and keep their integers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ..intmodel import QNet, op_array, set_widths
from .levels import quantize_weights


@dataclass
class Latent:
    """Real-valued (integer-unit) parameters that round to the integer model: what fine-tuning
    trains. ``weights[layer][group]`` is None for frozen groups."""

    weights: dict[str, list] = field(default_factory=dict)
    bias: dict[str, np.ndarray] = field(default_factory=dict)


def with_latent(net: QNet, lat: Latent) -> QNet:
    """A copy of ``net`` whose integers are the rounded latents (after fine-tuning)."""
    net = copy.deepcopy(net)
    for la in net.layers:
        if la.name not in lat.weights:
            continue
        for g, w in zip(la.groups, lat.weights[la.name]):
            if w is None:
                continue
            wi = next(i for i, o in enumerate(g.ops) if op_array(o) is not None)
            g.ops[wi] = g.ops[wi].with_array(quantize_weights(np.asarray(w), g.bits))
        la.bias = np.round(np.asarray(lat.bias[la.name], np.float64)).astype(np.int64)
    set_widths(net, *(net.meta.get("quantization", {}).get("profile", {}).get(k) for k in
                      ("i_bits", "v_bits")))
    net.check()
    return net
