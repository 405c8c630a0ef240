"""The onnxruntime backend computes what the closed-form simulator computes.

Both float32 runs are compared with the float64 closed form under a forward error bound of the
float32 evaluation (running error analysis over the SNN's own layers), so "equal" means: every
spike-time offset and logit within that bound and within 1e-5 relative (observed rounding is
~1e-6), and spike/silent or clipped/unclipped sets that differ only where the float64 potential
is within the bound of a window boundary.
"""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import snnconv
from snnconv.backends import onnx_backend
from snnconv.snn import InputLayer, NeuronLayer, PoolLayer, ReadoutLayer, chain_apply, kernels
from snnconv.snn.simulate import group_input, simulate

from .conftest import SAMPLES

EPS32, EPS64 = 2.0 ** -24, 2.0 ** -53


def _gamma(n, eps):
    return n * eps / (1 - n * eps)


def _abs_op(op):
    for f in ("weight", "scale"):
        if getattr(op, f, None) is not None:
            return dataclasses.replace(op, **{f: np.abs(getattr(op, f))})
    return op


def _fan_in(ops) -> int:
    n = 1
    for o in ops:
        if o.kind == "conv":
            n += int(np.prod(o.weight.shape[1:]))
        elif o.kind == "convtranspose":
            n += int(o.weight.shape[0] * np.prod(o.weight.shape[2:]))
        elif o.kind == "dense":
            n += o.weight.shape[1]
        elif o.kind in ("sumpool", "scale"):
            n += int(np.prod(getattr(o, "kernel", ()) or (1,))) + 1
    return n


def reference(snn, x, eps):
    """Float64 offsets, potentials (raw) and a per-element bound on |low precision - exact|."""
    x64 = torch.as_tensor(x, dtype=torch.float64)
    ref = simulate(snn, x64, torch.float64, record=True)
    tau = float(snn.tau_c)
    s, raw, err = {}, {}, {}
    for la in snn.layers:
        if isinstance(la, InputLayer):
            lo = torch.as_tensor(np.asarray(la.lo, np.float64))
            hi = torch.as_tensor(np.asarray(la.hi, np.float64))
            raw[la.name] = (x64 - lo) / (hi - lo) * tau
            err[la.name] = tau * _gamma(8, eps) * (x64.abs() + lo.abs() + hi.abs()) / \
                (hi - lo)
            s[la.name] = ref.offsets[la.name]
            continue
        if isinstance(la, PoolLayer):
            s[la.name] = ref.offsets[la.name]
            out = tuple(la.shape[1:])
            err[la.name] = kernels.pool(err[la.source], "max", la.kernel, la.stride,
                                        la.pads_begin, la.pads_end, la.dilation, out)
            continue
        v, prop, mag, n = 0.0, 0.0, 0.0, len(la.groups) + 6
        for g in la.groups:
            src = snn.by_name[g.source]
            v = v + group_input(g, s[g.source], la, src, tau) * tau
            lag = la.t_min - g.delay - src.t_max
            e_src = err[g.source] + (_gamma(1, eps) * (s[g.source] + abs(lag)) if lag else 0.0)
            aops = [_abs_op(o) for o in g.ops]
            prop = prop + chain_apply(aops, e_src)
            mag = mag + chain_apply(aops, s[g.source] + abs(lag))
            n += _fan_in(g.ops)
        if isinstance(la, ReadoutLayer):
            b = torch.as_tensor(np.asarray(la.bias, np.float64))
            err[la.name] = prop + _gamma(n, eps) * (mag + b.abs() * tau)
            assert torch.allclose(v / tau + b, ref.logits, rtol=1e-12, atol=1e-12)
            return ref, s, raw, err
        th = torch.as_tensor(np.asarray(la.theta_rel, np.float64)) * tau
        r = raw[la.name] = v - th
        e = prop + _gamma(n, eps) * (mag + th.abs())
        # silent (or clipped) by more than the error in both runs: exactly 0 (or the window)
        err[la.name] = torch.where((r < -e) | (r > la.window + e), 0.0, e)
        s[la.name] = ref.offsets[la.name]
        assert torch.allclose(torch.clamp(r, 0.0, la.window), s[la.name], rtol=0, atol=1e-12)
    raise AssertionError("no readout")


