"""Windows from calibration data: each neuron layer's largest value over the data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..snn import Layer, NeuronLayer, equivalent


@dataclass
class Calibration:
    """Per-layer statistics of the value each neuron layer carries."""

    maxima: dict[str, float]
    percentiles: dict[str, float] | None = None
    samples: int = 0
    method: str = "data"
    active: dict[str, float] | None = None  # fraction of neurons with a value > 0 (= spikes)
    #: how the maxima were found: the data set, "symbolic"/"interval" bounds, or the estimate's
    #: sources ("batchnorm", "moments")
    source: str = ""


def calibrate(layers: list[Layer], batches, percentile: float | None = None,
              progress=None, max_keep: int = 2_000_000) -> Calibration:
    """Run the equivalent network on data; keep each layer's max (and a sample for percentiles)."""
    maxima: dict[str, float] = {}
    active: dict[str, list[int]] = {}
    keep: dict[str, list[np.ndarray]] = {}
    kept: dict[str, int] = {}
    n = 0
    rng = np.random.default_rng(0)

    def observe(layer, v):
        if not isinstance(layer, NeuronLayer):
            return
        m = float(v.max()) if v.numel() else 0.0
        maxima[layer.name] = max(maxima.get(layer.name, 0.0), m)
        a = active.setdefault(layer.name, [0, 0])
        a[0] += int((v > 0).sum())
        a[1] += v.numel()
        if percentile is not None:
            pos = v[v > 0].numpy()
            room = max_keep - kept.get(layer.name, 0)
            if pos.size > room:
                pos = rng.choice(pos, size=max(room, 0), replace=False)
            keep.setdefault(layer.name, []).append(pos)
            kept[layer.name] = kept.get(layer.name, 0) + pos.size

    for x in batches:
        equivalent.forward(layers, x, observe=observe)
        n += len(x)
        if progress is not None:
            progress(len(x))
    pct = None
    if percentile is not None:
        pct = {k: float(np.percentile(np.concatenate(v), percentile)) if sum(a.size for a in v)
               else 0.0 for k, v in keep.items()}
    return Calibration(maxima, pct, n, "data", {k: a / max(1, b) for k, (a, b) in active.items()})
