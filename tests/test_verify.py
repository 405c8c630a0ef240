"""verify: passes on exact conversions, and fails (exit 1, naming the layer) when it must."""

import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

import snnconv
from snnconv.cli import app
from snnconv.verify import verify

from .conftest import SAMPLES

runner = CliRunner()


@pytest.fixture(scope="module")
def cnn_snn(tmp_path_factory):
    d = tmp_path_factory.mktemp("verify")
    for f in ("cnn.onnx", "digits_train.npz", "digits_test.npz"):
        shutil.copy(SAMPLES / f, d / f)
    snn = snnconv.convert(d / "cnn.onnx", d / "digits_train.npz")
    snn.save(d / "cnn.snn")
    return d


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_samples_verify_exactly(name, tmp_path):
    snn = snnconv.convert(SAMPLES / f"{name}.onnx", SAMPLES / "digits_train.npz")
    rep = verify(snn, SAMPLES / f"{name}.onnx", SAMPLES / "digits_test.npz")
    assert rep.ok, rep.failures
    assert rep.mapping_err_max <= 1e-9
    assert rep.reference64_err_max <= 1e-9
    assert rep.ort_bound_ratio_max <= 1.0
    assert 0 < rep.ort_err_max < 1e-5  # float32 rounding level, not zero (it is a real run)
    assert rep.top1_agreement == 1.0
    assert rep.accuracy_ann == rep.accuracy_snn > 0.9
    assert all(c.clipped == 0 for c in rep.layers)
    assert 0 < rep.spikes_per_neuron < 1


def test_cli_verify_json_and_junit(cnn_snn):
    d = cnn_snn
    res = runner.invoke(app, ["verify", str(d / "cnn.snn"), "--data", str(d / "digits_test.npz"),
                              "--json", "--report-json", str(d / "r.json"), "--junit",
                              str(d / "j.xml")])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["ok"] and rep["samples"] == 360
    assert json.loads((d / "r.json").read_text())["mapping_err_max"] == rep["mapping_err_max"]
    root = ET.parse(d / "j.xml").getroot()
    suite = root.find("testsuite")
    assert suite.get("failures") == "0"
    names = [tc.get("name") for tc in suite.iter("testcase")]
    assert "mapping exactness (float64)" in names and any(n.startswith("layer ") for n in names)


def test_bare_verify_uses_recorded_files(cnn_snn, tmp_path):
    d = cnn_snn
    res = runner.invoke(app, ["verify", str(d / "cnn.snn"), "-q"])
    assert res.exit_code == 0, res.output
    assert "calibration data" in res.stderr
    # a changed source file is refused (exit 2), not silently used
    moved = tmp_path / "cnn.snn"
    shutil.copy(d / "cnn.snn", moved)
    data = np.load(d / "digits_train.npz")
    np.savez(d / "digits_train.npz", x=data["x"][:100], y=data["y"][:100])
    try:
        res = runner.invoke(app, ["verify", str(moved), "-q"])
        assert res.exit_code == 2
        assert "changed since conversion" in res.stderr
    finally:
        shutil.copy(SAMPLES / "digits_train.npz", d / "digits_train.npz")


def _first_failure(rep):
    return rep.first_mismatch


def test_short_window_is_a_mismatch_unless_allowed(tmp_path):
    snn = snnconv.convert(SAMPLES / "cnn.onnx", SAMPLES / "digits_train.npz", percentile=50)
    path = tmp_path / "short.snn"
    snn.save(path)
    rep = verify(path, SAMPLES / "cnn.onnx", SAMPLES / "digits_test.npz")
    assert not rep.ok
    first = next(la for la in snn.layers if la.kind == "neuron")
    assert rep.first_mismatch == first.name
    assert any("clipped" in f for f in rep.failures)
    rep2 = verify(path, SAMPLES / "cnn.onnx", SAMPLES / "digits_test.npz", allow_clipping=True)
    assert rep2.ok, rep2.failures
    assert rep2.mapping_err_max <= 1e-9  # exact w.r.t. the windowed network
    assert rep2.windowed_deviation_max > 1e-3  # and far from the original, reported
    res = runner.invoke(app, ["verify", str(path), "--onnx", str(SAMPLES / "cnn.onnx"),
                              "--data", str(SAMPLES / "digits_test.npz"), "-q"])
    assert res.exit_code == 1


def test_corrupted_threshold_is_found_at_its_layer(tmp_path):
    snn = snnconv.convert(SAMPLES / "cnn.onnx", SAMPLES / "digits_train.npz")
    layer = [la for la in snn.layers if la.kind == "neuron"][1]
    th = np.array(np.broadcast_to(layer.theta_rel, layer.shape))
    th[3] += 0.25  # one channel's thresholds
    layer.theta_rel = th
    path = tmp_path / "bad.snn"
    snn.save(path)
    res = runner.invoke(app, ["verify", str(path), "--onnx", str(SAMPLES / "cnn.onnx"),
                              "--data", str(SAMPLES / "digits_test.npz"), "--json"])
    assert res.exit_code == 1
    rep = json.loads(res.stdout)
    assert rep["first_mismatch"] == layer.name
    assert any(layer.name in f for f in rep["failures"])


