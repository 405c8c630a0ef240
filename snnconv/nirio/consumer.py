"""Run a NIR graph in snnTorch, an NIR consumer independent of snnconv, for the export check.

The graph is built by snnTorch's own NIR import (``snntorch.import_nir``: its mapping of
Affine, Linear, Conv2d, Flatten and AvgPool2d, executed by nirtorch's graph interpreter, which
sums the inputs of a node) with one replacement: snnTorch 1.0.0 maps NIR's IF to
``Leaky(beta=0.9, init_hidden=False)``, a leaky neuron whose (spike, membrane) tuple its own
graph cannot pass on. The replacement is snnTorch's ``Leaky`` as NIR's IF equations say:
``beta = 1`` (no leak), threshold ``v_threshold / r`` (with dt = 1 the membrane integrates
``r I``; snnTorch's integrates ``I``), reset to zero, no reset delay. snnTorch's Flatten of
NIR's ``start_dim = 0`` also flattens the batch, so samples run one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ConsumerResult:
    """``readout`` (N, K): the output summed over the steps / T; ``spikes``: per IF node, the
    spike count summed over samples, neurons and steps; ``counts`` per IF node (N, *shape)."""

    steps: int
    readout: np.ndarray
    spikes: dict[str, float] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)


def _if_as_leaky(node):
    import snntorch as snn

    if np.any(np.asarray(node.v_reset) != 0):
        raise ValueError("only IF neurons that reset to 0 map onto snnTorch's reset to zero")
    thr = torch.as_tensor(np.asarray(node.v_threshold) / np.asarray(node.r), dtype=torch.float32)
    return snn.Leaky(beta=1.0, threshold=thr, reset_mechanism="zero", init_hidden=True,
                     reset_delay=False)


def snntorch_module(graph) -> torch.nn.Module:
    """The NIR graph as a snnTorch network (a torch.fx module: ``out, state = m(x)`` per step)."""
    import nir
    import nirtorch
    from snntorch import import_nir

    def stock(n):
        return import_nir._nir_to_snntorch_module(n, init_hidden=True)

    node_map = {k: stock for k in (nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten,
                                   nir.AvgPool2d)}
    node_map[nir.IF] = _if_as_leaky
    return nirtorch.nir_to_torch(graph, node_map)


def run_snntorch(graph, x, steps: int) -> ConsumerResult:
    """Run every sample of ``x`` (N, *input shape) for ``steps`` steps from rest."""
    import snntorch as snn

    m = snntorch_module(graph)
    leaky = {name: mod for name, mod in m.named_modules() if isinstance(mod, snn.Leaky)}
    last: dict[str, torch.Tensor] = {}
    for name, mod in leaky.items():
        mod.register_forward_hook(lambda _m, _i, out, k=name: last.__setitem__(k, out))
    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    outs, counts = [], {k: [] for k in leaky}
    with torch.no_grad():
        for i in range(len(x)):
            outs.append(_one(m, leaky, last, x[i:i + 1], steps, counts))
    counts = {k: np.stack(v) for k, v in counts.items()}
    return ConsumerResult(steps, np.stack(outs), {k: float(v.sum()) for k, v in counts.items()},
                          counts)


def _one(m, leaky, last, x, steps, counts) -> np.ndarray:
    """One sample from rest: the summed output / steps; appends its spike counts."""
    for mod in leaky.values():
        mod.reset_mem()
    acc, cnt = 0.0, {k: 0.0 for k in leaky}
    for _ in range(steps):
        out, _state = m(x)
        acc = acc + out
        for k in leaky:
            cnt[k] = cnt[k] + last[k]
    for k in leaky:
        counts[k].append(np.asarray(cnt[k], np.float64).reshape(-1))
    return np.asarray(acc, np.float64).reshape(-1) / steps
