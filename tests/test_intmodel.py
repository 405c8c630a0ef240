"""The integer model (spec section 5): closed form, register-level simulator, fake-quant forward
and the .snnq file agree bit for bit; the tick arithmetic matches the spec's formulas."""

import dataclasses
import functools

import numpy as np
import pytest
import torch

import snnconv
from snnconv import intmodel, quant
from snnconv.errors import ModelFileError
from snnconv.finetune import FakeQuantNet
from snnconv.intmodel import QGroup, QLayer, QNet
from snnconv.snn import DenseOp

from .conftest import SAMPLES


@functools.cache
def _snn(name):
    return snnconv.convert(SAMPLES / f"{name}.onnx", SAMPLES / "digits_train.npz")


def build(name, bits=4, time_bits=4, latency=None, **prof):
    snn = _snn(name)
    x = np.load(SAMPLES / "digits_train.npz")["x"][:1024].astype(np.float64)
    batches = [torch.as_tensor(x[i:i + 512]) for i in range(0, len(x), 512)]
    snn_eq, _ = quant.equalize(snn, batches)
    stats = quant.act_stats(snn_eq, batches)
    return quant.build(snn_eq, stats, quant.QuantConfig(bits=bits, time_bits=time_bits,
                                                        latency=latency),
                       quant.Profile(**prof))


# (model, weight bits, time bits, profile, lowest acceptable PTQ accuracy on digits)
CASES = [("mlp", 4, 4, {}, 0.85), ("cnn", 4, 4, {}, 0.9), ("resnet", 4, 4, {}, 0.85),
         ("cnn", 1, 3, {}, 0.5),
         ("resnet", 2, 4, {"ramp": "per_layer", "ramp_power_of_two": True}, 0.15),
         ("mlp", 8, 6, {"weight_scale": "per_layer"}, 0.9)]


@pytest.mark.parametrize("name,bits,tb,prof,floor", CASES)
def test_three_integer_paths_agree_bit_for_bit(name, bits, tb, prof, floor, digits, tmp_path):
    net, lat = build(name, bits, tb, **prof)
    model = FakeQuantNet(net, lat)
    model.eval()
    net = quant.with_latent(net, model.latent())
    path = tmp_path / "m.snnq"
    intmodel.save(net, path)
    loaded = intmodel.load(path)
    x = digits["test_x"]  # every test sample
    names = {la.name for la in loaded.layers if la.kind in ("input", "neuron", "pool")}
    g = intmodel.golden(loaded, x, record=names)
    g64 = intmodel.golden(loaded, x, dtype=torch.float64)
    r = intmodel.regsim(loaded, x, record=names)
    comp = intmodel.Compiled(loaded, None)
    assert comp.fast() is not None  # the onnxruntime graph of the golden model
    fast = intmodel.golden(loaded, x, compiled=comp)
    assert torch.equal(fast.logits, g.logits) and fast.spikes == g.spikes
    assert fast.overflow == g.overflow and fast.samples == g.samples
    with torch.no_grad():
        rec = {}
        f = model(model.encode(x), record=rec)
    assert torch.equal(g.logits, r.logits)
    assert torch.equal(g.logits, g64.logits)
    assert torch.equal(g.logits, f.to(torch.int64))
    for k in names:
        assert torch.equal(g.ticks[k], r.ticks[k]), k
        assert torch.equal(g.ticks[k], rec[k].to(torch.int64)), k
    assert sum(g.overflow.values()) == 0 and sum(r.overflow.values()) == 0
    # the model is a classifier worth the name
    acc = (g.logits.argmax(1).numpy() == digits["test_y"]).mean()
    assert acc > floor, acc
    # spike ticks are inside windows, values in [0, T]
    for la in loaded.layers:
        if la.kind == "neuron":
            t = g.ticks[la.name]
            assert int(t.min()) >= 0 and int(t.max()) <= la.ticks
    if prof.get("ramp_power_of_two"):
        for la in loaded.hidden():
            r_ = np.asarray(la.ramp)
            assert np.all(r_ == 2 ** np.round(np.log2(r_)))
            assert np.unique(r_).size == 1  # per layer
    if bits == 1:
        for la in loaded.layers:
            for gr in la.groups:
                w = gr.weighted
                if w is not None and w.kind in ("conv", "dense"):
                    assert set(np.unique(w.weight)) <= {-1.0, 1.0}


