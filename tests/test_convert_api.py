"""convert through every entry point: CLI, path, ModelProto, torch module; the model file."""

import json

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

import snnconv
from snnconv.cli import app
from snnconv.errors import ModelFileError
from snnconv.importer import import_onnx

from .conftest import SAMPLES

runner = CliRunner()


def _rel_err(a, b):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float(((a - b).abs().amax(1) / b.abs().amax(1)).max())


def test_cli_convert_json_and_inspect(tmp_path):
    out = tmp_path / "m.snn"
    res = runner.invoke(app, ["convert", str(SAMPLES / "cnn.onnx"), "--calib",
                              str(SAMPLES / "digits_train.npz"), "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["output"] == str(out) and out.is_file()
    s = rep["summary"]
    assert s["latency"] > 0 and s["neurons"] == 8 * 8 * 8 + 16 * 4 * 4
    assert s["calibration"]["method"] == "data" and s["calibration"]["samples"] == 1437
    assert 0 < s["spikes_per_neuron_calibration"] < 1
    kinds = [la["kind"] for la in s["layers"]]
    assert kinds == ["input", "neuron", "pool", "neuron", "pool", "readout"]
    res = runner.invoke(app, ["inspect", str(out), "--json"])
    assert res.exit_code == 0
    assert json.loads(res.stdout)["latency"] == s["latency"]
    res = runner.invoke(app, ["inspect", str(out)])
    assert "latency" in res.stdout and "/net/net.2/Relu" in res.stdout


def test_bare_convert_states_the_assumed_range(tmp_path, digits):
    model = tmp_path / "mlp.onnx"
    model.write_bytes((SAMPLES / "mlp.onnx").read_bytes())
    res = runner.invoke(app, ["convert", str(model)])
    assert res.exit_code == 0, res.output
    assert "assumed inputs in [0, 1]" in res.stderr
    snn = snnconv.load(tmp_path / "mlp.snn")
    assert snn.meta["calibration"]["method"] == "bounds"
    # guaranteed windows: exact for every input in [0, 1], including adversarial corners
    x = np.concatenate([digits["test_x"][:50], np.ones((1, 1, 8, 8), np.float32),
                        np.random.default_rng(0).integers(0, 2, (20, 1, 8, 8)).astype(np.float32)])
    res = snn.simulate(x)
    assert sum(s.clipped for s in res.stats.values()) == 0
    ref, _ = import_onnx(model).forward(x)
    assert _rel_err(res.logits, ref) <= 1e-9


def test_input_range_option(tmp_path, digits):
    snn = snnconv.convert(SAMPLES / "cnn.onnx", input_range=(0.0, 2.0))
    assert float(snn.input.hi) == 2.0
    x = digits["test_x"][:20] * 2
    ref, _ = import_onnx(SAMPLES / "cnn.onnx").forward(x)
    assert _rel_err(snn.simulate(x).logits, ref) <= 1e-9


def test_convert_model_proto_and_torch_module(digits):
    proto = onnx.load(SAMPLES / "cnn.onnx")
    a = snnconv.convert(proto, digits["train_x"])
    x = digits["test_x"][:32]
    ref, _ = import_onnx(proto).forward(x)
    assert _rel_err(a.simulate(x).logits, ref) <= 1e-9

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                              torch.nn.ReLU(), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(64, 10)).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    snn = snnconv.convert(net, digits["train_x"], example_input=torch.zeros(1, 1, 8, 8))
    with torch.no_grad():
        want = net(torch.as_tensor(x)).double()
    assert _rel_err(snn.simulate(x).logits, want) < 1e-5  # torch float32 vs exact float64


def test_model_file_roundtrip_and_corruption(tmp_path, digits):
    snn = snnconv.convert(SAMPLES / "resnet.onnx", digits["train_x"][:256])
    path = tmp_path / "r.snn"
    snn.save(path)
    back = snnconv.load(path)
    x = digits["test_x"][:16]
    assert torch.equal(back.simulate(x).logits, snn.simulate(x).logits)
    assert [la.name for la in back.layers] == [la.name for la in snn.layers]
    assert [g.delay for la in back.layers for g in getattr(la, "groups", [])] == \
        [g.delay for la in snn.layers for g in getattr(la, "groups", [])]

    data = bytearray(path.read_bytes())
    flipped = tmp_path / "flipped.snn"
    data[-100] ^= 0x01
    flipped.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        snnconv.load(flipped)
    trunc = tmp_path / "trunc.snn"
    trunc.write_bytes(path.read_bytes()[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated|corrupt"):
        snnconv.load(trunc)
    res = runner.invoke(app, ["inspect", str(trunc)])
    assert res.exit_code == 2 and str(trunc) in res.stderr


def test_newer_format_version_is_refused(tmp_path):
    from snnconv import modelfile

    snn = snnconv.convert(SAMPLES / "mlp.onnx")
    header, tensors = modelfile.to_header(snn)
    p = tmp_path / "new.snn"
    p.write_bytes(modelfile.pack(modelfile.FORMAT, modelfile.FORMAT_VERSION + 1, header,
                                 tensors))
    with pytest.raises(ModelFileError, match="newer"):
        snnconv.load(p)


def test_output_never_overwrites_input(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes((SAMPLES / "mlp.onnx").read_bytes())
    before = model.read_bytes()
    res = runner.invoke(app, ["convert", str(model), "-o", str(model)])
    assert res.exit_code == 2
    assert model.read_bytes() == before
