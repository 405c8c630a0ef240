"""The TTFS network: layers of spiking neurons, synapse groups and their linear maps.

This is what the model file holds and all simulators read. A synapse group is a chain of primitive
linear ops with at most one weighted op (conv, dense or sum-pool); the others only move, pad or
scale values, so every group is one synaptic weight matrix written compactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from . import kernels

Shape = tuple[int, ...]
WEIGHTED = ("conv", "dense", "sumpool", "convtranspose")


def _t(a, like: torch.Tensor):
    return torch.as_tensor(a, dtype=like.dtype, device=like.device)


def _part(a: np.ndarray, sign: int) -> np.ndarray:
    return a if sign == 0 else (np.maximum(a, 0) if sign > 0 else np.minimum(a, 0))


# --- synaptic ops ---------------------------------------------------------------------------------

@dataclass
class Op:
    """A linear map on per-sample tensors. ``apply(x, sign)`` uses the weights' positive (+1) or
    negative (-1) part, which interval bounds need; structural ops ignore the sign."""

    kind = "op"
    in_shape: Shape

    @property
    def out_shape(self) -> Shape:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, x: torch.Tensor, sign: int = 0) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    @property
    def structural(self) -> bool:
        return self.kind not in WEIGHTED and self.kind != "scale"

    def interval(self, lo, hi):
        if self.structural:
            return self.apply(lo), self.apply(hi)
        p_hi, p_lo = self.apply(hi, 1), self.apply(lo, 1)
        n_hi, n_lo = self.apply(hi, -1), self.apply(lo, -1)
        return p_lo + n_hi, p_hi + n_lo

    def params(self) -> dict:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}


@dataclass
class ConvOp(Op):
    kind = "conv"
    weight: np.ndarray = None
    stride: tuple = ()
    pads_begin: tuple = ()
    pads_end: tuple = ()
    dilation: tuple = ()
    groups: int = 1

    @property
    def out_shape(self):
        from .ir import pool_out_size
        sp = [pool_out_size(n, k, s, b, e, d, False) for n, k, s, b, e, d in zip(
            self.in_shape[1:], self.weight.shape[2:], self.stride, self.pads_begin,
            self.pads_end, self.dilation)]
        return (self.weight.shape[0], *sp)

    def apply(self, x, sign=0):
        w = _t(_part(self.weight, sign), x)
        return kernels.conv(x, w, None, self.stride, self.pads_begin, self.pads_end,
                            self.dilation, self.groups)

    def params(self):
        return dict(stride=list(self.stride), pads_begin=list(self.pads_begin),
                    pads_end=list(self.pads_end), dilation=list(self.dilation),
                    groups=self.groups)

    def arrays(self):
        return {"weight": self.weight}


@dataclass
class DenseOp(Op):
    """Fully connected on the flattened (C-order) input."""

    kind = "dense"
    weight: np.ndarray = None  # (out, prod(in_shape))

    @property
    def out_shape(self):
        return (self.weight.shape[0],)

    def apply(self, x, sign=0):
        return x.reshape(x.shape[0], -1) @ _t(_part(self.weight, sign), x).T

    def arrays(self):
        return {"weight": self.weight}


@dataclass
class SumPoolOp(Op):
    """Depthwise window sum times a per-output scale (average pooling: scale = 1/divisor)."""

    kind = "sumpool"
    kernel: tuple = ()
    stride: tuple = ()
    pads_begin: tuple = ()
    pads_end: tuple = ()
    dilation: tuple = ()
    out_spatial: tuple = ()
    scale: np.ndarray = None  # broadcastable to out_shape

    @property
    def out_shape(self):
        return (self.in_shape[0], *self.out_spatial)

    def apply(self, x, sign=0):
        y = kernels.pool(x, "sum", self.kernel, self.stride, self.pads_begin, self.pads_end,
                         self.dilation, self.out_spatial)
        return y * _t(_part(self.scale, sign), y)

    def params(self):
        return dict(kernel=list(self.kernel), stride=list(self.stride),
                    pads_begin=list(self.pads_begin), pads_end=list(self.pads_end),
                    dilation=list(self.dilation), out_spatial=list(self.out_spatial))

    def arrays(self):
        return {"scale": self.scale}


@dataclass
class ScaleOp(Op):
    """Elementwise weight (identity synapses scaled): skips, folded affine maps."""

    kind = "scale"
    scale: np.ndarray = None  # broadcastable to in_shape

    @property
    def out_shape(self):
        return self.in_shape

    def apply(self, x, sign=0):
        return x * _t(_part(self.scale, sign), x)

    def arrays(self):
        return {"scale": self.scale}


@dataclass
class ReshapeOp(Op):
    kind = "reshape"
    shape: Shape = ()

    @property
    def out_shape(self):
        return tuple(self.shape)

    def apply(self, x, sign=0):
        return x.reshape(x.shape[0], *self.shape)

    def params(self):
        return dict(shape=list(self.shape))


@dataclass
class PlaceOp(Op):
    """Embeds the input at ``offset`` along ``axis`` of a larger zero tensor (concatenation)."""

    kind = "place"
    axis: int = 0
    offset: int = 0
    total: int = 0

    @property
    def out_shape(self):
        s = list(self.in_shape)
        s[self.axis] = self.total
        return tuple(s)

    def apply(self, x, sign=0):
        n = self.in_shape[self.axis]
        spec = [0, 0] * (len(self.in_shape) - 1 - self.axis)
        spec += [self.offset, self.total - self.offset - n]
        return torch.nn.functional.pad(x, spec)

    def params(self):
        return dict(axis=self.axis, offset=self.offset, total=self.total)


@dataclass
class PadOp(Op):
    kind = "pad"
    pads_begin: tuple = ()
    pads_end: tuple = ()

    @property
    def out_shape(self):
        return (self.in_shape[0], *[n + b + e for n, b, e in zip(
            self.in_shape[1:], self.pads_begin, self.pads_end)])

    def apply(self, x, sign=0):
        return kernels.pad_spatial(x, self.pads_begin, self.pads_end, 0.0)

    def params(self):
        return dict(pads_begin=list(self.pads_begin), pads_end=list(self.pads_end))


@dataclass
class ConvTransposeOp(Op):
    """N-d transposed convolution (ONNX ConvTranspose semantics, no bias): weight (Cin,
    Cout/groups, *kernel); the output is cropped by ``pads_begin`` / ``pads_end`` and extended by
    ``output_padding`` at the end."""

    kind = "convtranspose"
    weight: np.ndarray = None
    stride: tuple = ()
    pads_begin: tuple = ()
    pads_end: tuple = ()
    dilation: tuple = ()
    output_padding: tuple = ()
    groups: int = 1

    @property
    def out_shape(self):
        from .ir import convtranspose_out
        sp = convtranspose_out(self.in_shape[1:], self.weight.shape[2:], self.stride,
                               self.pads_begin, self.pads_end, self.dilation,
                               self.output_padding)
        return (self.weight.shape[1] * self.groups, *sp)

    def apply(self, x, sign=0):
        w = _t(_part(self.weight, sign), x)
        return kernels.conv_transpose(x, w, None, self.stride, self.pads_begin, self.pads_end,
                                      self.dilation, self.groups, self.output_padding)

    def params(self):
        return dict(stride=list(self.stride), pads_begin=list(self.pads_begin),
                    pads_end=list(self.pads_end), dilation=list(self.dilation),
                    output_padding=list(self.output_padding), groups=self.groups)

    def arrays(self):
        return {"weight": self.weight}


@dataclass
class TransposeOp(Op):
    """Permutes the per-sample axes (NHWC <-> NCHW layouts): a wiring op."""

    kind = "transpose"
    perm: tuple = ()

    @property
    def out_shape(self):
        return tuple(self.in_shape[p] for p in self.perm)

    def apply(self, x, sign=0):
        return x.permute(0, *[int(p) + 1 for p in self.perm])

    def params(self):
        return dict(perm=list(self.perm))


@dataclass
class SelectOp(Op):
    """Entries ``index`` along ``axis`` (slices, splits, nearest-neighbour upsampling): each
    output is a copy of one input, an input may be copied several times or not at all."""

    kind = "select"
    axis: int = 0
    index: tuple = ()

    @property
    def out_shape(self):
        s = list(self.in_shape)
        s[self.axis] = len(self.index)
        return tuple(s)

    def apply(self, x, sign=0):
        return kernels.select(x, self.axis, self.index)

    def params(self):
        return dict(axis=self.axis, index=[int(i) for i in self.index])


OPS = {c.kind: c for c in (ConvOp, DenseOp, SumPoolOp, ScaleOp, ReshapeOp, PlaceOp, PadOp,
                         ConvTransposeOp, TransposeOp, SelectOp)}


def chain_apply(ops: list[Op], x: torch.Tensor, sign: int = 0) -> torch.Tensor:
    for op in ops:
        x = op.apply(x, sign)
    return x


def chain_out_shape(ops: list[Op], in_shape: Shape) -> Shape:
    return ops[-1].out_shape if ops else tuple(in_shape)


def chain_interval(ops: list[Op], lo, hi):
    for op in ops:
        lo, hi = op.interval(lo, hi)
    return lo, hi


# --- layers ---------------------------------------------------------------------------------------

@dataclass
class Group:
    """Synapses from one source layer: a linear map and an axonal delay."""

    source: str
    ops: list[Op]
    delay: float = 0.0

    @property
    def weighted(self) -> Op | None:
        return next((o for o in self.ops if o.kind in WEIGHTED), None)


@dataclass
class Relation:
    """How a layer's value relates to a tensor of the original network, for per-layer reports:
    value = clip(scale * tensor + shift, 0, cap)."""

    tensor: str
    scale: np.ndarray = field(default_factory=lambda: np.array(1.0))
    shift: np.ndarray = field(default_factory=lambda: np.array(0.0))
    note: str = ""
    # the ONNX nodes whose computation this layer carries ("Conv conv1", "BatchNormalization
    # bn1 (folded)", ...), from the tensors other layers carry up to ``tensor``
    fused: tuple[str, ...] = ()

    @property
    def how(self) -> str:
        """One line for reports: which ONNX nodes were fused into the layer, and any split."""
        parts = [" + ".join(self.fused)] if self.fused else []
        return "; ".join(parts + ([self.note] if self.note else []))


@dataclass
class Layer:
    name: str
    shape: Shape
    kind = "layer"
    stage: int = 0
    t_min: float = 0.0
    t_max: float = 0.0
    relation: Relation | None = None

    @property
    def window(self) -> float:
        return self.t_max - self.t_min

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    def sources(self) -> list[str]:
        return []


@dataclass
class InputLayer(Layer):
    """Encodes x in [lo, hi] as one spike at t_max - window * (x - lo)/(hi - lo)."""

    kind = "input"
    lo: np.ndarray = None  # broadcastable to shape
    hi: np.ndarray = None


@dataclass
class NeuronLayer(Layer):
    """B=1 TTFS neurons: V(t_min) = sum of group inputs; fire when V + (t - t_min)/tau_c >= theta.

    ``theta_rel`` is theta - window/tau_c (= -bias): the threshold measured from the end of the
    window, so spike times are computed as offsets from t_max without cancellation.
    ``saturating``: the window is the model's own clip (ReLU6), so hitting it is not a violation.
    """

    kind = "neuron"
    groups: list[Group] = field(default_factory=list)
    theta_rel: np.ndarray = None
    saturating: bool = False
    cap: float | None = None  # value cap of a saturating layer (its window is cap * tau_c)

    def sources(self):
        return [g.source for g in self.groups]


@dataclass
class PoolLayer(Layer):
    """Earliest (max) or latest (min, per channel) input spike in each window; no neuron."""

    kind = "pool"
    source: str = ""
    kernel: tuple = ()
    stride: tuple = ()
    pads_begin: tuple = ()
    pads_end: tuple = ()
    dilation: tuple = ()
    minimum: np.ndarray = None  # bool per channel: True = min-pool (latest spike)

    def sources(self):
        return [self.source]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Pool values or spike-time offsets (both order spikes the same way: larger = earlier)."""
        out = tuple(self.shape[1:])
        args = (self.kernel, self.stride, self.pads_begin, self.pads_end, self.dilation, out)
        mins = np.asarray(self.minimum, bool).reshape(-1)
        if not mins.any():
            return kernels.pool(x, "max", *args)
        if mins.all():
            return kernels.pool(x, "min", *args)
        sel = torch.as_tensor(mins, device=x.device).reshape((1, -1) + (1,) * len(out))
        return torch.where(sel, kernels.pool(x, "min", *args), kernels.pool(x, "max", *args))


