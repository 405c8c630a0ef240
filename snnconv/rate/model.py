"""The rate-coded integrate-and-fire network: plain typed data, no execution code.

A rate net is a DAG of named nodes in topological order, from one ``Input`` to one ``Output``.
Every node produces one tensor per time step (per-sample shape ``shape``, no batch or time axis).
At each of the T steps the nodes are evaluated in order: the input presents its analog current,
affine nodes (``Linear``, ``Conv2d``, ``Scale``, ``Add``, ``AvgPool2d``, ``SumPool2d``) map their
inputs linearly and add their biases as constant currents, ``IF`` neurons integrate and spike
(0/1, at most one spike per neuron and step, no synaptic delay within a step), ``MaxPool2d``
forwards spikes by a gating rule, ``Flatten``/``Concat`` move lines, and ``Output`` (a non-firing
integrator) accumulates its input; its membrane / T is the readout (the ANN's logits on average).

The node kinds follow NIR's primitives so an exporter can map them one to one: Input, Linear
(NIR Affine), Conv2d, IF, AvgPool2d/SumPool2d, Flatten, Output; ``Scale`` is NIR's Scale when its
shift is None; ``MaxPool2d``, ``Add``, ``Concat`` have no single NIR primitive (see docs/rate.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Shape = tuple[int, ...]

#: reset modes of an IF neuron: "subtract" (v -= threshold, keeps the excess; the standard
#: conversion reset) or "zero" (v = 0 after a spike; what simpler hardware does)
RESETS = ("subtract", "zero")


@dataclass
class Node:
    """A node of the rate net. ``inputs`` name earlier nodes; ``shape`` is per sample."""

    name: str
    inputs: tuple[str, ...]
    shape: Shape
    kind = "node"

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))


@dataclass
class Input(Node):
    """Analog input current: each step the layer after it receives ``x * scale + shift``
    (``scale``/``shift`` broadcast to ``shape``; identity by default, an imported input
    normalisation otherwise). The input does not spike."""

    kind = "input"
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None


@dataclass
class Linear(Node):
    """y = W x + b; ``weight`` (out, in), ``bias`` (out,) or None: a constant current per step."""

    kind = "linear"
    weight: np.ndarray = None
    bias: np.ndarray | None = None


@dataclass
class Conv2d(Node):
    """2-D convolution, PyTorch/NIR layout: ``weight`` (Cout, Cin/groups, kh, kw); symmetric
    zero ``padding`` (ph, pw); ``bias`` (Cout,) or None, a constant current per step."""

    kind = "conv2d"
    weight: np.ndarray = None
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


@dataclass
class Scale(Node):
    """y = x * scale (+ shift); arrays broadcast to ``shape``. Carries a spike train's value
    (its source's threshold) into an ``Add`` or ``Concat``, or an unfolded elementwise affine."""

    kind = "scale"
    scale: np.ndarray = None
    shift: np.ndarray | None = None


@dataclass
class IF(Node):
    """Integrate-and-fire neurons (no leak): v += input current; spike where v >= threshold;
    then reset by ``reset``. ``threshold`` is a scalar or per channel (shape (C,) for (C,H,W),
    broadcast along the remaining axes); ``v_init`` is the membrane at step 0 (same shapes).
    A neuron's spike rate approximates ReLU(current) / threshold (clipped at 1 per step)."""

    kind = "if"
    threshold: np.ndarray = None
    reset: str = "subtract"
    v_init: np.ndarray = field(default_factory=lambda: np.array(0.0))


@dataclass
class AvgPool2d(Node):
    """Average of each window (no padding counted); output is a current, not spikes."""

    kind = "avgpool2d"
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)


@dataclass
class SumPool2d(Node):
    """Sum of each window (zero padding); output is a current, not spikes."""

    kind = "sumpool2d"
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)


@dataclass
class MaxPool2d(Node):
    """Spike max-pooling by gating: at step t each window forwards the spike (0/1) of the input
    with the largest spike count over steps 0..t (this step included); ties go to the first
    input of the window in row-major order; padding never wins. Its input must be spikes."""

    kind = "maxpool2d"
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)


@dataclass
class Flatten(Node):
    """Row-major flatten of the per-sample tensor to (size,)."""

    kind = "flatten"


@dataclass
class Add(Node):
    """Elementwise sum of the inputs (a residual join): currents add, spikes add as currents."""

    kind = "add"


@dataclass
class Concat(Node):
    """Concatenation of the inputs along per-sample ``axis`` (0 = channels)."""

    kind = "concat"
    axis: int = 0


@dataclass
class Output(Node):
    """Non-firing readout: integrates its one input each step; the readout is membrane / T."""

    kind = "output"


#: node kind -> class, for the model file
KINDS: dict[str, type[Node]] = {c.kind: c for c in (
    Input, Linear, Conv2d, Scale, IF, AvgPool2d, SumPool2d, MaxPool2d, Flatten, Add, Concat,
    Output)}
#: the nodes whose output is a spike train (0/1 per step), so their consumers count events
SPIKING = ("if", "maxpool2d")
#: the array fields of each kind (stored as tensors), the rest are JSON parameters
ARRAYS = ("weight", "bias", "scale", "shift", "threshold", "v_init")


@dataclass
class RateNet:
    """A rate-coded IF network: ``nodes`` in topological order, the first an ``Input``, the last
    an ``Output``. ``steps`` is the simulation length T it was converted (or trained) for;
    ``head`` the argmax-preserving output op the importer stripped (e.g. Softmax)."""

    nodes: list[Node]
    steps: int = 32
    head: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.by_name = {n.name: n for n in self.nodes}

    @property
    def input(self) -> Input:
        return self.nodes[0]

    @property
    def output(self) -> Output:
        return self.nodes[-1]

    def neurons(self) -> list[IF]:
        return [n for n in self.nodes if isinstance(n, IF)]

    @property
    def n_neurons(self) -> int:
        return sum(n.size for n in self.neurons())

    def check(self) -> None:
        """Structure: the input first, the output last, inputs are earlier nodes, names unique,
        arities and resets valid. Shapes are checked by the simulator's first step."""
        seen: set[str] = set()
        for i, n in enumerate(self.nodes):
            if (i == 0) != isinstance(n, Input):
                raise ValueError("the first node, and only it, must be the Input")
            if n.name in seen:
                raise ValueError(f"node name '{n.name}' is used twice")
            for s in n.inputs:
                if s not in seen:
                    raise ValueError(f"node {n.name}: input {s} is not an earlier node")
            want = {"input": 0, "add": None, "concat": None}.get(n.kind, 1)
            if want is not None and len(n.inputs) != want:
                raise ValueError(f"node {n.name} ({n.kind}) takes {want} input(s), has "
                                 f"{len(n.inputs)}")
            if isinstance(n, IF) and n.reset not in RESETS:
                raise ValueError(f"node {n.name}: reset '{n.reset}' is not one of {RESETS}")
            seen.add(n.name)
        if not isinstance(self.nodes[-1], Output):
            raise ValueError("the last node must be the Output")
