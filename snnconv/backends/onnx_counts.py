"""Spike and clip counts inside the onnxruntime graph without leaving its blocked layout.

A convolutional layer's offsets live in onnxruntime's blocked (NCHWc) layout between fused
convolutions; comparisons and casts would force them back to NCHW for every layer (a reorder,
then three passes per count), which costs more than the network on thin deep nets. Instead a
HardSigmoid, clip(alpha s + beta, 0, 1), which onnxruntime runs on blocked data as it is, makes
an indicator, and a global average pool (or, without channels, a sum) reduces it:

    spike   = clip(2^127 s, 0, 1)          s > 0  (the session flushes subnormals: s >= 2^-126)
    clipped = clip(K s - K w', 0, 1)       s >= w, with w' the float below the window w and
                                           K = 1 / (w - w') a power of two (every step exact)

The pooled means times H*W are the per-channel counts; one matrix product sums channels per
layer; counts come back within rounding of whole numbers and are rounded per sample.

Clipping is rare with calibrated windows, so by default (``peaks``) a convolutional layer's
clipped count is not made at all: a global max pool (one read) gives each channel's largest
offset, and only a batch where one reaches its window is counted again exactly (``OnnxSimulator``
runs the ``peaks=False`` graph for it).
"""

from __future__ import annotations

import numpy as np

from .onnx_graph import Emitter, count

#: 2^127 s >= 1 for every normal s > 0 (subnormals are flushed by the session, see open_session)
SPIKE_GAIN = 2.0 ** 127
#: above this many neurons per sample the float32 sums of a layer's channels could drift by
#: half a count; such layers are summed whole
BLOCKED_MAX = 2 ** 21


def _above(top: float, dtype) -> tuple[float, float]:
    """(K, -K w') of the indicator of s >= top: w' the float below top, K = 1 / (top - w')."""
    t = dtype(top)
    below = np.nextafter(t, dtype(-np.inf))
    step = 1.0 / (float(t) - float(below))
    return step, -float(below) * step


class Counts:
    """Collects per-sample counts while the layers are emitted; ``finish`` makes the (N, k)
    ``stats`` tensor whose columns are ``names`` (a name may repeat: its columns add up)."""

    def __init__(self, em: Emitter, peaks: bool = True):
        self.em, self.peaks = em, peaks
        self._sums: list[str] = []  # (N,) counts
        self._sum_names: list[tuple[str, str]] = []
        self._pools: list[str] = []  # (N, C, 1, 1) pooled indicators
        self._pool_names: list[tuple[str, str]] = []
        self._rows: list[tuple[int, int]] = []  # per pooled channel: (column, H*W)
        self._peaks: list[str] = []  # (N, C, 1, 1) largest offsets
        self.peak_windows: list[np.ndarray] = []  # per peak channel, its window

    @property
    def names(self) -> list[tuple[str, str]]:
        return self._pool_names + self._sum_names

    def layer(self, name: str, s: str, shape, window: float | None) -> None:
        """Spikes (s > 0) and, with a window, clipped neurons (s >= window) of a layer."""
        self.indicator(name, "spikes", s, shape, SPIKE_GAIN, 0.0)
        if window is None:
            return
        if self.peaks and self._blocked(shape):
            self._peaks.append(self.em.op("GlobalMaxPool", [s], hint="peak"))
            self.peak_windows.append(np.full(int(shape[0]), window, self.em.np))
        else:
            self.indicator(name, "clipped", s, shape, *_above(window, self.em.np))

    def input(self, name: str, s: str, u: str, shape) -> None:
        """The input's spikes and its values outside [0, 1] (u < 0 plus u > 1), summed whole:
        the input is not in the blocked layout, and its pools would send the others' back."""
        self.indicator(name, "spikes", s, shape, SPIKE_GAIN, 0.0, pool=False)
        self.indicator(name, "clipped", u, shape, -SPIKE_GAIN, 0.0, pool=False)
        self.indicator(name, "clipped", u, shape, *_above(float(np.nextafter(
            self.em.np(1), self.em.np(2))), self.em.np), pool=False)

    def indicator(self, name: str, what: str, s: str, shape, gain: float, bias: float,
                  pool: bool = True) -> None:
        """clip(gain s + bias, 0, 1) per neuron, counted per sample."""
        em = self.em
        if em.count_elem != em.elem:  # sums beyond float32's integers: compare and cast
            mask = em.op("Greater", [em.op("Add", [em.op("Mul", [s, em.const(gain)]),
                                                   em.const(bias)]), em.const(0.0)])
            self._sums.append(count(em, mask, shape))
            self._sum_names.append((name, what))
            return
        y = em.op("HardSigmoid", [s], alpha=float(gain), beta=float(bias), hint="indicator")
        if pool and self._blocked(shape):
            self._pools.append(em.op("GlobalAveragePool", [y]))
            hw = int(np.prod(shape[1:]))
            self._rows += [(len(self._pool_names), hw)] * int(shape[0])
            self._pool_names.append((name, what))
        else:
            axes = em.const(list(range(1, len(shape) + 1)), np.int64)
            self._sums.append(em.op("ReduceSum", [y, axes], keepdims=0, hint="count"))
            self._sum_names.append((name, what))

    @staticmethod
    def _blocked(shape) -> bool:
        return len(shape) == 3 and int(np.prod(shape)) <= BLOCKED_MAX

    def finish(self) -> tuple[str, str | None]:
        """The (N, k) counts and the (N, channels) peaks (None without peak channels)."""
        em = self.em
        peaks = None
        if self._peaks:
            peaks = _flat_concat(em, self._peaks)
        parts = []
        if self._pools:
            total = np.zeros((len(self._rows), len(self._pool_names)))
            for r, (col, hw) in enumerate(self._rows):
                total[r, col] = hw
            parts.append(em.op("MatMul", [_flat_concat(em, self._pools),
                                          em.const(total, hint="per_layer")]))
        parts += [em.op("Unsqueeze", [c, em.const([1], np.int64)]) for c in self._sums]
        if len(parts) == 1:
            return parts[0], peaks
        return em.op("Concat", parts, axis=1, hint="stats"), peaks


def _flat_concat(em: Emitter, pooled: list[str]) -> str:
    """(N, sum of C) from (N, C, 1, 1) tensors."""
    x = em.op("Concat", pooled, axis=1) if len(pooled) > 1 else pooled[0]
    return em.op("Flatten", [x], axis=1)


def rounded_totals(stats: np.ndarray) -> np.ndarray:
    """Column totals of the (N, k) per-sample counts, each rounded to a whole number first."""
    return np.rint(stats.astype(np.float64)).sum(0)
