"""The closed-form golden model: each layer's ticks from its potential at t_min, vectorised.

    x_ticks = clip(floor((V0 + b) / R), 0, T)

Exact in float32 or float64 (``bounds.layer_dtypes``); a layer whose V register might leave its
width takes the int64 path, which wraps or saturates it as the register would and counts every
overflow. It must agree with ``regsim`` bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from ..walk import walk
from .common import Compiled, IntResult, encode_input, limit, pool_values, recorded
from .layers import QInput, QNet, QNeuron, QPool, QReadout, QSynaptic


@torch.no_grad()
def golden(net: QNet, x, record: bool | set = False, dtype: torch.dtype | None = None,
           noise: float = 0.0, generator: torch.Generator | None = None,
           compiled: Compiled | None = None) -> IntResult:
    """Closed-form integer model on a batch. ``noise``: Gaussian spike jitter in ticks (rounded to
    whole ticks; silent neurons do not jitter; a jittered spike is clipped to its window).
    ``dtype``: one float dtype for every layer; None: per layer (``layer_dtypes``). Exact
    either way: the result does not depend on it. With ``compiled`` (made once for many
    batches) and neither noise nor recording, the batch runs as an ONNX graph in onnxruntime
    when the net allows it (``Compiled.fast``), with the same result bit for bit."""
    if compiled is not None and not noise and record is False and dtype is None:
        fast = compiled.fast()
        if fast is not None:
            return fast(x)
    comp = compiled if compiled is not None and compiled.dtype == dtype else Compiled(net, dtype)
    if comp.device is not None:  # a batch for another device than the CPU goes there first
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(comp.device)
    res = IntResult(logits=None)

    def step(la, env):
        if isinstance(la, QInput):
            v = encode_input(la, x, comp.dtypes[la.name])
            res.samples = v.shape[0]
        elif isinstance(la, QPool):
            v = pool_values(net, la, env[la.source])
        else:
            v = _synaptic(la, env, comp, net.overflow, res, noise, generator)
            if isinstance(la, QReadout):
                return v
        if isinstance(la, (QNeuron, QPool)):
            res.spikes[la.name] = int(torch.count_nonzero(v))  # ticks are >= 0
        if recorded(record, la):
            res.ticks[la.name] = v.to(torch.int64)
        return v

    walk(net.evaluated(), step, name=lambda la: la.name, sources=lambda la: la.sources())
    return res


def _synaptic(la: QSynaptic, env: dict, comp: Compiled, mode: str, res: IntResult, noise: float,
              generator: torch.Generator | None) -> torch.Tensor:
    """A neuron layer's ticks or the readout's logits (also set in ``res.logits``)."""
    z = None
    d = comp.dtypes[la.name]
    for gi, g in enumerate(la.groups):
        y = comp.group(la, gi, env[g.source].to(d))
        z = y if z is None else z + y
    v = _fire_in_range(la, z, comp, noise, generator)
    if v is None:
        return _fire_int64(la, z, d, mode, res, noise, generator)
    res.overflow[la.name] = 0  # the usual case: no register can overflow on this batch
    if isinstance(la, QReadout):
        res.logits = v
    return v


def _fire_int64(la: QSynaptic, z: torch.Tensor, d: torch.dtype, mode: str, res: IntResult,
                noise: float, generator: torch.Generator | None) -> torch.Tensor:
    """The layer's output when a register may overflow: int64, V wrapped or saturated, every
    overflow counted in ``res.overflow``; the readout's logits go to ``res.logits``."""
    z, bad = limit(z.to(torch.int64), la.widths["V"], mode)
    nb = 0 if bad is None else int(bad.sum())
    if bad is None:
        bad = torch.zeros((), dtype=torch.bool, device=z.device)
    if isinstance(la, QReadout):
        res.logits = z + torch.as_tensor(np.asarray(la.bias, np.int64), device=z.device)
        res.overflow[la.name] = nb
        return res.logits
    r = torch.as_tensor(np.asarray(la.ramp, np.int64), device=z.device)
    end = z + r * la.ticks  # V after the last phase-2 tick
    hi, lo = 2 ** (la.widths["V"] - 1) - 1, -(2 ** (la.widths["V"] - 1))
    nb += int((((end > hi) | (end < lo)) & ~bad).sum())
    res.overflow[la.name] = nb
    b = torch.as_tensor(np.asarray(la.bias, np.int64), device=z.device)
    xi = torch.clamp(torch.div(z + b, r, rounding_mode="floor"), 0, la.ticks)
    return _jitter(xi.to(d), la.ticks, noise, generator)


def _jitter(v: torch.Tensor, ticks: int, noise: float, generator) -> torch.Tensor:
    """Gaussian spike-time jitter of ``noise`` ticks, rounded to whole ticks; silent neurons
    do not jitter; a jittered spike stays in its window."""
    if not noise:
        return v
    # drawn on the CPU (the generator's device): every device sees the same jitter
    jit = torch.round(torch.randn(v.shape, generator=generator, dtype=torch.float64) * noise)
    return torch.where(v > 0, torch.clamp(v + jit.to(v.device, v.dtype), 0, ticks), v)


def _fire_in_range(la: QSynaptic, z: torch.Tensor, comp: Compiled, noise: float,
                   generator: torch.Generator | None) -> torch.Tensor | None:
    """A layer's output from its potential z (integers held exactly in z's float dtype) when
    no V register overflows: readout logits (int64), or x_ticks = clamp(floor((z + b) / R), 0,
    T) in z's dtype. None when a register might overflow (the caller's int64 path then counts
    it exactly). Float division floors exactly here: for integers |p| < 2^24 (2^53 in float64,
    ``layer_dtypes``) a non-integer p / R is at least 1 / R from every integer and the rounding
    error is below |p| 2^-24 / R. One new tensor, then in place: the int64 path's conversions
    and int64 division cost more than the convolutions."""
    bits = la.widths["V"]
    hi, lo = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
    if z.numel() == 0:
        return None
    zmin, zmax = (float(t) for t in torch.aminmax(z))
    if zmin < lo or zmax > hi:
        return None
    if isinstance(la, QReadout):
        return z.to(torch.int64) + torch.as_tensor(np.asarray(la.bias, np.int64),
                                                   device=z.device)
    r = np.asarray(la.ramp, np.float64)
    if zmin + float(r.min()) * la.ticks < lo or zmax + float(r.max()) * la.ticks > hi:
        return None  # V after the last phase-2 tick might leave the register
    v = torch.add(z, comp.bias[la.name]).div_(comp.ramp[la.name]).floor_().clamp_(0, la.ticks)
    return _jitter(v, la.ticks, noise, generator)
