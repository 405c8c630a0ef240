"""What the golden model and the register-level simulator share: the input encoding, the integer
arrays as tensors, pooling of ticks, a register's width, and their result."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..snn import kernels
from ..tensors import like
from .bounds import layer_dtypes
from .layers import QInput, QLayer, QNet, QNeuron, QPool, QSynaptic
from .ops import apply_op, op_array


def encode_input(layer: QInput, x, dtype=torch.float64) -> torch.Tensor:
    """Input value -> ticks: u = (x - lo)/(hi - lo) clipped to [0, 1], x_ticks = round(u*T)
    (half up), computed in float64 so every path encodes identically."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(torch.float64)
    lo = torch.as_tensor(np.asarray(layer.lo, np.float64), device=x.device)
    hi = torch.as_tensor(np.asarray(layer.hi, np.float64), device=x.device)
    u = torch.clamp((x - lo) / (hi - lo), 0.0, 1.0)
    return torch.floor(u * layer.ticks + 0.5).clamp(0, layer.ticks).to(dtype)


class Compiled:
    """Integer arrays of a QNet as torch tensors (converted once per run): all in ``dtype``, or
    with ``dtype=None`` each layer in the narrowest float dtype that holds its sums exactly
    (``layer_dtypes``). ``device``: where the tensors live (None: the CPU)."""

    def __init__(self, net: QNet, dtype: torch.dtype | None, device=None):
        self.dtype, self.device, self.net = dtype, device, net
        self._fast = None
        self.dtypes = layer_dtypes(net) if dtype is None else \
            {la.name: dtype for la in net.layers}
        self.arrays: dict[tuple[str, int], list] = {}
        self.bias, self.ramp = {}, {}
        for la in net.layers:
            if not isinstance(la, QSynaptic):
                continue
            ref = torch.zeros((), dtype=self.dtypes[la.name], device=device)
            for gi, g in enumerate(la.groups):
                self.arrays[(la.name, gi)] = [None if op_array(o) is None else
                                              like(op_array(o), ref) for o in g.ops]
            if la.bias is not None:
                self.bias[la.name] = like(la.bias, ref)
            if isinstance(la, QNeuron) and la.ramp is not None:
                self.ramp[la.name] = like(la.ramp, ref)

    def fast(self):
        """The net as an onnxruntime graph (``backends.onnx_golden``), built on first use;
        None when its sums or registers need the torch path (float64, overflow) or the
        tensors live on another device."""
        if self._fast is None:
            from ..backends import onnx_golden

            self._fast = False
            if self.dtype is None and self.device is None and \
                    onnx_golden.unsupported(self.net) is None:
                self._fast = onnx_golden.OnnxGolden(self.net)
        return self._fast or None

    def group(self, la: QSynaptic, gi: int, x: torch.Tensor) -> torch.Tensor:
        for op, a in zip(la.groups[gi].ops, self.arrays[(la.name, gi)]):
            x = apply_op(op, x, a)
        return x


def channel_select(la: QPool, mins: np.ndarray, device=None) -> torch.Tensor:
    """The min-pool channels as a mask broadcastable to a batch of the layer."""
    return torch.as_tensor(mins, device=device).reshape((1, -1) + (1,) * (len(la.shape) - 1))


def pool_values(net: QNet, la: QPool, x: torch.Tensor) -> torch.Tensor:
    """Earliest spike = max of x_ticks (min of x_ticks on min-pool channels)."""
    args = la.args()
    mins = np.asarray(la.minimum, bool).reshape(-1)
    if not mins.any():
        return kernels.pool(x, "max", *args)
    mx, mn = kernels.pool(x, "max", *args), kernels.pool(x, "min", *args)
    return torch.where(channel_select(la, mins, x.device), mn, mx)


def limit(v: torch.Tensor, bits: int, mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply a register's width: returns (value, overflow mask or None when nothing left it)."""
    hi = 2 ** (bits - 1) - 1
    lo = -(2 ** (bits - 1))
    if v.numel() == 0:
        return v, None
    mn, mx = torch.aminmax(v)
    if int(mn) >= lo and int(mx) <= hi:
        return v, None
    if v.is_floating_point():  # exact integers in a float dtype: wrap in int64, exactly
        w, bad = limit(v.to(torch.int64), bits, mode)
        return w.to(v.dtype), bad
    bad = (v > hi) | (v < lo)
    if mode == "wrap":
        m = 2 ** bits
        return torch.remainder(v - lo, m) + lo, bad
    return torch.clamp(v, lo, hi), bad


def fire_ticks(la: QLayer, x_ticks: torch.Tensor) -> torch.Tensor:
    """Absolute firing tick of each neuron, -1 where silent."""
    t = la.t_max - x_ticks.to(torch.int64)
    return torch.where(x_ticks > 0, t, torch.full_like(t, -1))


def recorded(record: bool | set, la: QLayer) -> bool:
    """Whether a run asked for the ticks of ``la``: every layer (True) or a set of names."""
    return record is True or (isinstance(record, (set, frozenset)) and la.name in record)


@dataclass
class IntResult:
    logits: torch.Tensor  # int64 (N, classes): V(t_min) + b of the readout
    ticks: dict[str, torch.Tensor] = field(default_factory=dict)  # x_ticks per layer (record)
    spikes: dict[str, int] = field(default_factory=dict)  # neuron-samples with x > 0
    overflow: dict[str, int] = field(default_factory=dict)  # neuron-samples that overflowed
    samples: int = 0

    def spikes_per_neuron(self, net: QNet) -> float:
        hid = net.hidden()
        tot = sum(la.size for la in hid) * max(1, self.samples)
        return sum(self.spikes.get(la.name, 0) for la in hid) / max(1, tot)

    def real_logits(self, net: QNet) -> torch.Tensor:
        return self.logits.to(torch.float64) * like(net.output.scale,
                                                     torch.zeros((), dtype=torch.float64))
