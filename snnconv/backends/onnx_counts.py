"""Spike and clip counts inside the onnxruntime graph without leaving its blocked layout.

A convolutional layer's offsets live in onnxruntime's blocked (NCHWc) layout between fused
convolutions; comparisons and casts would force them back to NCHW for every layer (a reorder,
then three passes per count), which costs more than the network on thin deep nets. Instead a
HardSigmoid, clip(alpha s + beta, 0, 1), which onnxruntime runs on blocked data as it is, makes
an indicator, and a global average pool (or, without channels, a sum) reduces it:

    spike   = clip(2^127 s, 0, 1)          s > 0  (the session flushes subnormals: s >= 2^-126)
    clipped = clip(K s - K w', 0, 1)       s >= w, with w' the float below the window w and
                                           K = 1 / (w - w') a power of two (every step exact)

The pooled means times H*W are the per-channel counts; one float64 matrix product sums channels
per layer, in the graph; counts come within rounding of whole numbers and are rounded per
sample.

Clipping is rare with calibrated windows, so by default (``peaks``) a convolutional layer's
clipped count is not made at all: a global max pool (one read) gives each channel's largest
offset, and only a batch where one reaches its window is run again exactly (``OnnxSimulator``
runs the ``peaks=False`` graph for it). Until then the clamp to the window is the identity, so
peak-checked layers leave it out (see ``onnx_emit.emit_fire``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto

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
    """Collects per-sample counts while the layers are emitted; ``finish`` makes them graph
    outputs and returns their ``CountLayout`` (a name may repeat: its counts add up)."""

    def __init__(self, em: Emitter, peaks: bool = True, group: bool = False,
                 host_input: bool = False):
        self.em, self.peaks, self.group = em, peaks, group
        self.host_input: str | bool = host_input  # the input's name once seen, if counted
        # on the host (OnnxSimulator, with input_counts.InputCounts)
        self._pending: list[tuple[str, str, tuple, float | None]] = []  # same H x W, in order
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
        """Spikes (s > 0) and, with a window, clipped neurons (s >= window) of a layer. With
        ``group``, consecutive layers of one spatial size are counted together (``_flush``)."""
        if self.group and self.peaks and self._blocked(shape):
            if self._pending and tuple(self._pending[0][2][1:]) != tuple(shape[1:]):
                self._flush()
            self._pending.append((name, s, tuple(shape), window))
            return
        self._one(name, s, shape, window)

    def _flush(self) -> None:
        """The pending layers' offsets concatenated along channels, then one indicator, one
        average pool and one max pool for all of them: a few nodes per stage instead of three
        per layer, which is what small batches pay for (onnxruntime's cost per node)."""
        pending, self._pending = self._pending, []
        if len(pending) == 1:
            self._one(*pending[0])
            return
        em = self.em
        cat = em.op("Concat", [s for _, s, _, _ in pending], axis=1, hint="stage")
        y = em.op("HardSigmoid", [cat], alpha=SPIKE_GAIN, beta=0.0, hint="indicator")
        self._pools.append(em.op("GlobalAveragePool", [y]))
        self._peaks.append(em.op("GlobalMaxPool", [cat], hint="peak"))
        for name, _, shape, window in pending:
            self._rows += [(len(self._pool_names), int(np.prod(shape[1:])))] * int(shape[0])
            self._pool_names.append((name, "spikes"))
            self.peak_windows.append(np.full(int(shape[0]), np.inf if window is None else window,
                                             self.em.np))

    def _one(self, name: str, s: str, shape, window: float | None) -> None:
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
        if self.host_input:
            self.host_input = name
            return
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

    def checks_peaks(self, shape, window: float | None) -> bool:
        """Whether a layer's offsets reaching ``window`` show in the peaks (then its graph
        need not clamp them: a batch where one does is run again, clamped)."""
        return self.peaks and window is not None and self._blocked(shape)

    @staticmethod
    def _blocked(shape) -> bool:
        return len(shape) == 3 and int(np.prod(shape)) <= BLOCKED_MAX

    def finish(self, em_output) -> CountLayout:
        """Make the counts one graph output (``em_output(value, name)`` adds one) and say how
        to read it: per distinct name, its total over the batch (each sample's count rounded
        to a whole number), then with peaks the largest margin peak - window (>= 0: a window
        was reached), as float64. All in the graph (counts through one product): host code
        after a run starts from cold caches and costs a batch of one more than a few small
        nodes."""
        if self._pending:
            self._flush()
        em = self.em
        names = list(dict.fromkeys(self.names))  # a repeated name's counts add up
        lay = CountLayout(names=names, peaks=bool(self._peaks),
                          host_input=self.host_input if isinstance(self.host_input, str) else None)
        col = {name: i for i, name in enumerate(names)}
        rows = [(col[self._pool_names[c]], hw) for c, hw in self._rows]
        rows += [(col[name], 1) for name in self._sum_names]
        parts = [_flat64(em, self._pools)] if self._pools else []
        parts += [em.op("Reshape", [em.op("Cast", [v], to=TensorProto.DOUBLE),
                                    em.const([-1, 1], np.int64)]) for v in self._sums]
        out = None
        if parts:  # (N, pooled channels + sums) to (1, names): one product, then the batch
            per = np.zeros((len(rows), len(names)))
            for r, (c, weight) in enumerate(rows):
                per[r, c] = weight
            x = em.op("Concat", parts, axis=1) if len(parts) > 1 else parts[0]
            counts = em.op("MatMul", [x, em.const(per, np.float64, hint="hw")])
            out = em.op("ReduceSum", [em.op("Round", [counts]), em.const([0], np.int64)],
                        keepdims=1)
        if self._peaks:  # the margin in float32: its sign is exact
            windows = np.concatenate(self.peak_windows)
            peaks = em.op("Flatten", [em.op("Concat", self._peaks, axis=1)
                                      if len(self._peaks) > 1 else self._peaks[0]], axis=1)
            top = em.op("ReduceMax", [em.op("Sub", [peaks, em.const(windows, em.np)])],
                        keepdims=1)  # (1, 1); -inf for an empty batch
            top = em.op("Cast", [top], to=TensorProto.DOUBLE)
            out = top if out is None else em.op("Concat", [out, top], axis=1)
        if out is None:
            return lay
        lay.outputs.append(em_output(out, "counts"))
        return lay


def _flat64(em: Emitter, pooled: list[str]) -> str:
    """(N, channels) float64 of (N, C, 1, 1) pooled tensors, concatenated in the blocked
    layout (a pool whose own output left it would not run there)."""
    x = em.op("Concat", pooled, axis=1) if len(pooled) > 1 else pooled[0]
    return em.op("Cast", [em.op("Flatten", [x], axis=1)], to=TensorProto.DOUBLE)


@dataclass
class CountLayout:
    """How the graph's count output reads (``outputs``: one name or none): per name of
    ``names`` (distinct) its total over the batch, then, with ``peaks``, the largest
    peak - window. ``host_input``: the input layer, counted on the host
    (``input_counts.InputCounts``)."""

    names: list[tuple[str, str]]
    outputs: list[str] = field(default_factory=list)
    peaks: bool = False
    host_input: str | None = None

    def read(self, arrays: list[np.ndarray]) -> list[float]:
        """The count output as a list: the totals per name, then the peak margin if any."""
        return arrays[0].ravel().tolist() if self.outputs else []

    def reached(self, values: list[float]) -> bool:
        """Whether some neuron of a peak-checked layer reached its window in this batch
        (``values`` from ``read``)."""
        return self.peaks and values[-1] >= 0