def check_close(snn, refs, res, eps):
    """``res`` (a low-precision SimResult with offsets of every layer) is the closed form;
    ``refs = reference(snn, x, eps)``. Returns the number of spike/silent flips."""
    ref, s64, raw, err = refs
    out = snn.output.name
    diff = (res.logits.double() - ref.logits).abs()
    assert (diff <= err[out]).all(), float((diff / err[out]).max())
    # the worst-case bound grows about |W| per layer; observed errors are float32 rounding
    tight = 1e-5 if eps == EPS32 else 1e-12
    assert float((diff.amax(1) / ref.logits.abs().amax(1)).max()) < tight
    flips_total = 0
    for la in snn.layers:
        if isinstance(la, ReadoutLayer):
            continue
        got, e = res.offsets[la.name].double(), err[la.name]
        assert ((got - s64[la.name]).abs() <= e).all(), la.name
        assert float((got - s64[la.name]).abs().max()) <= tight * la.window, la.name
        # spike/silent sets: equal except where the exact potential is within rounding of 0
        r = raw[la.name] if la.name in raw else s64[la.name]
        flips = (got > 0) != (s64[la.name] > 0)
        assert not (flips & (r.abs() > e)).any(), la.name
        near = int(((r.abs() <= e) & (r != 0)).sum())
        assert abs(res.stats[la.name].spikes - int((s64[la.name] > 0).sum())) <= near, la.name
        if isinstance(la, NeuronLayer) and not la.saturating:
            near_w = int(((r - la.window).abs() <= e).sum())
            assert abs(res.stats[la.name].clipped - ref.stats[la.name].clipped) <= near_w
        if isinstance(la, InputLayer):  # the same float ops on exact inputs: exact counts
            assert res.stats[la.name].clipped == ref.stats[la.name].clipped
        flips_total += int(flips.sum())
    return flips_total


def test_wiring_model_keeps_its_synapse_ops(models):
    kinds = {o.kind for la in models["wiring"][0].layers for g in getattr(la, "groups", [])
             for o in g.ops}
    assert {"convtranspose", "select", "transpose"} <= kinds, kinds


class Mixed(nn.Module):
    """Residual add, concat of branches of different depth (a delay), a per-channel affine map
    with negative scales before a max-pool (min-pools), an average pool with per-position
    divisors (a sum-pool synapse) and a signed value carried by +/- populations."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.c3, self.c4 = nn.Conv2d(8, 8, 1), nn.Conv2d(16, 8, 3, padding=1)
        self.c5, self.fc = nn.Conv2d(8, 8, 2, stride=2, padding=1), nn.Linear(72, 10)
        self.register_buffer("scale", torch.tensor([(-1.0) ** i * (0.5 + i / 8)
                                                    for i in range(8)]).view(1, -1, 1, 1))

    def forward(self, x):
        a = F.relu(self.c1(x))
        b = F.relu(self.c2(a) + a)
        c = F.relu(self.c3(b))
        p = torch.cat([F.max_pool2d(a, 2), F.max_pool2d(c * self.scale, 2)], 1)
        d = F.relu(self.c4(p))
        d = F.avg_pool2d(d, 3, stride=1, padding=1, count_include_pad=False)
        return self.fc(F.relu(self.c5(d)).flatten(1))


class Wiring(nn.Module):
    """Ops of real-world exports kept as synapse ops: a transposed convolution, nearest
    upsampling added to a later branch (selections, with a delay) and a transpose."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.c1 = nn.Conv2d(1, 6, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(6, 6, 3, stride=2, padding=1, output_padding=1)
        self.c2, self.c3 = nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        a = F.relu(self.c1(x))
        b = F.relu(self.up(a))
        d = F.relu(self.c2(b) + F.interpolate(a, scale_factor=2, mode="nearest"))
        e = F.relu(self.c3(d).transpose(2, 3) - d)[:, 1:5]
        return self.fc(e.flatten(1))


