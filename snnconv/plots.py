"""Figures (matplotlib is an optional extra: ``pip install snnconv[plot]``)."""

from __future__ import annotations

import io

import numpy as np
import torch

from .errors import UsageError
from .fileio import atomic_write


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("plots need matplotlib", hint="pip install 'snnconv[plot]'") from None
    return plt


def verify_plot(snn, graph, ds, path, n: int = 64) -> None:
    """Per layer: network activation vs decoded spike time; and one sample's spike raster."""
    from .simulate import simulate

    plt = _plt()
    x = torch.as_tensor(np.asarray(ds.x[:n], dtype=np.float64))
    layers = [la for la in snn.layers if la.relation is not None and la.kind != "readout"]
    res = simulate(snn, x, record=True)
    _, kept = graph.forward(x, keep={la.relation.tensor for la in layers})
    cols = min(4, len(layers))
    rows = (len(layers) + cols - 1) // cols + 1
    fig = plt.figure(figsize=(3.2 * cols, 2.8 * rows))
    tau = snn.tau_c
    for i, la in enumerate(layers):
        ax = fig.add_subplot(rows, cols, i + 1)
        s = res.offsets[la.name].reshape(len(x), -1)
        if la.relation.tensor in kept:
            t = kept[la.relation.tensor].reshape(len(x), *la.shape)
            v = torch.clamp(t * torch.as_tensor(la.relation.scale) +
                            torch.as_tensor(la.relation.shift), min=0).reshape(len(x), -1)
            spk = s > 0
            ax.scatter(v[spk].numpy(), (la.t_max - s[spk]).numpy(), s=2, alpha=0.4)
            xs = np.linspace(0, float(v.max()) if v.numel() else 1.0, 2)
            ax.plot(xs, la.t_max - tau * xs, "k--", lw=0.8, label="t_max - tau_c x")
        ax.set_title(la.name[-28:], fontsize=8)
        ax.set_xlabel("activation", fontsize=7)
        ax.set_ylabel("spike time", fontsize=7)
        ax.tick_params(labelsize=6)
    ax = fig.add_subplot(rows, 1, rows)
    offset = 0
    for la in snn.layers:
        if la.kind == "readout" or la.name not in res.offsets:
            continue
        s = res.offsets[la.name][0].reshape(-1)
        idx = torch.nonzero(s > 0).reshape(-1)
        ax.scatter((la.t_max - s[idx]).numpy(), (idx + offset).numpy(), s=1, label=la.name[-20:])
        ax.axvspan(la.t_min, la.t_max, alpha=0.05)
        offset += s.numel()
    ax.set_xlabel("time")
    ax.set_ylabel("neuron (stacked by layer)")
    ax.set_title("spike raster of sample 0", fontsize=9)
    ax.legend(fontsize=6, markerscale=4, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
