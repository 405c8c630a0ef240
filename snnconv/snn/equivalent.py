"""The equivalent ReLU network of a set of TTFS layers, evaluated on values (not spike times).

Calibration uses it to measure each layer's range before windows exist, interval bounds use it to
derive guaranteed windows, and fine-tuning trains it (the B=1 mapping makes the SNN's gradients
equal to this network's). Verification does not use it: the simulators work on spike times.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .layers import InputLayer, Layer, NeuronLayer, PoolLayer, ReadoutLayer
from .ops import chain_apply, chain_interval


def _t(a, like):
    return torch.as_tensor(np.asarray(a), dtype=like.dtype, device=like.device)


def input_values(layer: InputLayer, x: torch.Tensor) -> torch.Tensor:
    """Normalised input in [0, 1] (unclipped)."""
    lo, hi = _t(layer.lo, x), _t(layer.hi, x)
    return (x - lo) / (hi - lo)


def consumers_count(layers: list[Layer]) -> dict[str, int]:
    n: dict[str, int] = {}
    for la in layers:
        for s in la.sources():
            n[s] = n.get(s, 0) + 1
    return n


def forward(layers: list[Layer], x, dtype=torch.float64,
            observe: Callable[[Layer, torch.Tensor], None] | None = None,
            caps: dict[str, float] | None = None) -> torch.Tensor:
    """Values of every layer, layer by layer; ``caps`` clips layers (the windowed network)."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=dtype)
    uses = consumers_count(layers)
    env: dict[str, torch.Tensor] = {}
    out = None
    for layer in layers:
        if isinstance(layer, InputLayer):
            v = torch.clamp(input_values(layer, x), 0.0, 1.0)
        elif isinstance(layer, PoolLayer):
            v = layer.apply(env[layer.source])
        else:
            z = None
            for g in layer.groups:
                y = chain_apply(g.ops, env[g.source])
                z = y if z is None else z + y
            if isinstance(layer, ReadoutLayer):
                out = z + _t(layer.bias, z)
                continue
            z = z - _t(layer.theta_rel, z)
            cap = layer.cap if layer.cap is not None else None
            if caps is not None and layer.name in caps:
                cap = caps[layer.name] if cap is None else min(cap, caps[layer.name])
            v = torch.clamp(z, 0.0, cap)
        if observe is not None:
            observe(layer, v)
        env[layer.name] = v
        for s in layer.sources():
            uses[s] -= 1
            if uses[s] == 0:
                env.pop(s, None)
    return out


def bounds(layers: list[Layer]) -> dict[str, np.ndarray]:
    """Per-neuron upper bounds of every layer's value for inputs inside the input range."""
    hi_of: dict[str, np.ndarray] = {}
    env: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for layer in layers:
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
            th = _t(layer.theta_rel, torch.zeros((), dtype=torch.float64))
            lo = torch.clamp(zlo - th, 0.0, layer.cap)
            hi = torch.clamp(zhi - th, 0.0, layer.cap)
        else:
            continue
        env[layer.name] = (lo, hi)
        hi_of[layer.name] = hi[0].numpy()
    return hi_of
