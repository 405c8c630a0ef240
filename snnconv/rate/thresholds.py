"""Thresholds by data-based normalisation (Diehl et al. 2015; Rueckauer et al. 2017).

Each ReLU of the imported network becomes an IF layer whose threshold is lambda: the largest
(``percentile=None``) or the p-th percentile of the positive calibration activations of that ReLU,
over the whole layer or per channel. A spike then stands for the value lambda, so a neuron's rate
approximates activation / lambda; the percentile trades rare clipped activations for rates that
fill more of the [0, 1] per-step range (fewer steps for the same resolution).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import ir

#: positive activations kept per layer (or channel) for a percentile; a random subsample beyond
MAX_KEEP = 200_000


@dataclass
class Thresholds:
    """lambda per ReLU output tensor: a float (layer-wise) or an array (C,) per channel."""

    values: dict[str, np.ndarray]
    samples: int
    percentile: float | None
    channelwise: bool

    def method(self) -> str:
        how = "max" if self.percentile is None else f"percentile {self.percentile:g}"
        return how + (" per channel" if self.channelwise else " per layer")


def relu_tensors(graph: ir.Graph) -> list[str]:
    return [n.output for n in graph.nodes if isinstance(n, ir.Relu)]


def _channel_major(v: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) -> (C, N * ...): one row of values per channel (features for a flat layer)."""
    return v.transpose(0, 1).reshape(v.shape[1], -1)


def measure(graph: ir.Graph, batches, percentile: float | None = None,
            channelwise: bool = False, progress=None) -> Thresholds:
    """Run the float64 reference on the calibration batches and keep each ReLU's lambda."""
    names = relu_tensors(graph)
    maxima: dict[str, torch.Tensor] = {}
    keep: dict[str, list[list[np.ndarray]]] = {}
    rng = np.random.default_rng(0)
    n = 0
    for x in batches:
        _, kept = graph.forward(x, keep=set(names))
        for k in names:
            rows = _channel_major(kept[k]) if channelwise else kept[k].reshape(1, -1)
            m = rows.max(dim=1).values
            maxima[k] = m if k not in maxima else torch.maximum(maxima[k], m)
            if percentile is not None:
                lists = keep.setdefault(k, [[] for _ in range(rows.shape[0])])
                for c, row in enumerate(rows):
                    pos = row[row > 0].numpy()
                    if pos.size > MAX_KEEP // max(len(lists), 1):
                        pos = rng.choice(pos, MAX_KEEP // max(len(lists), 1), replace=False)
                    lists[c].append(pos)
        n += len(x)
        if progress is not None:
            progress(len(x))
    values = {}
    for k in names:
        lam = maxima[k].numpy().astype(np.float64)
        if percentile is not None:
            lam = np.array([np.percentile(np.concatenate(v), percentile)
                            if sum(a.size for a in v) else 0.0 for v in keep[k]])
        # a channel (or layer) that never fired on the data gets the layer's largest lambda (1
        # if none): its neurons then need currents no smaller than the others' to spike
        fill = float(lam.max()) if lam.size and lam.max() > 0 else 1.0
        lam = np.where(lam > 0, lam, fill)
        values[k] = lam if channelwise else np.asarray(float(lam[0]))
    return Thresholds(values, n, percentile, channelwise)
