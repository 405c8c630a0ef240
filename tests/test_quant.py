"""Quantisation building blocks: exact equalisation, scale folding, tick allocation, profiles."""

import functools

import numpy as np
import pytest
import torch

import snnconv
from snnconv import quant
from snnconv.errors import UsageError
from snnconv.snn import ConvOp, PlaceOp, ReshapeOp, chain_apply

from .conftest import ROOT, SAMPLES


@functools.cache
def _snn(name):
    return snnconv.convert(SAMPLES / f"{name}.onnx", SAMPLES / "digits_train.npz")


def _batches(n=1024):
    x = np.load(SAMPLES / "digits_train.npz")["x"][:n].astype(np.float64)
    return [torch.as_tensor(x[i:i + 512]) for i in range(0, len(x), 512)]


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_equalisation_is_exact_and_equalises(name, digits):
    snn = _snn(name)
    eq, fac = quant.equalize(snn, _batches())
    assert fac, "some channel ranges differ, so some factors are not 1"
    x = digits["test_x"]
    a = snn.simulate(x, record=True)
    b = eq.simulate(x, record=True)
    rel = float((a.logits - b.logits).abs().max() / a.logits.abs().max())
    assert rel < 1e-12, rel
    assert sum(s.clipped for s in b.stats.values()) == 0
    # per-channel calibrated maxima now equal the layer's max (channels with any activity)
    stats = {}

    def obs(layer, v):
        if layer.name in fac and layer.kind == "neuron":
            stats[layer.name] = quant.channel_max(v)

    from snnconv.snn import equivalent
    equivalent.forward(eq.layers, torch.cat(_batches()), observe=obs)
    for k, m in stats.items():
        live = m[m > 0]
        assert np.allclose(live, live.max(), rtol=1e-9), (k, live.min() / live.max())
    # a pool passes the factor of its source through; a consumer of the pool got the inverse
    pools = [la for la in eq.layers if la.kind == "pool"]
    for p in pools:
        if p.source in fac:
            assert np.array_equal(fac[p.name], fac[p.source])


def test_fold_chain_through_place_and_reshape():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 2, 3, 3))
    ops = [ConvOp((2, 5, 5), weight=w, stride=(1, 1), pads_begin=(1, 1), pads_end=(1, 1),
                  dilation=(1, 1), groups=1),
           PlaceOp((3, 5, 5), axis=0, offset=2, total=6),
           ReshapeOp((6, 5, 5), shape=(150,))]
    s_in = quant.channel_full(np.array([2.0, 0.5]), (2, 5, 5))
    s_out = rng.uniform(0.5, 2, size=150)
    s_out.reshape(6, 25)[:, :] = s_out.reshape(6, 25)[:, :1]  # per channel of the (6,5,5) view
    folded = quant.fold_chain(ops, (2, 5, 5), (150,), s_in, s_out)
    assert [o.kind for o in folded].count("conv") == 1
    assert not any(o.kind == "scale" for o in folded)
    x = torch.as_tensor(rng.uniform(size=(4, 2, 5, 5)))
    want = chain_apply(ops, x * torch.as_tensor(s_in)) * torch.as_tensor(s_out)
    got = chain_apply(folded, x)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_fold_chain_falls_back_to_dense_for_per_position_scales():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(2, 1, 3, 3))
    ops = [ConvOp((1, 4, 4), weight=w, stride=(1, 1), pads_begin=(0, 0), pads_end=(0, 0),
                  dilation=(1, 1), groups=1)]
    s_in = rng.uniform(0.5, 2, size=(1, 4, 4))  # per position: not foldable into a kernel
    folded = quant.fold_chain(ops, (1, 4, 4), (2, 2, 2), s_in, None)
    assert folded[0].kind == "dense"
    x = torch.as_tensor(rng.uniform(size=(3, 1, 4, 4)))
    assert torch.allclose(chain_apply(folded, x), chain_apply(ops, x * torch.as_tensor(s_in)))


def test_tick_allocation_respects_cap_and_budget():
    snn = _snn("resnet")
    stats = quant.act_stats(snn, _batches())
    t = quant.allocate_ticks(snn, stats, 16, None)
    assert set(t.values()) == {16}
    n = len(t)
    for budget in (n, 3 * n, 10 * n):
        t = quant.allocate_ticks(snn, stats, 16, budget)
        assert sum(t.values()) <= budget and all(1 <= v <= 16 for v in t.values())
    with pytest.raises(UsageError, match="one tick per stage"):
        quant.allocate_ticks(snn, stats, 16, n - 1)


def test_best_range_trades_step_for_clipping():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.exponential(1.0, 100_000), [50.0]])  # one outlier
    x, rel = quant.best_range(v, float(v.max()), 16)
    assert x < 20  # clipping the outlier beats 16 ticks over [0, 50]
    x2, rel2 = quant.best_range(v, float(v.max()), 256)
    assert rel2 < rel


def test_row_steps_minimise_error():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(5, 200))
    s = quant.row_steps(rows, 4)

    def err(step):
        q = np.clip(np.round(rows / step[:, None]), -7, 7) * step[:, None]
        return ((rows - q) ** 2).sum(1)

    maxstep = np.abs(rows).max(1) / 7
    assert np.all(err(s) <= err(maxstep) + 1e-12)
    sb = quant.row_steps(rows, 1)
    assert np.allclose(sb, np.abs(rows).mean(1))


def test_profiles_load_and_refuse_unknown_keys(tmp_path):
    shipped = sorted((ROOT / "hardware").glob("*.yaml"))
    assert len(shipped) >= 2
    for p in shipped:
        prof = quant.load_profile(p)
        assert prof.name
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nweight_bitz: 4\n")
    with pytest.raises(UsageError, match="weight_bitz"):
        quant.load_profile(bad)
    bad.write_text("ramp: sometimes\n")
    with pytest.raises(UsageError, match="ramp"):
        quant.load_profile(bad)


def test_fit_report_flags_what_does_not_fit():
    snn = _snn("cnn")
    stats = quant.act_stats(snn, _batches())
    prof = quant.Profile(max_fan_in=32, v_bits=10, max_ticks=8, weight_memory_bytes=100)
    net, _ = quant.build(snn, stats, quant.QuantConfig(bits=4), prof)
    rep = quant.fit_report(net, prof)
    assert not rep["ok"] and not rep["memory_ok"]
    issues = " ".join(i for r in rep["layers"] for i in r["issues"])
    assert "> 32" in issues and "fan-in" in issues and "V needs" in issues
    assert all(la.ticks <= 8 for la in net.hidden())
    ok = quant.fit_report(net, quant.Profile())
    assert ok["ok"]


def test_power_of_two_ramp_and_per_layer_scales():
    snn = _snn("mlp")
    stats = quant.act_stats(snn, _batches())
    prof = quant.Profile(ramp="per_layer", ramp_power_of_two=True, weight_scale="per_layer")
    net, _ = quant.build(snn, stats, quant.QuantConfig(bits=4, time_bits=4), prof)
    for la in net.hidden():
        r = np.unique(la.ramp)
        assert r.size == 1 and 2 ** int(np.log2(r[0])) == r[0]
        # every group lands on the same unit: step * R = tick size
        assert np.allclose(np.asarray(la.step) * np.asarray(la.ramp), la.scale)
