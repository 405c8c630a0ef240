"""--device: resolution, clear refusals, and (when the hardware is there) the same figures on
a GPU as on the CPU. CUDA tests skip without CUDA, MPS tests without MPS."""

import functools

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import snnconv
from snnconv import devices, intmodel
from snnconv.cli import app
from snnconv.verify import verify
from snnconv.errors import EXIT_BAD_INPUT, UsageError

from .conftest import SAMPLES

runner = CliRunner()
CUDA = torch.cuda.is_available()
MPS = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")
needs_mps = pytest.mark.skipif(not MPS, reason="no MPS device")
TEST = SAMPLES / "digits_test.npz"


@functools.cache
def _cnn():
    return snnconv.convert(SAMPLES / "cnn.onnx", SAMPLES / "digits_train.npz")


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("dev") / "cnn.snn"
    _cnn().save(p)
    return p


def test_resolve_cpu_and_auto():
    assert devices.resolve(None).name == "cpu"
    assert devices.resolve("CPU").is_cpu
    auto = devices.resolve("auto")
    if CUDA:
        assert auto.type == "cuda" and "CUDA" in auto.describe()
    else:
        assert auto.is_cpu and auto.describe() == "cpu (auto: no CUDA device)"
    assert devices.resolve(auto) is auto


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu0", ""])
def test_unknown_device_is_a_usage_error(spec):
    with pytest.raises(UsageError, match="unknown device") as e:
        devices.resolve(spec)
    assert e.value.exit_code == EXIT_BAD_INPUT


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_absent_cuda_is_refused_with_the_remedy(spec):
    with pytest.raises(UsageError, match="no CUDA device") as e:
        devices.resolve(spec)
    assert "CUDA build" in e.value.hint


@needs_cuda
def test_cuda_index_beyond_the_devices_is_refused():
    with pytest.raises(UsageError, match="does not exist"):
        devices.resolve(f"cuda:{torch.cuda.device_count()}")


def test_mps_has_no_float64():
    mps = devices.Device("mps", "mps")
    assert not mps.float64
    with pytest.raises(UsageError, match="float64") as e:
        mps.require_float64("verify")
    assert "--device cpu" in e.value.hint
    if not MPS:
        with pytest.raises(UsageError, match="MPS"):
            devices.resolve("mps")


def test_cli_refuses_an_unknown_or_absent_device(cnn_file):
    r = runner.invoke(app, ["verify", str(cnn_file), "--data", str(TEST), "--device", "tpu"])
    assert r.exit_code == 2 and "unknown device" in r.stderr
    if not CUDA:
        r = runner.invoke(app, ["convert", str(SAMPLES / "cnn.onnx"), "--calib",
                                str(SAMPLES / "digits_train.npz"), "-o",
                                str(cnn_file.with_name("x.snn")), "--device", "cuda"])
        assert r.exit_code == 2 and "no CUDA device" in r.stderr
        assert not cnn_file.with_name("x.snn").exists()


def test_simulate_on_the_cpu_device_is_unchanged():
    snn = _cnn()
    x = np.load(TEST)["x"][:32]
    a, b = snn.simulate(x), snn.simulate(x, device="cpu")
    assert torch.equal(a.logits, b.logits)


def test_auto_says_which_device(cnn_file):
    r = runner.invoke(app, ["verify", str(cnn_file), "--data", str(TEST), "--n", "16",
                            "--reference-n", "0", "--device", "auto"])
    assert r.exit_code == 0, r.output
    assert ("device             cpu (auto: no CUDA device)" in r.stdout) != CUDA


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
def test_finetune_cuda_is_no_longer_refused_as_cpu_only(cnn_file, tmp_path):
    r = runner.invoke(app, ["finetune", str(cnn_file), "--epochs", "0", "--device", "cuda",
                            "-o", str(tmp_path / "m.snnq")])
    assert r.exit_code == 2 and "no CUDA device" in r.stderr and "CPU only" not in r.stderr


# --- on a GPU: the same figures as on the CPU ----------------------------------------------------

@needs_cuda
def test_cuda_simulate_and_verify_match_the_cpu(cnn_file):
    snn = _cnn()
    x = np.load(TEST)["x"][:64].astype(np.float64)
    cpu, gpu = snn.simulate(x), snn.simulate(x, device="cuda")
    assert gpu.logits.device.type == "cuda"
    assert torch.allclose(cpu.logits, gpu.logits.cpu(), rtol=1e-12, atol=1e-12)
    a = verify(cnn_file, data=TEST, reference_n=0)
    b = verify(cnn_file, data=TEST, reference_n=0, device="cuda")
    assert b.ok and (a.top1_agreement, a.accuracy_snn, a.spikes_per_neuron) == \
        (b.top1_agreement, b.accuracy_snn, b.spikes_per_neuron)
    assert b.mapping_err_max <= 1e-9


