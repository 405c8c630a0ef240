"""Sliding-window nodes: convolution, transposed convolution and pooling, and their sizes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..snn import kernels
from ..snn.kernels import convtranspose_out, pool_out_size
from ..tensors import like
from .node import Node


def check_window(node: Node, stride, dilation, pads=(), kernel=()) -> None:
    """Attribute ranges the ONNX checker does not enforce (corrupt files reach us otherwise)."""
    if any(int(v) < 1 for v in (*stride, *dilation, *kernel)):
        raise node.fail(f"strides {tuple(stride)}, dilations {tuple(dilation)} and kernel "
                        f"{tuple(kernel)} must be >= 1")
    if any(int(v) < 0 for v in pads):
        raise node.fail(f"negative pads {tuple(pads)}")


@dataclass
class Conv(Node):
    weight: np.ndarray = None  # (Cout, Cin/group, *kernel)
    bias: np.ndarray | None = None
    stride: tuple[int, ...] = ()
    pads_begin: tuple[int, ...] = ()
    pads_end: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    group: int = 1

    def infer(self, shapes):
        (s,) = shapes
        nd = self.weight.ndim - 2
        check_window(self, self.stride, self.dilation, (*self.pads_begin, *self.pads_end),
                      self.weight.shape[2:])
        if self.group < 1:
            raise self.fail(f"group {self.group} must be >= 1")
        if len(self.stride) != nd or len(self.dilation) != nd or len(self.pads_begin) != nd:
            raise self.fail("strides, dilations or pads do not match the kernel's rank")
        if len(s) != nd + 1:
            raise self.fail(f"input of rank {len(s) + 1} for a {nd}-d convolution")
        if s[0] != self.weight.shape[1] * self.group:
            raise self.fail(f"input has {s[0]} channels, weights expect "
                            f"{self.weight.shape[1] * self.group}")
        if self.weight.shape[0] % self.group:
            raise self.fail("output channels not divisible by group")
        out = [pool_out_size(n, k, st, pb, pe, d, False) for n, k, st, pb, pe, d in zip(
            s[1:], self.weight.shape[2:], self.stride, self.pads_begin, self.pads_end,
            self.dilation)]
        if min(out, default=1) <= 0:
            raise self.fail(f"kernel larger than padded input {s}")
        return (self.weight.shape[0], *out)

    def forward(self, x):
        bias = None if self.bias is None else like(self.bias, x)
        return kernels.conv(x, like(self.weight, x), bias, self.stride,
                            self.pads_begin, self.pads_end, self.dilation, self.group)


@dataclass
class ConvTranspose(Node):
    weight: np.ndarray = None  # (Cin, Cout/group, *kernel), ONNX layout
    bias: np.ndarray | None = None
    stride: tuple[int, ...] = ()
    pads_begin: tuple[int, ...] = ()
    pads_end: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    output_padding: tuple[int, ...] = ()
    group: int = 1

    def infer(self, shapes):
        (s,) = shapes
        nd = self.weight.ndim - 2
        check_window(self, self.stride, self.dilation, (), self.weight.shape[2:])
        if self.group < 1 or self.weight.shape[0] % self.group:
            raise self.fail(f"group {self.group} does not divide the {self.weight.shape[0]} "
                            "input channels of the weight")
        if any(len(a) != nd for a in (self.stride, self.dilation, self.pads_begin,
                                      self.output_padding)):
            raise self.fail("strides, dilations, pads or output_padding do not match the "
                            "kernel's rank")
        if len(s) != nd + 1 or s[0] != self.weight.shape[0]:
            raise self.fail(f"input of shape {s} for weights {self.weight.shape}")
        out = convtranspose_out(s[1:], self.weight.shape[2:], self.stride, self.pads_begin,
                                self.pads_end, self.dilation, self.output_padding)
        if min(out, default=1) <= 0:
            raise self.fail(f"pads crop the whole output (input {s})")
        return (self.weight.shape[1] * self.group, *out)

    def forward(self, x):
        bias = None if self.bias is None else like(self.bias, x)
        return kernels.conv_transpose(x, like(self.weight, x), bias, self.stride,
                                      self.pads_begin, self.pads_end, self.dilation,
                                      self.group, self.output_padding)


@dataclass
class Pool(Node):
    """MaxPool / AveragePool (and global pooling, as a pool whose kernel is the whole map)."""

    kind: str = "max"  # "max" | "avg"
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    pads_begin: tuple[int, ...] = ()
    pads_end: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    ceil_mode: bool = False
    count_include_pad: bool = False
    out_spatial: tuple[int, ...] = field(default=(), repr=False)

    def infer(self, shapes):
        (s,) = shapes
        check_window(self, self.stride, self.dilation, (*self.pads_begin, *self.pads_end),
                      self.kernel)
        nd = len(self.kernel)
        if len(self.stride) != nd or len(self.dilation) != nd or len(self.pads_begin) != nd:
            raise self.fail("strides, dilations or pads do not match the kernel's rank")
        if len(s) != len(self.kernel) + 1:
            raise self.fail(f"input of rank {len(s) + 1} for a {len(self.kernel)}-d pool")
        out = tuple(pool_out_size(n, k, st, pb, pe, d, self.ceil_mode) for n, k, st, pb, pe, d in
                    zip(s[1:], self.kernel, self.stride, self.pads_begin, self.pads_end,
                        self.dilation))
        if min(out, default=1) <= 0:
            raise self.fail(f"pool window larger than padded input {s}")
        self.out_spatial = out
        self._in_spatial = tuple(s[1:])
        return (s[0], *out)

    def divisor(self) -> np.ndarray:
        d = kernels.avgpool_divisor(self._in_spatial, self.kernel, self.stride, self.pads_begin,
                                    self.pads_end, self.dilation, self.out_spatial,
                                    self.count_include_pad)
        return d.numpy()

    def forward(self, x):
        if self.kind == "max":
            return kernels.pool(x, "max", self.kernel, self.stride, self.pads_begin,
                                self.pads_end, self.dilation, self.out_spatial)
        y = kernels.pool(x, "sum", self.kernel, self.stride, self.pads_begin, self.pads_end,
                         self.dilation, self.out_spatial)
        return y / like(self.divisor(), y)
