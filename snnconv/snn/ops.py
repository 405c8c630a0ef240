"""Synaptic ops: the primitive linear maps a synapse group chains (see ``layers.Group``).

At most one op of a chain is weighted (conv, dense, sum-pool, transposed conv); the others only
move, pad or scale values, so every group is one synaptic weight matrix written compactly. An op
with an array (the weighted ops and ``ScaleOp``) answers for it itself: ``array()``,
``with_array(a)``, ``apply_array(x, a)`` (the map with other weights, e.g. fake-quantised ones),
``abs()`` (|W|, for error bounds), ``indicator()`` (W != 0, its synapses) and ``nonneg()``; the
wiring ops are their own ``abs`` and ``indicator``. Nothing needs to dispatch on ``kind``, which
names the op in the model file. Output sizes come from ``kernels`` (the IR's shape inference
uses the same functions).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ..tensors import like
from .edits import Tracked
from . import kernels

Shape = tuple[int, ...]


def _part(a: np.ndarray, sign: int) -> np.ndarray:
    return a if sign == 0 else (np.maximum(a, 0) if sign > 0 else np.minimum(a, 0))


@dataclass
class Op(Tracked):
    """A linear map on per-sample tensors. ``apply(x, sign)`` uses the weights' positive (+1) or
    negative (-1) part, which interval bounds need; structural ops ignore the sign."""

    kind = "op"
    weighted = False  # carries a synaptic weight matrix (at most one such op per group)
    array_name = None  # the field holding the op's weights or scales, if any
    in_shape: Shape

    @property
    def out_shape(self) -> Shape:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def structural(self) -> bool:
        """Moves, pads or copies values: no weights and no scales."""
        return self.array_name is None

    def array(self) -> np.ndarray | None:
        """The op's weights or scales (the object itself, not a copy); None for wiring ops."""
        return None if self.array_name is None else getattr(self, self.array_name)

    def with_array(self, a) -> Op:
        """The same op with ``a`` as its weights or scales."""
        return dataclasses.replace(self, **{self.array_name: a})

    def abs(self) -> Op:
        """The op with |W|: the map of absolute values that forward error bounds propagate."""
        return self if self.structural else self.with_array(np.abs(self.array()))

    def indicator(self) -> Op:
        """The op with 1 where W != 0: applied to ones it counts synapses."""
        if self.structural:
            return self
        return self.with_array((np.asarray(self.array()) != 0).astype(np.float64))

    def nonneg(self) -> bool:
        """Maps non-negative inputs to non-negative outputs (all weights >= 0)."""
        return self.structural or bool(np.all(self.array() >= 0))

    def apply(self, x: torch.Tensor, sign: int = 0) -> torch.Tensor:
        return self.apply_array(x, like(_part(self.array(), sign), x))

    def apply_array(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The map with the tensor ``a`` in place of the op's own array."""
        raise NotImplementedError(f"op {self.kind} has no array")  # pragma: no cover

    def interval(self, lo, hi):
        if self.structural:
            return self.apply(lo), self.apply(hi)
        p_hi, p_lo = self.apply(hi, 1), self.apply(lo, 1)
        n_hi, n_lo = self.apply(hi, -1), self.apply(lo, -1)
        return p_lo + n_hi, p_hi + n_lo

    def params(self) -> dict:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {} if self.array_name is None else {self.array_name: self.array()}


@dataclass
class ConvOp(Op):
    kind = "conv"
    weighted = True
    array_name = "weight"
    weight: np.ndarray = None
    stride: tuple = ()
    pads_begin: tuple = ()
    pads_end: tuple = ()
    dilation: tuple = ()
    groups: int = 1

    @property
    def out_shape(self):
        sp = [kernels.pool_out_size(n, k, s, b, e, d, False) for n, k, s, b, e, d in zip(
            self.in_shape[1:], self.weight.shape[2:], self.stride, self.pads_begin,
            self.pads_end, self.dilation)]
        return (self.weight.shape[0], *sp)

    def apply_array(self, x, a):
        return kernels.conv(x, a, None, self.stride, self.pads_begin, self.pads_end,
                            self.dilation, self.groups)

    def params(self):
        return dict(stride=list(self.stride), pads_begin=list(self.pads_begin),
                    pads_end=list(self.pads_end), dilation=list(self.dilation),
                    groups=self.groups)


@dataclass
class DenseOp(Op):
    """Fully connected on the flattened (C-order) input."""

    kind = "dense"
    weighted = True
    array_name = "weight"
    weight: np.ndarray = None  # (out, prod(in_shape))

    @property
    def out_shape(self):
        return (self.weight.shape[0],)

    def apply_array(self, x, a):
        return x.reshape(x.shape[0], -1) @ a.T


@dataclass
class SumPoolOp(Op):
    """Depthwise window sum times a per-output scale (average pooling: scale = 1/divisor)."""

    kind = "sumpool"
    weighted = True
    array_name = "scale"
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

    def apply_array(self, x, a):
        y = kernels.pool(x, "sum", self.kernel, self.stride, self.pads_begin, self.pads_end,
                         self.dilation, self.out_spatial)
        return y * a

    def params(self):
        return dict(kernel=list(self.kernel), stride=list(self.stride),
                    pads_begin=list(self.pads_begin), pads_end=list(self.pads_end),
                    dilation=list(self.dilation), out_spatial=list(self.out_spatial))


@dataclass
class ScaleOp(Op):
    """Elementwise weight (identity synapses scaled): skips, folded affine maps."""

    kind = "scale"
    array_name = "scale"
    scale: np.ndarray = None  # broadcastable to in_shape

    @property
    def out_shape(self):
        return self.in_shape

    def apply_array(self, x, a):
        return x * a


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
    weighted = True
    array_name = "weight"
    weight: np.ndarray = None
    stride: tuple = ()
    pads_begin: tuple = ()
    pads_end: tuple = ()
    dilation: tuple = ()
    output_padding: tuple = ()
    groups: int = 1

    @property
    def out_shape(self):
        sp = kernels.convtranspose_out(self.in_shape[1:], self.weight.shape[2:], self.stride,
                               self.pads_begin, self.pads_end, self.dilation,
                               self.output_padding)
        return (self.weight.shape[1] * self.groups, *sp)

    def apply_array(self, x, a):
        return kernels.conv_transpose(x, a, None, self.stride, self.pads_begin, self.pads_end,
                                      self.dilation, self.groups, self.output_padding)

    def params(self):
        return dict(stride=list(self.stride), pads_begin=list(self.pads_begin),
                    pads_end=list(self.pads_end), dilation=list(self.dilation),
                    output_padding=list(self.output_padding), groups=self.groups)


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


# the op classes by the kind the model file names them by
OPS = {c.kind: c for c in (ConvOp, DenseOp, SumPoolOp, ScaleOp, ReshapeOp, PlaceOp, PadOp,
                         ConvTransposeOp, TransposeOp, SelectOp)}
# the kinds of the weighted ops (conv, dense, sumpool, convtranspose)
WEIGHTED = tuple(k for k, c in OPS.items() if c.weighted)


def chain_apply(ops: list[Op], x: torch.Tensor, sign: int = 0) -> torch.Tensor:
    for op in ops:
        x = op.apply(x, sign)
    return x


def chain_interval(ops: list[Op], lo, hi):
    for op in ops:
        lo, hi = op.interval(lo, hi)
    return lo, hi
