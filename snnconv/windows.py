"""Choosing windows (from calibration data or guaranteed bounds) and laying out time.

Spec section 1: layer n spikes in [t_min(n), t_max(n)], windows back to back per stage (longest
path depth), a window must cover tau_c times the largest value. Section 3: inputs from earlier
stages get an axonal delay t_min(n) - t_max(m).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .snn import equivalent
from .snn import SNN, InputLayer, Layer, NeuronLayer, PoolLayer, ReadoutLayer

#: Windows are rounded up to this many significant bits, so every t_min, t_max and delay is an
#: exact float64 (their sums and differences do not round).
WINDOW_BITS = 8


def round_window(w: float) -> float:
    m, e = math.frexp(w)
    return math.ldexp(math.ceil(m * 2 ** WINDOW_BITS) / 2 ** WINDOW_BITS, e)


@dataclass
class Calibration:
    """Per-layer statistics of the value each neuron layer carries."""

    maxima: dict[str, float]
    percentiles: dict[str, float] | None = None
    samples: int = 0
    method: str = "data"
    active: dict[str, float] | None = None  # fraction of neurons with a value > 0 (= spikes)


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


def bound_calibration(layers: list[Layer]) -> Calibration:
    b = equivalent.bounds(layers)
    return Calibration({k: float(v.max()) if v.size else 0.0 for k, v in b.items()
                        if k in {la.name for la in layers if isinstance(la, NeuronLayer)}},
                       None, 0, "bounds")


def assign_times(layers: list[Layer], cal: Calibration, tau_c: float = 1.0,
                 margin: float = 1.5, use_percentile: bool = False) -> list[Layer]:
    """Stages, shared windows per stage, per-layer t_min/t_max, delays. Mutates and returns."""
    by = {la.name: la for la in layers}
    need: dict[int, float] = {}
    for la in layers:
        if isinstance(la, InputLayer):
            la.stage = 0
        elif isinstance(la, PoolLayer):
            la.stage = by[la.source].stage
        else:
            la.stage = 1 + max(by[s].stage for s in la.sources())
        if isinstance(la, NeuronLayer):
            if la.saturating:
                req = la.cap * tau_c
            else:
                val = (cal.percentiles or {}).get(la.name) if use_percentile else None
                if val is None:
                    val = cal.maxima.get(la.name, 0.0) * (margin if cal.method == "data" else 1.0)
                req = val * tau_c
            need[la.stage] = max(need.get(la.stage, 0.0), req)
    last = max(la.stage for la in layers)
    t_max = {0: round_window(1.0 * tau_c)}
    for k in range(1, last):
        w = need.get(k, 0.0)
        if not w > 0:
            w = tau_c  # a stage silent on all calibration data: any positive window is exact
        t_max[k] = t_max[k - 1] + round_window(w)
    for la in layers:
        if isinstance(la, InputLayer):
            la.t_min, la.t_max = 0.0, t_max[0]
        elif isinstance(la, NeuronLayer):
            la.t_max = t_max[la.stage]
            la.t_min = la.t_max - la.cap * tau_c if la.saturating else t_max[la.stage - 1]
        elif isinstance(la, PoolLayer):
            src = by[la.source]
            la.t_min, la.t_max = src.t_min, src.t_max
        elif isinstance(la, ReadoutLayer):
            la.t_min = la.t_max = t_max[la.stage - 1]
        for g in getattr(la, "groups", []):
            g.delay = la.t_min - by[g.source].t_max
            assert g.delay >= 0, (la.name, g.source)
    return layers


def build_snn(layers: list[Layer], cal: Calibration, tau_c=1.0, margin=1.5,
              use_percentile=False, head=None, meta=None) -> SNN:
    assign_times(layers, cal, tau_c, margin, use_percentile)
    snn = SNN(layers, tau_c=tau_c, head=head, meta=meta or {})
    snn.check()
    return snn

