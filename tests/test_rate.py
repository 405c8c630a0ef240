"""The rate-coded target: conversion of each op (its ReLU proxy is the imported network), the
simulator against a per-neuron loop reference, agreement vs T on the trained digits nets, the
model file, verify's exit codes and proxy learning."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from snnconv import modelfile
from snnconv.cli import app
from snnconv.errors import ModelFileError, UnsupportedOpError, UsageError
from snnconv.importer import import_onnx
from snnconv.rate import convert_rate, load, save, simulate
from snnconv.rate import model as rm
from snnconv.rate.proxy import relu_forward
from snnconv.rate.simulate import params
from snnconv.rate.train import train_proxy

from .conftest import SAMPLES
from .helpers import G

runner = CliRunner()


def _every_op_model():
    """Conv (grouped) + BatchNorm, ReLU, padded MaxPool, AveragePool, Concat of branches with
    different thresholds, a residual Add, an unfolded Mul, Flatten, Gemm."""
    g = G((2, 8, 8), seed=3)
    x = g.op("Mul", [g.input, g.const(np.full((2, 1, 1), 0.5, np.float32))])
    c = g.conv(x, 2, 4, 3, group=2, pads=[1, 1, 1, 1])
    bn = g.op("BatchNormalization", [c, g.const(g.rng.uniform(0.5, 2, 4)),
                                     g.const(g.rng.normal(0, 0.3, 4)),
                                     g.const(g.rng.normal(0, 0.3, 4)),
                                     g.const(g.rng.uniform(0.5, 2, 4))])
    a = g.op("Relu", [bn])
    b = g.op("Relu", [g.conv(a, 4, 4, 3, pads=[1, 1, 1, 1])])
    s = g.op("Relu", [g.op("Add", [g.conv(b, 4, 4, 1), a])])
    m = g.op("MaxPool", [s], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    v = g.op("AveragePool", [a], kernel_shape=[2, 2], strides=[2, 2])
    cat = g.op("Concat", [m, v], axis=1)
    y = g.op("Relu", [g.conv(cat, 8, 6, 3, pads=[1, 1, 1, 1])])
    f = g.op("Flatten", [y])
    return g.model(g.gemm(f, 6 * 4 * 4, 5))


def _calib(shape, n=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)


@pytest.mark.parametrize("channelwise", [False, True])
def test_every_op_converts_and_its_proxy_is_the_network(channelwise):
    m = _every_op_model()
    x = _calib((2, 8, 8))
    net = convert_rate(m.SerializeToString(), (x, None), steps=16, channelwise=channelwise,
                       percentile=99.0)
    kinds = {n.kind for n in net.nodes}
    assert {"input", "conv2d", "if", "maxpool2d", "avgpool2d", "concat", "add", "scale",
            "flatten", "linear", "output"} <= kinds
    assert not any(n.name.endswith("BatchNormalization") for n in net.nodes)  # folded
    ref, _ = import_onnx(m.SerializeToString()).forward(x)
    got = relu_forward(net, torch.as_tensor(x, dtype=torch.float64),
                       params(net, torch.float64))
    assert float((got - ref).abs().max()) <= 1e-9 * float(ref.abs().max())
    ifs = net.neurons()
    assert all(np.asarray(n.threshold).shape == ((n.shape[0],) if channelwise else ())
               for n in ifs)


@pytest.mark.parametrize("name", ["cnn", "mlp", "resnet"])
def test_samples_proxy_equals_imported_network(name, digits):
    net = convert_rate(SAMPLES / f"{name}.onnx", SAMPLES / "digits_train.npz", steps=8)
    x = digits["test_x"][:64]
    ref, _ = import_onnx(SAMPLES / f"{name}.onnx").forward(x)
    got = relu_forward(net, torch.as_tensor(x, dtype=torch.float64),
                       params(net, torch.float64))
    assert float((got - ref).abs().max()) <= 1e-9 * float(ref.abs().max())


def test_refusals():
    g = G((1, 6, 6))
    y = g.op("Clip", [g.conv(g.input, 1, 2, 3), g.const(np.float32(0)), g.const(np.float32(6))])
    with pytest.raises(UnsupportedOpError, match="Clip"):
        convert_rate(g.model(g.gemm(g.op("Flatten", [y]), 32, 3)).SerializeToString(),
                     (_calib((1, 6, 6)), None))
    g = G((1, 6, 6))
    y = g.op("Relu", [g.op("MaxPool", [g.conv(g.input, 1, 2, 3)], kernel_shape=[2, 2],
                           strides=[2, 2])])
    with pytest.raises(UnsupportedOpError, match="put the ReLU before the MaxPool"):
        convert_rate(g.model(g.gemm(g.op("Flatten", [y]), 8, 3)).SerializeToString(),
                     (_calib((1, 6, 6)), None))
    with pytest.raises(UsageError, match="calibration data"):
        convert_rate(SAMPLES / "mlp.onnx")


# --- the simulator against a per-neuron, per-step loop reference ---------------------------------

def _tiny(reset: str, v_init: float) -> rm.RateNet:
    r = np.random.default_rng(5)
    th = np.array([0.7, 1.3])
    return rm.RateNet([
        rm.Input("in", (), (1, 4, 4)),
        rm.Conv2d("c", ("in",), (2, 4, 4), r.normal(0, 0.6, (2, 1, 3, 3)), r.normal(0, .2, 2),
                  padding=(1, 1)),
        rm.IF("a", ("c",), (2, 4, 4), th, reset, v_init * th),
        rm.Conv2d("c2", ("a",), (2, 4, 4), r.normal(0, 0.8, (2, 2, 1, 1)), r.normal(0.3, .1, 2)),
        rm.IF("b", ("c2",), (2, 4, 4), np.array(0.9), reset, np.array(v_init * 0.9)),
        rm.Scale("sa", ("a",), (2, 4, 4), np.array([[[0.5]], [[0.8]]])),
        rm.Add("s", ("sa", "b"), (2, 4, 4)),
        rm.MaxPool2d("m", ("b",), (2, 2, 2), kernel=(2, 2), stride=(2, 2)),
        rm.AvgPool2d("p", ("s",), (2, 2, 2), kernel=(2, 2), stride=(2, 2)),
        rm.Concat("cat", ("m", "p"), (4, 2, 2)),
        rm.Flatten("f", ("cat",), (16,)),
        rm.Linear("l", ("f",), (3,), r.normal(0, 0.5, (3, 16)), r.normal(0, .1, 3)),
        rm.Output("out", ("l",), (3,))], steps=12)


def _loop_reference(net: rm.RateNet, x: np.ndarray, steps: int):
    """Plain loops over samples, neurons and steps; the rule of each node written out."""
    nb = len(x)
    n = {k.name: k for k in net.nodes}
    c, a, c2, b = n["c"], n["a"], n["c2"], n["b"]
    va = np.broadcast_to(a.v_init.reshape(-1, 1, 1), (nb, 2, 4, 4)).copy()
    vb = np.full((nb, 2, 4, 4), float(b.v_init))
    cnt_b = np.zeros((nb, 2, 4, 4))
    acc = np.zeros((nb, 3))
    spikes = 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for _ in range(steps):
        sa = np.zeros((nb, 2, 4, 4))
        sb = np.zeros((nb, 2, 4, 4))
        for i in range(nb):
            for o in range(2):
                for h in range(4):
                    for w in range(4):
                        cur = c.bias[o] + (c.weight[o, 0] * xp[i, 0, h:h + 3, w:w + 3]).sum()
                        va[i, o, h, w] += cur
                        if va[i, o, h, w] >= a.threshold[o]:
                            sa[i, o, h, w] = 1
                            va[i, o, h, w] = va[i, o, h, w] - a.threshold[o] \
                                if a.reset == "subtract" else 0.0
            for o in range(2):
                for h in range(4):
                    for w in range(4):
                        cur = c2.bias[o] + sum(c2.weight[o, j, 0, 0] * sa[i, j, h, w]
                                               for j in range(2))
                        vb[i, o, h, w] += cur
                        if vb[i, o, h, w] >= float(b.threshold):
                            sb[i, o, h, w] = 1
                            vb[i, o, h, w] = vb[i, o, h, w] - float(b.threshold) \
                                if b.reset == "subtract" else 0.0
        spikes += sa.sum() + sb.sum()
        cnt_b += sb
        s = sa * n["sa"].scale + sb
        feat = np.zeros((nb, 4, 2, 2))
        for i in range(nb):
            for ch in range(2):
                for h in range(2):
                    for w in range(2):
                        win = [(2 * h + dh, 2 * w + dw) for dh in range(2) for dw in range(2)]
                        best = max(win, key=lambda p: (cnt_b[i, ch][p], -win.index(p)))
                        feat[i, ch, h, w] = sb[i, ch][best]
                        feat[i, 2 + ch, h, w] = np.mean([s[i, ch][p] for p in win])
        lin = n["l"]
        acc += feat.reshape(nb, -1) @ lin.weight.T + lin.bias
    return acc / steps, spikes


@pytest.mark.parametrize("reset,v_init", [("subtract", 0.0), ("zero", 0.5)])
def test_simulator_matches_loop_reference(reset, v_init):
    net = _tiny(reset, v_init)
    net.check()
    x = np.random.default_rng(1).uniform(0, 1.5, (3, 1, 4, 4))
    res = simulate(net, x, (5, 12), dtype=torch.float64)
    for t in (5, 12):
        ref, spk = _loop_reference(net, x, t)
        np.testing.assert_allclose(res.readout[t].numpy(), ref, rtol=0, atol=1e-12)
        assert sum(res.spikes[t].values()) == spk
    assert 0 < sum(res.spikes[12].values()) < 12 * 3 * 64


def test_events_count_spikes_times_fanout():
    net = _tiny("subtract", 0.0)
    x = np.random.default_rng(2).uniform(0, 1.5, (2, 1, 4, 4))
    res = simulate(net, x, 6, dtype=torch.float64, counts=True)
    a = res.counts["a"].sum(0).numpy()  # each spike of a reaches 2 (1x1 conv) + 1 (scale)
    b = res.counts["b"].sum(0).numpy()  # b reaches the pools, whose outputs feed Linear
    assert b.sum() > 0 and a.sum() > 0
    assert res.events[6] > 3 * a.sum()  # the Linear's share (pooled spikes x 3) on top


# --- trained digits nets ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cnn_rate(tmp_path_factory):
    d = tmp_path_factory.mktemp("rate")
    for f in ("cnn.onnx", "mlp.onnx", "digits_train.npz", "digits_test.npz"):
        shutil.copy(SAMPLES / f, d / f)
    res = runner.invoke(app, ["convert", str(d / "cnn.onnx"), "--coding", "rate", "--steps", "32",
                              "--calib", str(d / "digits_train.npz"), "--percentile", "99.9",
                              "-o", str(d / "cnn_rate.snn"), "-q"])
    assert res.exit_code == 0, res.output
    return d


def test_agreement_rises_with_steps(cnn_rate, digits):
    net = load(cnn_rate / "cnn_rate.snn")
    ref = import_onnx(cnn_rate / "cnn.onnx").forward(digits["test_x"])[0].argmax(1).numpy()
    res = simulate(net, digits["test_x"], (2, 8, 32))
    agree = {t: float((res.readout[t].argmax(1).numpy() == ref).mean()) for t in res.steps}
    assert agree[2] < agree[8] <= agree[32]
    assert agree[32] >= 0.97
    spk = {t: sum(res.spikes[t].values()) for t in res.steps}
    assert spk[2] < spk[8] < spk[32]


def test_model_file(cnn_rate):
    p = cnn_rate / "cnn_rate.snn"
    net = load(p)
    assert modelfile.peek_format(p) == "snnconv-rate"
    with pytest.raises(ModelFileError, match="rate-coded"):
        modelfile.load(p)
    save(net, cnn_rate / "copy.snn")
    again = load(cnn_rate / "copy.snn")
    assert [type(n) for n in again.nodes] == [type(n) for n in net.nodes]
    for u, v in zip(net.nodes, again.nodes):
        for k in rm.ARRAYS:
            if getattr(u, k, None) is not None:
                np.testing.assert_array_equal(getattr(u, k), getattr(v, k))
    raw = bytearray((cnn_rate / "copy.snn").read_bytes())
    raw[-3] ^= 0xFF
    (cnn_rate / "bad.snn").write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="checksum|corrupt"):
        load(cnn_rate / "bad.snn")


def test_verify_exit_codes(cnn_rate):
    d = cnn_rate
    args = ["verify", str(d / "cnn_rate.snn"), "--data", str(d / "digits_test.npz"),
            "--steps", "2,8"]
    ok = runner.invoke(app, [*args, "--min-agreement", "97", "--json"])
    assert ok.exit_code == 0, ok.output
    assert "not exact" in ok.output
    import json

    rep = json.loads(ok.output)
    assert [r["steps"] for r in rep["rows"]] == [2, 8, 32]
    assert rep["rows"][0]["agreement"] < rep["rows"][2]["agreement"]
    assert runner.invoke(app, [*args, "--min-agreement", "100", "-q"]).exit_code == 1
    assert runner.invoke(app, [*args, "-q"]).exit_code == 0  # no threshold, no verdict
    assert runner.invoke(app, [*args, "--min-agreement", "101", "-q"]).exit_code == 2
    # a broken model: thresholds 3x too high, so most neurons fall silent
    net = load(d / "cnn_rate.snn")
    for n in net.neurons():
        n.threshold = np.asarray(n.threshold) * 3
    save(net, d / "broken.snn")
    res = runner.invoke(app, ["verify", str(d / "broken.snn"), "--data",
                              str(d / "digits_test.npz"), "--min-agreement", "97", "--json"])
    assert res.exit_code == 1
    assert json.loads(res.output)["agreement_at_model_steps"] < rep["agreement_at_model_steps"]


def test_cli_run_inspect_and_option_checks(cnn_rate):
    d = cnn_rate
    res = runner.invoke(app, ["run", str(d / "cnn_rate.snn"), "--data",
                              str(d / "digits_test.npz"), "--steps", "8", "--json"])
    assert res.exit_code == 0 and '"accuracy"' in res.output
    assert runner.invoke(app, ["inspect", str(d / "cnn_rate.snn"), "-q"]).exit_code == 0
    res = runner.invoke(app, ["convert", str(d / "cnn.onnx"), "--steps", "8", "--calib",
                              str(d / "digits_train.npz"), "-o", str(d / "x.snn")])
    assert res.exit_code == 2  # --steps without --coding rate
    res = runner.invoke(app, ["convert", str(d / "cnn.onnx"), "--coding", "rate", "--tau-c", "2",
                              "--calib", str(d / "digits_train.npz"), "-o", str(d / "x.snn")])
    assert res.exit_code == 2


def test_proxy_learning_improves_small_t(cnn_rate, digits):
    d = cnn_rate
    net = convert_rate(d / "mlp.onnx", d / "digits_train.npz", steps=4, percentile=99.9)
    x, y = digits["test_x"], digits["test_y"]
    before = float((simulate(net, x, 4).readout[4].argmax(1).numpy() == y).mean())
    tuned, rep = train_proxy(net, d / "digits_train.npz", epochs=2, lr=1e-3, seed=0)
    after = float((simulate(tuned, x, 4).readout[4].argmax(1).numpy() == y).mean())
    assert after >= before + 0.05, (before, after)
    assert rep.best_epoch > 0 and tuned.meta["proxy"]["history"][0]["epoch"] == 0
    q, _ = train_proxy(net, d / "digits_train.npz", epochs=1, quantize=3, seed=0)
    for n in q.nodes:
        if n.kind in ("linear", "conv2d"):
            w = np.asarray(n.weight).reshape(n.weight.shape[0], -1)
            assert all(len(np.unique(np.abs(r[r != 0]))) <= 3 for r in w)  # 2^(3-1)-1 levels


def test_cli_finetune_proxy(cnn_rate):
    d = cnn_rate
    src = d / "cnn_rate.snn"
    res = runner.invoke(app, ["finetune", str(src), "--proxy", "--steps", "4", "--epochs", "1",
                              "-o", str(d / "p.snn"), "--json"])
    assert res.exit_code == 0, res.output
    tuned = load(d / "p.snn")
    assert tuned.steps == 4 and tuned.meta["proxy"]["config"]["steps"] == 4
    assert runner.invoke(app, ["finetune", str(src), "-o", str(d / "p.snnq")]).exit_code == 2
    assert runner.invoke(app, ["finetune", str(src), "--proxy", "--time-bits", "3", "-o",
                               str(d / "q.snn")]).exit_code == 2