@pytest.fixture(scope="module")
def models(digits):
    out = {}
    for name in ("mlp", "cnn", "resnet"):
        out[name] = (snnconv.convert(SAMPLES / f"{name}.onnx", SAMPLES / "digits_train.npz"),
                     digits["test_x"][:128])
    g = torch.Generator().manual_seed(1)
    xc = (torch.rand(256, 1, 8, 8, generator=g) * 3 - 1).numpy()  # input range [-1, 2]
    # some outside the input range convert derives from xc ([-1, 2] widened by the margin 1.5)
    xt = (torch.rand(128, 1, 8, 8, generator=g) * 6 - 2.5).numpy()
    net = Mixed().eval()
    out["mixed"] = (snnconv.convert(net, xc, example_input=torch.as_tensor(xc[:2])), xt)
    out["mixed_tau"] = (snnconv.convert(net, xc[:64], example_input=torch.as_tensor(xc[:2]),
                                        tau_c=0.375, percentile=90.0), xt)
    w = Wiring().eval()
    out["wiring"] = (snnconv.convert(w, xc, example_input=torch.as_tensor(xc[:2]), tau_c=0.5),
                     xt)
    return out


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet", "mixed", "mixed_tau", "wiring"])
def test_onnx_backend_float32_equals_closed_form(models, name):
    snn, x = models[name]
    fast = onnx_backend.OnnxSimulator(snn, torch.float32, record=True)(x)
    torch32 = simulate(snn, x, torch.float32, record=True)
    assert fast.logits.dtype == torch.float32
    refs = reference(snn, x, EPS32)
    flips = check_close(snn, refs, fast, EPS32)
    check_close(snn, refs, torch32, EPS32)
    assert flips <= 1e-4 * sum(la.size for la in snn.layers) * len(x)
    if name.startswith("mixed"):
        assert any(la.kind == "pool" and np.any(la.minimum) for la in snn.layers)
        assert fast.stats["input"].clipped > 0  # inputs outside the calibrated range
    if name == "mixed_tau":  # windows from the 90th percentile: hidden values exceed them
        assert sum(st.clipped for n, st in fast.stats.items() if n != "input") > 0
    # the same object without recording and without statistics gives the same logits
    bare = onnx_backend.OnnxSimulator(snn, torch.float32, stats=False)(x)
    assert torch.equal(bare.logits, fast.logits) and not bare.stats


def test_the_comparison_finds_a_small_threshold_error(models):
    snn, x = models["cnn"]
    refs = reference(snn, x, EPS32)
    bad = dataclasses.replace(snn, layers=[dataclasses.replace(la) for la in snn.layers])
    la = bad.neuron_layers()[-1]
    la.theta_rel = np.asarray(la.theta_rel) + 1e-4 * la.window
    with pytest.raises(AssertionError):
        check_close(snn, refs, onnx_backend.OnnxSimulator(bad, record=True)(x), EPS32)


def test_onnx_backend_with_misaligned_delays(models):
    """A delay that does not line windows up shifts only spiking sources (lag != 0)."""
    snn, x = models["mixed"]
    snn = dataclasses.replace(snn, layers=[dataclasses.replace(la) for la in snn.layers])
    la = next(la for la in snn.layers if isinstance(la, NeuronLayer) and len(la.groups) == 2
              and any(g.delay > 0 for g in la.groups))
    la.groups = [dataclasses.replace(g, delay=g.delay - 0.75) for g in la.groups]
    res = onnx_backend.OnnxSimulator(snn, torch.float32, record=True)(x)
    check_close(snn, reference(snn, x, EPS32), res, EPS32)
    base = simulate(models["mixed"][0], x, torch.float64)
    assert (simulate(snn, x, torch.float64).logits - base.logits).abs().max() > 1e-3


def test_onnx_backend_float64_where_onnxruntime_has_the_ops(models):
    snn, x = models["mlp"]  # Gemm, Clip, Add: all have double kernels (Conv has none)
    res = onnx_backend.OnnxSimulator(snn, torch.float64, record=True)(x)
    assert res.logits.dtype == torch.float64
    check_close(snn, reference(snn, x, EPS64), res, EPS64)
    with pytest.raises(onnx_backend.UnsupportedError, match="float64"):
        onnx_backend.OnnxSimulator(models["cnn"][0], torch.float64)


