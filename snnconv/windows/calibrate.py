"""Windows from calibration data: each neuron layer's largest value over the data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import distributed
from ..snn import Layer, NeuronLayer, equivalent


@dataclass
class Calibration:
    """Per-layer statistics of the value each neuron layer carries."""

    maxima: dict[str, float]
    percentiles: dict[str, float] | None = None
    samples: int = 0
    method: str = "data"
    active: dict[str, float] | None = None  # fraction of neurons with a value > 0 (= spikes)
    #: how the maxima were found: the data set, "symbolic"/"interval" bounds, or the estimate's
    #: sources ("batchnorm", "moments")
    source: str = ""


class _Observer:
    """Per neuron layer, the largest value, the active count and (for percentiles) a sample of
    the positive values, batch by batch; ``state``/``merge`` combine processes exactly (maxima
    and integer counts; the kept values are concatenated, whose percentile does not depend on
    their order)."""

    def __init__(self, percentile: float | None, max_keep: int):
        self.percentile, self.max_keep = percentile, max_keep
        self.maxima: dict[str, float] = {}
        self.active: dict[str, list[int]] = {}
        self.keep: dict[str, list[np.ndarray]] = {}
        self.kept: dict[str, int] = {}
        self.n = 0
        self.rng = np.random.default_rng(0)

    def __call__(self, layer, v) -> None:
        if not isinstance(layer, NeuronLayer):
            return
        m = float(v.max()) if v.numel() else 0.0
        self.maxima[layer.name] = max(self.maxima.get(layer.name, 0.0), m)
        a = self.active.setdefault(layer.name, [0, 0])
        a[0] += int((v > 0).sum())
        a[1] += v.numel()
        if self.percentile is not None:
            pos = v[v > 0].cpu().numpy()
            room = self.max_keep - self.kept.get(layer.name, 0)
            if pos.size > room:
                pos = self.rng.choice(pos, size=max(room, 0), replace=False)
            self.keep.setdefault(layer.name, []).append(pos)
            self.kept[layer.name] = self.kept.get(layer.name, 0) + pos.size

    def state(self) -> dict:
        return {"maxima": self.maxima, "active": self.active, "n": self.n,
                "keep": {k: np.concatenate(v) for k, v in self.keep.items()}}

    def merge(self, st: dict) -> None:
        for k, m in st["maxima"].items():
            self.maxima[k] = max(self.maxima.get(k, 0.0), m)
        for k, (p, t) in st["active"].items():
            a = self.active.setdefault(k, [0, 0])
            a[0] += p
            a[1] += t
        for k, v in st["keep"].items():
            self.keep.setdefault(k, []).append(v)
        self.n += st["n"]

    def result(self) -> Calibration:
        pct = None
        if self.percentile is not None:
            pct = {k: float(np.percentile(np.concatenate(v), self.percentile))
                   if sum(a.size for a in v) else 0.0 for k, v in self.keep.items()}
        return Calibration(self.maxima, pct, self.n, "data",
                           {k: a / max(1, b) for k, (a, b) in self.active.items()})


def calibrate(layers: list[Layer], batches, percentile: float | None = None,
              progress=None, max_keep: int = 2_000_000, device=None,
              world: distributed.World = distributed.SINGLE) -> Calibration:
    """Run the equivalent network on data; keep each layer's max (and a sample for percentiles).

    ``device``: a torch device for the forward (float64 there too). ``world``: under torchrun
    each process passes its own batches and all get the merged calibration."""
    obs = _Observer(percentile, max_keep)
    for x in batches:
        if device is not None:
            x = torch.as_tensor(x, dtype=torch.float64).to(device)
        equivalent.forward(layers, x, observe=obs)
        obs.n += len(x)
        if progress is not None:
            progress(len(x))
    if world.many:
        states = distributed.gather(obs.state(), world)
        obs = _Observer(percentile, max_keep)  # every rank's state, in rank order
        for st in states:
            obs.merge(st)
    return obs.result()
