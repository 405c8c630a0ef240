"""Closed-form TTFS simulator: computes every spike time from the file's thresholds, windows and
delays, vectorised over samples and neurons.

Spike times are carried as offsets from the end of their layer's window, s = t_max - t (spec section
4), so long windows do not cancel precision. A neuron's potential at t_min is the sum over its
synapses of w * (t_min - arrival)/tau_c with arrival = t_spike + delay; with s that is
w * max(0, s + t_min - delay - t_max(source))/tau_c for sources that spiked (s > 0) and 0 for
silent ones (an input arriving in phase 2 no longer changes the slope). Then
s = clip(tau_c (V(t_min) - theta_rel), 0, window): the neuron of spec section 2.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..tensors import like
from .layers import InputLayer, Layer, NeuronLayer, PoolLayer, ReadoutLayer, walk_layers
from .model import SNN
from .ops import chain_apply
from .results import LayerStats, SimResult, keep_offsets, start_layer

def group_input(g, s_src: torch.Tensor, layer: Layer, src: Layer, tau_c: float) -> torch.Tensor:
    """Potential contribution at t_min(layer) of one synapse group (in value units)."""
    lag = layer.t_min - g.delay - src.t_max  # 0 when the delay lines up the windows
    if lag != 0.0:  # an input arriving at or after t_min adds nothing (phase 2 slope is fixed)
        s_src = torch.where(s_src > 0, torch.clamp(s_src + lag, min=0.0),
                            torch.zeros((), dtype=s_src.dtype))
    y = chain_apply(g.ops, s_src)
    return y / tau_c if tau_c != 1.0 else y


def encode(layer: InputLayer, x: torch.Tensor, tau_c: float, st: LayerStats) -> torch.Tensor:
    """Input offsets: x in [lo, hi] on [0, tau_c] (the window, rounded up, covers tau_c);
    values outside are clipped and counted."""
    u = layer.normalise(x)
    st.clipped = int(((u < 0) | (u > 1)).sum())
    return torch.clamp(u, 0.0, 1.0) * tau_c


def potential(snn: SNN, layer: Layer, env: dict[str, torch.Tensor], tau_c: float):
    """V(t_min) of every neuron of ``layer``: the sum of its groups' contributions."""
    v = None
    for g in layer.groups:
        y = group_input(g, env[g.source], layer, snn.by_name[g.source], tau_c)
        v = y if v is None else v + y
    return v


def fire(layer: NeuronLayer, v: torch.Tensor, tau_c: float, st: LayerStats, sd: float,
         generator: torch.Generator | None) -> torch.Tensor:
    """Offsets s = clip(tau_c (V - theta_rel), 0, window), optionally jittered by ``sd``
    (units of tau_c; silent neurons do not jitter); values above the window are counted."""
    raw = tau_c * (v - like(layer.theta_rel, v))
    w = layer.window
    if not layer.saturating:
        st.clipped = int((raw > w).sum())
    s = torch.clamp(raw, 0.0, w)
    if sd:
        # drawn on the CPU (the generator's device) so every device sees the same jitter
        jit = torch.randn(s.shape, generator=generator, dtype=s.dtype).to(s.device)
        jit = jit * (sd * tau_c)
        s = torch.where(s > 0, torch.clamp(s + jit, 0.0, w), s)
    return s


def simulate(snn: SNN, x, dtype=torch.float64, record: bool | set[str] = False,
             observe: Callable[[Layer, torch.Tensor], None] | None = None,
             noise: float | dict[str, float] = 0.0, generator: torch.Generator | None = None,
             backend: str = "torch", device=None) -> SimResult:
    """Run a batch. ``noise``: Gaussian jitter of hidden spike times (std in units of tau_c),
    one for every layer or per layer name (a layer not named does not jitter).

    ``backend``: "torch" (this reference implementation), "onnx" (the same computation compiled
    to an onnxruntime session, cached on the SNN; see ``snnconv.backends.onnx_backend``) or
    "auto" (onnx for float32 runs without ``observe`` or ``noise``, else torch).

    ``device``: ``auto``, ``cpu``, ``cuda[:N]``, ``mps`` or a torch device (``devices.resolve``);
    the batch is computed there and the result's tensors stay there. Default: where ``x`` is
    (the CPU for arrays). MPS runs float32 only.
    """
    if backend != "torch":  # before torch's no_grad: a batch of one notices its cost
        fast = _fast_backend(backend, dtype, observe, noise)
        if fast is not None:
            return fast.compiled(snn, dtype, record)(x)
    with torch.no_grad():
        return _closed_form(snn, x, dtype, record, observe, noise, generator, device)


def _closed_form(snn: SNN, x, dtype, record, observe, noise, generator, device) -> SimResult:
    """The reference implementation (``backend="torch"``)."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=dtype)
    if device is not None:
        x = _on(x, device, dtype)
    tau = float(snn.tau_c)
    res = SimResult(logits=None)

    def step(layer: Layer, env: dict[str, torch.Tensor]) -> torch.Tensor:
        st = start_layer(res, layer, x.shape[0])
        if isinstance(layer, InputLayer):
            s = encode(layer, x, tau, st)
        elif isinstance(layer, PoolLayer):
            s = layer.apply(env[layer.source])
        else:
            v = potential(snn, layer, env, tau)
            if isinstance(layer, ReadoutLayer):
                res.logits = v + like(layer.bias, v)
                return res.logits
            sd = noise.get(layer.name, 0.0) if isinstance(noise, dict) else noise
            s = fire(layer, v, tau, st, sd, generator)
        st.spikes = int((s > 0).sum())
        if observe is not None:
            observe(layer, s)
        keep_offsets(res, layer, s, record)
        return s

    walk_layers(snn.layers, step)
    return res


def _on(x: torch.Tensor, device, dtype) -> torch.Tensor:
    from ..devices import resolve

    dev = resolve(device)
    if dtype == torch.float64:
        dev.require_float64("a float64 simulation (pass dtype=torch.float32)")
    return x.to(dev.torch)


def _fast_backend(backend, dtype, observe, noise):
    if backend not in ("onnx", "auto"):
        raise ValueError(f"backend {backend!r}: choose 'torch', 'onnx' or 'auto'")
    plain = observe is None and not noise
    if backend == "auto":
        if not plain or dtype != torch.float32:
            return None
    elif not plain:
        raise ValueError("backend 'onnx' supports neither observe nor noise")
    if not _ONNX:  # imported on first use: it imports onnx, which torch runs need not
        from ..backends import onnx_backend

        _ONNX.append(onnx_backend if onnx_backend.available() else None)
    if _ONNX[0] is None:  # pragma: no cover - onnxruntime is a dependency
        if backend == "auto":
            return None
        raise RuntimeError("backend 'onnx' needs onnxruntime (pip install onnxruntime)")
    return _ONNX[0]


#: the onnx backend module once imported (None: onnxruntime is missing); checked per call,
#: which a batch of one notices when it is an import statement
_ONNX: list = []


def spike_times(layer: Layer, offsets: torch.Tensor) -> torch.Tensor:
    """Absolute spike times (inf where the neuron stays silent)."""
    t = layer.t_max - offsets.to(torch.float64)
    return torch.where(offsets > 0, t, torch.full_like(t, float("inf")))
