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
    from .snn.simulate import simulate

    plt = _plt()
    x = torch.as_tensor(ds.head_x(n))
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



def _rows(ops, src_shape, rows: list[int]) -> torch.Tensor:
    """Rows of the weight matrix a synapse chain applies (it is linear): one gradient each."""
    from .snn import chain_apply

    z = torch.zeros((1, *src_shape), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        y = chain_apply(ops, z).reshape(-1)
        return torch.stack([torch.autograd.grad(y[i], z, retain_graph=True)[0].reshape(-1)
                            for i in rows])


def membrane_traces(snn, x, sample: int = 0, per_layer: int = 3) -> list[dict]:
    """V(t) of a few neurons per layer for one input, rebuilt from the model's own weights,
    delays, windows and thresholds and the spike times of the closed-form simulator.

    V is piecewise linear (docs/concepts.md), so it is returned at its breakpoints: 0 until the
    first input arrives, slope sum w_j/tau_c over the inputs that have arrived until t_min, then
    slope 1/tau_c until the neuron fires (the trace ends there) or its window ends. The readout
    has no threshold: its output is V(t_min) + bias. Chosen per layer: the earliest spike, one
    that encodes half its value, and the silent neuron closest to threshold (readout: the two
    largest outputs). The first entry holds the input layer's spike times.
    """
    from .snn.simulate import group_input, simulate
    from .snn import NeuronLayer, ReadoutLayer

    x = torch.as_tensor(np.asarray(x[sample:sample + 1], dtype=np.float64))
    res = simulate(snn, x, record=True)
    tau = float(snn.tau_c)
    inp = snn.input
    s_in = res.offsets[inp.name][0].reshape(-1)
    out = [{"name": inp.name, "kind": "input", "stage": 0, "t_min": inp.t_min,
            "t_max": inp.t_max, "spiking": torch.nonzero(s_in > 0).reshape(-1).numpy(),
            "spikes": (inp.t_max - s_in[s_in > 0]).numpy()}]
    for la in snn.layers:
        if not isinstance(la, (NeuronLayer, ReadoutLayer)):
            continue
        readout = isinstance(la, ReadoutLayer)
        v_min = sum(group_input(g, res.offsets[g.source], la, snn.by_name[g.source], tau)
                    for g in la.groups).reshape(-1)
        if readout:
            bias = torch.as_tensor(np.asarray(la.bias, np.float64)).expand(la.shape).reshape(-1)
            idx = torch.argsort(v_min + bias, descending=True)[:min(2, per_layer)].tolist()
        else:
            s = res.offsets[la.name][0].reshape(-1)
            theta = (torch.as_tensor(np.asarray(la.theta_rel, np.float64)).expand(la.shape)
                     .reshape(-1) + la.window / tau)
            spiking = torch.nonzero(s > 0).reshape(-1)
            silent = torch.nonzero(s == 0).reshape(-1)
            idx = []
            if len(spiking):
                top = s[spiking].max()
                idx += [int(spiking[torch.argmax(s[spiking])]),
                        int(spiking[torch.argmin((s[spiking] - top / 2).abs())])]
            if len(silent):
                idx.append(int(silent[torch.argmin(theta[silent] - v_min[silent])]))
            idx = list(dict.fromkeys(idx))[:per_layer]
        arrivals, weights = [], []
        for g in la.groups:
            src = snn.by_name[g.source]
            s_src = res.offsets[g.source][0].reshape(-1)
            spk = s_src > 0
            arrivals.append(src.t_max - s_src[spk] + g.delay)
            weights.append(_rows(g.ops, src.shape, idx)[:, spk])
        a, w = torch.cat(arrivals), torch.cat(weights, dim=1)
        neurons = []
        for k, i in enumerate(idx):
            used = w[k] != 0
            a_i, w_i = a[used], w[k, used]
            spike = None if readout or s[i] == 0 else la.t_max - float(s[i])
            end = la.t_min if readout else (la.t_max if spike is None else spike)
            ts = torch.unique(torch.cat([torch.tensor([0.0, la.t_min, end], dtype=torch.float64),
                                         a_i[a_i < la.t_min]]))
            ts = ts[ts <= end]
            before = torch.clamp(torch.clamp(ts, max=la.t_min)[:, None] - a_i[None, :], min=0)
            v = (before * w_i[None, :]).sum(1) / tau
            item = {"index": i, "t": ts.numpy(), "v": v.numpy(), "v_tmin": float(v_min[i])}
            if readout:
                item["output"] = float(v_min[i] + bias[i])
            else:
                item["v"] = (v + torch.clamp(ts - la.t_min, min=0) / tau).numpy()
                item.update(theta=float(theta[i]), spike=spike)
            neurons.append(item)
        out.append({"name": la.name, "kind": la.kind, "stage": la.stage, "t_min": la.t_min,
                    "t_max": la.t_max, "neurons": neurons})
    return out


def membrane_plot(snn, x, path, sample: int = 0, per_layer: int = 3) -> list[dict]:
    """Figure of ``membrane_traces``: the input spikes, then per layer the membrane potential of
    a few neurons against their thresholds, each layer's window shaded. Returns the traces."""
    plt = _plt()
    traces = membrane_traces(snn, x, sample=sample, per_layer=per_layer)
    fig, axes = plt.subplots(len(traces), 1, sharex=True, figsize=(8, 1.9 * len(traces) + 0.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    t_end = max(tr["t_max"] for tr in traces)
    for ax, tr in zip(axes, traces):
        for other in traces:
            if other["t_max"] > other["t_min"]:
                ax.axvspan(other["t_min"], other["t_max"], color="0.5",
                           alpha=0.12 if other["stage"] == tr["stage"] else 0.0, lw=0)
        ax.set_title(f"{tr['name']}  ({tr['kind']}, window [{tr['t_min']:g}, {tr['t_max']:g}])",
                     fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        if tr["kind"] == "input":
            ax.scatter(tr["spikes"], tr["spiking"], s=4, color="k")
            ax.set_ylabel("pixel", fontsize=7)
            continue
        for k, nrn in enumerate(tr["neurons"]):
            c = colours[k % len(colours)]
            label = f"{'class' if 'output' in nrn else 'neuron'} {nrn['index']}"
            ax.plot(nrn["t"], nrn["v"], color=c, lw=1.2, label=label)
            if "theta" in nrn:
                ax.axhline(nrn["theta"], color=c, ls="--", lw=0.7)
                if nrn["spike"] is not None:
                    ax.plot([nrn["spike"]], [nrn["theta"]], marker="*", ms=9, color=c)
            else:
                ax.plot([tr["t_min"]], [nrn["output"]], marker="o", ms=5, color=c)
        ax.axvline(tr["t_min"], color="0.3", lw=0.6)
        ax.set_ylabel("V", fontsize=7)
        ax.legend(fontsize=6, loc="upper left" if tr["kind"] == "readout" else "lower right",
                  ncol=3)
    axes[-1].set_xlim(0, t_end * 1.02)
    axes[-1].set_xlabel("time (units of tau_c).   dashed: threshold,  star: spike,  "
                        "dot: output = V(t_min) + bias,  shaded: the layer's window", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return traces
