"""Event-driven TTFS simulator: integrates the neuron dynamics of the spec (section 2) from the
spike times, delays and windows the SNN holds, as an independent check of the closed form.

The closed form (``snnconv.snn.simulate``) assumes every input spike arrives before t_min and that
the potential is exactly the weighted sum of ramp lengths, so it cannot notice a wrong integration
start, a wrong delay, a spike that arrives too late, or a gating error. Here each layer is run as a
physical process:

* Every source spike becomes an arrival event at ``spike time + delay`` of its group; a silent
  neuron produces no event (its time is +inf). Inputs are encoded from ``InputLayer.lo/hi`` and the
  input window as in the closed-form simulator.
* V = 0 and slope 0 at the integration start, the earliest time any input of the layer can arrive
  (``integration_start``: min over groups of t_min(source) + delay), not at t_min of the previous
  stage: a delayed skip spike may arrive earlier than that.
* Phase 1 (t < t_min): the slope is the group's synaptic map applied to the indicator of the
  inputs arrived so far, / tau_c: piecewise constant, changing at each arrival. V is advanced from
  block end to block end along each sample's sorted arrival times. Over a block [p, q] an input
  arrived at e adds the map of its ramp clamp(q - e, 0) - clamp(p - e, 0) (q - p if it arrived
  before p, q - e if it arrives inside, 0 if later or never), so a block of any number of events
  costs one map application per group instead of one per spike. Blocks end at per-sample quantiles
  of the arrival times (``steps`` blocks, the last one ends at t_min); every block integral is
  exact, so the result does not depend on ``steps`` (up to rounding) and ``steps=None`` steps from
  each arrival to the next. (With one block the arithmetic is the closed form's sum of ramp
  lengths; the default uses several.)
* Phase 2 (t_min <= t < t_max): slope exactly 1/tau_c, arrivals ignored. The neuron fires at the
  first t >= t_min with V >= theta (level-triggered: a crossing in phase 1 does not fire it, V at
  t_min above theta fires it at t_min); if that time is not before t_max it stays silent.
  theta = theta_rel + window/tau_c.
* Pools forward the earliest input spike (or, on channels marked ``minimum``, the latest; a silent
  input is the latest); padded taps never spike. The readout is V(t_min) + bias.

Time frames (spec section 4, numerics): absolute times reach the latency, which grows ~10x per layer
with bound-derived windows, and absolute spike times would lose the small values to rounding. So a
layer's spike times are kept relative to its own t_max (r = t - t_max in [-window, 0), +inf when
silent) and arrivals relative to the receiving layer's t_min (a - t_min = r + t_max(source) + delay
- t_min, where the constant is exact for the dyadic windows ``windows.py`` produces). In phase 2 the
potential is compared with theta in the t_max frame, V(t) - theta = V(t_min) - theta_rel + (t -
t_max)/tau_c, where the window/tau_c terms of theta and of the ramp cancel exactly instead of being
rounded at the scale of the window.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..tensors import like
from . import kernels
from .layers import (
    Group, InputLayer, Layer, NeuronLayer, PoolLayer, ReadoutLayer, walk_layers,
)
from .model import SNN
from .ops import chain_apply
from .results import SimResult, keep_offsets, start_layer

INF = float("inf")


def _shift(snn: SNN, layer: Layer, g: Group) -> float:
    """t_max(source) + delay - t_min(layer): 0 when the delay lines up the windows."""
    return snn.by_name[g.source].t_max + g.delay - layer.t_min


def integration_start(snn: SNN, layer: Layer) -> float:
    """Earliest possible arrival at ``layer`` (a source spike at its t_min, plus the delay),
    relative to t_min(layer): V = 0 up to here."""
    return min(-snn.by_name[g.source].window + _shift(snn, layer, g) for g in layer.groups)


def arrivals(snn: SNN, layer: Layer, g: Group, r_src: torch.Tensor) -> torch.Tensor:
    """Arrival times of a group's input spikes relative to t_min(layer); +inf for silent inputs."""
    shift = _shift(snn, layer, g)
    return r_src + shift if shift != 0.0 else r_src


def _map(g: Group, x: torch.Tensor, tau: float) -> torch.Tensor:
    y = chain_apply(g.ops, x)
    return y / tau if tau != 1.0 else y


def potential_at_t_min(snn: SNN, layer: Layer, events: list[torch.Tensor],
                       steps: int | None = 4) -> torch.Tensor:
    """Integrate phase 1 from the integration start to t_min; returns V(t_min), shape (N, *shape).

    ``events[i]`` are the arrival times (relative to t_min) of group i's inputs. An input arrived
    at e adds the step H(t - e) to the slope (times its weights / tau_c), so over a block of time
    [p, q] it adds to V the map of its ramp inside the block, clamp(q - e, 0) - clamp(p - e, 0):
    q - p if it arrived before p, q - e if it arrives inside, 0 if later or never (e = +inf).
    One map application per block and group advances V from block end to block end.
    """
    tau = float(snn.tau_c)
    n = events[0].shape[0]
    dtype = events[0].dtype
    start = integration_start(snn, layer)
    # Block ends: per sample, the arrival of rank ceil(k m / K) among its m phase-1 arrivals
    # (start < e < t_min); the last block ends at t_min. An input arriving before ``start`` (none
    # unless the start is wrong) ramps V only from ``start`` on: what a reset there would do.
    k_steps, order, count = 1, None, None
    if steps is None or steps > 1:
        flat = torch.cat([torch.where((e > start) & (e < 0), e, INF).reshape(n, -1)
                          for e in events], 1)
        count = torch.isfinite(flat).sum(1)
        m_max = int(count.max()) if n else 0
        k_steps = max(1, m_max if steps is None else min(int(steps), m_max))
        if k_steps > 1:
            order = torch.sort(flat, dim=1).values[:, :m_max]
    v = None
    prev = torch.full((n,), start, dtype=dtype, device=events[0].device)
    for k in range(1, k_steps + 1):
        if k < k_steps:
            idx = torch.clamp(torch.div(k * count + k_steps - 1, k_steps, rounding_mode="floor")
                              - 1, min=0)
            end = torch.where(count > 0, order.gather(1, idx[:, None])[:, 0], prev)
        else:
            end = torch.zeros_like(prev)  # after the last arrival the slope holds
        for g, e in zip(layer.groups, events):
            shape = (-1,) + (1,) * (e.dim() - 1)
            ramp = (torch.clamp(end.reshape(shape) - e, min=0.0)
                    - torch.clamp(prev.reshape(shape) - e, min=0.0))
            y = _map(g, ramp, tau)
            v = y if v is None else v + y
        prev = end
    return v


