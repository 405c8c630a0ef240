"""The integer TTFS network of spec section 5 as data: typed layers, synapse groups, the net.

Time is an integer tick; a neuron of layer n carries x_ticks = t_max - t in [0, T_n] (0 = silent).
A layer's potential at t_min is V0 = sum over groups of W_int x_ticks (delays line the windows up);
with theta = R*T - b the neuron fires at t_min + max(0, ceil((theta - V0)/R)), i.e.

    x_ticks = clip(floor((V0 + b) / R), 0, T)

Groups reuse the synaptic ops of ``snnconv.snn``; their weight/scale arrays hold integers. Each
layer type holds only its own fields (as the float SNN's layers do); ``kind`` is the type's name
in the ``.snnq`` file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..snn import Op
from .ops import INT_OPS, stored_array


@dataclass
class QGroup:
    """Synapses from one source: integer op chain (at most one op with an integer array)."""

    source: str
    ops: list[Op]
    delay: int = 0  # ticks
    bits: int = 8  # signed width of its integer weights (1 = sign weights +-1)

    @property
    def weighted(self) -> Op | None:
        return next((o for o in self.ops if o.kind in INT_OPS), None)


#: the constructor's argument order before the layer types, for ``QLayer(name, kind, shape, ...)``
_UNTYPED_ORDER = ("name", "kind", "shape", "stage", "t_min", "t_max", "groups", "bias", "ramp",
                  "scale", "step", "widths", "lo", "hi", "source", "pool", "minimum")


class _ByKind(type):
    """``QLayer(name, kind, shape, ...)`` builds the layer type named by ``kind``: the untyped
    constructor that hand-built models (tests, scripts) used before the types existed."""

    def __call__(cls, *args, **kw):
        if cls is not QLayer:
            return super().__call__(*args, **kw)
        kw.update(zip(_UNTYPED_ORDER, args))
        kind = kw.pop("kind", None)
        if kind not in LAYER_TYPES:
            raise ValueError(f"unknown layer kind '{kind}'")
        return LAYER_TYPES[kind](**kw)


@dataclass
class QLayer(metaclass=_ByKind):
    """A layer of the integer network: its window [t_min, t_max] in ticks."""

    kind: ClassVar[str] = "layer"
    name: str
    shape: tuple
    stage: int = 0
    t_min: int = 0
    t_max: int = 0
    # layers without synapses read as having none, so code that walks every layer's groups or
    # bias needs no type test (after the fields: a subclass's field keeps this place in order)
    groups: ClassVar[tuple] = ()
    bias: ClassVar[None] = None

    @property
    def ticks(self) -> int:
        return self.t_max - self.t_min

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    def sources(self) -> list[str]:
        return []

    def check(self) -> None:
        """Raise ValueError when the layer's own numbers break the model."""


@dataclass
class QInput(QLayer):
    """Encodes x in [lo, hi] as x_ticks = round((x - lo)/(hi - lo) * T) (``arith.encode_input``)."""

    kind: ClassVar[str] = "input"
    scale: np.ndarray | None = None  # real value of one tick
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None


@dataclass
class QPool(QLayer):
    """Earliest (max) or latest (min, per channel) input spike in each window; no register."""

    kind: ClassVar[str] = "pool"
    scale: np.ndarray | None = None  # its source's tick value
    source: str = ""
    pool: dict = field(default_factory=dict)  # kernel, stride, pads_begin, pads_end, dilation
    minimum: np.ndarray | None = None  # bool per channel: True = min-pool

    def sources(self) -> list[str]:
        return [self.source]

    def args(self) -> tuple:
        """The window arguments of ``kernels.pool``."""
        p = self.pool
        return (p["kernel"], p["stride"], p["pads_begin"], p["pads_end"], p["dilation"],
                tuple(self.shape[1:]))


