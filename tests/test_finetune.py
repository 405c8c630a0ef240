"""Fine-tuning for integer hardware (issue: finetune): accuracy on the digits CNN, binary weights,
resume, data forms, recorded data, config files, CLI."""

import functools
import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import snnconv
from snnconv import finetune as ft, intmodel
from snnconv.cli import app
from snnconv.errors import DataError, UsageError

from .conftest import SAMPLES


@functools.cache
def _snn(name):
    return snnconv.convert(SAMPLES / f"{name}.onnx", SAMPLES / "digits_train.npz")


def _rows(res):
    return {r["model"]: r for r in res.report["rows"]}


def test_cnn_4bit_16_ticks_within_1pp_of_float(tmp_path, digits):
    out = tmp_path / "cnn.snnq"
    res = ft.finetune(_snn("cnn"), SAMPLES / "digits_train.npz",
                      test=SAMPLES / "digits_test.npz", quantize=4, time_bits=4, epochs=8,
                      output=out)
    rows = _rows(res)
    ann = rows["ANN (float)"]["accuracy"]
    assert rows["exact SNN (float)"]["accuracy"] == ann
    ptq = rows["post-training quantised"]["accuracy"]
    fine = rows["fine-tuned"]["accuracy"]
    assert ann - fine <= 0.01 + 1e-12, (ann, ptq, fine)
    assert fine >= ptq
    assert rows["fine-tuned"]["weight_bytes"] < rows["ANN (float)"]["weight_bytes"] / 7
    # every window is 16 ticks; the file reproduces the report and both integer paths agree
    net = intmodel.load(out)
    assert all(la.ticks == 16 for la in net.layers if la.kind in ("input", "neuron"))
    assert net.meta["config"]["quantize"] == 4
    rep = intmodel.verify_integer(out, SAMPLES / "digits_test.npz")
    assert rep["ok"] and rep["accuracy"] == fine and rep["samples"] == 360
    sens = {r["what"]: r["accuracy"] for r in res.report["sensitivity"]}
    assert "all (integer model)" in sens and len(sens) == 6


def test_binary_weights_run_and_report_both_ways():
    accs = {}
    for flb in (None, 8):
        res = ft.finetune(_snn("cnn"), SAMPLES / "digits_train.npz",
                          test=SAMPLES / "digits_test.npz", quantize=1, time_bits=4, epochs=2,
                          first_last_bits=flb)
        net = res.net
        bits = [g.bits for la in net.layers for g in la.groups]
        assert (bits == [1, 1, 1]) if flb is None else (bits == [8, 1, 8])
        for la in net.layers:
            for g in la.groups:
                if g.bits == 1:
                    assert set(np.unique(g.weighted.weight)) == {-1.0, 1.0}
        accs[flb] = _rows(res)["fine-tuned"]["accuracy"]
        assert accs[flb] > 0.6
    assert accs[8] >= accs[None] - 0.02


def test_resume_continues_exactly(tmp_path):
    snn = _snn("mlp")
    kw = dict(quantize=4, time_bits=4, noise=0.5, sparsity=0.1, seed=3)
    full = ft.finetune(snn, SAMPLES / "digits_train.npz", epochs=2, output=tmp_path / "a.snnq",
                       **kw)
    ft.finetune(snn, SAMPLES / "digits_train.npz", epochs=1, output=tmp_path / "b.snnq", **kw)
    res = ft.finetune(snn, SAMPLES / "digits_train.npz", epochs=2, output=tmp_path / "b.snnq",
                      resume=True, **kw)
    a, b = intmodel.load(tmp_path / "a.snnq"), res.net
    for la, lb in zip(a.layers, b.layers):
        assert np.array_equal(np.asarray(la.bias), np.asarray(lb.bias)) or la.bias is None
        for ga, gb in zip(la.groups, lb.groups):
            assert np.array_equal(ga.weighted.weight, gb.weighted.weight)
    assert [h["loss"] for h in full.report["history"]] == \
        [h["loss"] for h in res.report["history"]]
    with pytest.raises(UsageError, match="other options"):
        ft.finetune(snn, SAMPLES / "digits_train.npz", epochs=3, output=tmp_path / "b.snnq",
                    resume=True, quantize=3)
    with pytest.raises(UsageError, match="no checkpoint"):
        ft.finetune(snn, SAMPLES / "digits_train.npz", epochs=1, output=tmp_path / "c.snnq",
                    resume=True)


