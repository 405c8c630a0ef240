"""The input layer's spikes and clipped values, counted on the host by comparing x with
thresholds.

The graph codes the input as u = (x - lo) / (hi - lo) (then clip(u, 0, 1) tau_c); a spike is
u > 0 (min(u, 1) tau_c > 0 when tau_c < 1), a clipped value u < 0 or u > 1. Each float step is
rounded monotonically, so each of these is x >= t or x < t for one threshold t per element of
lo and hi, found once by bisection over the floats with the same operations. Counting is then
three comparisons of x: a batch of one pays for every numpy call, after a run from cold caches.
"""

from __future__ import annotations

import numpy as np

#: unsigned integer type with the bit width of each float type
_BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


class InputCounts:
    """``InputCounts(layer, dtype, tau)(x) -> (spikes, clipped)`` of a batch."""

    def __init__(self, layer, dtype, tau: float):
        dt = np.dtype(dtype).type
        lo = np.asarray(layer.lo, np.float64).astype(dt)
        span = np.asarray(layer.hi, np.float64).astype(dt) - lo
        lo, span = np.broadcast_arrays(lo, span)
        shift = lo if np.any(lo != 0) else None
        scale = span if np.any(span != 1) else None
        tau_ = None if tau >= 1 else dt(tau)  # u tau_c > 0 for u > 0 unless tau_c < 1

        def u(x):
            v = x if shift is None else x - shift
            return v if scale is None else v / scale

        def on(x):
            return u(x) > 0 if tau_ is None else np.minimum(u(x), 1) * tau_ > 0

        self._u, self._on = u, on
        self.monotone = bool(np.all(np.isfinite(lo)) and np.all(np.isfinite(span))
                             and np.all(span > 0))
        if self.monotone:  # (a hand-made model file may break the converter's hi > lo)
            self.t_spike = first_true(on, lo.shape, dt)  # spike: x >= t_spike
            self.t_low = first_true(lambda x: u(x) >= 0, lo.shape, dt)  # u < 0: x < t_low
            self.t_high = first_true(lambda x: u(x) > 1, lo.shape, dt)  # u > 1: x >= t_high

    def __call__(self, x: np.ndarray) -> tuple[int, int]:
        if not self.monotone:
            u = self._u(x)
            return int(np.count_nonzero(self._on(x))), int(np.count_nonzero((u < 0) | (u > 1)))
        return (int(np.count_nonzero(x >= self.t_spike)),
                int(np.count_nonzero((x < self.t_low) | (x >= self.t_high))))


def first_true(pred, shape, dt) -> np.ndarray:
    """Per element, the smallest float x (of type ``dt``, -inf..inf) with ``pred(x)`` true,
    for a ``pred`` monotone in x (false, then true); NaN where it is never true (x >= NaN is
    false). Bisection over the floats in order, all elements at once."""
    ubits = _BITS[np.dtype(dt)]
    nbits = np.dtype(ubits).itemsize * 8
    sign = ubits(1) << ubits(nbits - 1)

    def to_float(key):  # order-preserving map from unsigned keys back to floats
        key = np.asarray(key, ubits)
        bits = np.where(key >= sign, key - sign, ~key)
        return bits.view(dt)

    def to_key(f):
        bits = np.asarray(f, dt).view(ubits)
        return np.where(bits >= sign, ~bits, bits + sign).astype(ubits)

    lo = np.full(shape, to_key(dt(-np.inf)), ubits)  # pred(lo) false, or lo is the answer
    hi = np.full(shape, to_key(dt(np.inf)), ubits)
    always = pred(to_float(lo))
    never = ~pred(to_float(hi))
    for _ in range(nbits):  # invariant: pred(lo) false, pred(hi) true (where it matters)
        mid = lo + (hi - lo) // ubits(2)
        t = pred(to_float(mid))
        hi = np.where(t, mid, hi)
        lo = np.where(t, lo, mid)
    out = to_float(hi).copy()
    out[always] = dt(-np.inf)
    out[never] = dt(np.nan)
    return out
