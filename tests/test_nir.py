"""NIR export of rate nets: every exported node kind against snnconv's simulator (through a small
NIR interpreter written from NIR's definitions), the CLI and its refusals, and the acceptance
check in an independent consumer (snnTorch's NIR import) on the trained digits nets.
Skipped when the optional packages (extras nir, nir-check) are absent."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from snnconv.cli import app
from snnconv.rate import convert_rate, simulate
from snnconv.rate import model as rm

from .conftest import SAMPLES

nir = pytest.importorskip("nir")
from snnconv.nirio.export import node_keys, to_nir  # noqa: E402

runner = CliRunner()


def _all_kinds() -> rm.RateNet:
    """Every node kind export-nir maps: input scale, conv, IF, Scale, Add, avg and sum pools,
    Concat, Flatten, Linear with and without bias."""
    r = np.random.default_rng(7)
    return rm.RateNet([
        rm.Input("in/x", (), (1, 4, 4), scale=np.array(1.5)),
        rm.Conv2d("c", ("in/x",), (2, 4, 4), r.normal(0, .6, (2, 1, 3, 3)), r.normal(0, .2, 2),
                  padding=(1, 1)),
        rm.IF("a", ("c",), (2, 4, 4), np.array([0.7, 1.3]), "zero"),
        rm.Conv2d("c2", ("a",), (2, 4, 4), r.normal(0, .8, (2, 2, 1, 1)), None),
        rm.IF("b", ("c2",), (2, 4, 4), np.array(0.6), "zero"),
        rm.Scale("sa", ("a",), (2, 4, 4), np.array([[[0.5]], [[0.8]]])),
        rm.Add("s", ("sa", "b"), (2, 4, 4)),
        rm.SumPool2d("m", ("b",), (2, 2, 2), kernel=(2, 2), stride=(2, 2)),
        rm.AvgPool2d("p", ("s",), (2, 2, 2), kernel=(2, 2), stride=(2, 2)),
        rm.Concat("cat", ("m", "p"), (4, 2, 2)),
        rm.Flatten("f", ("cat",), (16,)),
        rm.Linear("l", ("f",), (6,), r.normal(0, .5, (6, 16)), r.normal(0, .1, 6)),
        rm.IF("d", ("l",), (6,), np.array(0.4), "zero"),
        rm.Linear("l2", ("d",), (3,), r.normal(0, .5, (3, 6)), None),
        rm.Output("out", ("l2",), (3,))], steps=10)


def _nir_step(g, x, v):
    """One step of a NIR graph as NIR defines its nodes (inputs of a node are summed; IF with
    dt = 1: v += r I, spike where v > v_threshold, v = v_reset). ``v`` holds IF membranes."""
    t = {f"{k}.{a}": torch.as_tensor(np.asarray(getattr(n, a)), dtype=torch.float64)
         for k, n in g.nodes.items() for a in ("weight", "bias", "scale", "v_threshold", "r")
         if hasattr(n, a)}
    out, todo = {}, list(g.nodes)
    while todo:
        k = next(k for k in todo if all(s in out for s, d in g.edges if d == k))
        todo.remove(k)
        n, ins = g.nodes[k], [out[s] for s, d in g.edges if d == k]
        u = sum(ins[1:], ins[0]) if ins else x
        if isinstance(n, (nir.Input, nir.Output)):
            y = u
        elif isinstance(n, (nir.Affine, nir.Linear)):
            y = F.linear(u, t[f"{k}.weight"], t.get(f"{k}.bias"))
        elif isinstance(n, nir.Conv2d):
            ints = [tuple(int(i) for i in np.asarray(a).reshape(-1))
                    for a in (n.stride, n.padding, n.dilation)]
            y = F.conv2d(u, t[f"{k}.weight"], t[f"{k}.bias"], *ints, int(n.groups))
        elif isinstance(n, nir.Scale):
            y = u * t[f"{k}.scale"]
        elif isinstance(n, (nir.AvgPool2d, nir.SumPool2d)):
            y = F.avg_pool2d(u, tuple(int(i) for i in n.kernel_size),
                             tuple(int(i) for i in n.stride))
            y = y * (int(np.prod(n.kernel_size)) if isinstance(n, nir.SumPool2d) else 1)
        elif isinstance(n, nir.Flatten):
            y = u.flatten(1 + n.start_dim)
        elif isinstance(n, nir.IF):
            v[k] = v.get(k, 0) + t[f"{k}.r"] * u
            y = (v[k] > t[f"{k}.v_threshold"]).double()
            v[k] = torch.where(y > 0, torch.as_tensor(n.v_reset, dtype=torch.float64), v[k])
        else:
            raise AssertionError(type(n))
        out[k] = y
    return out


def test_every_kind_exports_with_its_meaning(tmp_path):
    net = _all_kinds()
    net.check()
    p = tmp_path / "g.nir"
    nir.write(p, to_nir(net))
    g = nir.read(p)
    keys = node_keys(net)
    assert "in_x" in g.nodes and not any("/" in k for k in g.nodes)
    assert g.metadata["dt"] == 1.0 and int(g.metadata["steps"]) == 10
    kinds = {type(n).__name__ for n in g.nodes.values()}
    assert {"Input", "Conv2d", "IF", "Scale", "SumPool2d", "AvgPool2d", "Flatten", "Affine",
            "Linear", "Output"} <= kinds
    x = np.random.default_rng(1).uniform(0, 1.5, (5, 1, 4, 4))
    ref = simulate(net, x, 10, dtype=torch.float64, counts=True)
    v, acc, spk = {}, 0.0, {n.name: 0.0 for n in net.neurons()}
    for _ in range(10):
        out = _nir_step(g, torch.as_tensor(x), v)
        acc = acc + out["out"]
        for n in net.neurons():
            spk[n.name] = spk[n.name] + out[keys[n.name]]
    # the file holds float32 arrays (what the consumers run): rounding of 6e-8 relative
    want = ref.readout[10].numpy()
    np.testing.assert_allclose((acc / 10).numpy(), want, rtol=0, atol=1e-6 * np.abs(want).max())
    for n in net.neurons():
        np.testing.assert_array_equal(spk[n.name].numpy(), ref.counts[n.name].numpy())
    assert sum(ref.spikes[10].values()) > 0


@pytest.fixture(scope="module")
def rate_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("nir")
    for f in ("cnn.onnx", "mlp.onnx", "digits_train.npz"):
        shutil.copy(SAMPLES / f, d / f)
    for name, extra in (("mlp_zero", ["--reset", "zero"]), ("mlp_sub", [])):
        res = runner.invoke(app, ["convert", str(d / "mlp.onnx"), "--coding", "rate", "--steps",
                                  "16", "--calib", str(d / "digits_train.npz"), *extra,
                                  "-o", str(d / f"{name}.snn"), "-q"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export-nir", str(d / "mlp_zero.snn"), "-q"])  # -> mlp_zero.nir
    assert res.exit_code == 0, res.output
    return d


def test_cli_export_and_refusals(rate_dir):
    d = rate_dir
    res = runner.invoke(app, ["export-nir", str(d / "mlp_zero.snn"), "-o", str(d / "m.nir"),
                              "--json"])
    assert res.exit_code == 0, res.output
    assert '"IF": 2' in res.output
    g = nir.read(d / "m.nir")
    ifs = [n for n in g.nodes.values() if isinstance(n, nir.IF)]
    assert len(ifs) == 2 and all(np.all(n.v_reset == 0) and np.all(n.r == 1) for n in ifs)
    res = runner.invoke(app, ["export-nir", str(d / "mlp_sub.snn"), "-o", str(d / "s.nir")])
    assert res.exit_code == 2 and "subtraction" in res.output and not (d / "s.nir").exists()
    res = runner.invoke(app, ["convert", str(d / "cnn.onnx"), "--coding", "rate", "--reset",
                              "zero", "--calib", str(d / "digits_train.npz"), "-o",
                              str(d / "cnn.snn"), "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export-nir", str(d / "cnn.snn"), "-o", str(d / "c.nir")])
    assert res.exit_code == 2 and "max-pool node '/net/net.3/MaxPool'" in res.output
    res = runner.invoke(app, ["convert", str(d / "mlp.onnx"), "--calib",
                              str(d / "digits_train.npz"), "-o", str(d / "ttfs.snn"), "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export-nir", str(d / "ttfs.snn")])
    assert res.exit_code == 2 and "TTFS model" in res.output and "t_min" in res.output


# --- the independent consumer: snnTorch's NIR import ---------------------------------------------

def _avgpool_cnn() -> bytes:
    """The trained digits CNN with its max-pools made average pools (not retrained: only the
    spike counts of its conv layers are compared, not its predictions)."""
    m = onnx.load(SAMPLES / "cnn.onnx")
    for n in m.graph.node:
        if n.op_type == "MaxPool":
            n.op_type = "AveragePool"
            keep = [a for a in n.attribute if a.name in ("kernel_shape", "strides", "pads")]
            del n.attribute[:]
            n.attribute.extend(keep)
    return m.SerializeToString()


def _joins() -> rm.RateNet:
    """A residual Add and a Concat, which reach NIR as summed edges (and 1x1 placers)."""
    r = np.random.default_rng(3)
    return rm.RateNet([
        rm.Input("x", (), (1, 8, 8)),
        rm.Conv2d("c", ("x",), (3, 8, 8), r.normal(0, .5, (3, 1, 3, 3)), r.normal(.1, .1, 3),
                  padding=(1, 1)),
        rm.IF("a", ("c",), (3, 8, 8), np.array([0.3, 0.5, 0.4]), "zero"),
        rm.Conv2d("c2", ("a",), (3, 8, 8), r.normal(0, .5, (3, 3, 3, 3)), r.normal(.1, .1, 3),
                  padding=(1, 1)),
        rm.Add("s", ("c2", "c"), (3, 8, 8)),
        rm.IF("b", ("s",), (3, 8, 8), np.array(0.5), "zero"),
        rm.AvgPool2d("p", ("b",), (3, 4, 4), kernel=(2, 2), stride=(2, 2)),
        rm.AvgPool2d("q", ("a",), (3, 4, 4), kernel=(2, 2), stride=(2, 2)),
        rm.Concat("cat", ("p", "q"), (6, 4, 4)),
        rm.Flatten("f", ("cat",), (96,)),
        rm.Linear("l", ("f",), (10,), r.normal(0, .3, (10, 96)), r.normal(0, .1, 10)),
        rm.Output("out", ("l",), (10,))], steps=8)


def _same_spikes(net, got, ref, n):
    keys = node_keys(net)
    for k in net.neurons():
        a, b = ref.counts[k.name].numpy().reshape(n, -1), got.counts[keys[k.name]]
        assert a.sum() > 0 and (a != b).mean() <= 1e-3, (k.name, int((a != b).sum()))


def test_snntorch_runs_the_export_as_snnconv_does(rate_dir, digits):
    pytest.importorskip("snntorch")
    pytest.importorskip("nirtorch")
    from snnconv.nirio.consumer import run_snntorch
    from snnconv.rate import load

    d, x, t = rate_dir, digits["test_x"], 16
    net = load(d / "mlp_zero.snn")
    got = run_snntorch(nir.read(d / "mlp_zero.nir"), x, t)
    ref = simulate(net, x, t, counts=True)
    same = float((got.readout.argmax(1) == ref.readout[t].numpy().argmax(1)).mean())
    assert same >= 0.995, same
    _same_spikes(net, got, ref, len(x))
    # docs/nir.md: snnTorch 1.0.0's stock import of NIR's IF cannot run (a Leaky(beta=0.9)
    # returning (spike, membrane) into the next layer); when this changes, so must the docs
    from snntorch.import_nir import import_from_nir

    stock = import_from_nir(nir.read(d / "mlp_zero.nir"))
    with pytest.raises(TypeError, match="tuple"):
        stock(torch.as_tensor(x[:1]))
    cnn = convert_rate(_avgpool_cnn(), SAMPLES / "digits_train.npz", steps=8, reset="zero")
    xs = x[:24]
    for net in (cnn, _joins()):  # conv layers and average pools; residual Add and Concat
        got = run_snntorch(to_nir(net), xs, 8)
        ref = simulate(net, xs, 8, counts=True)
        _same_spikes(net, got, ref, len(xs))
        np.testing.assert_allclose(got.readout, ref.readout[8].numpy(), rtol=1e-4, atol=1e-4)