def test_data_forms_dataloader_tensors_arrays(digits):
    snn = _snn("mlp")
    x, y = digits["train_x"], digits["train_y"]
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.as_tensor(x), torch.as_tensor(y)), batch_size=64, shuffle=False)
    val = (torch.as_tensor(digits["test_x"]), torch.as_tensor(digits["test_y"]))
    r1 = ft.finetune(snn, dl, val=val, epochs=1, quantize=4, time_bits=4)
    r2 = ft.finetune(snn, (x, y), val=val, epochs=1, quantize=4, time_bits=4)
    for r in (r1, r2):
        assert _rows(r)["fine-tuned"]["accuracy"] > 0.85
    with pytest.raises(DataError, match="labels"):
        ft.finetune(snn, x, epochs=1)


def test_silent_neurons_do_not_jitter():
    snn = _snn("mlp")
    res = ft.finetune(snn, SAMPLES / "digits_train.npz", epochs=0, quantize=4, time_bits=3)
    m = res.model
    m.train()
    x = np.load(SAMPLES / "digits_test.npz")["x"][:64]
    rec0, rec1 = {}, {}
    with torch.no_grad():
        m(m.encode(x), record=rec0)
        m(m.encode(x), noise=2.0, generator=torch.Generator().manual_seed(0), record=rec1)
    for i, la in enumerate(m.net.hidden()):
        a, b = rec0[la.name], rec1[la.name]
        if i == 0:  # same inputs in both runs: silent stays silent, spiking neurons move
            assert torch.equal(b[a == 0], a[a == 0])
            assert bool((a != b).any())
        assert int(b.min()) >= 0 and int(b.max()) <= la.ticks  # clipped to the window


def test_sparsity_reduces_spikes():
    snn = _snn("mlp")
    kw = dict(quantize=4, time_bits=4, epochs=3, seed=1, keep="last")
    a = ft.finetune(snn, SAMPLES / "digits_train.npz", **kw)
    b = ft.finetune(snn, SAMPLES / "digits_train.npz", sparsity=3.0, **kw)
    assert a.report["validation"]["best_epoch"] == 3
    assert _rows(b)["fine-tuned"]["spikes_per_neuron"] < \
        _rows(a)["fine-tuned"]["spikes_per_neuron"] - 0.02


def test_recorded_data_and_config_file(tmp_path):
    data = tmp_path / "train.npz"
    shutil.copy(SAMPLES / "digits_train.npz", data)
    snn = snnconv.convert(SAMPLES / "mlp.onnx", data)
    cfg = tmp_path / "ft.yaml"
    cfg.write_text("quantize: 3\ntime-bits: 3\nepochs: 1\nlatency: 12\n")
    res = ft.finetune(snn, config=cfg, epochs=1, quantize=5)
    assert any("recorded in the model" in w for w in res.warnings)
    eff = res.net.meta["config"]
    assert eff["quantize"] == 5 and eff["time_bits"] == 3 and eff["latency"] == 12
    assert res.net.latency <= 12
    np.savez(data, x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="changed"):
        ft.finetune(snn, epochs=1)
    cfg.write_text("quantise: 3\n")
    with pytest.raises(UsageError, match="quantise"):
        ft.finetune(snn, SAMPLES / "digits_train.npz", config=cfg)


