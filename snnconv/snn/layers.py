"""The layers of a TTFS network and the synapse groups that connect them (spec section 2).

A layer n fires in its window [t_min, t_max]; a value x >= 0 is one spike at t_max - tau_c x and
x = 0 is silence. A neuron integrates its groups' input spikes from V = 0 (phase 1), then ramps
with slope 1/tau_c from t_min (phase 2) and fires once, at the first t >= t_min with V >= theta:
t = t_max - tau_c ReLU(W x + b). A pool forwards the earliest (or per channel latest) input
spike; the readout does not fire, its logits are V(t_min) + bias.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..tensors import like
from ..walk import walk
from .edits import Tracked
from . import kernels
from .ops import Op, Shape


@dataclass
class Group(Tracked):
    """Synapses from one source layer: a linear map and an axonal delay."""

    source: str
    ops: list[Op]
    delay: float = 0.0

    @property
    def weighted(self) -> Op | None:
        return next((o for o in self.ops if o.weighted), None)


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
class Layer(Tracked):
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

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """u = (x - lo)/(hi - lo), unclipped: u in [0, 1] is coded, the rest is clipped."""
        return (x - like(self.lo, x)) / (like(self.hi, x) - like(self.lo, x))


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


def walk_layers(layers: Sequence[Layer], step: Callable[[Layer, dict[str, Any]], Any]) -> None:
    """Run ``step(layer, env)`` over the layers in order (``snnconv.walk.walk``): ``env`` holds
    the values of earlier layers by name, each freed after its last reader."""
    walk(layers, step, name=lambda la: la.name, sources=lambda la: la.sources())
