"""What a simulation returns, whichever simulator ran it (closed form, event-driven, onnxruntime):
logits, per-layer spike and clip counts, and recorded spike-time offsets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .layers import Layer
    from .model import SNN


@dataclass
class LayerStats:
    neurons: int = 0
    spikes: int = 0
    clipped: int = 0  # neuron-samples whose value exceeded the window (not for saturating layers)
    samples: int = 0

    def add(self, other: LayerStats) -> None:
        self.neurons = other.neurons
        self.spikes += other.spikes
        self.clipped += other.clipped
        self.samples += other.samples

    @property
    def spikes_per_neuron(self) -> float:
        return self.spikes / max(1, self.neurons * self.samples)


@dataclass
class SimResult:
    logits: torch.Tensor
    stats: dict[str, LayerStats] = field(default_factory=dict)
    # spike-time offsets from the window end, s = t_max - t (0 = silent), of recorded layers
    offsets: dict[str, torch.Tensor] = field(default_factory=dict)

    def spikes_per_neuron(self, snn: SNN) -> float:
        hidden = [la.name for la in snn.neuron_layers()]
        spikes = sum(self.stats[n].spikes for n in hidden)
        total = sum(self.stats[n].neurons * self.stats[n].samples for n in hidden)
        return spikes / max(1, total)


def start_layer(res: SimResult, layer: Layer, samples: int) -> LayerStats:
    """A simulator's (empty) stats of ``layer``, kept in ``res`` in layer order."""
    st = res.stats[layer.name] = LayerStats(neurons=layer.size, samples=samples)
    return st


def keep_offsets(res: SimResult, layer: Layer, s: torch.Tensor, record: bool | set[str]) -> None:
    """Keep ``layer``'s offsets in ``res`` if ``record`` (True, or a set of names) asks."""
    if record is True or (isinstance(record, (set, frozenset)) and layer.name in record):
        res.offsets[layer.name] = s
