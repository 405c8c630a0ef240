"""The input range: what the input layer encodes onto [0, 1] (values outside are clipped).

From calibration data the observed per-channel extremes are not enough: a test image slightly
brighter than any calibration image would be clipped. The range is rounded out, per channel, to
the data's evident bounds when there are any, else widened by the margin of hidden windows:

1. all values in [0, 1] -> [0, 1]; all integers in [0, 255] -> [0, 255] (raw images);
2. values on a grid of evenly spaced levels (images after a mean/std normalisation): a grid
   spanning over half of 256 levels is 8-bit data -> [lowest, lowest + 255 steps] (the lowest
   observed level taken as 0); a coarser grid (e.g. 17 grey levels) keeps its observed extremes,
   which such data reach;
3. otherwise the observed range widened to ``margin`` times its span, about its centre.
"""

from __future__ import annotations

import numpy as np

from .. import distributed

#: Levels of an 8-bit image channel.
LEVELS = 256
#: A grid spanning more levels than this is taken for 8-bit data.
MIN_8BIT_SPAN = LEVELS // 2
#: Distinct values kept per channel while looking for a grid (more: not an 8-bit grid).
MAX_DISTINCT = 4 * LEVELS
#: Relative tolerance of grid membership (float32 data after normalisation).
GRID_TOL = 1e-3


class RangeObserver:
    """Extremes and (up to MAX_DISTINCT) distinct values per channel, batch by batch."""

    def __init__(self, shape: tuple):
        self.per_channel = len(shape) >= 3
        self.channels = shape[0] if self.per_channel else 1
        self.lo = np.full(self.channels, np.inf)
        self.hi = np.full(self.channels, -np.inf)
        self.values: list[np.ndarray | None] = [np.empty(0)] * self.channels

    def update(self, xb: np.ndarray) -> None:
        xb = np.asarray(xb, np.float64)
        rows = (np.moveaxis(xb, 1, 0).reshape(self.channels, -1) if self.per_channel
                else xb.reshape(1, -1))
        for c, r in enumerate(rows):
            self.lo[c], self.hi[c] = min(self.lo[c], r.min()), max(self.hi[c], r.max())
            if self.values[c] is not None:
                u = np.union1d(self.values[c], np.unique(r))
                self.values[c] = u if u.size <= MAX_DISTINCT else None

    def state(self) -> dict:
        return {"lo": self.lo, "hi": self.hi, "values": self.values}

    def merge(self, st: dict) -> None:
        """Fold in another process's observations: exactly what observing its batches here
        would have given (extremes, and the union of distinct values, dropped past
        MAX_DISTINCT as ``update`` drops it)."""
        self.lo, self.hi = np.minimum(self.lo, st["lo"]), np.maximum(self.hi, st["hi"])
        for c, v in enumerate(st["values"]):
            if self.values[c] is None or v is None:
                self.values[c] = None
            else:
                u = np.union1d(self.values[c], v)
                self.values[c] = u if u.size <= MAX_DISTINCT else None

    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        return self.lo.copy(), self.hi.copy()


def _grid_top(values: np.ndarray) -> float | None:
    """The grid's natural top if the values lie on an evenly spaced grid of <= 256 levels:
    lowest + 255 steps for 8-bit data, the highest observed value for a coarser grid."""
    if values.size < 3:
        return None
    lo, span = float(values[0]), float(values[-1] - values[0])
    first = float(np.min(np.diff(values)))
    if first <= 0 or span / first > LEVELS - 1 + GRID_TOL:
        return None
    step = span / round(span / first)  # from the whole span: float32 rounding averages out
    k = (values - lo) / step
    if np.max(np.abs(k - np.round(k))) > GRID_TOL:
        return None
    if k[-1] < MIN_8BIT_SPAN:
        return float(values[-1])
    # a thousandth of a level of slack: the data's own float32 rounding
    return lo + (LEVELS - 1 + GRID_TOL) * step


def natural_range(obs: RangeObserver, margin: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per channel: the rounded-out range and which rule gave it."""
    lo, hi = obs.observed()
    rules = []
    for c in range(obs.channels):
        v = obs.values[c]
        if lo[c] >= 0 and hi[c] <= 1:
            lo[c], hi[c], rule = 0.0, 1.0, "[0, 1]"
        elif v is not None and lo[c] >= 0 and hi[c] <= 255 and np.all(v == np.round(v)):
            lo[c], hi[c], rule = 0.0, 255.0, "[0, 255]"
        elif v is not None and (top := _grid_top(v)) is not None:
            hi[c], rule = max(hi[c], top), "its grid"
        else:
            pad = 0.5 * (margin - 1.0) * (hi[c] - lo[c])
            lo[c], hi[c], rule = lo[c] - pad, hi[c] + pad, f"margin {margin:g}"
        rules.append(rule)
    return lo, hi, rules


def data_range(batches, shape: tuple, margin: float,
               world: distributed.World = distributed.SINGLE) -> tuple[np.ndarray, np.ndarray, str]:
    """(lo, hi, description) for inputs of per-sample ``shape`` from the calibration batches;
    per channel for images (shape C x ...), one range otherwise. Under torchrun (``world``)
    each process observes its own batches and all get the merged range."""
    obs = RangeObserver(shape)
    for xb in batches:
        obs.update(xb)
    if world.many:
        states = distributed.gather(obs.state(), world)
        obs = RangeObserver(shape)
        for st in states:
            obs.merge(st)
    lo, hi, rules = natural_range(obs, margin)
    if obs.per_channel:
        cs = (-1,) + (1,) * (len(shape) - 1)
        lo, hi = lo.reshape(cs), hi.reshape(cs)
    else:
        lo, hi = np.array(lo[0]), np.array(hi[0])
    kinds = sorted(set(rules))
    return lo, hi, "calibration data, rounded out to " + ", ".join(kinds)
