"""The fake-quant training forward: the integer network with real-valued latents.

The forward pass computes exactly what the integer golden model computes (integer weights,
floor requantisation, clipping at T ticks, integer logits); only the backward pass differs:
round/floor pass gradients straight through, and the clip passes them where 0 < V/R < T, which is
the B=1 TTFS gradient (equal to the ReLU network's). Jitter (``noise``, in ticks) is added to
spiking neurons only and clipped to the window.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import quant
from ..intmodel import QLayer, QNet, apply_op, encode_input, op_array, pool_values
from ..tensors import like
from ..walk import walk

WEIGHTED_KINDS = ("neuron", "readout")


class FakeQuantNet(torch.nn.Module):
    """The integer network with trainable latents. ``forward`` returns integer logits (as floats).

    ``wq``: quantise weights (all, or a set of layer names); ``aq``: floor/clip activations to
    ticks (False: real-valued, still clipped at T). With both on and ``dtype=exact_dtype(net)``,
    the output equals ``intmodel.golden`` bit for bit. Training runs in float32 (``dtype``
    None): exact while the sums stay below 2^24, which real activations do even where the
    worst case does not (8-bit weights, 256 ticks), and several times faster than float64 on
    a CPU; the export is checked in the exact dtype.
    """

    def __init__(self, net: QNet, lat: quant.Latent, dtype: torch.dtype | None = None):
        super().__init__()
        self.net = net
        self.dtype = dtype or torch.float32
        self.w = torch.nn.ParameterDict()
        self.b = torch.nn.ParameterDict()
        self.frozen: dict[tuple[str, int, int], torch.Tensor] = {}
        ref = torch.zeros((), dtype=self.dtype)
        ref32 = torch.zeros((), dtype=torch.float32)
        for la in net.layers:
            if la.kind not in WEIGHTED_KINDS:
                continue
            key = param_key(la.name)
            for gi, g in enumerate(la.groups):
                w = lat.weights[la.name][gi]
                if w is not None:
                    self.w[f"{key}__{gi}"] = torch.nn.Parameter(like(w, ref32))
                for oi, op in enumerate(g.ops):
                    a = op_array(op)
                    if a is not None and w is None:
                        self.frozen[(la.name, gi, oi)] = like(a, ref)
            self.b[key] = torch.nn.Parameter(like(lat.bias[la.name], ref32))
        self.ramp = {la.name: like(la.ramp, ref) for la in net.layers if la.kind == "neuron"}
        # b_int holds + R//2 so that the floor rounds to nearest; real-valued activations
        # (aq=False) take it out again, or every neuron would carry half a tick too much
        rounding = net.meta.get("quantization", {}).get("round_activations", True)
        self.half = {k: torch.div(r, 2, rounding_mode="floor") if rounding else
                     torch.zeros_like(r) for k, r in self.ramp.items()}
        self.out_step = like(np.asarray(net.output.step, np.float64), ref32)

    def to_device(self, device) -> FakeQuantNet:
        """Parameters and every fixed tensor on ``device`` (training on a GPU)."""
        self.to(device)
        for d in (self.frozen, self.ramp, self.half):
            for k, v in d.items():
                d[k] = v.to(device)
        self.out_step = self.out_step.to(device)
        return self

    def latent(self) -> quant.Latent:
        lat = quant.Latent()
        for la in self.net.layers:
            if la.kind not in WEIGHTED_KINDS:
                continue
            key = param_key(la.name)
            lat.weights[la.name] = [
                self.w[f"{key}__{gi}"].detach().double().numpy().copy()
                if f"{key}__{gi}" in self.w else None for gi in range(len(la.groups))]
            lat.bias[la.name] = self.b[key].detach().double().numpy().copy()
        return lat

    def encode(self, x) -> torch.Tensor:
        return encode_input(self.net.input, x, self.dtype)

    def forward(self, x_ticks: torch.Tensor, noise: float = 0.0, wq=True, aq: bool = True,
                generator: torch.Generator | None = None, activity: list | None = None,
                record: dict | None = None) -> torch.Tensor:
        """Integer logits of ``x_ticks``; ``activity`` collects every neuron layer's ticks / T
        (for the sparsity term), ``record`` every non-readout layer's values."""
        layers = self.net.layers
        end = next((i for i, la in enumerate(layers) if la.kind == "readout"), None)
        if end is None:
            raise RuntimeError("no readout layer")

        def step(la: QLayer, env: dict) -> torch.Tensor:
            if la.kind == "input":
                v = x_ticks  # inputs are ticks in both modes
            elif la.kind == "pool":
                v = pool_values(self.net, la, env[la.source])
            else:
                qw = wq is True or (not isinstance(wq, bool) and la.name in wq)
                vz = self._potential(la, env, qw)
                if la.kind == "readout":
                    return vz
                v = self._jitter(la, self._fire(la, vz, aq), noise, generator)
                if activity is not None:
                    activity.append(v / la.ticks)
            if record is not None:
                record[la.name] = v.detach()
            return v

        out = layers[end]
        return walk(layers[:end + 1], step, name=lambda la: la.name,
                    sources=lambda la: la.sources())[out.name]

    def _potential(self, la: QLayer, env: dict, qw: bool) -> torch.Tensor:
        """Sum of the groups' synaptic input plus the bias (both rounded when ``qw``)."""
        z = None
        for gi, g in enumerate(la.groups):
            y = self._group(la, gi, env[g.source], qw)
            z = y if z is None else z + y
        b = self.b[param_key(la.name)].to(self.dtype)
        return z + (_ste_round(b) if qw else b)

    def _fire(self, la: QLayer, vz: torch.Tensor, aq: bool) -> torch.Tensor:
        r = self.ramp[la.name]
        if aq:
            return _FloorTicks.apply(vz, r, float(la.ticks))
        return torch.clamp((vz - self.half[la.name]) / r, 0.0, float(la.ticks))

    def _jitter(self, la: QLayer, v: torch.Tensor, noise: float, generator) -> torch.Tensor:
        """Whole-tick Gaussian jitter on spiking neurons while training, kept in the window."""
        if not (noise and self.training):
            return v
        jit = torch.randn(v.shape, generator=generator, dtype=torch.float64)
        jit = torch.round(jit * noise).to(v.device, v.dtype)  # drawn on the generator's CPU
        moved = torch.clamp(v.detach() + jit, 0, la.ticks) - v.detach()
        return v + torch.where(v.detach() > 0, moved, torch.zeros_like(moved))

    def _group(self, la, gi, x, qw: bool):
        key = f"{param_key(la.name)}__{gi}"
        g = la.groups[gi]
        for oi, op in enumerate(g.ops):
            if op_array(op) is None:
                x = op.apply(x)
            elif key in self.w:
                w = self.w[key].to(self.dtype)
                x = apply_op(op, x, _ste_quant(w, g.bits) if qw else w)
            else:
                x = apply_op(op, x, self.frozen[(la.name, gi, oi)])
        return x

    def real_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float() * self.out_step


