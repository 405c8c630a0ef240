"""Windows estimated from the network alone, when no calibration data is given.

Guaranteed (interval or symbolic) bounds hold for every input in range, but on deep nets they grow
like the product of the layers' weight norms: 1e14 tau_c for a trained ResNet-20 whose real values
stay below 30. An estimate is what data-free quantisation uses instead: each pre-activation is
modelled as a Gaussian, N(mu, sigma^2) per neuron, and the window covers mu + K sigma.

- Inputs: uniform over the declared range (encoded values uniform on [0, 1]: mean 1/2, variance
  1/12), independent.
- Weighted maps: mean W mu, variance W^2 sigma^2 (independent sources; residual adds sum).
- Where the ONNX model had a BatchNormalization feeding the activation, its statistics replace the
  propagated moments: the pre-activation has mean beta and standard deviation |gamma| per channel
  (the training data's distribution the net was normalised to), mapped through the layer's
  relation to that tensor.
- ReLU of a Gaussian: the rectified-Gaussian mean and variance; max-pools take the largest mean
  and variance of their window (an estimate, not a bound).

Estimates are not guarantees: verify reports clipping when one is too small.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..snn import InputLayer, NeuronLayer, PoolLayer
from ..tensors import like
from ..walk import walk
from .calibrate import Calibration

#: Standard deviations above the mean a window covers.
SIGMAS = 6.0
#: Where an estimate came from, in words (the output says which kind of windows were used).
SOURCES = {"batchnorm": "BatchNorm statistics",
           "moments": "moments propagated from inputs uniform over the range"}


def describe(source: str) -> str:
    """A Calibration.source of an estimate ("batchnorm+moments") in words."""
    return " and ".join(SOURCES.get(s, s) for s in source.split("+") if s)

Moments = tuple[torch.Tensor, torch.Tensor]  # mean, variance; shape (1, *layer.shape)


def _square_apply(op, var: torch.Tensor) -> torch.Tensor:
    if op.structural:
        return op.apply(var)
    return op.apply_array(var, like(np.square(op.array()), var))


def _rectified(mu: torch.Tensor, var: torch.Tensor) -> Moments:
    """Mean and variance of max(z, 0) for z ~ N(mu, var)."""
    sd = var.clamp_min(1e-30).sqrt()
    a = mu / sd
    cdf = 0.5 * (1.0 + torch.erf(a / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    m1 = mu * cdf + sd * pdf
    m2 = (mu * mu + var) * cdf + mu * sd * pdf
    return m1, (m2 - m1 * m1).clamp_min(0.0)


def _prior(layer: NeuronLayer, priors: dict) -> Moments | None:
    """The pre-activation moments a BatchNormalization gives, through the layer's relation
    value = clip(scale * tensor + shift)."""
    rel = layer.relation
    if rel is None or rel.tensor not in priors:
        return None
    mean, std = (np.asarray(a, np.float64) for a in priors[rel.tensor])
    cs = (-1,) + (1,) * (len(layer.shape) - 1)
    scale, shift = np.asarray(rel.scale, np.float64), np.asarray(rel.shift, np.float64)
    mu = np.broadcast_to(scale * mean.reshape(cs) + shift, layer.shape)
    sd = np.broadcast_to(np.abs(scale) * std.reshape(cs), layer.shape)
    return (torch.as_tensor(mu.copy())[None], torch.as_tensor(sd.copy() ** 2)[None])


def _pre_activation(layer: NeuronLayer, env: dict) -> Moments:
    mu = var = None
    for g in layer.groups:
        m, v = env[g.source]
        for op in g.ops:
            m, v = op.apply(m), _square_apply(op, v)
        mu, var = (m, v) if mu is None else (mu + m, var + v)
    return mu - like(layer.theta_rel, mu), var


def estimate(layers, priors: dict | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """Per neuron layer: the estimated largest value (mu + SIGMAS sigma, at least 0) and where
    the estimate came from ("batchnorm" or "moments")."""
    priors = priors or {}
    maxima: dict[str, float] = {}
    how: dict[str, str] = {}

    def step(la, env):
        if isinstance(la, InputLayer):
            shp = (1, *la.shape)
            return (torch.full(shp, 0.5, dtype=torch.float64),
                    torch.full(shp, 1.0 / 12.0, dtype=torch.float64))
        if isinstance(la, PoolLayer):
            m, v = env[la.source]
            return la.apply(m), la.apply(v)
        if not isinstance(la, NeuronLayer):
            return None
        prior = _prior(la, priors)
        mu, var = prior if prior is not None else _pre_activation(la, env)
        how[la.name] = "batchnorm" if prior is not None else "moments"
        maxima[la.name] = max(0.0, float((mu + SIGMAS * var.sqrt()).max()))
        return _rectified(mu, var)

    walk(layers, step, name=lambda la: la.name, sources=lambda la: la.sources())
    return maxima, how


def estimate_calibration(layers, priors: dict | None = None) -> Calibration:
    """The estimate as a Calibration (method "estimate"; source: which layers had BatchNorm)."""
    maxima, how = estimate(layers, priors)
    kinds = sorted(set(how.values()))
    return Calibration(maxima, None, 0, "estimate", source="+".join(kinds))
