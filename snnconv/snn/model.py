"""The converted network: layers in topological order, from the input to the readout.

This is what the model file holds and every simulator reads. ``SNN.save`` and ``SNN.simulate``
are conveniences that import the model-file stage and the closed-form simulator on use (both
import this module).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .edits import Tracked
from .layers import Group, InputLayer, Layer, NeuronLayer, ReadoutLayer
from .ops import Shape


@dataclass
class SNN(Tracked):
    """A converted network. ``layers`` are in topological order; the first is the input."""

    layers: list[Layer]
    tau_c: float = 1.0
    head: str | None = None
    meta: dict = field(default_factory=dict)

    #: attributes whose names start so hold what was compiled from the SNN (onnxruntime
    #: sessions): not part of the model, left out of copies and pickles
    CACHE_PREFIX = "_cache_"

    def __post_init__(self):
        self.by_name = {layer.name: layer for layer in self.layers}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith(self.CACHE_PREFIX)}

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
        """Write the model file (atomically); see ``snnconv.modelfile.save`` (imported here)."""
        from ..modelfile import save

        return save(self, path)

    def simulate(self, x, dtype=torch.float64, **kw):
        """Closed-form simulation of a batch; see ``snnconv.snn.simulate.simulate`` (imported
        here)."""
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
                    _check_group(layer, g, seen[g.source].shape)
            seen[layer.name] = layer
        if not isinstance(self.layers[-1], ReadoutLayer):
            raise ValueError("the last layer must be the readout")


def _check_group(layer: Layer, g: Group, shp: Shape) -> None:
    """The group's ops chain from the source's shape to the layer's, with one weighted op."""
    for op in g.ops:
        if tuple(op.in_shape) != tuple(shp):
            raise ValueError(f"layer {layer.name}: op {op.kind} expects "
                             f"{op.in_shape}, gets {shp}")
        shp = op.out_shape
    if tuple(shp) != tuple(layer.shape):
        raise ValueError(f"layer {layer.name}: group from {g.source} yields {shp}"
                         f", layer shape is {layer.shape}")
    if sum(o.weighted for o in g.ops) > 1:
        raise ValueError(f"layer {layer.name}: a group has several weighted ops")