def test_other_onnx_model_is_a_mismatch(tmp_path):
    snn = snnconv.convert(SAMPLES / "mlp.onnx", SAMPLES / "digits_train.npz")
    snn.save(tmp_path / "mlp.snn")
    m = onnx.load(SAMPLES / "mlp.onnx")
    init = next(t for t in m.graph.initializer if t.dims and len(t.dims) == 2)
    w = numpy_helper.to_array(init).copy()
    w *= 1.01
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(m, tmp_path / "other.onnx")
    rep = verify(tmp_path / "mlp.snn", tmp_path / "other.onnx", SAMPLES / "digits_test.npz")
    assert not rep.ok
    assert rep.first_mismatch is not None and rep.first_mismatch != "input"
    assert any("not the file this SNN was converted from" in w for w in rep.warnings)


def test_data_outside_calibrated_range_is_reported(tmp_path):
    snn = snnconv.convert(SAMPLES / "cnn.onnx", SAMPLES / "digits_train.npz")
    x = np.load(SAMPLES / "digits_test.npz")["x"][:64]
    np.save(tmp_path / "bright.npy", np.clip(x * 3.0, 0, 3.0))
    rep = verify(snn, SAMPLES / "cnn.onnx", tmp_path / "bright.npy")
    assert not rep.ok
    assert rep.clipped_inputs > 0
    assert rep.first_mismatch == "input"


@pytest.mark.parametrize("simulator", ["closed", "event"])
def test_long_skip_residual_verifies_in_both_simulators(simulator, tmp_path):
    """A residual add whose skip source has a longer window than the layer before the add: the
    skip's delayed spikes arrive before t_min of that layer (integration must not restart)."""
    import torch

    from .test_event import LongSkipResidual

    torch.manual_seed(0)
    net = LongSkipResidual().eval()
    path = tmp_path / "res.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    x = np.random.default_rng(0).random((96, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    snn = snnconv.convert(path, tmp_path / "x.npy")
    add = next(la for la in snn.neuron_layers() if len(la.groups) == 2)
    windows = {g.source: snn.by_name[g.source].window for g in add.groups}
    assert max(windows.values()) > 3 * min(windows.values())
    rep = verify(snn, path, tmp_path / "x.npy", simulator=simulator)
    assert rep.ok, rep.failures
    assert rep.mapping_err_max <= 1e-9


def test_verify_against_another_architecture(cnn_snn):
    """Same input and output shapes, other layers: a mismatch (exit 1), never an internal error;
    layers whose tensors have other shapes are named and skipped."""
    res = runner.invoke(app, ["verify", str(cnn_snn / "cnn.snn"), "--onnx",
                              str(SAMPLES / "mlp.onnx"), "--data",
                              str(SAMPLES / "digits_test.npz"), "-q"])
    assert res.exit_code == 1, res.output
    assert "not compared" in res.stderr
    res = runner.invoke(app, ["verify", str(cnn_snn / "cnn.snn"), "--onnx",
                              str(cnn_snn / "other.onnx"), "-q"])
    assert res.exit_code == 2 and "not found" in res.stderr


def test_input_shape_parsing():
    from snnconv.cli.options import parse_shape as _parse_shape
    from snnconv.errors import UsageError

    assert _parse_shape("3,32,32") == (3, 32, 32) == _parse_shape("3x32x32")
    for bad in ("1,x,8", "3,,3", "a", "0,3"):
        with pytest.raises(UsageError):
            _parse_shape(bad)


def test_float32_bound_is_tight_enough_to_mean_something(tmp_path):
    """The onnxruntime tolerance is a forward error bound, not a guess; on a ConvTranspose /
    LeakyReLU / max network it stays far below the output's size (so it can catch bugs)."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 4, 3, padding=1)
            self.t = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)
            self.fc = nn.Linear(3 * 16 * 16, 5)

        def forward(self, x):
            h = nn.functional.leaky_relu(self.c(x), 0.2)
            h = torch.maximum(self.t(h), torch.tensor(0.1))
            return self.fc(h.flatten(1))

    torch.manual_seed(0)
    path = tmp_path / "t.onnx"
    torch.onnx.export(Net().eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    x = np.random.default_rng(0).random((64, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rep = verify(snnconv.convert(path, tmp_path / "x.npy"), path, tmp_path / "x.npy")
    assert rep.ok, rep.failures
    assert rep.ort_bound_rel_max < 1e-2
    assert rep.ort_err_max < rep.ort_bound_rel_max
