"""Laying out time: stages, windows back to back, delays.

Spec section 1: layer n spikes in [t_min(n), t_max(n)], windows back to back per stage (longest
path depth), a window must cover tau_c times the largest value. Section 3: inputs from earlier
stages get an axonal delay t_min(n) - t_max(m).
"""

from __future__ import annotations

import math
from ..snn import SNN, InputLayer, Layer, NeuronLayer, PoolLayer, ReadoutLayer
from .calibrate import Calibration

#: Windows are rounded up to this many significant bits, so every t_min, t_max and delay is an
#: exact float64 (their sums and differences do not round).
WINDOW_BITS = 8
#: Window kinds that are measured or estimated, not proven: they get the safety margin.
MARGINED = ("data", "estimate")


def round_window(w: float) -> float:
    m, e = math.frexp(w)
    return math.ldexp(math.ceil(m * 2 ** WINDOW_BITS) / 2 ** WINDOW_BITS, e)


def _stages(layers: list[Layer]) -> None:
    """Stage = longest path depth from the input; pools share their source's stage."""
    by = {la.name: la for la in layers}
    for la in layers:
        if isinstance(la, InputLayer):
            la.stage = 0
        elif isinstance(la, PoolLayer):
            la.stage = by[la.source].stage
        else:
            la.stage = 1 + max(by[s].stage for s in la.sources())


def stage_ends(layers: list[Layer], cal: Calibration, tau_c: float = 1.0, margin: float = 1.5,
               use_percentile: bool = False) -> dict[int, float]:
    """t_max of every stage: windows back to back, each covering tau_c times the largest value
    any of the stage's layers carries (with the margin for measured or estimated maxima)."""
    _stages(layers)
    need: dict[int, float] = {}
    for la in layers:
        if not isinstance(la, NeuronLayer):
            continue
        if la.saturating:
            req = la.cap * tau_c
        else:
            val = (cal.percentiles or {}).get(la.name) if use_percentile else None
            if val is None:
                val = cal.maxima.get(la.name, 0.0) * (margin if cal.method in MARGINED else 1.0)
            req = val * tau_c
        need[la.stage] = max(need.get(la.stage, 0.0), req)
    t_max = {0: round_window(1.0 * tau_c)}
    for k in range(1, max(la.stage for la in layers)):
        w = need.get(k, 0.0)
        if not w > 0:
            w = tau_c  # a stage silent on all calibration data: any positive window is exact
        t_max[k] = t_max[k - 1] + round_window(w)
    return t_max


def assign_times(layers: list[Layer], cal: Calibration, tau_c: float = 1.0,
                 margin: float = 1.5, use_percentile: bool = False) -> list[Layer]:
    """Stages, shared windows per stage, per-layer t_min/t_max, delays. Mutates and returns."""
    t_max = stage_ends(layers, cal, tau_c, margin, use_percentile)
    by = {la.name: la for la in layers}
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

