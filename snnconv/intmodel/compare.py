"""The integer model against the float SNN it was quantised from, layer by layer.

Each integer layer carries x_ticks; ``scale`` (times the equalisation factor recorded at
quantisation) is the real value of one tick, so ``x_ticks * scale`` estimates the float SNN's
value of the same neuron. The table says where quantisation hurts: error in ticks (max and
mean over neurons and samples), error relative to the layer's largest float value, and the share
of float values beyond the layer's window (clipped by the integer model's range choice). Errors
propagate: a layer's row includes what its inputs brought.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..snn import SNN, equivalent
from .common import Compiled
from .golden import golden
from .layers import QNet, QPool, QReadout


@dataclass
class LayerError:
    name: str
    kind: str
    ticks: int
    max_ticks: float = 0.0  # largest |error| in ticks
    sum_ticks: float = 0.0  # sum of |error| in ticks (mean = sum / count)
    count: int = 0
    max_abs: float = 0.0  # largest |error| in value units
    max_ref: float = 0.0  # largest |float value|
    clipped: int = 0  # float values beyond the window

    @property
    def mean_ticks(self) -> float:
        return self.sum_ticks / max(1, self.count)

    @property
    def rel(self) -> float:
        return self.max_abs / self.max_ref if self.max_ref > 0 else 0.0

    def as_dict(self) -> dict:
        return {"layer": self.name, "kind": self.kind, "ticks": self.ticks,
                "max_error_ticks": self.max_ticks, "mean_error_ticks": self.mean_ticks,
                "rel_error": self.rel, "clipped": self.clipped,
                "clipped_share": self.clipped / max(1, self.count)}


@dataclass
class Comparison:
    layers: dict[str, LayerError] = field(default_factory=dict)
    samples: int = 0
    agree: int = 0  # top-1 of the integer readout == top-1 of the float SNN

    def as_dict(self) -> dict:
        return {"samples": self.samples, "top1_agreement": self.agree / max(1, self.samples),
                "layers": [e.as_dict() for e in self.layers.values()]}


def tick_values(net: QNet) -> dict[str, torch.Tensor]:
    """Real value of one tick per layer (float64, broadcastable to a batch), in the float SNN's
    own units: the quantisation's equalisation factors (if any) are multiplied back in."""
    eq = (net.meta.get("quantization") or {}).get("equalization") or {}
    out = {}
    for la in net.layers:
        if isinstance(la, QReadout):
            s = np.asarray(la.step, np.float64)
        elif la.scale is None:
            continue
        else:
            s = np.asarray(la.scale, np.float64)
        src = la
        while isinstance(src, QPool):  # a pool carries its source's channels
            src = net.by_name[src.source]
        if src.name in eq:
            f = np.asarray(eq[src.name], np.float64)
            s = s * f.reshape((-1,) + (1,) * (len(la.shape) - 1))
        out[la.name] = torch.as_tensor(np.broadcast_to(s, la.shape).copy())[None]
    return out


@torch.no_grad()
def compare(net: QNet, snn: SNN, batches, compiled: Compiled | None = None) -> Comparison:
    """Accumulate the per-layer comparison over ``batches`` (arrays of model inputs)."""
    comp = compiled or Compiled(net, None)
    scales = tick_values(net)
    names = [la.name for la in net.layers if la.name in scales]
    res = Comparison(layers={n: LayerError(n, net.by_name[n].kind, net.by_name[n].ticks)
                             for n in names})
    for xb in batches:
        xb = np.asarray(xb, np.float64)
        ref: dict[str, torch.Tensor] = {}

        def obs(layer, v, ref=ref):
            if layer.name in scales:
                ref[layer.name] = v.to(torch.float64)

        logits = equivalent.forward(snn.layers, xb, observe=obs)
        ref[net.output.name] = logits.to(torch.float64)
        g = golden(net, xb, record=set(names), compiled=comp)
        ticks = dict(g.ticks)
        ticks[net.output.name] = g.logits
        for n in names:
            if n not in ref:
                continue
            _accumulate(res.layers[n], ticks[n].to(torch.float64), ref[n], scales[n])
        res.agree += int((g.logits.argmax(1) == logits.argmax(1)).sum())
        res.samples += len(xb)
    return res


def _accumulate(e: LayerError, q: torch.Tensor, f: torch.Tensor, s: torch.Tensor) -> None:
    f = f.reshape(q.shape)
    err = (q * s - f).abs_()
    e.max_abs = max(e.max_abs, float(err.max()) if err.numel() else 0.0)
    e.max_ref = max(e.max_ref, float(f.abs().max()) if f.numel() else 0.0)
    et = err.div_(s)
    e.max_ticks = max(e.max_ticks, float(et.max()) if et.numel() else 0.0)
    e.sum_ticks += float(et.sum())
    e.count += et.numel()
    if e.kind != QReadout.kind:
        e.clipped += int((f > s * e.ticks * (1 + 1e-12)).sum())
