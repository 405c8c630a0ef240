"""Spike and clip counts inside the onnxruntime graph without leaving its blocked layout.

A convolutional layer's offsets live in onnxruntime's blocked (NCHWc) layout between fused
convolutions; comparisons and casts would force them back to NCHW for every layer (a reorder,
then three passes per count), which costs more than the network on thin deep nets. Instead a
depthwise 1x1 convolution with a clamp to [0, 1] makes an indicator in the blocked layout and a
global average pool reduces it:

    spike   = clip(2^127 s, 0, 1)          s > 0  (the session flushes subnormals: s >= 2^-126)
    clipped = clip(K (s - w'), 0, 1)       s >= w, with w' the float below the window w and
                                           K = 1 / (w - w') a power of two (every step exact)

The pooled means times H*W are the per-channel counts; one matrix product sums channels per
layer; counts come back within rounding of whole numbers and are rounded per sample.

Clipping is rare with calibrated windows, so by default (``peaks``) a layer's clipped count is
not made at all: a global max pool (one read) gives each channel's largest offset, and only a
batch where one reaches its window is counted again exactly (``OnnxSimulator`` runs the
``peaks=False`` graph for it). Dense layers and the input keep the plain comparison and cast.
"""

from __future__ import annotations

import numpy as np
from .onnx_graph import Emitter, count

#: 2^127 s >= 1 for every normal s > 0 (subnormals are flushed by the session, see OnnxSimulator)
SPIKE_GAIN = 2.0 ** 127
#: above this many neurons per sample the float32 sums of a layer's channels could drift by
#: half a count; such layers count with the plain comparison
BLOCKED_MAX = 2 ** 21


class Counts:
    """Collects per-sample counts while the layers are emitted; ``finish`` makes the
    (N, k) ``stats`` tensor whose columns are ``names``."""

    def __init__(self, em: Emitter, peaks: bool = True):
        self.em, self.peaks = em, peaks
        self._peaks: list[str] = []  # (N, C, 1, 1) largest offsets
        self.peak_windows: list[np.ndarray] = []  # per peak channel, its window
        self._plain: list[str] = []  # (N,) counts
        self._plain_names: list[tuple[str, str]] = []
        self._pools: list[str] = []  # (N, k C, 1, 1) pooled indicators
        self._pool_names: list[tuple[str, str]] = []
        self._rows: list[tuple[int, int]] = []  # per pooled channel: (column, H*W)

    @property
    def names(self) -> list[tuple[str, str]]:
        return self._pool_names + self._plain_names

    def plain(self, layer: str, what: str, mask: str, shape) -> None:
        self._plain.append(count(self.em, mask, shape))
        self._plain_names.append((layer, what))

    def layer(self, name: str, s: str, shape, window: float | None) -> None:
        """Spikes (s > 0) and, with a window, clipped neurons (s >= window) of a layer."""
        em = self.em
        if len(shape) != 3 or int(np.prod(shape)) > BLOCKED_MAX or em.elem != em.count_elem:
            self.plain(name, "spikes", em.op("Greater", [s, em.const(0.0)]), shape)
            if window is not None:
                self.plain(name, "clipped", em.op("GreaterOrEqual", [s, em.const(window)]),
                           shape)
            return
        c, h, w = (int(d) for d in shape)
        self._indicator(name, "spikes", s, c, h * w, SPIKE_GAIN, 0.0)
        if window is not None and self.peaks:
            self._peaks.append(em.op("GlobalMaxPool", [s], hint="peak"))
            self.peak_windows.append(np.full(c, window, em.np))
        elif window is not None:
            top = em.np(window)
            below = np.nextafter(top, em.np(0))
            step = 1.0 / (float(top) - float(below))
            self._indicator(name, "clipped", s, c, h * w, step, -float(below) * step)

    def _indicator(self, name: str, what: str, s: str, c: int, hw: int, gain: float,
                   bias: float) -> None:
        """clip(gain s + bias, 0, 1) per neuron, pooled per channel. A depthwise convolution
        with one output per channel, the form onnxruntime runs in its blocked layout."""
        em = self.em
        y = em.op("Conv", [s, em.const(np.full((c, 1, 1, 1), gain), hint="gain"),
                           em.const(np.full(c, bias), hint="bias")],
                  group=c, kernel_shape=[1, 1])
        y = em.op("Clip", [y, em.const(0.0), em.const(1.0)], hint="indicator")
        self._pools.append(em.op("GlobalAveragePool", [y]))
        self._rows += [(len(self._pool_names), hw)] * c
        self._pool_names.append((name, what))

    def finish(self) -> tuple[str, str | None]:
        """The (N, k) counts and the (N, channels) peaks (None without peak channels)."""
        em = self.em
        peaks = None
        if self._peaks:
            peaks = em.op("Flatten", [em.op("Concat", self._peaks, axis=1)
                                      if len(self._peaks) > 1 else self._peaks[0]], axis=1)
        parts = []
        if self._pools:
            pooled = em.op("Flatten", [em.op("Concat", self._pools, axis=1)
                                       if len(self._pools) > 1 else self._pools[0]], axis=1)
            total = np.zeros((len(self._rows), len(self._pool_names)))
            for r, (col, hw) in enumerate(self._rows):
                total[r, col] = hw
            parts.append(em.op("MatMul", [pooled, em.const(total, hint="per_layer")]))
        parts += [em.op("Unsqueeze", [c, em.const([1], np.int64)]) for c in self._plain]
        if len(parts) == 1:
            return parts[0], peaks
        return em.op("Concat", parts, axis=1, hint="stats"), peaks


def rounded_totals(stats: np.ndarray) -> np.ndarray:
    """Column totals of the (N, k) per-sample counts, each rounded to a whole number first."""
    return np.rint(stats.astype(np.float64)).sum(0)


