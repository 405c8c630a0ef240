"""The register-level simulator: the I and V registers stepped tick by tick in the order of spec
section 5 (I += W for spikes at k; phase 1 V += I; phase 2 compare, then V += R), overflow of
either register flagged and saturated or wrapped per profile. It must agree with ``golden`` bit
for bit: that is the contract a hardware team verifies its RTL against.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from ..snn import kernels
from ..walk import walk
from .common import Compiled, IntResult, channel_select, encode_input, fire_ticks, limit, \
    recorded
from .layers import QInput, QNet, QNeuron, QPool, QReadout, QSynaptic


@torch.no_grad()
def regsim(net: QNet, x, record: bool | set = False, dtype: torch.dtype | None = None) -> IntResult:
    """Tick-by-tick simulation of the I and V registers (spec section 5 event order).

    Spike trains are kept as absolute firing ticks (-1 = silent); a layer's synapse groups see a
    source spike at its firing tick plus the group's delay. ``dtype`` of the registers: one for
    every layer, or None for each layer's own (``layer_dtypes``); exact either way.
    """
    comp = Compiled(net, dtype)  # None: per-layer precision, as golden
    res = IntResult(logits=None)
    # looked up on the package at each run: a test swaps in a broken step to show that
    # verify_integer catches a simulator that disagrees with the golden model
    layer_ticks = sys.modules[__package__]._layer_ticks

    def step(la, env):  # env: firing ticks (int64), -1 = silent
        if isinstance(la, QInput):
            xt = encode_input(la, x, torch.float64).to(torch.int64)
            tk = fire_ticks(la, xt)
            res.samples = tk.shape[0]
        elif isinstance(la, QPool):
            tk = _pool_ticks(la, env[la.source])
        else:
            tk, ov, logits = layer_ticks(net, la, comp, env, comp.dtypes[la.name])
            res.overflow[la.name] = ov
            if isinstance(la, QReadout):
                res.logits = logits
                return tk
        if isinstance(la, (QNeuron, QPool)):
            res.spikes[la.name] = int((tk >= 0).sum())
        if recorded(record, la):
            res.ticks[la.name] = torch.where(tk >= 0, la.t_max - tk, torch.zeros_like(tk))
        return tk

    walk(net.evaluated(), step, name=lambda la: la.name, sources=lambda la: la.sources())
    return res


def _pool_ticks(la: QPool, src: torch.Tensor) -> torch.Tensor:
    """A pool unit has no register: its output line is the OR (max-pool) or the AND (min-pool
    channels) of its input spike lines, so it first carries a spike at the earliest input
    firing tick (OR) or, once every input has fired, at the latest (AND; never if one stays
    silent). Padded taps carry no line."""
    args = la.args()
    mins = np.asarray(la.minimum, bool).reshape(-1)
    # silent (-1), or outside the pool's window: never
    live = (src >= la.t_min) & (src < la.t_max)
    t = torch.where(live, src.to(torch.float64), math.inf)
    y = None
    if not mins.all():
        y = kernels.pool(t, "min", *args)  # padded taps are +inf: never first
    if mins.any():
        last = kernels.pool(t, "max", *args)  # padded taps are -inf: never last
        y = last if y is None else torch.where(channel_select(la, mins), last, y)
    return torch.nan_to_num(y, posinf=-1.0).to(torch.int64)


def _arrivals(la: QSynaptic, env: dict) -> tuple[list[torch.Tensor], int, set]:
    """Per group, the tick each source spike reaches the synapses (-1 = never); the first tick
    the layer must step from; the ticks at which any spike arrives."""
    arrivals = []
    k0 = la.t_min
    for g in la.groups:
        src_t = env[g.source]
        arr = torch.where(src_t >= 0, src_t + g.delay, torch.full_like(src_t, -1))
        arrivals.append(arr)
        hit = arr[arr >= 0]
        if hit.numel():
            k0 = min(k0, int(hit.min()))
    busy = set()
    for arr in arrivals:
        busy.update(torch.unique(arr[arr >= 0]).tolist())
    return arrivals, k0, busy


def _layer_ticks(net: QNet, la: QSynaptic, comp: Compiled, env, dtype):
    """The registers of one layer, tick by tick. I and V hold integers in ``dtype`` (exact: every
    value the registers can take is below 2^24, or 2^53 in float64, ``layer_dtypes``), updated
    in place; a register that leaves its width is wrapped or saturated exactly (``limit``)."""
    n = next(iter(env.values())).shape[0]
    shape = (n, *la.shape)
    wv, wi = la.widths["V"], la.widths["I"]
    mode = net.overflow
    V = torch.zeros(shape, dtype=dtype)
    current = torch.zeros(shape, dtype=dtype)
    bad = torch.zeros(shape, dtype=torch.bool)
    out = torch.full(shape, -1, dtype=torch.int64)
    fired = torch.zeros(shape, dtype=torch.bool)
    arrivals, k0, busy = _arrivals(la, env)  # other ticks only integrate I
    is_out = isinstance(la, QReadout)
    k_end = la.t_min if is_out else la.t_max
    if not is_out:
        R = comp.ramp[la.name]
        theta = torch.as_tensor(np.asarray(la.theta, np.float64), dtype=dtype)
    for k in range(k0, k_end):
        for gi, arr in enumerate(arrivals):
            if k not in busy:
                break
            current.add_(comp.group(la, gi, (arr == k).to(dtype)))
            current, b = limit(current, wi, mode)
            if b is not None:
                bad |= b
        if k < la.t_min:
            V, b = limit(V.add_(current), wv, mode)
        else:
            fire = (V >= theta).logical_and_(~fired)
            out.masked_fill_(fire, k)
            fired.logical_or_(fire)
            V, b = limit(V.add_(R), wv, mode)
        if b is not None:
            bad |= b
    logits = None
    if is_out:
        logits = V.to(torch.int64) + torch.as_tensor(np.asarray(la.bias, np.int64))
    return out, int(bad.sum()), logits