def param_key(name: str) -> str:
    """A layer name as a ParameterDict key (no dots): ``b[key]``, ``w[f"{key}__{group}"]``."""
    return name.replace(".", "_").replace("/", "|")


class _FloorTicks(torch.autograd.Function):
    """clip(floor(V / R), 0, T) forward (exact on integer-valued V); backward the B=1 TTFS
    gradient 1/R where 0 < V/R < T, else 0."""

    @staticmethod
    def forward(ctx, v, r, ticks):
        y = torch.div(v, r, rounding_mode="floor")
        ctx.save_for_backward(v, r)
        ctx.ticks = ticks
        return torch.clamp(y, 0, ticks)

    @staticmethod
    def backward(ctx, g):
        v, r = ctx.saved_tensors
        u = v / r
        inside = (u > 0) & (u < ctx.ticks)
        return torch.where(inside, g / r, torch.zeros((), dtype=g.dtype)), None, None


class _Quant(torch.autograd.Function):
    """Round to signed levels (sign for 1 bit) forward, identity backward."""

    @staticmethod
    def forward(ctx, w, bits):
        if bits == 1:
            return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
        if bits == 0:
            return torch.round(w)
        m = 2 ** (bits - 1) - 1
        return torch.clamp(torch.round(w), -m, m)

    @staticmethod
    def backward(ctx, g):
        return g, None


def _ste_round(w):
    return _Quant.apply(w, 0)


def _ste_quant(w, bits: int):
    return _Quant.apply(w, bits)


def exact_dtype(net: QNet) -> torch.dtype:
    """float32 when no partial sum can reach 2**24 even with every weight at its largest value
    (a bound on the training forward, looser than ``intmodel.exact_dtype``'s per layer one)."""
    worst = 0.0
    for la in net.layers:
        if la.kind not in WEIGHTED_KINDS:
            continue
        tot = 0.0
        fan = quant.fan_in(net, la, structural=True)
        for g in la.groups:
            src = net.by_name[g.source]
            q = 1 if g.bits == 1 else 2 ** (g.bits - 1) - 1
            tot += fan * q * src.ticks  # conservative: the whole fan-in at every group's limit
        b = float(np.abs(np.asarray(la.bias)).max())
        r = float(np.max(la.ramp)) * la.ticks if la.kind == "neuron" else 0.0
        worst = max(worst, tot + 4 * b + 2 * r + 1024)
    return torch.float32 if worst < 2 ** 23 else torch.float64