def test_cli_finetune_run_export_vectors(tmp_path):
    r = CliRunner()
    snn_path = tmp_path / "mlp.snn"
    _snn("mlp").save(snn_path)
    out = tmp_path / "mlp.snnq"
    res = r.invoke(app, ["finetune", str(snn_path), "--data", str(SAMPLES / "digits_train.npz"),
                         "--quantize", "4", "--time-bits", "4", "--epochs", "1",
                         "--target", str(SAMPLES.parent / "hardware" / "generic.yaml"),
                         "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "fine-tuned" in res.output and "post-training quantised" in res.output
    res = r.invoke(app, ["run", str(out), "--data", str(SAMPLES / "digits_test.npz"), "--out",
                         str(tmp_path / "p.npz"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["accuracy"] > 0.85
    # verify takes the .snnq: golden vs register-level, bit for bit, JUnit for CI
    res = r.invoke(app, ["verify", str(out), "--data", str(SAMPLES / "digits_test.npz"),
                         "--junit", str(tmp_path / "v.xml"), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["ok"] and rep["kind"] == "integer" and rep["samples"] == 360
    assert 'failures="0"' in (tmp_path / "v.xml").read_text()
    res = r.invoke(app, ["verify", str(out), "--data", str(SAMPLES / "digits_test.npz"), "--n",
                         "40"])
    assert res.exit_code == 0 and "BIT-EXACT" in res.output, res.output
    vec = tmp_path / "vec"
    res = r.invoke(app, ["export-vectors", str(out), "--data", str(SAMPLES / "digits_test.npz"),
                         "--n", "12", "-o", str(vec)])
    assert res.exit_code == 0, res.output
    man = json.loads((vec / "manifest.json").read_text())
    assert man["samples"] == 12 and "most saturated neurons" in man["reasons"]
    net = intmodel.load(out)
    first = man["layers"][1]
    ticks = np.loadtxt(vec / first["csv"], delimiter=",", dtype=np.int64)
    hexw = [int(w, 16) for w in (vec / first["hex"]).read_text().split()]
    assert len(hexw) == ticks.size
    silent = man["silent_code"]
    assert np.array_equal(np.where(ticks.reshape(-1) < 0, silent, ticks.reshape(-1)), hexw)
    la = net.by_name[first["layer"]]
    fired = ticks[ticks >= 0]
    assert fired.size and fired.min() >= la.t_min and fired.max() < la.t_max
    # refusals: wrong suffix, .snn given to run
    res = r.invoke(app, ["finetune", str(snn_path), "-o", str(tmp_path / "x.snn")])
    assert res.exit_code == 2
    res = r.invoke(app, ["run", str(snn_path), "--data", str(SAMPLES / "digits_test.npz")])
    assert res.exit_code == 2 and "float SNN" in res.output


def test_refuses_synapses_the_integer_model_lacks():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(),
                              torch.nn.ConvTranspose2d(2, 2, 3), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(128, 10)).eval()
    x = np.random.default_rng(0).random((64, 1, 8, 8)).astype(np.float32)
    snn = snnconv.convert(net, x, example_input=torch.as_tensor(x[:1]))
    with pytest.raises(UsageError, match="convtranspose synapses"):
        ft.finetune(snn, (x, np.zeros(64, np.int64)), epochs=1)


def test_bare_integer_verify_refuses_changed_training_data(tmp_path):
    """``verify X.snnq`` without --data uses the training data the file records, and refuses it
    when it changed since fine-tuning, as a bare .snn verify does with its calibration data."""
    import shutil

    from snnconv import api
    from snnconv.errors import DataError

    data = tmp_path / "train.npz"
    shutil.copy(SAMPLES / "digits_train.npz", data)
    snn_path, out = tmp_path / "mlp.snn", tmp_path / "mlp.snnq"
    _snn("mlp").save(snn_path)
    ft.finetune_file(snn_path, out, data=data, quantize=4, time_bits=4, epochs=0)
    rep = api.verify_file(out)
    assert rep["ok"] and any("training data recorded" in w for w in rep["warnings"])
    d = np.load(data)
    np.savez(data, x=d["x"][:100], y=d["y"][:100])
    with pytest.raises(DataError, match="has changed since fine-tuning"):
        api.verify_file(out)
    data.unlink()
    with pytest.raises(DataError, match="missing"):
        api.verify_file(out)
