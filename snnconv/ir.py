"""Graph IR: the imported ReLU network as typed nodes with their own shape checks.

Everything after the importer speaks this IR, never ONNX. Shapes are per sample (no batch axis);
tensors passed to ``forward`` carry a leading batch axis. Node parameters are float64 numpy arrays,
so the IR's own ``forward`` is the float64 reference evaluation of the imported network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import ModelImportError
from .snn import kernels

Shape = tuple[int, ...]


class ShapeError(ModelImportError):
    pass


@dataclass
class Node:
    name: str
    op_type: str  # the ONNX op the node came from, for messages
    inputs: tuple[str, ...]
    output: str

    def fail(self, msg: str) -> ShapeError:
        return ShapeError(msg, node=self.name, op=self.op_type)

    def infer(self, shapes: list[Shape]) -> Shape:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_window(node: Node, stride, dilation, pads=(), kernel=()) -> None:
    """Attribute ranges the ONNX checker does not enforce (corrupt files reach us otherwise)."""
    if any(int(v) < 1 for v in (*stride, *dilation, *kernel)):
        raise node.fail(f"strides {tuple(stride)}, dilations {tuple(dilation)} and kernel "
                        f"{tuple(kernel)} must be >= 1")
    if any(int(v) < 0 for v in pads):
        raise node.fail(f"negative pads {tuple(pads)}")


def _t(a: np.ndarray | None, like: torch.Tensor):
    return None if a is None else torch.as_tensor(a, dtype=like.dtype, device=like.device)


def pool_out_size(n, k, s, pb, pe, d, ceil_mode) -> int:
    """ONNX/torch output length; in ceil_mode the last window starts inside input or left pad."""
    span = n + pb + pe - d * (k - 1) - 1
    if span < 0:
        return 0
    out = (math.ceil if ceil_mode else math.floor)(span / s) + 1
    if ceil_mode and (out - 1) * s >= n + pb:
        out -= 1
    return out


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
        _check_window(self, self.stride, self.dilation, (*self.pads_begin, *self.pads_end),
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
        return kernels.conv(x, _t(self.weight, x), _t(self.bias, x), self.stride,
                            self.pads_begin, self.pads_end, self.dilation, self.group)


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
        y = x @ _t(self.weight, x).T
        return y if self.bias is None else y + _t(self.bias, x)


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
        return x * _t(self.scale, x) + _t(self.shift, x)


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
        _check_window(self, self.stride, self.dilation, (*self.pads_begin, *self.pads_end),
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
        return y / _t(self.divisor(), y)


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
        _check_window(self, self.stride, self.dilation, (), self.weight.shape[2:])
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
        return kernels.conv_transpose(x, _t(self.weight, x), _t(self.bias, x), self.stride,
                                      self.pads_begin, self.pads_end, self.dilation,
                                      self.group, self.output_padding)


def convtranspose_out(spatial, kernel, stride, pb, pe, dilation, output_padding):
    return tuple(s * (n - 1) + op + d * (k - 1) + 1 - b - e for n, k, s, b, e, d, op in zip(
        spatial, kernel, stride, pb, pe, dilation, output_padding))


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
        return torch.where(x >= 0, x, x * _t(self.slope, x))


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
            y = f(y, _t(self.const, y).expand_as(y))
        return y


@dataclass
class Graph:
    """A ReLU network: one input, one output, nodes in topological order."""

    input: str
    input_shape: Shape
    output: str
    nodes: list[Node]
    source: str = "<memory>"
    batch: int | None = None  # fixed batch size of the ONNX graph, None if dynamic
    head: str | None = None  # output op stripped by the importer (argmax-preserving)
    onnx_output: str | None = None  # the ONNX output tensor (after the head)
    shapes: dict[str, Shape] = field(default_factory=dict)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        shapes = {self.input: tuple(self.input_shape)}
        for node in self.nodes:
            for i in node.inputs:
                if i not in shapes:
                    raise node.fail(f"input '{i}' is not produced before this node")
            shapes[node.output] = tuple(node.infer([shapes[i] for i in node.inputs]))
        if self.output not in shapes:
            raise ModelImportError(f"graph output '{self.output}' is never produced")
        self.shapes = shapes

    @property
    def output_shape(self) -> Shape:
        return self.shapes[self.output]

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                out.setdefault(i, []).append(n)
        return out

    @torch.no_grad()
    def last_uses(self) -> dict[str, int]:
        """Index of the last node that reads each tensor: an evaluation can free it after."""
        last_use = {}
        for idx, n in enumerate(self.nodes):
            for i in n.inputs:
                last_use[i] = idx
        return last_use

    def forward(self, x, keep: set[str] | None = None, dtype=torch.float64, after=None):
        """Float64 reference evaluation. Returns the output, and the tensors named in ``keep``.
        ``after(idx, node, inputs, output)``, if given, sees every node's evaluation (for
        quantities that ride along, such as verify's float32 error bound)."""
        x = torch.as_tensor(np.asarray(x), dtype=dtype)
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"input shape {tuple(x.shape[1:])} != {self.input_shape}")
        env = {self.input: x}
        last_use = self.last_uses()
        kept = {}
        keep = keep or set()
        if self.input in keep:
            kept[self.input] = x
        for idx, n in enumerate(self.nodes):
            xs = [env[i] for i in n.inputs]
            y = n.forward(*xs)
            if after is not None:
                after(idx, n, xs, y)
            env[n.output] = y
            if n.output in keep:
                kept[n.output] = y
            for i in n.inputs:  # free what no later node reads
                if last_use.get(i) == idx and i != self.output:
                    env.pop(i, None)
        return env[self.output], kept
