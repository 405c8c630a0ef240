"""Elementwise nodes: dense and affine maps, and the piecewise-linear activations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..tensors import like
from .node import Node


@dataclass
class Dense(Node):
    weight: np.ndarray = None  # (out, in)
    bias: np.ndarray | None = None

    def infer(self, shapes):
        (s,) = shapes
        if len(s) != 1 or s[0] != self.weight.shape[1]:
            raise self.fail(f"input shape {s} does not match weight {self.weight.shape}")
        return (self.weight.shape[0],)

    def forward(self, x):
        y = x @ like(self.weight, x).T
        return y if self.bias is None else y + like(self.bias, x)


@dataclass
class Affine(Node):
    """x * scale + shift, constants broadcastable to the per-sample shape (BN, Mul/Add/Sub/Div)."""

    scale: np.ndarray = None
    shift: np.ndarray = None

    def infer(self, shapes):
        (s,) = shapes
        for a in (self.scale, self.shift):
            try:
                np.broadcast_shapes(a.shape, s)
            except ValueError:
                raise self.fail(f"constant of shape {a.shape} does not broadcast to {s}") from None
            if np.broadcast_shapes(a.shape, s) != tuple(s):
                raise self.fail(f"constant of shape {a.shape} would enlarge the tensor {s}")
        return tuple(s)

    def forward(self, x):
        return x * like(self.scale, x) + like(self.shift, x)


@dataclass
class Add(Node):
    def infer(self, shapes):
        a, b = shapes
        if tuple(a) != tuple(b):
            raise self.fail(f"adds tensors of different shapes {a} and {b}")
        return tuple(a)

    def forward(self, a, b):
        return a + b


@dataclass
class Relu(Node):
    def infer(self, shapes):
        return tuple(shapes[0])

    def forward(self, x):
        return torch.relu(x)


@dataclass
class Clip(Node):
    lo: float | None = None
    hi: float | None = None

    def infer(self, shapes):
        if self.lo is not None and self.hi is not None and self.hi < self.lo:
            raise self.fail(f"empty clip range [{self.lo}, {self.hi}]")
        return tuple(shapes[0])

    def forward(self, x):
        return torch.clamp(x, self.lo, self.hi)


@dataclass
class PRelu(Node):
    """x for x >= 0, slope * x below (LeakyRelu, PRelu); slope broadcastable to the shape."""

    slope: np.ndarray = None

    def infer(self, shapes):
        (s,) = shapes
        try:
            b = np.broadcast_shapes(np.shape(self.slope), s)
        except ValueError:
            b = None
        if b != tuple(s):
            raise self.fail(f"slope of shape {np.shape(self.slope)} does not broadcast to {s}")
        return tuple(s)

    def forward(self, x):
        return torch.where(x >= 0, x, x * like(self.slope, x))


@dataclass
class Abs(Node):
    def infer(self, shapes):
        return tuple(shapes[0])

    def forward(self, x):
        return torch.abs(x)


@dataclass
class Extremum(Node):
    """Elementwise max or min of tensors of one shape and an optional constant."""

    kind: str = "max"  # "max" | "min"
    const: np.ndarray | None = None

    def infer(self, shapes):
        s = tuple(shapes[0])
        if any(tuple(t) != s for t in shapes):
            raise self.fail(f"{self.kind} of tensors of different shapes {shapes}")
        if self.const is not None:
            try:
                b = np.broadcast_shapes(np.shape(self.const), s)
            except ValueError:
                b = None
            if b != s:
                raise self.fail(f"constant of shape {np.shape(self.const)} does not broadcast "
                                f"to {s}")
        return s

    def forward(self, *xs):
        f = torch.maximum if self.kind == "max" else torch.minimum
        y = xs[0]
        for x in xs[1:]:
            y = f(y, x)
        if self.const is not None:
            y = f(y, like(self.const, y).expand_as(y))
        return y
