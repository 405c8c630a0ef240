"""Per-channel equalisation: one tick size per layer serves every channel.

ReLU is positively homogeneous, so scaling channel c of a neuron layer by 1/a_c and the
consumers' input channel c by a_c leaves the network's function unchanged (max/min pools pass a
positive scale through). Choosing a_c = (max_c / max)^strength from calibration data gives every
channel the layer's range, so the layer's single tick size wastes no levels on quiet channels.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..snn import equivalent
from ..mapping import compress, full
from ..snn import SNN, NeuronLayer, PoolLayer, ReadoutLayer
from .fold import channel_full, fold_chain


def channel_max(v: torch.Tensor) -> np.ndarray:
    """Largest value of each channel over the batch (and positions)."""
    dims = (0,) + tuple(range(2, v.dim()))
    return v.amax(dim=dims).numpy() if v.dim() > 1 else v.amax().reshape(1).numpy()


def equalize(snn: SNN, batches, strength: float = 1.0, floor: float = 1e-4
             ) -> tuple[SNN, dict[str, np.ndarray]]:
    """Scale channel c of each non-saturating neuron layer by 1/a_c, a_c = (max_c / max)^strength
    (exact: consumers get a_c). strength 1 gives every channel the layer's calibrated max; less
    keeps headroom for data beyond the calibration maxima. Returns a new SNN and the factors."""
    snn = copy.deepcopy(snn)
    fac = _factors(snn, _channel_maxima(snn, batches), strength, floor)
    for la in snn.layers:
        if isinstance(la, (NeuronLayer, ReadoutLayer)):
            _scale_layer(snn, la, fac)
    for la in snn.layers:
        if isinstance(la, PoolLayer) and la.name in fac and la.relation is not None:
            _scale_relation(la, channel_full(fac[la.name], la.shape))
    snn.meta = dict(snn.meta)
    snn.meta["equalization"] = {k: {"min_factor": float(v.min()), "channels": int(v.size)}
                                for k, v in fac.items()}
    return snn, fac


def _channel_maxima(snn: SNN, batches) -> dict[str, np.ndarray]:
    """Per-channel calibration maxima of the non-saturating neuron layers."""
    maxc: dict[str, np.ndarray] = {}

    def obs(layer, v):
        if isinstance(layer, NeuronLayer) and not layer.saturating and v.dim() >= 2:
            m = channel_max(v)
            maxc[layer.name] = m if layer.name not in maxc else np.maximum(maxc[layer.name], m)

    for xb in batches:
        equivalent.forward(snn.layers, xb, observe=obs)
    return maxc


def _factors(snn: SNN, maxc: dict[str, np.ndarray], strength: float, floor: float
             ) -> dict[str, np.ndarray]:
    """a per channel of each layer that gets one (pools inherit their source's)."""
    fac: dict[str, np.ndarray] = {}
    for la in snn.layers:
        if isinstance(la, NeuronLayer) and la.name in maxc:
            m = maxc[la.name]
            top = float(m.max()) if m.size else 0.0
            if top > 0 and len(m) == la.shape[0]:
                a = np.where(m > 0, np.maximum(m / top, floor) ** strength, 1.0)
                if np.any(a != 1.0):
                    fac[la.name] = a
        elif isinstance(la, PoolLayer) and la.source in fac:
            fac[la.name] = fac[la.source]
    return fac


def _scale_layer(snn: SNN, la, fac: dict[str, np.ndarray]) -> None:
    """Fold the sources' factors into ``la``'s synapses and divide its own output by its factor
    (threshold and relation follow)."""
    a_out = fac.get(la.name) if isinstance(la, NeuronLayer) else None
    for g in la.groups:
        src = snn.by_name[g.source]
        a_in = fac.get(g.source)
        if a_in is None and a_out is None:
            continue
        g.ops = fold_chain(g.ops, src.shape, la.shape,
                           None if a_in is None else channel_full(a_in, src.shape),
                           None if a_out is None else channel_full(1.0 / a_out, la.shape))
    if a_out is not None:
        af = channel_full(a_out, la.shape)
        la.theta_rel = compress(full(la.theta_rel, la.shape) / af, la.shape)
        if la.relation is not None:
            _scale_relation(la, af)


def _scale_relation(la, af: np.ndarray) -> None:
    la.relation.scale = compress(full(la.relation.scale, la.shape) / af, la.shape)
    la.relation.shift = compress(full(la.relation.shift, la.shape) / af, la.shape)