@dataclass
class QSynaptic(QLayer):
    """A layer with I and V registers fed by synapse groups: neurons or the readout."""

    groups: list[QGroup] = field(default_factory=list)
    bias: np.ndarray | None = None  # int, broadcastable to shape
    scale: np.ndarray | None = None  # real value of one tick (neuron) or logit unit (readout)
    step: np.ndarray | None = None  # real value of one V unit
    widths: dict = field(default_factory=dict)  # {"I": bits, "V": bits, "I_needed", "V_needed"}

    def sources(self) -> list[str]:
        return [g.source for g in self.groups]


@dataclass
class QNeuron(QSynaptic):
    """TTFS neurons: V ramps by R per tick from t_min and the neuron fires when V >= theta."""

    kind: ClassVar[str] = "neuron"
    ramp: np.ndarray | None = None  # R: positive int per layer or per channel

    @property
    def theta(self) -> np.ndarray:
        return np.asarray(self.ramp, np.int64) * self.ticks - np.asarray(self.bias, np.int64)

    def check(self) -> None:
        if self.ticks <= 0 or np.any(np.asarray(self.ramp) < 1):
            raise ValueError(f"layer {self.name}: needs T >= 1 and R >= 1")


@dataclass
class QReadout(QSynaptic):
    """Output: no threshold, no spike; logits = V(t_min) + bias."""

    kind: ClassVar[str] = "readout"


LAYER_TYPES: dict[str, type[QLayer]] = {c.kind: c for c in (QInput, QNeuron, QPool, QReadout)}


@dataclass
class QNet:
    layers: list[QLayer]
    overflow: str = "saturate"  # or "wrap"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.by_name = {la.name: la for la in self.layers}

    @property
    def input(self) -> QInput:
        return self.layers[0]

    @property
    def output(self) -> QReadout:
        return self.layers[-1]

    @property
    def latency(self) -> int:
        return self.output.t_min

    def hidden(self) -> list[QNeuron]:
        return [la for la in self.layers if isinstance(la, QNeuron)]

    def evaluated(self) -> list[QLayer]:
        """The layers a model evaluates: up to the first readout (``check`` makes it the last)."""
        for i, la in enumerate(self.layers):
            if isinstance(la, QReadout):
                return self.layers[:i + 1]
        return self.layers

    def weight_count(self) -> tuple[int, float]:
        """(number of stored integer weights, weight memory in bytes at their bit widths)."""
        n, bits = 0, 0.0
        for la in self.layers:
            for g in la.groups:
                w = g.weighted
                if w is None:
                    continue
                a = np.asarray(stored_array(w))
                n += a.size
                bits += a.size * g.bits
        return n, bits / 8

    def check(self) -> None:
        seen: dict[str, QLayer] = {}
        for i, la in enumerate(self.layers):
            if (i == 0) != isinstance(la, QInput):
                raise ValueError("the first layer, and only it, must be the input")
            for s in la.sources():
                if s not in seen:
                    raise ValueError(f"layer {la.name}: source {s} is not an earlier layer")
            for g in la.groups:
                _check_group(la, g, seen[g.source])
            la.check()
            seen[la.name] = la
        if not isinstance(self.layers[-1], QReadout):
            raise ValueError("the last layer must be the readout")


def _check_group(la: QSynaptic, g: QGroup, src: QLayer) -> None:
    """Shapes along the op chain, the delay that lines the windows up, the integer weights."""
    shp = src.shape
    for op in g.ops:
        if tuple(op.in_shape) != tuple(shp):
            raise ValueError(f"layer {la.name}: op {op.kind} expects {op.in_shape}, gets {shp}")
        shp = op.out_shape
    if tuple(shp) != tuple(la.shape):
        raise ValueError(f"layer {la.name}: group from {g.source} yields {shp}")
    if g.delay < 0 or src.t_max + g.delay != la.t_min:
        raise ValueError(f"layer {la.name}: delay from {g.source} does not line up")
    w = g.weighted
    if w is not None:
        a = np.asarray(stored_array(w))
        if np.any(a != np.round(a)):
            raise ValueError(f"layer {la.name}: non-integer weights")
        lim = 1 if g.bits == 1 else 2 ** (g.bits - 1) - 1
        if np.abs(a).max(initial=0) > lim:
            raise ValueError(f"layer {la.name}: weights exceed {g.bits} bits")