def test_real_logits_approximate_the_float_network(digits):
    """With 8-bit weights and 256 ticks the integer logits times the readout step are close to
    the float logits (the scales in the file mean what they say)."""
    net, _ = build("mlp", 8, 8)
    x = digits["test_x"]
    ref = _snn("mlp").simulate(x).logits
    got = intmodel.golden(net, x).real_logits(net)
    rel = float((got - ref).abs().max() / ref.abs().max())
    assert rel < 0.05, rel
    assert (got.argmax(1) == ref.argmax(1)).float().mean() > 0.97


def _tiny(ticks_in=4, ticks=4, w=(3, -2), bias=1, R=2, width=None, overflow="saturate"):
    """Two inputs -> one neuron -> one readout, by hand."""
    inp = QLayer("input", "input", (2,), t_min=0, t_max=ticks_in, scale=np.array(1.0 / ticks_in),
                 lo=np.array(0.0), hi=np.array(1.0))
    hid = QLayer("h", "neuron", (1,), stage=1, t_min=ticks_in, t_max=ticks_in + ticks,
                 groups=[QGroup("input", [DenseOp((2,), weight=np.array([list(w)], float))], 0,
                                8)],
                 bias=np.array([bias]), ramp=np.array([R]), scale=np.array([1.0]),
                 step=np.array([0.5]))
    out = QLayer("output", "readout", (1,), stage=2, t_min=ticks_in + ticks,
                 t_max=ticks_in + ticks,
                 groups=[QGroup("h", [DenseOp((1,), weight=np.array([[1.0]]))], 0, 8)],
                 bias=np.array([0]), scale=np.array([1.0]), step=np.array([1.0]))
    net = QNet([inp, hid, out], overflow=overflow)
    intmodel.set_widths(net, v_bits=width)
    net.check()
    return net


def test_closed_form_matches_spec_formulas():
    net = _tiny()
    # every input pair of ticks
    xs = np.array([[a / 4, b / 4] for a in range(5) for b in range(5)])
    g = intmodel.golden(net, xs, record=True)
    r = intmodel.regsim(net, xs, record=True)
    xin = g.ticks["input"].numpy()
    v0 = 3 * xin[:, 0] - 2 * xin[:, 1]
    want = np.clip(np.floor((v0 + 1) / 2), 0, 4)
    assert np.array_equal(g.ticks["h"].numpy()[:, 0], want)
    assert np.array_equal(r.ticks["h"].numpy()[:, 0], want)
    # the firing tick of the register simulator: t_min + max(0, ceil((theta - V0)/R))
    theta = 2 * 4 - 1
    k = 4 + np.maximum(0, np.ceil((theta - v0) / 2))
    fire = intmodel.fire_ticks(net.by_name["h"], r.ticks["h"]).numpy()[:, 0]
    assert np.array_equal(fire, np.where(k < 8, k, -1))
    assert np.array_equal(g.logits.numpy()[:, 0], want)


def test_overflow_is_flagged_and_saturates_or_wraps():
    xs = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    ok = _tiny()
    assert ok.by_name["h"].widths["V"] >= 5
    for mode in ("saturate", "wrap"):
        net = _tiny(w=(7, -7), width=4, overflow=mode)  # V in [-8, 7]; 7*4 = 28 overflows
        r = intmodel.regsim(net, xs)
        g = intmodel.golden(net, xs)
        assert r.overflow["h"] > 0 and g.overflow["h"] > 0
        # the onnxruntime graph refuses a net whose register might overflow: torch path
        comp = intmodel.Compiled(net, None)
        assert comp.fast() is None
        assert torch.equal(intmodel.golden(net, xs, compiled=comp).logits, g.logits)
    v = torch.tensor([9, -9, 7])
    assert intmodel._limit(v, 4, "saturate")[0].tolist() == [7, -8, 7]
    assert intmodel._limit(v, 4, "wrap")[0].tolist() == [-7, 7, 7]


