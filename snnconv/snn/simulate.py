"""Closed-form TTFS simulator: computes every spike time from the file's thresholds, windows and
delays, vectorised over samples and neurons.

Spike times are carried as offsets from the end of their layer's window, s = t_max - t (spec section
4), so long windows do not cancel precision. A neuron's potential at t_min is the sum over its
synapses of w * (t_min - arrival)/tau_c with arrival = t_spike + delay; with s that is
w * max(0, s + t_min - delay - t_max(source))/tau_c for sources that spiked (s > 0) and 0 for
silent ones (an input arriving in phase 2 no longer changes the slope).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .layers import InputLayer, Layer, PoolLayer, ReadoutLayer
from .model import SNN
from .ops import chain_apply
from .results import LayerStats, SimResult


def _t(a, like):
    return torch.as_tensor(np.asarray(a), dtype=like.dtype, device=like.device)


def group_input(g, s_src: torch.Tensor, layer: Layer, src: Layer, tau_c: float) -> torch.Tensor:
    """Potential contribution at t_min(layer) of one synapse group (in value units)."""
    lag = layer.t_min - g.delay - src.t_max  # 0 when the delay lines up the windows
    if lag != 0.0:  # an input arriving at or after t_min adds nothing (phase 2 slope is fixed)
        s_src = torch.where(s_src > 0, torch.clamp(s_src + lag, min=0.0),
                            torch.zeros((), dtype=s_src.dtype))
    y = chain_apply(g.ops, s_src)
    return y / tau_c if tau_c != 1.0 else y


@torch.no_grad()
def simulate(snn: SNN, x, dtype=torch.float64, record: bool | set[str] = False,
             observe: Callable[[Layer, torch.Tensor], None] | None = None,
             noise: float | dict[str, float] = 0.0, generator: torch.Generator | None = None,
             backend: str = "torch") -> SimResult:
    """Run a batch. ``noise``: Gaussian jitter of hidden spike times (std in units of tau_c),
    one for every layer or per layer name (a layer not named does not jitter).

    ``backend``: "torch" (this reference implementation), "onnx" (the same computation compiled
    to an onnxruntime session, cached on the SNN; see ``snnconv.backends.onnx_backend``) or
    "auto" (onnx for float32 runs without ``observe`` or ``noise``, else torch).
    """
    if backend != "torch":
        fast = _fast_backend(backend, dtype, observe, noise)
        if fast is not None:
            return fast.compiled(snn, dtype, record)(x)
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=dtype)
    tau = float(snn.tau_c)
    uses: dict[str, int] = {}
    for la in snn.layers:
        for s in la.sources():
            uses[s] = uses.get(s, 0) + 1
    env: dict[str, torch.Tensor] = {}
    res = SimResult(logits=None)
    n = x.shape[0]
    for layer in snn.layers:
        st = LayerStats(neurons=layer.size, samples=n)
        if isinstance(layer, InputLayer):
            u = (x - _t(layer.lo, x)) / (_t(layer.hi, x) - _t(layer.lo, x))
            st.clipped = int(((u < 0) | (u > 1)).sum())
            s = torch.clamp(u, 0.0, 1.0) * tau  # the window, rounded up, covers tau_c
        elif isinstance(layer, PoolLayer):
            s = layer.apply(env[layer.source])
        else:
            v = None
            for g in layer.groups:
                src = snn.by_name[g.source]
                y = group_input(g, env[g.source], layer, src, tau)
                v = y if v is None else v + y
            if isinstance(layer, ReadoutLayer):
                res.logits = v + _t(layer.bias, v)
                res.stats[layer.name] = st
                break
            raw = tau * (v - _t(layer.theta_rel, v))
            w = layer.window
            if not layer.saturating:
                st.clipped = int((raw > w).sum())
            s = torch.clamp(raw, 0.0, w)
            sd = noise.get(layer.name, 0.0) if isinstance(noise, dict) else noise
            if sd:
                jit = torch.randn(s.shape, generator=generator, dtype=s.dtype) * (sd * tau)
                s = torch.where(s > 0, torch.clamp(s + jit, 0.0, w), s)
        st.spikes = int((s > 0).sum())
        res.stats[layer.name] = st
        if observe is not None:
            observe(layer, s)
        if record is True or (isinstance(record, set) and layer.name in record):
            res.offsets[layer.name] = s
        env[layer.name] = s
        for src in layer.sources():
            uses[src] -= 1
            if uses[src] == 0:
                env.pop(src, None)
    return res


def _fast_backend(backend, dtype, observe, noise):
    if backend not in ("onnx", "auto"):
        raise ValueError(f"backend {backend!r}: choose 'torch', 'onnx' or 'auto'")
    plain = observe is None and not noise
    if backend == "auto":
        if not plain or dtype != torch.float32:
            return None
    elif not plain:
        raise ValueError("backend 'onnx' supports neither observe nor noise")
    from ..backends import onnx_backend

    if backend == "auto" and not onnx_backend.available():  # pragma: no cover
        return None
    return onnx_backend


def spike_times(layer: Layer, offsets: torch.Tensor) -> torch.Tensor:
    """Absolute spike times (inf where the neuron stays silent)."""
    t = layer.t_max - offsets.to(torch.float64)
    return torch.where(offsets > 0, t, torch.full_like(t, float("inf")))
