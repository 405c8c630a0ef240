"""Time-stepped simulation of a rate net, vectorised over the batch (one pass over the nodes per
step; no per-neuron or per-spike loops).

Nodes whose inputs never change (the input and the affine nodes fed only by it) are computed
once: the first layer's analog current is the same every step. Readouts, spike counts and
synaptic events are recorded at each requested step count, so one run of T_max steps answers
every T <= T_max (the first T steps of a longer run are the run of T steps).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import model as rm


@dataclass
class RateResult:
    """Per requested T: ``readout[T]`` (N, K) = Output membrane / T; ``spikes[T][node]`` the
    spikes of an IF node summed over batch, neurons and steps; ``events[T]`` synaptic events
    (spikes arriving at a synapse, summed over the batch). ``counts`` (per neuron, (N, *shape),
    for the last T) is filled when asked for."""

    steps: tuple[int, ...]
    batch: int
    readout: dict[int, torch.Tensor] = field(default_factory=dict)
    spikes: dict[int, dict[str, float]] = field(default_factory=dict)
    events: dict[int, float] = field(default_factory=dict)
    counts: dict[str, torch.Tensor] = field(default_factory=dict)


#: IF arrays given per channel (C,) for a (C, H, W) layer
PER_CHANNEL = ("threshold", "v_init")


def _t(a, dtype, shape_len: int | None = None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a), dtype=dtype)
    if shape_len is not None and t.ndim == 1 and shape_len > 1:  # (C,) -> (C, 1, 1)
        t = t.reshape((-1,) + (1,) * (shape_len - 1))
    return t


def params(net: rm.RateNet, dtype) -> dict[str, dict[str, torch.Tensor]]:
    """Every node's arrays as tensors (IF arrays per channel shaped to broadcast)."""
    return {n.name: {k: _t(getattr(n, k), dtype, len(n.shape) if k in PER_CHANNEL else None)
                     for k in rm.ARRAYS if getattr(n, k, None) is not None} for n in net.nodes}


def affine(n: rm.Node, p: dict[str, torch.Tensor], xs: list[torch.Tensor]) -> torch.Tensor:
    """One step of a node that holds no state (all but IF, MaxPool2d and Output): the same map
    in the IF simulation and in the ReLU proxy. An Input maps the given ``xs[0]``."""
    k, x = n.kind, xs[0]
    if k == "input":
        return x * p.get("scale", 1.0) + p.get("shift", 0.0)
    if k == "linear":
        return F.linear(x, p["weight"], p.get("bias"))
    if k == "conv2d":
        return F.conv2d(x, p["weight"], p.get("bias"), n.stride, n.padding, n.dilation,
                        n.groups)
    if k == "scale":
        return x * p["scale"] + p.get("shift", 0.0)
    if k == "avgpool2d":
        return F.avg_pool2d(x, n.kernel, n.stride, n.padding, count_include_pad=False)
    if k == "sumpool2d":
        return F.avg_pool2d(x, n.kernel, n.stride, n.padding, divisor_override=1)
    if k == "flatten":
        return x.reshape(x.shape[0], -1)
    if k == "add":
        return sum(xs[1:], x)
    if k == "concat":
        return torch.cat(xs, dim=n.axis + 1)
    raise ValueError(f"node {n.name}: unknown kind {k}")