def test_register_widths_cover_the_worst_case():
    net, _ = build("cnn", 4, 4)
    for la in net.layers:
        if la.kind == "neuron":
            # all inputs at T with the sign of each weight: the largest |V(t_min)|
            assert la.widths["V"] >= intmodel.bits_for(float(np.abs(la.theta).max()))
    b = intmodel.abs_bounds(net)
    assert all(v["V"] < 2 ** 24 for v in b.values())
    assert intmodel.exact_dtype(net) == torch.float32


def test_file_checks(tmp_path, digits):
    net, _ = build("cnn", 4, 4)
    p = tmp_path / "m.snnq"
    intmodel.save(net, p)
    data = bytearray(p.read_bytes())
    data[-3] ^= 0xFF
    bad = tmp_path / "bad.snnq"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        intmodel.load(bad)
    snn_path = tmp_path / "m.snn"
    _snn("cnn").save(snn_path)
    with pytest.raises(ModelFileError, match="integer SNN"):
        intmodel.load(snn_path)
    with pytest.raises(ModelFileError, match="float SNN"):
        snnconv.load(p)
    # theta in the file must be R*T - b
    net2 = intmodel.load(p)
    h, t = intmodel.to_header(net2)
    key = next(la["theta"] for la in h["layers"] if la["kind"] == "neuron")
    t[key] = t[key] + 1
    with pytest.raises(ModelFileError, match="theta"):
        intmodel.from_header(h, t, "x")


def test_verify_integer_and_run(tmp_path, digits):
    net, _ = build("resnet", 4, 4)
    p = tmp_path / "r.snnq"
    intmodel.save(net, p)
    d = tmp_path / "d.npz"
    np.savez(d, x=digits["test_x"][:64], y=digits["test_y"][:64])
    rep = intmodel.verify_integer(p, d)
    assert rep["ok"] and rep["samples"] == 64 and rep["overflow_total"] == 0
    res = intmodel.run_file(p, d, tmp_path / "pred.npz")
    z = np.load(tmp_path / "pred.npz")
    assert z["pred"].shape == (64,) and res["accuracy"] == (z["pred"] == digits["test_y"][:64]
                                                            ).mean()
    # a skip connection with an axonal delay in ticks
    delays = [g.delay for la in net.layers for g in la.groups]
    assert max(delays) > 0
    # a broken register simulator would be caught: shift one layer's threshold in regsim only
    orig = intmodel._layer_ticks

    def broken(n, la, comp, env, dtype):
        if la.kind == "neuron" and la.name == net.hidden()[-1].name:
            la = dataclasses.replace(la, bias=np.asarray(la.bias) + 1)
        return orig(n, la, comp, env, dtype)

    intmodel._layer_ticks = broken
    try:
        assert not intmodel.verify_integer(p, d)["ok"]
    finally:
        intmodel._layer_ticks = orig


def test_per_layer_precision_is_exact():
    """A layer whose sums reach 2**24 (a huge ramp R) runs in float64, the rest in float32, and
    the golden model gives the same ticks and logits as all-float64 and the register-level sim,
    also where the floor of (z + b) / R lands just below, on and just above an integer."""
    big = 2 ** 23 + 3
    net = _tiny(bias=2 * big - 5, R=big)  # z + b crosses 2 R exactly at z = 5
    dts = intmodel.layer_dtypes(net)
    assert dts["h"] == torch.float64 and dts["output"] == torch.float32
    xs = np.array([[a / 4, b / 4] for a in range(5) for b in range(5)])
    g = intmodel.golden(net, xs, record=True)
    g64 = intmodel.golden(net, xs, record=True, dtype=torch.float64)
    r = intmodel.regsim(net, xs, record=True)
    xin = g.ticks["input"].numpy().astype(np.int64)
    z = 3 * xin[:, 0] - 2 * xin[:, 1]
    want = np.clip((z + 2 * big - 5) // big, 0, 4)
    assert set(want) == {1, 2} and 5 in z  # both sides of the boundary, and on it
    assert np.array_equal(g.ticks["h"].numpy()[:, 0], want)
    assert torch.equal(g.ticks["h"], g64.ticks["h"]) and torch.equal(g.ticks["h"], r.ticks["h"])
    assert torch.equal(g.logits, g64.logits) and torch.equal(g.logits, r.logits)
    assert intmodel.Compiled(net, None).fast() is None  # float64 sums: the torch path