@needs_cuda
def test_cuda_convert_run_and_finetune(tmp_path):
    snn = snnconv.convert(SAMPLES / "cnn.onnx", SAMPLES / "digits_train.npz", device="cuda")
    ref = _cnn().meta["calibration"]["maxima"]
    got = snn.meta["calibration"]["maxima"]
    assert ref.keys() == got.keys()
    assert all(abs(ref[k] - got[k]) <= 1e-12 * max(1.0, ref[k]) for k in ref)
    from snnconv import finetune as ft

    res = ft.finetune(_cnn(), SAMPLES / "digits_train.npz", quantize=4, time_bits=4, epochs=1,
                      device="cuda", output=tmp_path / "m.snnq")
    assert res.report["history"]
    cpu = intmodel.run_file(tmp_path / "m.snnq", TEST, tmp_path / "a.npz")
    gpu = intmodel.run_file(tmp_path / "m.snnq", TEST, tmp_path / "b.npz", device="cuda")
    assert cpu["accuracy"] == gpu["accuracy"] and gpu["device"] == "cuda:0"
    assert np.array_equal(np.load(tmp_path / "a.npz")["logits"],
                          np.load(tmp_path / "b.npz")["logits"])


@needs_mps
def test_mps_refuses_float64_work_and_simulates_float32(cnn_file):
    with pytest.raises(UsageError, match="float64"):
        verify(cnn_file, data=TEST, device="mps")
    x = np.load(TEST)["x"][:16]
    out = _cnn().simulate(x, dtype=torch.float32, device="mps")
    ref = _cnn().simulate(x, dtype=torch.float32)
    assert torch.allclose(out.logits.cpu(), ref.logits, rtol=1e-4, atol=1e-4)


# --- the device branches, with the CPU standing in for a GPU -------------------------------------

class _Elsewhere(devices.Device):
    """The CPU, taken for another device: every device branch runs (moves, copies back)."""

    @property
    def is_cpu(self) -> bool:
        return False


ELSEWHERE = _Elsewhere("cpu", "elsewhere")


def test_device_branches_give_the_cpu_figures(cnn_file, tmp_path):
    a = verify(cnn_file, data=TEST, reference_n=0, batch_size=100)
    b = verify(cnn_file, data=TEST, reference_n=0, batch_size=100, device=ELSEWHERE)
    assert a.to_dict() == b.to_dict()
    c = snnconv.convert(SAMPLES / "cnn.onnx", SAMPLES / "digits_train.npz", device=ELSEWHERE,
                        percentile=99.9)
    ref = snnconv.convert(SAMPLES / "cnn.onnx", SAMPLES / "digits_train.npz", percentile=99.9)
    for key in ("maxima", "active", "samples"):
        assert c.meta["calibration"][key] == ref.meta["calibration"][key]
    assert [la.window for la in c.layers] == [la.window for la in ref.layers]


def test_device_branches_of_run_and_finetune(tmp_path):
    from snnconv import finetune as ft

    snn = snnconv.convert(SAMPLES / "mlp.onnx", SAMPLES / "digits_train.npz")
    kw = dict(quantize=4, time_bits=4, epochs=1, noise=0.5, seed=3)
    a = ft.finetune(snn, SAMPLES / "digits_train.npz", output=tmp_path / "a.snnq", **kw)
    b = ft.finetune(snn, SAMPLES / "digits_train.npz", output=tmp_path / "b.snnq",
                    device=ELSEWHERE, **kw)
    assert a.report["history"][0]["loss"] == b.report["history"][0]["loss"]
    for la, lb in zip(a.net.layers, b.net.layers):
        for ga, gb in zip(la.groups, lb.groups):
            assert np.array_equal(ga.weighted.weight, gb.weighted.weight)
    ra = intmodel.run_file(tmp_path / "a.snnq", TEST, tmp_path / "a.npz", noise=1.0)
    rb = intmodel.run_file(tmp_path / "a.snnq", TEST, tmp_path / "b.npz", noise=1.0,
                           device=ELSEWHERE)
    assert rb.pop("device") == "cpu" and ra == {**rb, "output": ra["output"]}
    assert np.array_equal(np.load(tmp_path / "a.npz")["logits"],
                          np.load(tmp_path / "b.npz")["logits"])
