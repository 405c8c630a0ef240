"""Measuring the models fine-tuning compares: accuracy and spikes of the fake-quant forward, the
integer golden model and the float ANN/SNN; the per-layer sensitivity of post-training
quantisation; jitter in float units; the integer model against the float SNN layer by layer."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from .. import intmodel, quant
from ..intmodel import compare as intcompare
from ..snn import equivalent
from ..data import Dataset, Stream
from ..intmodel import QNet, op_array
from ..snn import SNN
from .fakequant import WEIGHTED_KINDS, FakeQuantNet, exact_dtype

Samples = Dataset | Stream


@torch.no_grad()
def teacher_logits(snn: SNN, x, bs: int = 1024) -> torch.Tensor:
    """Log-probabilities of the float network (the distillation target)."""
    out = [equivalent.forward(snn.layers, np.asarray(x[i:i + bs], np.float64)).float()
           for i in range(0, len(x), bs)]
    return F.log_softmax(torch.cat(out), 1)


@torch.no_grad()
def evaluate_q(model: FakeQuantNet, src: Samples, bs: int = 512, wq=True, aq=True,
               teacher: SNN | None = None, distill: float = 0.0) -> dict:
    """Accuracy, spikes/neuron and the training objective (cross-entropy, plus ``distill`` times
    the KL divergence to ``teacher``'s outputs) on ``src``."""
    model.eval()
    correct = n = spikes = 0
    loss = 0.0
    hid = model.net.hidden()
    size = sum(la.size for la in hid)
    for xb, yb in src.batches(bs):
        rec: dict = {}
        lg = model(model.encode(xb), wq=wq, aq=aq, record=rec)
        real = model.real_logits(lg)
        loss += float(F.cross_entropy(real, torch.as_tensor(yb), reduction="sum"))
        if teacher is not None and distill:
            loss += distill * float(F.kl_div(F.log_softmax(real, 1), teacher_logits(teacher, xb),
                                             reduction="sum", log_target=True))
        correct += int((lg.argmax(1).numpy() == yb).sum())
        spikes += sum(int((rec[la.name] > 0).sum()) for la in hid)
        n += len(yb)
    return {"accuracy": correct / max(1, n), "spikes_per_neuron": spikes / max(1, n * size),
            "samples": n, "loss": loss / max(1, n)}


@torch.no_grad()
def evaluate_int(net: QNet, src: Samples, noise: float = 0.0, seed: int = 0,
                 bs: int = 512) -> dict:
    correct = n = 0
    spn = 0.0
    gen = torch.Generator().manual_seed(seed)
    comp = intmodel.Compiled(net, None)  # per-layer precision (exact either way)
    for xb, yb in src.batches(bs):
        r = intmodel.golden(net, xb, compiled=comp, noise=noise, generator=gen)
        correct += int((r.logits.argmax(1).numpy() == yb).sum())
        spn += r.spikes_per_neuron(net) * len(yb)
        n += len(yb)
    return {"accuracy": correct / max(1, n), "spikes_per_neuron": spn / max(1, n)}


@torch.no_grad()
def evaluate_float(snn: SNN, src: Samples, noise: float | dict = 0.0, seed: int = 0,
                   bs: int = 512) -> dict:
    """ANN (equivalent ReLU net, unclipped) and exact SNN (closed form) accuracy."""
    ann = snn_c = n = 0
    act = 0.0
    gen = torch.Generator().manual_seed(seed)
    hid = snn.neuron_layers()
    size = sum(la.size for la in hid)
    for xb, yb in src.batches(bs):
        counts = []

        def obs(layer, v, counts=counts):
            if layer in hid:
                counts.append(int((v > 0).sum()))
        a = equivalent.forward(snn.layers, xb, observe=obs)
        ann += int((a.argmax(1).numpy() == yb).sum())
        act += sum(counts)
        r = snn.simulate(xb, noise=noise, generator=gen)
        snn_c += int((r.logits.argmax(1).numpy() == yb).sum())
        n += len(yb)
    return {"ann": ann / max(1, n), "snn": snn_c / max(1, n),
            "spikes_per_neuron": act / max(1, n * size)}


def float_weight_bytes(snn: SNN) -> int:
    n = 0
    for la in snn.layers:
        for g in getattr(la, "groups", []):
            for op in g.ops:
                a = op_array(op)
                if a is not None:
                    n += np.asarray(a).size
    return 4 * n


def sensitivity(net: QNet, real: quant.Latent, final: quant.Latent, src: Samples,
                bs: int = 512) -> list[dict]:
    """Post-training quantisation layer by layer, to find the culprit when it hurts: accuracy
    with real weights and real activations clipped to the windows, then with only one layer's
    weights (and bias) quantised as ``final`` has them, only the ticks, and everything. ``loss``
    is the drop from the first row; the largest weight row is marked ``worst``."""
    def acc(lat, **kw):
        return evaluate_q(FakeQuantNet(net, lat), src, bs, **kw)["accuracy"]

    base = acc(real, wq=False, aq=False)
    rows = [{"what": "none (real weights, real activations clipped to windows)",
             "accuracy": base}]
    for la in net.layers:
        if la.kind not in WEIGHTED_KINDS or all(w is None for w in
                                                real.weights.get(la.name, [None])):
            continue
        bits = max(g.bits for g, w in zip(la.groups, real.weights[la.name]) if w is not None)
        one = copy.copy(real)
        one.weights = {**real.weights, la.name: final.weights[la.name]}
        one.bias = {**real.bias, la.name: final.bias[la.name]}
        rows.append({"what": f"weights of {la.name} ({bits} bits)", "layer": la.name,
                     "accuracy": acc(one, wq={la.name}, aq=False)})
    rows.append({"what": "activations only (ticks)", "accuracy": acc(real, wq=False)})
    rows.append({"what": "all (integer model)", "accuracy": acc(final)})
    for r in rows:
        r["loss"] = base - r["accuracy"]
    layer_rows_ = [r for r in rows if "layer" in r]
    if layer_rows_:
        worst = max(layer_rows_, key=lambda r: r["loss"])
        worst["worst"] = worst["loss"] > 0
    return rows


def float_jitter(net: QNet, snn: SNN, sigma: float) -> dict[str, float]:
    """Per neuron layer, ``sigma`` ticks of the integer model as a spike-time jitter of the
    float SNN in units of tau_c (the mean tick value over the layer's neurons)."""
    ticks = intcompare.tick_values(net)
    return {la.name: float(sigma * ticks[la.name].mean()) for la in snn.neuron_layers()
            if la.name in ticks}


def layer_errors(net: QNet, snn: SNN, src: Samples, limit: int = 1000) -> dict:
    """The integer model against the float SNN, layer by layer, on up to ``limit`` samples."""
    def batches():
        n = 0
        for xb, _ in src.batches(250):
            if n >= limit:
                return
            yield np.asarray(xb[:limit - n], np.float64)
            n += len(xb)

    return intcompare.compare(net, snn, batches()).as_dict()


def assert_bit_exact(model: FakeQuantNet, net: QNet, src: Samples, n: int = 256) -> None:
    """The exported integers must reproduce the training forward exactly (internal check), the
    forward computed in a dtype that holds every sum exactly."""
    x = src.head_x(n)
    model = FakeQuantNet(model.net, model.latent(), dtype=exact_dtype(model.net))
    model.eval()
    with torch.no_grad():
        a = model(model.encode(x)).to(torch.int64)
    b = intmodel.golden(net, x).logits
    if not torch.equal(a, b):
        raise RuntimeError("exported integer model differs from the fine-tuned forward")
