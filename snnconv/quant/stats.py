"""Calibration statistics: a bounded random sample of each layer's float values.

Tick sizes (``ticks.best_range``) and the latency budget (``ticks.allocate_ticks``) are chosen
to minimise rounding error on these values; a sample of fixed size keeps that cheap for any
calibration set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..snn import equivalent
from ..snn import SNN, InputLayer, NeuronLayer


@dataclass
class ActStats:
    """A random sample of each layer's values (input: normalised u in [0, 1])."""

    values: dict[str, np.ndarray]
    maxima: dict[str, float]


def act_stats(snn: SNN, batches, keep: int = 50_000, seed: int = 0) -> ActStats:
    """Up to ``keep`` values per input/neuron layer (at most keep/4 from each batch) and each
    layer's maximum over all of them."""
    rng = np.random.default_rng(seed)
    vals: dict[str, list[np.ndarray]] = {}
    mx: dict[str, float] = {}

    def obs(layer, v):
        if isinstance(layer, (NeuronLayer, InputLayer)):
            a = v.reshape(-1).numpy()
            mx[layer.name] = max(mx.get(layer.name, 0.0), float(a.max()) if a.size else 0.0)
            if a.size > keep // 4:
                a = rng.choice(a, keep // 4, replace=False)
            vals.setdefault(layer.name, []).append(a)

    for xb in batches:
        equivalent.forward(snn.layers, xb, observe=obs)
    out = {}
    for k, v in vals.items():
        a = np.concatenate(v)
        if a.size > keep:
            a = rng.choice(a, keep, replace=False)
        out[k] = a
    return ActStats(out, mx)
