"""The ReLU proxy of a rate net and the parameters it shares with the IF simulation.

Proxy learning (Kheradpisheh, Mirsadeghi, Masquelier, "Spiking neural networks trained via
proxy", 2022) couples an IF network and a ReLU network of the same architecture with shared
weights. Both run forward independently; the loss is computed on the SNN's output and its
gradient is sent through the ReLU network, whose output is replaced by the SNN's:
``out = ann + (snn - ann).detach()`` has the SNN's value and the ANN's gradient.

In the rate net's own units the proxy of an IF layer is ReLU(current) / threshold (the rate the
neuron approximates), of a spike max-pool a max-pool, of the Output its input; every other node
is the same affine map the simulator runs (``simulate.affine``), so the proxy of a freshly
converted net is the imported ReLU network up to float rounding.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ..walk import walk
from . import model as rm
from .simulate import Stepper, affine, params

#: the node kinds whose weight and bias are trained
TRAINED = ("linear", "conv2d")


def relu_forward(net: rm.RateNet, x: torch.Tensor, p: dict[str, dict[str, torch.Tensor]]):
    """The ReLU proxy's output (the ANN logits) for a batch, with the arrays ``p``."""

    def step(n: rm.Node, env: dict) -> torch.Tensor:
        xs = [env[i] for i in n.inputs]
        if n.kind == "input":
            return affine(n, p[n.name], [x])
        if n.kind == "if":
            return torch.relu(xs[0]) / p[n.name]["threshold"]
        if n.kind == "maxpool2d":
            return F.max_pool2d(xs[0], n.kernel, n.stride, n.padding, n.dilation)
        if n.kind == "output":
            return xs[0]
        return affine(n, p[n.name], xs)

    env = walk(net.nodes, step, name=lambda n: n.name, sources=lambda n: n.inputs,
               keep={net.output.name})
    return env[net.output.name]


def fake_quant(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel rounding to 2^(bits-1)-1 levels, straight-through gradient
    (the rounded value forward, the identity backward)."""
    levels = 2 ** (bits - 1) - 1 if bits > 1 else 1
    m = w.detach().abs().reshape(w.shape[0], -1).amax(1).clamp_min(1e-12)
    s = (m / levels).reshape((-1,) + (1,) * (w.ndim - 1))
    q = torch.clamp(torch.round(w / s), -levels, levels) * s
    return w + (q - w).detach()


class ProxyNet(torch.nn.Module):
    """Weights and biases of a rate net's Linear/Conv2d nodes as trainable parameters, shared by
    the ReLU proxy (``ann``) and the IF simulation (``snn``); thresholds stay as converted."""

    def __init__(self, net: rm.RateNet, quantize: int | None = None, dtype=torch.float32):
        super().__init__()
        self.net, self.quantize, self.dtype = net, quantize, dtype
        self.fixed = params(net, dtype)
        self.trained = torch.nn.ParameterDict()
        self.keys: dict[str, tuple[str, str]] = {}
        for i, n in enumerate(net.nodes):
            if n.kind not in TRAINED:
                continue
            for f in ("weight", "bias"):
                if f in self.fixed[n.name]:
                    key = f"n{i}_{f}"
                    self.trained[key] = torch.nn.Parameter(self.fixed[n.name][f].clone())
                    self.keys[key] = (n.name, f)

    def arrays(self) -> dict[str, dict[str, torch.Tensor]]:
        """Every node's arrays, the trained ones (fake-quantised weights) in place."""
        p = {k: dict(v) for k, v in self.fixed.items()}
        for key, (name, f) in self.keys.items():
            t = self.trained[key]
            p[name][f] = fake_quant(t, self.quantize) if self.quantize and f == "weight" else t
        return p

    def ann(self, x: torch.Tensor) -> torch.Tensor:
        return relu_forward(self.net, x.to(self.dtype), self.arrays())

    @torch.no_grad()
    def snn(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """The IF net's readout (Output membrane / T) after ``steps`` steps."""
        p = {k: {f: t.detach() for f, t in v.items()} for k, v in self.arrays().items()}
        sim = Stepper(self.net, x.to(self.dtype), self.dtype, override=p)
        for _ in range(steps):
            env = sim.step()
        return env[self.net.output.name] / steps

    def to_net(self, meta: dict) -> rm.RateNet:
        """The rate net with the trained (and, if asked, quantised) weights and biases."""
        p = self.arrays()
        nodes = []
        for n in self.net.nodes:
            if n.kind in TRAINED:
                kw = {f: np.asarray(p[n.name][f].detach().double().numpy())
                      for f in ("weight", "bias") if f in p[n.name]}
                n = replace(n, **kw)
            nodes.append(n)
        return rm.RateNet(nodes, steps=self.net.steps, head=self.net.head, meta=meta)