@dataclass
class ReadoutLayer(Layer):
    """Output: no threshold, no spike; logits = V(t_min) + bias."""

    kind = "readout"
    groups: list[Group] = field(default_factory=list)
    bias: np.ndarray = None

    def sources(self):
        return [g.source for g in self.groups]


@dataclass
class SNN:
    """A converted network. ``layers`` are in topological order; the first is the input."""

    layers: list[Layer]
    tau_c: float = 1.0
    head: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.by_name = {layer.name: layer for layer in self.layers}

    @property
    def input(self) -> InputLayer:
        return self.layers[0]

    @property
    def output(self) -> ReadoutLayer:
        return self.layers[-1]

    @property
    def latency(self) -> float:
        return self.output.t_min

    def neuron_layers(self) -> list[NeuronLayer]:
        return [la for la in self.layers if isinstance(la, NeuronLayer)]

    @property
    def n_neurons(self) -> int:
        return sum(la.size for la in self.neuron_layers())

    def save(self, path):
        """Write the model file (atomically)."""
        from .modelfile import save

        return save(self, path)

    def simulate(self, x, dtype=torch.float64, **kw):
        """Closed-form simulation of a batch; see ``snnconv.simulate.simulate``."""
        from .simulate import simulate

        return simulate(self, x, dtype=dtype, **kw)

    def check(self) -> None:
        """Structural checks: sources exist and come first, shapes chain, times are consistent."""
        seen: dict[str, Layer] = {}
        for i, layer in enumerate(self.layers):
            if (i == 0) != isinstance(layer, InputLayer):
                raise ValueError("the first layer, and only it, must be the input")
            for src in layer.sources():
                if src not in seen:
                    raise ValueError(f"layer {layer.name}: source {src} is not an earlier layer")
            if isinstance(layer, (NeuronLayer, ReadoutLayer)):
                for g in layer.groups:
                    shp = seen[g.source].shape
                    for op in g.ops:
                        if tuple(op.in_shape) != tuple(shp):
                            raise ValueError(f"layer {layer.name}: op {op.kind} expects "
                                             f"{op.in_shape}, gets {shp}")
                        shp = op.out_shape
                    if tuple(shp) != tuple(layer.shape):
                        raise ValueError(f"layer {layer.name}: group from {g.source} yields {shp}"
                                         f", layer shape is {layer.shape}")
                    if sum(o.kind in WEIGHTED for o in g.ops) > 1:
                        raise ValueError(f"layer {layer.name}: a group has several weighted ops")
            seen[layer.name] = layer
        if not isinstance(self.layers[-1], ReadoutLayer):
            raise ValueError("the last layer must be the readout")