def fire(layer: NeuronLayer, v0: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Phase 2: spike times relative to t_max (+inf = silent) and a mask of clipped neurons.

    V(t) - theta = (V(t_min) - theta_rel) + (t - t_max)/tau_c rises with slope 1/tau_c; its zero
    is at r_cross = -tau_c (V(t_min) - theta_rel) relative to t_max.
    """
    w = layer.window
    r_cross = -tau * (v0 - like(layer.theta_rel, v0))
    at_start = r_cross <= -w  # V(t_min) >= theta: fires at once (level-triggered)
    in_window = r_cross < 0  # reaches theta before t_max (the window is half-open)
    r = torch.where(at_start, torch.full_like(r_cross, -w),
                    torch.where(in_window, r_cross, torch.full_like(r_cross, INF)))
    clipped = (r_cross < -w) if not layer.saturating else torch.zeros_like(at_start)
    return r, clipped


def pool(layer: PoolLayer, r: torch.Tensor) -> torch.Tensor:
    """Earliest (or per channel latest) input spike; +inf (silent) is the latest, pads never win."""
    out = tuple(layer.shape[1:])
    args = (layer.kernel, layer.stride, layer.pads_begin, layer.pads_end, layer.dilation, out)
    mins = np.asarray(layer.minimum if layer.minimum is not None else False, bool).reshape(-1)
    earliest = -kernels.pool(-r, "max", *args) if not mins.all() else None
    latest = kernels.pool(r, "max", *args) if mins.any() else None
    if latest is None:
        return earliest
    if earliest is None:
        return latest
    sel = torch.as_tensor(mins, device=r.device).reshape((1, -1) + (1,) * len(out))
    return torch.where(sel, latest, earliest)


def encode_input(layer: InputLayer, x: torch.Tensor, tau_c: float) -> tuple[torch.Tensor, int]:
    """Input spike times relative to t_max (+inf for values at ``lo``) and the clipped count."""
    u = layer.normalise(x)
    clipped = int(((u < 0) | (u > 1)).sum())
    s = torch.clamp(u, 0.0, 1.0) * tau_c  # the window, rounded up, covers tau_c
    return torch.where(s > 0, -s, torch.full_like(s, INF)), clipped


def offsets(r: torch.Tensor) -> torch.Tensor:
    """Spike-time offsets from the window end as the closed form reports them (0 = silent)."""
    return torch.where(torch.isfinite(r), -r, torch.zeros((), dtype=r.dtype))


@torch.no_grad()
def simulate_events(snn: SNN, x, dtype=torch.float64, record: bool | set[str] = False,
                    observe: Callable[[Layer, torch.Tensor], None] | None = None,
                    steps: int | None = 4) -> SimResult:
    """Run a batch event by event; same result type (offsets, stats) as ``simulate.simulate``.

    ``steps``: event blocks per layer (cost ~ 2 * steps synaptic-map applications per group);
    ``None`` steps from each arrival to the next (exact event order, slow on big layers).
    """
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1 or None, got {steps}")
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=dtype)
    tau = float(snn.tau_c)
    res = SimResult(logits=None)

    def step(layer: Layer, env: dict[str, torch.Tensor]) -> torch.Tensor:
        """Spike times of ``layer`` relative to its t_max, +inf silent (the readout: logits)."""
        st = start_layer(res, layer, x.shape[0])
        if isinstance(layer, InputLayer):
            r, st.clipped = encode_input(layer, x, snn.tau_c)
        elif isinstance(layer, PoolLayer):
            r = pool(layer, env[layer.source])
        elif isinstance(layer, (NeuronLayer, ReadoutLayer)):
            events = [arrivals(snn, layer, g, env[g.source]) for g in layer.groups]
            v0 = potential_at_t_min(snn, layer, events, steps)
            if isinstance(layer, ReadoutLayer):
                res.logits = v0 + like(layer.bias, v0)
                return res.logits
            r, clipped = fire(layer, v0, tau)
            st.clipped = int(clipped.sum())
        else:  # pragma: no cover - the SNN holds no other layer kinds
            raise TypeError(f"layer {layer.name}: unknown kind {layer.kind}")
        st.spikes = int(torch.isfinite(r).sum())
        if observe is not None or record:
            s = offsets(r)
            if observe is not None:
                observe(layer, s)
            keep_offsets(res, layer, s, record)
        return r

    walk_layers(snn.layers, step)
    return res


__all__ = ["simulate_events", "integration_start", "potential_at_t_min", "fire", "pool",
           "encode_input", "arrivals", "offsets"]