def test_simulate_backend_selection(models):
    snn, x = models["cnn"]
    ref = simulate(snn, x, torch.float32)
    auto = simulate(snn, x, torch.float32, backend="auto")
    assert onnx_backend._CACHE_ATTR in snn.__dict__  # auto took the onnx path for float32
    assert (auto.logits - ref.logits).abs().max() < 1e-5
    assert {k: (v.spikes, v.clipped) for k, v in auto.stats.items()} == \
        {k: (v.spikes, v.clipped) for k, v in ref.stats.items()}
    # float64, observe and noise stay on the reference implementation
    seen = []
    r64 = simulate(snn, x, torch.float64, backend="auto", observe=lambda la, s: seen.append(1))
    assert r64.logits.dtype == torch.float64 and seen
    with pytest.raises(ValueError, match="observe"):
        simulate(snn, x, torch.float32, backend="onnx", noise=0.1)
    with pytest.raises(ValueError, match="backend"):
        simulate(snn, x, backend="tvm")


def test_cached_session_follows_replaced_arrays(models):
    snn, x = models["mlp"]
    snn = dataclasses.replace(snn, layers=[dataclasses.replace(la) for la in snn.layers])
    first = simulate(snn, x, torch.float32, backend="onnx").logits
    out = snn.output
    out.bias = np.asarray(out.bias) + 1.0  # a new array: the cache notices
    second = simulate(snn, x, torch.float32, backend="onnx").logits
    assert torch.allclose(second, first + 1.0, atol=1e-4)
    out.bias += 1.0  # edited in place: snapshot until forget()
    assert torch.equal(simulate(snn, x, torch.float32, backend="onnx").logits, second)
    onnx_backend.forget(snn)
    assert torch.allclose(simulate(snn, x, torch.float32, backend="onnx").logits, first + 2.0,
                          atol=1e-4)


def test_cached_session_walks_the_layers_only_after_an_assignment(models, monkeypatch):
    """The cache compares one edit count per call; the signature walk runs after an attribute
    of some SNN object was assigned, and then finds replaced times and ops (a group's op
    replaced by another with new weights)."""
    snn, x = models["cnn"]
    snn = dataclasses.replace(snn, layers=[dataclasses.replace(la) for la in snn.layers])
    first = simulate(snn, x, torch.float32, backend="auto").logits
    walks = []
    real = onnx_backend._signature
    monkeypatch.setattr(onnx_backend, "_signature", lambda s: walks.append(1) or real(s))
    for _ in range(3):
        assert torch.equal(simulate(snn, x, torch.float32, backend="auto").logits, first)
    assert walks == []
    la = snn.neuron_layers()[0]
    g = la.groups[0]
    w = g.weighted
    g.ops = [o if o is not w else w.with_array(-w.array()) for o in g.ops]
    flipped = simulate(snn, x, torch.float32, backend="auto").logits
    assert len(walks) == 1 and not torch.equal(flipped, first)
    g.ops = [o if o is not g.weighted else w for o in g.ops]  # back: a rebuild, same logits
    assert torch.equal(simulate(snn, x, torch.float32, backend="auto").logits, first)
    la.t_max = la.t_max  # an assignment of the same value: one walk, no rebuild
    sim = onnx_backend.compiled(snn)
    assert onnx_backend.compiled(snn) is sim and len(walks) == 3


def test_an_snn_with_a_compiled_session_copies_and_pickles(models):
    """The session cached on the SNN is not part of the model: deepcopy (quant.equalize makes
    one) and pickle leave it behind instead of failing on onnxruntime's objects."""
    import copy
    import pickle

    snn, x = models["cnn"]
    first = simulate(snn, x, torch.float32, backend="auto").logits
    assert onnx_backend._CACHE_ATTR in snn.__dict__
    for twin in (copy.deepcopy(snn), pickle.loads(pickle.dumps(snn))):
        assert onnx_backend._CACHE_ATTR not in twin.__dict__
        assert torch.equal(simulate(twin, x, torch.float32, backend="auto").logits, first)


