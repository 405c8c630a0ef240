"""Guaranteed value intervals of the layers built so far, for inputs inside the input range.

The offset coding of a max-pool needs a lower bound of a signed expression while the mapper is
still adding layers, so the intervals are kept per layer and extended as layers appear. The
per-layer step is the one ``equivalent.bounds`` takes; that function returns upper bounds of a
finished layer list only, which is why it is not called here.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from ..snn import InputLayer, Layer, NeuronLayer, PoolLayer, chain_interval
from .arrays import full
from .expressions import Expr

Interval = tuple[torch.Tensor, torch.Tensor]


def layer_interval(layer: Layer, env: dict[str, Interval]) -> Interval | None:
    """[lo, hi] of one layer's value (batch axis of 1) from its sources' intervals; None for a
    layer that carries no value (the readout)."""
    if isinstance(layer, InputLayer):
        z = torch.zeros((1, *layer.shape), dtype=torch.float64)
        return z, z + 1.0
    if isinstance(layer, PoolLayer):
        slo, shi = env[layer.source]
        return layer.apply(slo), layer.apply(shi)
    if isinstance(layer, NeuronLayer):
        zlo = zhi = 0.0
        for g in layer.groups:
            a, b = chain_interval(g.ops, *env[g.source])
            zlo, zhi = zlo + a, zhi + b
        th = torch.as_tensor(full(layer.theta_rel, layer.shape))[None]
        return torch.clamp(zlo - th, 0.0, layer.cap), torch.clamp(zhi - th, 0.0, layer.cap)
    return None


class Intervals:
    """Intervals of layers, computed once per layer as the layer list grows."""

    def __init__(self):
        self.env: dict[str, Interval] = {}

    def update(self, layers: Iterable[Layer]) -> dict[str, Interval]:
        for layer in layers:
            if layer.name not in self.env:
                ival = layer_interval(layer, self.env)
                if ival is not None:
                    self.env[layer.name] = ival
        return self.env

    def lower_bound(self, layers: Iterable[Layer], e: Expr) -> np.ndarray:
        """A guaranteed lower bound of an expression, per entry (interval propagation)."""
        env = self.update(layers)
        lo = torch.as_tensor(full(e.bias, e.shape))[None]
        for t in e.terms:
            a, _ = chain_interval(t.ops, *env[t.source])
            lo = lo + a
        return lo[0].numpy()
