"""The event-driven simulator integrates the neuron dynamics and agrees with the closed form.

Issue 3 ("a second, independent simulator"): float64 agreement on the sample models and on random
networks (residual with a long-window skip, ReLU6 sub-windows, concat of different depths,
min-pool), plus checks of what the closed form cannot see (integration start, delays, gating).
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

import snnconv
import snnconv.snn.event as event
from snnconv.importer import import_onnx
from snnconv.snn import (SNN, DenseOp, Group, InputLayer, NeuronLayer, PoolLayer, ReadoutLayer)
from snnconv.snn.event import integration_start, simulate_events
from snnconv.snn.simulate import simulate

from .conftest import SAMPLES

RTOL = 1e-9


def rel_err(a, ref) -> float:
    """Per-sample max|a - ref| / max|ref| (spec section 4), worst sample."""
    a, ref = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64)
    den = ref.abs().amax(1).clamp_min(1e-300)
    return float(((a - ref).abs().amax(1) / den).max())


def assert_agree(snn, x, steps=4):
    """Both simulators: logits to RTOL, offsets to RTOL of the window, same silent set and stats."""
    a = simulate(snn, x, record=True)
    b = simulate_events(snn, x, record=True, steps=steps)
    err = rel_err(b.logits, a.logits)
    assert err <= RTOL, err
    for la in snn.layers[:-1]:
        sa, sb = a.offsets[la.name], b.offsets[la.name]
        assert torch.equal(sa > 0, sb > 0), f"{la.name}: silent sets differ"
        d = float((sa - sb).abs().max())
        assert d <= RTOL * max(la.window, 1e-300), (la.name, d, la.window)
        assert (a.stats[la.name].spikes, a.stats[la.name].clipped) == \
            (b.stats[la.name].spikes, b.stats[la.name].clipped), la.name
    return a, b


def torch_ref(module, x):
    m = copy.deepcopy(module).double().eval()
    with torch.no_grad():
        return m(torch.as_tensor(x, dtype=torch.float64))


def convert_module(module, x, **kw):
    return snnconv.convert(module.eval(), x, example_input=torch.as_tensor(x[:2]), **kw)


# --- networks -------------------------------------------------------------------------------------

class LongSkipResidual(nn.Module):
    """h3 = relu(c3(h2) + h1) where h1's window is much longer than h2's: h1's delayed spikes
    reach h3 before t_min(h2)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 64, 5)
        with torch.no_grad():
            self.c1.weight.mul_(6.0)
            self.c2.weight.mul_(0.1)
            self.c2.bias.mul_(0.1)

    def forward(self, x):
        h1 = F.relu(self.c1(x))
        h2 = F.relu(self.c2(h1))
        h3 = F.relu(self.c3(h2) + h1)
        return self.fc(h3.flatten(1))


class SaturatingConcat(nn.Module):
    """A ReLU6 branch next to a long-window ReLU branch (sub-window, input delay), and a concat of
    branches of different depth feeding the output (delayed readout group)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.b = nn.Conv2d(1, 3, 3, padding=1)
        self.c = nn.Conv2d(6, 4, 3, padding=1)
        self.d = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(7 * 64, 5)
        with torch.no_grad():
            self.a.weight.mul_(20.0)
            self.b.weight.mul_(12.0)
            self.b.bias.add_(1.0)

    def forward(self, x):
        ha = F.relu(self.a(x))
        hb = F.relu6(self.b(x))
        h2 = F.relu(self.c(torch.cat([ha, hb], 1)))
        h3 = F.relu(self.d(h2))
        return self.fc(torch.cat([h3, hb], 1).flatten(1))


class MinPoolNet(nn.Module):
    """BatchNorm with negative scales after the ReLU: those channels' max-pool is a min-pool."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 16, 5)
        with torch.no_grad():
            self.bn.weight.copy_(torch.tensor([1.0, -0.7, 0.5, -1.3]))
            self.bn.bias.copy_(torch.tensor([0.1, 2.0, 0.0, 3.0]))
            self.bn.running_mean.copy_(torch.tensor([0.2, 0.1, 0.0, 0.3]))

    def forward(self, x):
        y = F.max_pool2d(self.bn(F.relu(self.c(x))), 3, 2, padding=1)
        return self.fc(y.flatten(1))