class Stepper:
    """The per-step evaluation of every node, with the state IF and max-pool nodes keep."""

    def __init__(self, net: rm.RateNet, x: torch.Tensor, dtype=torch.float32,
                 override: dict[str, dict[str, torch.Tensor]] | None = None):
        """``override``: arrays to use instead of the model's (a proxy trainer's weights)."""
        self.net, self.dtype, self.n = net, dtype, x.shape[0]
        self.static: dict[str, torch.Tensor] = {}
        self.state: dict[str, torch.Tensor] = {}
        self.p = params(net, dtype)
        for k, v in (override or {}).items():
            self.p[k].update(v)
        self.x = x.to(dtype)
        for n in net.nodes:
            if isinstance(n, rm.IF):
                self.state[n.name] = self.p[n.name]["v_init"].expand(self.n, *n.shape).clone()
            elif isinstance(n, rm.MaxPool2d):
                shp = net.by_name[n.inputs[0]].shape
                self.state[n.name] = torch.zeros((self.n, *shp), dtype=dtype)
            elif isinstance(n, rm.Output):
                self.state[n.name] = torch.zeros((self.n, *n.shape), dtype=dtype)

    def step(self) -> dict[str, torch.Tensor]:
        """One time step; returns every node's output this step (static ones are cached)."""
        env: dict[str, torch.Tensor] = dict(self.static)
        for n in self.net.nodes:
            if n.name in env:
                continue
            out = self.eval(n, [env[i] for i in n.inputs])
            env[n.name] = out
            if self.is_static(n):
                self.static[n.name] = out
        return env

    def is_static(self, n: rm.Node) -> bool:
        if isinstance(n, rm.Input):
            return True
        if n.kind in ("if", "maxpool2d", "output"):
            return False
        return all(i in self.static for i in n.inputs)

    def eval(self, n: rm.Node, xs: list[torch.Tensor]) -> torch.Tensor:
        if n.kind == "input":
            return affine(n, self.p[n.name], [self.x])
        if n.kind == "if":
            return self.fire(n, xs[0])
        if n.kind == "maxpool2d":
            return self.gate(n, xs[0])
        if n.kind == "output":
            self.state[n.name] += xs[0]
            return self.state[n.name]
        return affine(n, self.p[n.name], xs)

    def fire(self, n: rm.IF, current: torch.Tensor) -> torch.Tensor:
        v = self.state[n.name]
        v += current
        theta = self.p[n.name]["threshold"]
        s = (v >= theta).to(self.dtype)
        if n.reset == "subtract":
            v -= s * theta
        else:
            v *= 1.0 - s
        return s

    def gate(self, n: rm.MaxPool2d, s: torch.Tensor) -> torch.Tensor:
        """Forward, per window, the spike of the input with the most spikes so far (this step
        included; first in row-major order on ties; padding never wins). torch's max-pool keeps
        the first maximum of a window and pads with -inf: exactly this rule (the loop reference
        in tests/test_rate.py checks it)."""
        c = self.state[n.name]
        c += s
        _, idx = F.max_pool2d(c, n.kernel, n.stride, n.padding, n.dilation,
                              return_indices=True)
        out = s.flatten(2).gather(2, idx.flatten(2))
        return out.reshape(self.n, *n.shape)


def fanouts(net: rm.RateNet) -> dict[str, torch.Tensor]:
    """Synapses leaving each input position of every Linear/Conv2d/Scale node (nonzero weights),
    so events = input count x fan-out."""
    out = {}
    for n in net.nodes:
        shp = net.by_name[n.inputs[0]].shape if n.inputs else ()
        if isinstance(n, rm.Linear):
            out[n.name] = torch.as_tensor((np.asarray(n.weight) != 0).sum(0), dtype=torch.float64)
        elif isinstance(n, rm.Conv2d):
            x = torch.ones((1, *shp), dtype=torch.float64, requires_grad=True)
            m = torch.as_tensor((np.asarray(n.weight) != 0).astype(np.float64))
            F.conv2d(x, m, None, n.stride, n.padding, n.dilation, n.groups).sum().backward()
            out[n.name] = x.grad[0]
        elif isinstance(n, rm.Scale):
            out[n.name] = torch.as_tensor(np.array(np.broadcast_to(np.asarray(n.scale) != 0, shp)),
                                          dtype=torch.float64)
    return out


def simulate(net: rm.RateNet, x, steps: int | Iterable[int] | None = None,
             dtype=torch.float32, counts: bool = False) -> RateResult:
    """Run ``net`` on a batch ``x`` (N, *input shape) for max(steps) steps (default: the
    model's own T), recording at every T in ``steps``."""
    want = (net.steps,) if steps is None else (steps,) if isinstance(steps, int) \
        else tuple(sorted(set(int(t) for t in steps)))
    if min(want) < 1:
        raise ValueError(f"steps must be >= 1, got {want}")
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    res = RateResult(want, int(x.shape[0]))
    fan = fanouts(net)
    ifs = [n.name for n in net.neurons()]
    tot = {k: torch.zeros(net.by_name[net.by_name[k].inputs[0]].shape, dtype=torch.float64)
           for k in fan}
    spk = {k: 0.0 for k in ifs}
    cnt = {k: torch.zeros((x.shape[0], *net.by_name[k].shape), dtype=dtype) for k in ifs} \
        if counts else {}
    with torch.no_grad():
        sim = Stepper(net, x, dtype)
        for t in range(1, max(want) + 1):
            env = sim.step()
            for k in ifs:
                spk[k] += float(env[k].sum())
                if counts:
                    cnt[k] += env[k]
            for k in fan:
                src = net.by_name[k].inputs[0]
                if src not in sim.static:
                    tot[k] += env[src].sum(0).to(torch.float64)
            if t in want:
                res.readout[t] = env[net.output.name] / t
                res.spikes[t] = dict(spk)
                res.events[t] = float(sum((tot[k] * fan[k]).sum() for k in fan))
    res.counts = cnt
    return res