def test_weights_go_to_onnxruntime_once():
    """OnnxSimulator hands large arrays to onnxruntime as external initializers: the model it
    serialises holds placeholders only (the weights are not copied into the proto and its
    bytes), and the results are those of the self-contained model."""
    snn = snnconv.convert(SAMPLES / "cnn.onnx", SAMPLES / "digits_train.npz")
    ext: dict[str, np.ndarray] = {}
    lean, _, _ = onnx_backend.build_model(snn, torch.float32, stats=False, external=ext)
    full, _, _ = onnx_backend.build_model(snn, torch.float32, stats=False)
    assert ext and all(a.size >= onnx_backend.EXTERNAL_MIN_SIZE for a in ext.values())
    held = sum(a.nbytes for a in ext.values())
    assert len(full.SerializeToString()) - len(lean.SerializeToString()) >= 0.9 * held
    x = np.load(SAMPLES / "digits_test.npz")["x"][:64]
    sim = onnx_backend.OnnxSimulator(snn, torch.float32, stats=False)
    import onnxruntime as ort

    ref = ort.InferenceSession(full.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sim(x).logits.numpy(), ref.run(["logits"], {"x": x})[0])


@pytest.mark.parametrize("name", ["cnn", "resnet", "mixed", "mixed_tau"])
def test_counts_in_the_blocked_layout_equal_the_reference(models, name):
    """Spike and clip counts of the onnx backend (indicator convolutions + pooled sums, peaks
    instead of clip counts) equal the torch closed form's on the same offsets; a batch where a
    convolutional layer reaches its window is counted again exactly, and only then."""
    snn, x = models[name]
    sim = onnx_backend.OnnxSimulator(snn, torch.float32, record=True)
    got = sim(x)
    # counts of the offsets the session itself produced (float32 rounding may flip a neuron
    # between the two simulators; the counts must describe this session's offsets exactly)
    for la in snn.layers:
        if la.name not in got.offsets:
            continue
        s = got.offsets[la.name]
        assert got.stats[la.name].spikes == int((s > 0).sum()), la.name
        if isinstance(la, NeuronLayer) and not la.saturating:
            w = np.float32(la.window)
            assert got.stats[la.name].clipped == int((s >= float(w)).sum()), la.name
    hidden_clip = any(st.clipped for n, st in got.stats.items() if n != "input")
    assert (sim._exact is not None) == hidden_clip
    if name == "mixed_tau":
        assert hidden_clip
    ref = simulate(snn, x, torch.float32)
    assert {k: (v.spikes, v.clipped) for k, v in got.stats.items()} == \
        {k: (v.spikes, v.clipped) for k, v in ref.stats.items()}
    # small batches run the graph that counts each stage's layers together: same counts
    small = onnx_backend.SMALL_BATCH
    parts = [sim(x[i:i + small]) for i in range(0, len(x), small)]
    assert sim._small is not None
    for la in snn.layers:
        if la.name in got.stats:
            assert sum(p.stats[la.name].spikes for p in parts) == got.stats[la.name].spikes
            assert sum(p.stats[la.name].clipped for p in parts) == got.stats[la.name].clipped
    assert torch.equal(torch.cat([p.logits for p in parts]), got.logits)


def test_residual_layers_skip_their_clamp_until_a_window_is_reached(models):
    """With peaks, a residual layer is the ANN's fused Conv + Add + ReLU (no clamp to its
    window); a batch where an offset reaches a window is run again by the clamped graph. The
    logits then equal the clamped graph's bit for bit, whether or not a window is reached, and
    the unclamped graph alone would have been wrong where one is."""
    snn, x = models["resnet"]
    relaxed, _, _ = onnx_backend.build_model(snn, torch.float32, peaks=True)
    clamped, _, _ = onnx_backend.build_model(snn, torch.float32, peaks=False)
    relus = sum(n.op_type == "Relu" for n in relaxed.graph.node)
    assert relus > 0 and not any(n.op_type == "Relu" for n in clamped.graph.node)
    narrow = snnconv.convert(SAMPLES / "resnet.onnx", SAMPLES / "digits_train.npz",
                             percentile=50.0)  # windows that hidden values exceed
    for net, reached in ((snn, False), (narrow, True)):
        sim = onnx_backend.OnnxSimulator(net, torch.float32)
        got = sim(x)
        bare = onnx_backend.OnnxSimulator(net, torch.float32, stats=False)(x)
        assert torch.equal(got.logits, bare.logits)
        assert (sim._exact is not None) == reached
        alone = torch.from_numpy(sim.session.run(["logits"], {"x": x})[0])
        assert torch.equal(alone, bare.logits) != reached