@pytest.fixture(scope="module")
def data8():
    return np.random.default_rng(0).random((120, 1, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def residual(data8):
    torch.manual_seed(0)
    m = LongSkipResidual().eval()
    snn = convert_module(m, data8)
    add = next(la for la in snn.neuron_layers() if len(la.groups) == 2)
    main = next(g for g in add.groups if g.delay == 0.0)
    skip = next(g for g in add.groups if g.delay > 0.0)
    return m, snn, add, main, skip


# --- agreement ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_samples_agree(name, digits):
    path = SAMPLES / f"{name}.onnx"
    snn = snnconv.convert(path, SAMPLES / "digits_train.npz")
    x = digits["test_x"]
    _, b = assert_agree(snn, x)
    ref, _ = import_onnx(path).forward(x)
    assert rel_err(b.logits, ref) <= RTOL


@pytest.mark.parametrize("name,tau_c", [("mlp", 1.0), ("cnn", 3.0)])
def test_bound_windows_agree(name, tau_c, digits):
    """Windows from interval bounds (no calibration data), tau_c != 1."""
    path = SAMPLES / f"{name}.onnx"
    snn = snnconv.convert(path, input_range=(0.0, 1.0), tau_c=tau_c)
    x = digits["test_x"][:100]
    _, b = assert_agree(snn, x)
    ref, _ = import_onnx(path).forward(x)
    assert rel_err(b.logits, ref) <= RTOL


class GrowingMLP(nn.Module):
    """Each layer amplifies ~40x: windows reach ~1e6 tau_c while many values stay O(1)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(10, 12)] + [nn.Linear(12, 12) for _ in range(3)])
        self.head = nn.Linear(12, 3)
        with torch.no_grad():
            for lay in self.layers:
                lay.weight.mul_(40.0)

    def forward(self, x):
        for lay in self.layers:
            x = F.relu(lay(x))
        return self.head(x)


def test_long_windows_agree():
    """Spike times kept relative to each layer's window: no loss of precision at latency ~1e6."""
    torch.manual_seed(3)
    m = GrowingMLP().eval()
    x = np.random.default_rng(3).random((200, 10)).astype(np.float32)
    snn = convert_module(m, x)
    assert snn.latency > 1e5 * snn.tau_c
    _, b = assert_agree(snn, x)
    assert rel_err(b.logits, torch_ref(m, x)) <= RTOL
    last = snn.neuron_layers()[-1]
    s = b.offsets[last.name]
    assert float(s[s > 0].min()) < 1e-2 * last.window  # small values in a long window


def test_input_window_rounding_with_non_dyadic_tau_c(digits):
    path = SAMPLES / "mlp.onnx"
    snn = snnconv.convert(path, SAMPLES / "digits_train.npz", tau_c=0.37)
    assert snn.input.window != 0.37  # rounded up: the encoding must not use the window
    x = digits["test_x"][:50]
    ref, _ = import_onnx(path).forward(x)
    assert rel_err(simulate_events(snn, x).logits, ref) <= RTOL
    assert rel_err(snn.simulate(x).logits, ref) <= RTOL


def test_residual_long_skip_agrees(residual, data8):
    m, snn, add, main, skip = residual
    prev = snn.by_name[main.source]
    src = snn.by_name[skip.source]
    assert src.window > 5 * prev.window  # the skip source's window is the longer one
    a, b = assert_agree(snn, data8)
    # delayed skip spikes do arrive before t_min of the previous stage
    arrive = src.t_max - a.offsets[src.name][a.offsets[src.name] > 0] + skip.delay
    assert float(arrive.min()) < prev.t_min
    assert integration_start(snn, add) < prev.t_min - add.t_min
    assert rel_err(b.logits, torch_ref(m, data8)) <= RTOL


def test_saturating_and_concat_agree(data8):
    torch.manual_seed(1)
    m = SaturatingConcat().eval()
    snn = convert_module(m, data8)
    sat = next(la for la in snn.neuron_layers() if la.saturating)
    assert sat.window == pytest.approx(6.0 * snn.tau_c)
    assert sat.window < sat.t_max - snn.by_name["input"].t_max  # a sub-window of its stage
    assert sat.groups[0].delay > 0
    assert any(g.delay > 0 and g.source == sat.name for g in snn.output.groups)
    a, b = assert_agree(snn, data8)
    s = b.offsets[sat.name]
    assert int((s == sat.window).sum()) > 0  # some neurons saturate (fire at t_min)
    assert b.stats[sat.name].clipped == 0
    assert rel_err(b.logits, torch_ref(m, data8)) <= RTOL


def test_min_pool_agrees(data8):
    torch.manual_seed(2)
    m = MinPoolNet().eval()
    snn = convert_module(m, data8)
    pool = next(la for la in snn.layers if isinstance(la, PoolLayer))
    assert pool.minimum.any() and not pool.minimum.all()
    a, b = assert_agree(snn, data8)
    assert rel_err(b.logits, torch_ref(m, data8)) <= RTOL


def test_result_does_not_depend_on_event_blocks(residual, data8):
    """Blocks of events are integrated exactly: 1, 3 blocks and one step per event agree."""
    _, snn, *_ = residual
    x = data8[:4]
    ref = simulate_events(snn, x, steps=None, record=True)
    for steps in (1, 3, 16):
        r = simulate_events(snn, x, steps=steps, record=True)
        assert rel_err(r.logits, ref.logits) <= 1e-12
        for k, s in ref.offsets.items():
            assert torch.equal(s > 0, r.offsets[k] > 0)


# --- semantics the closed form hides --------------------------------------------------------------

def test_reset_at_previous_stage_breaks_residual(residual, data8, monkeypatch):
    """A simulator that starts integrating at t_min of the previous stage loses the early ramp of
    the delayed skip spikes: it must disagree with the ANN (so the agreement above means
    something)."""
    m, snn, add, main, skip = residual
    ref = torch_ref(m, data8)
    assert rel_err(simulate_events(snn, data8).logits, ref) <= RTOL

    def reset_at_previous_stage(snn_, layer):
        return max(snn_.by_name[g.source].t_min for g in layer.groups) - layer.t_min

    monkeypatch.setattr(event, "integration_start", reset_at_previous_stage)
    assert rel_err(simulate_events(snn, data8).logits, ref) > 1e-3


def test_delay_shifts_arrivals_physically(residual, data8):
    """A longer skip delay makes every skip spike arrive d later: the add layer's potential drops by
    w * d / tau_c per spiking input (identity skip: w = 1), so spikes come exactly d later; both
    simulators then disagree with the ANN."""
    m, snn, add, main, skip = residual
    assert skip.ops == []  # identity synapses
    base = simulate_events(snn, data8, record=True)
    s_src = base.offsets[skip.source]
    d = 0.5 * float(s_src[s_src > 0].min())  # still before t_min for every spike
    bad = copy.deepcopy(snn)
    next(g for g in bad.by_name[add.name].groups if g.delay > 0).delay += d
    ev = simulate_events(bad, data8, record=True)
    cf = simulate(bad, data8, record=True)
    assert rel_err(ev.logits, cf.logits) <= RTOL
    ref = torch_ref(m, data8)
    assert rel_err(ev.logits, ref) > 1e-4 and rel_err(cf.logits, ref) > 1e-4
    s0, s1 = base.offsets[add.name], ev.offsets[add.name]
    assert bool((s1 <= s0 + 1e-12).all()) and bool((s1 < s0).any())  # later arrival => smaller V
    w = add.window
    steady = (s0 > 0) & (s1 > 0) & (s0 < w) & (s_src > 0)  # spiking, unclipped, skip input spiked
    assert int(steady.sum()) > 0
    assert float((s0 - s1 - d)[steady].abs().max()) <= 1e-12 * w
    quiet = (s0 > 0) & (s0 < w) & (s_src == 0)  # silent skip input: a delay changes nothing
    assert float((s0 - s1)[quiet].abs().max()) <= 1e-12 * w


def test_spikes_arriving_after_t_min_do_nothing(residual, data8):
    """Phase 2 has slope exactly 1/tau_c: skip spikes delayed past t_min must not change V, so
    the result equals the network without the skip synapses."""
    _, snn, add, main, skip = residual
    late = copy.deepcopy(snn)
    next(g for g in late.by_name[add.name].groups if g.delay > 0).delay += \
        snn.by_name[skip.source].window
    cut = copy.deepcopy(snn)
    cut.by_name[add.name].groups = [g for g in cut.by_name[add.name].groups if g.delay == 0.0]
    r_late = simulate_events(late, data8).logits
    r_cut = simulate_events(cut, data8).logits
    assert rel_err(r_late, r_cut) <= RTOL
    assert rel_err(late.simulate(data8).logits, r_cut) <= RTOL  # the closed form agrees
    assert rel_err(r_cut, simulate_events(snn, data8).logits) > 1e-3


def hand_snn(theta_rel, weight):
    """Three inputs (window [0, 1]) -> neurons (window [1, 3]) -> readout summing their values."""
    k = len(theta_rel)
    inp = InputLayer(name="in", shape=(3,), stage=0, t_min=0.0, t_max=1.0,
                     lo=np.zeros(3), hi=np.ones(3))
    hid = NeuronLayer(name="h", shape=(k,), stage=1, t_min=1.0, t_max=3.0,
                      groups=[Group("in", [DenseOp((3,), weight=np.asarray(weight, float))])],
                      theta_rel=np.asarray(theta_rel, float))
    out = ReadoutLayer(name="out", shape=(1,), stage=2, t_min=3.0, t_max=3.0,
                       groups=[Group("h", [DenseOp((k,), weight=np.ones((1, k)))])],
                       bias=np.zeros(1))
    snn = SNN([inp, hid, out], tau_c=1.0)
    snn.check()
    return snn


@pytest.mark.parametrize("sim", [simulate_events, simulate])
def test_hand_computed_dynamics(sim):
    """Spike times worked out from the ODE by hand. Input spikes at t = 0, 0.2, 0.5 (x = 1, 0.8,
    0.5); theta = theta_rel + 2.
    n0: w = (2, -2, -1), theta = 0.2: V crosses theta at t = 0.1 in phase 1 (ignored), falls to
        -0.1 at t_min, reaches theta at t = 1.3 -> offset 1.7.
    n1: V(t_min) = theta = 1: level-triggered, fires at t_min -> offset 2, not clipped.
    n2: V(t_min) = 0.5, theta = 2.5: reaches theta exactly at t_max -> silent (half-open).
    n3: V(t_min) = 3 > theta = 2: fires at t_min, clipped.
    Second sample: x3 = 0 (silent input): n0 V = 0.4 > theta -> t_min, clipped; n2 V = 0 silent.
    """
    snn = hand_snn([-1.8, -1.0, 0.5, 0.0], [[2, -2, -1], [1, 0, 0], [0, 0, 1], [3, 0, 0]])
    x = np.array([[1.0, 0.8, 0.5], [1.0, 0.8, 0.0]])
    r = sim(snn, x, record=True)
    want = torch.tensor([[1.7, 2.0, 0.0, 2.0], [2.0, 2.0, 0.0, 2.0]], dtype=torch.float64)
    assert torch.allclose(r.offsets["h"], want, rtol=0, atol=1e-14)
    assert r.stats["h"].clipped == 3 and r.stats["h"].spikes == 6
    assert torch.allclose(r.logits[:, 0], want.sum(1), rtol=0, atol=1e-13)


def test_input_encoding_and_clipping_counts():
    snn = hand_snn([0.0], [[1.0, 1.0, 1.0]])
    x = np.array([[-0.5, 0.25, 1.5], [0.0, 1.0, 0.5]])
    a = simulate(snn, x, record=True)
    b = simulate_events(snn, x, record=True)
    assert b.stats["in"].clipped == a.stats["in"].clipped == 2
    want = torch.tensor([[0.0, 0.25, 1.0], [0.0, 1.0, 0.5]], dtype=torch.float64)
    assert torch.equal(b.offsets["in"], want)
    assert b.stats["in"].spikes == 4


def test_bad_steps_rejected():
    with pytest.raises(ValueError, match="steps"):
        simulate_events(hand_snn([0.0], [[1.0, 1.0, 1.0]]), np.zeros((1, 3)), steps=0)


# --- property test --------------------------------------------------------------------------------

class RandomNet(nn.Module):
    def __init__(self, kind, widths, scales, act6, skips, pool, in_dim):
        super().__init__()
        self.kind, self.act6, self.pool = kind, act6, pool
        # skip from two layers back where the shapes match: a delayed synapse group
        self.skips = [bool(k) and i >= 2 and widths[i] == widths[i - 2]
                      for i, k in enumerate(skips)]
        c = 1 if kind == "cnn" else in_dim
        layers = []
        for w in widths:
            layers.append(nn.Conv2d(c, w, 3, padding=1) if kind == "cnn" else nn.Linear(c, w))
            c = w
        self.layers = nn.ModuleList(layers)
        with torch.no_grad():
            for lay, s in zip(self.layers, scales):
                lay.weight.mul_(s)
        n_feat = c * (9 if kind == "cnn" and pool else 36 if kind == "cnn" else 1)
        self.head = nn.Linear(n_feat, 4)

    def forward(self, x):
        hs = [x]
        for i, lay in enumerate(self.layers):
            z = lay(hs[-1])
            if self.skips[i]:
                z = z + hs[-2]
            hs.append(F.relu6(z) if self.act6[i] else F.relu(z))
        h = hs[-1]
        if self.kind == "cnn" and self.pool:
            h = F.max_pool2d(h, 2) if self.pool == "max" else F.avg_pool2d(h, 2)
        return self.head(h.flatten(1))


@st.composite
def random_nets(draw):
    kind = draw(st.sampled_from(["mlp", "cnn"]))
    depth = draw(st.integers(1, 4))
    widths = [draw(st.integers(2, 5))] * depth if draw(st.booleans()) else \
        draw(st.lists(st.integers(2, 5), min_size=depth, max_size=depth))
    scales = draw(st.lists(st.sampled_from([0.2, 1.0, 4.0]), min_size=depth, max_size=depth))
    act6 = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    skips = draw(st.lists(st.sampled_from([True, True, False]), min_size=depth, max_size=depth))
    pool = draw(st.sampled_from([None, "max", "avg"])) if kind == "cnn" else None
    seed = draw(st.integers(0, 2 ** 16))
    return kind, widths, scales, act6, skips, pool, seed


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(random_nets())
def test_property_random_graphs(spec):
    kind, widths, scales, act6, skips, pool, seed = spec
    torch.manual_seed(seed)
    in_dim = 7
    m = RandomNet(kind, widths, scales, act6, skips, pool, in_dim).eval()
    rng = np.random.default_rng(seed)
    shape = (1, 6, 6) if kind == "cnn" else (in_dim,)
    x = (rng.random((32, *shape)) * 2 - 0.5).astype(np.float32)
    snn = convert_module(m, x)
    assert_agree(snn, x)
    assert_agree(snn, x[:2], steps=None)
    assert rel_err(simulate_events(snn, x).logits, torch_ref(m, x)) <= RTOL
