"""The equivalent ReLU network of a set of TTFS layers, evaluated on values (not spike times).

A neuron layer's value is x = clip(sum_groups W x_source - theta_rel, 0, cap): by the B = 1
mapping (spec section 2) exactly the value its spike time codes, t = t_max - tau_c x. A pool takes
the max (or per channel min) of its inputs, the input layer is (x - lo)/(hi - lo) clipped to
[0, 1] and the readout is W x + bias.

Calibration uses it to measure each layer's range before windows exist, interval bounds use it to
derive guaranteed windows, and fine-tuning trains it (the B=1 mapping makes the SNN's gradients
equal to this network's). Verification does not use it: the simulators work on spike times.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..tensors import like
from ..walk import reader_counts
from .layers import InputLayer, Layer, NeuronLayer, PoolLayer, ReadoutLayer, walk_layers
from .ops import chain_apply, chain_interval

def input_values(layer: InputLayer, x: torch.Tensor) -> torch.Tensor:
    """Normalised input in [0, 1] (unclipped)."""
    return layer.normalise(x)


def consumers_count(layers: list[Layer]) -> dict[str, int]:
    """How many layers read each layer (see ``snnconv.walk.reader_counts``)."""
    return reader_counts(layers, lambda la: la.sources())


def forward(layers: list[Layer], x, dtype=torch.float64,
            observe: Callable[[Layer, torch.Tensor], None] | None = None,
            caps: dict[str, float] | None = None) -> torch.Tensor:
    """Values of every layer, layer by layer; ``caps`` clips layers (the windowed network)."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=dtype)
    out = []

    def step(layer: Layer, env: dict[str, torch.Tensor]) -> torch.Tensor:
        if isinstance(layer, InputLayer):
            v = torch.clamp(layer.normalise(x), 0.0, 1.0)
        elif isinstance(layer, PoolLayer):
            v = layer.apply(env[layer.source])
        else:
            z = None
            for g in layer.groups:
                y = chain_apply(g.ops, env[g.source])
                z = y if z is None else z + y
            if isinstance(layer, ReadoutLayer):
                out.append(z + like(layer.bias, z))
                return out[-1]
            v = torch.clamp(z - like(layer.theta_rel, z), 0.0, _cap(layer, caps))
        if observe is not None:
            observe(layer, v)
        return v

    walk_layers(layers, step)
    return out[-1] if out else None


def _cap(layer: NeuronLayer, caps: dict[str, float] | None) -> float | None:
    """The layer's own cap (ReLU6), lowered to ``caps[name]`` if given."""
    cap = layer.cap
    if caps is not None and layer.name in caps:
        cap = caps[layer.name] if cap is None else min(cap, caps[layer.name])
    return cap


def bounds(layers: list[Layer]) -> dict[str, np.ndarray]:
    """Per-neuron upper bounds of every layer's value for inputs inside the input range."""
    hi_of: dict[str, np.ndarray] = {}

    def step(layer: Layer, env: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        """The interval [lo, hi] of the layer's values (None for the readout)."""
        if isinstance(layer, InputLayer):
            shp = (1, *layer.shape)
            lo, hi = torch.zeros(shp, dtype=torch.float64), torch.ones(shp, dtype=torch.float64)
        elif isinstance(layer, PoolLayer):
            slo, shi = env[layer.source]
            lo, hi = layer.apply(slo), layer.apply(shi)
        elif isinstance(layer, NeuronLayer):
            zlo = zhi = 0.0
            for g in layer.groups:
                a, b = chain_interval(g.ops, *env[g.source])
                zlo, zhi = zlo + a, zhi + b
            th = like(layer.theta_rel, torch.zeros((), dtype=torch.float64))
            lo = torch.clamp(zlo - th, 0.0, layer.cap)
            hi = torch.clamp(zhi - th, 0.0, layer.cap)
        else:
            return None
        hi_of[layer.name] = hi[0].numpy()
        return lo, hi

    walk_layers(layers, step)
    return hi_of
