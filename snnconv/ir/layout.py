"""Layout nodes: they move, copy or zero-pad entries (concatenation, reshape, pad, transpose,
selection) and compute nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..snn import kernels
from .node import Node, Shape


@dataclass
class Concat(Node):
    axis: int = 0  # per-sample axis

    def infer(self, shapes):
        r = len(shapes[0])
        if not 0 <= self.axis < r:
            raise self.fail("concatenation along the batch axis")
        for s in shapes:
            if len(s) != r or any(a != b for i, (a, b) in enumerate(zip(s, shapes[0]))
                                  if i != self.axis):
                raise self.fail(f"cannot concatenate shapes {shapes}")
        out = list(shapes[0])
        out[self.axis] = sum(s[self.axis] for s in shapes)
        return tuple(out)

    def forward(self, *xs):
        return torch.cat(xs, dim=self.axis + 1)


@dataclass
class Reshape(Node):
    shape: Shape = ()

    def infer(self, shapes):
        (s,) = shapes
        if math.prod(s) != math.prod(self.shape):
            raise self.fail(f"cannot reshape {s} to {self.shape}")
        return tuple(self.shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


@dataclass
class Pad(Node):
    """Zero padding of the spatial axes."""

    pads_begin: tuple[int, ...] = ()
    pads_end: tuple[int, ...] = ()

    def infer(self, shapes):
        (s,) = shapes
        if len(s) != len(self.pads_begin) + 1:
            raise self.fail("pad rank mismatch")
        out = tuple(n + b + e for n, b, e in zip(s[1:], self.pads_begin, self.pads_end))
        if min(out, default=1) <= 0:
            raise self.fail("padding crops the tensor away")
        return (s[0], *out)

    def forward(self, x):
        return kernels.pad_spatial(x, self.pads_begin, self.pads_end, 0.0)


@dataclass
class Transpose(Node):
    perm: tuple[int, ...] = ()  # per-sample axes

    def infer(self, shapes):
        (s,) = shapes
        if sorted(self.perm) != list(range(len(s))):
            raise self.fail(f"perm {self.perm} is not a permutation of the {len(s)} axes")
        return tuple(s[p] for p in self.perm)

    def forward(self, x):
        return x.permute(0, *[p + 1 for p in self.perm])


@dataclass
class Select(Node):
    """Entries ``index`` along one per-sample axis (Slice, Split, Gather, nearest Resize)."""

    axis: int = 0
    index: tuple[int, ...] = ()

    def infer(self, shapes):
        (s,) = shapes
        if not 0 <= self.axis < len(s):
            raise self.fail(f"axis {self.axis} of a rank-{len(s)} tensor")
        if not self.index:
            raise self.fail("selects nothing (empty slice)")
        if min(self.index) < 0 or max(self.index) >= s[self.axis]:
            raise self.fail(f"index out of range for axis of size {s[self.axis]}")
        out = list(s)
        out[self.axis] = len(self.index)
        return tuple(out)

    def forward(self, x):
        return kernels.select(x, self.axis, self.index)
