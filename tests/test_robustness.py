"""Every bad input gets a clear error and the documented exit code; nothing is written."""

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import snnconv
from snnconv import finetune as ft
from snnconv.cli import app
from snnconv.errors import UsageError

from .conftest import SAMPLES

runner = CliRunner()


def _convert(tmp_path, model, *args):
    out = tmp_path / "out.snn"
    res = runner.invoke(app, ["convert", str(model), "-o", str(out), *map(str, args)])
    return res, out


def _mlp(tmp_path, name="m.onnx", *, opset=13, w=None, inputs=1, outputs=1, dims=(4,)):
    """x (N, 4) -> Gemm -> Relu -> Gemm; variants for the cases below."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(dims[-1], 5)).astype(np.float32) if w is None else w
    inits = [numpy_helper.from_array(w1, "w1"),
             numpy_helper.from_array(rng.normal(size=(5, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu1"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *dims])]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])]
    if inputs == 2:
        ins.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 4]))
        nodes.append(helper.make_node("Add", ["x", "x2"], ["unused"], name="extra"))
    if outputs == 2:
        outs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 5]))
    g = helper.make_graph(nodes, "g", ins, outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    p = tmp_path / name
    p.write_bytes(m.SerializeToString())
    return p


@pytest.mark.parametrize("kind", ["empty", "random", "text", "truncated"])
def test_unreadable_model_files(tmp_path, kind):
    p = tmp_path / f"{kind}.onnx"
    blob = (SAMPLES / "cnn.onnx").read_bytes()
    p.write_bytes({"empty": b"", "random": os.urandom(2048), "text": b"hello\n" * 50,
                   "truncated": blob[: len(blob) // 3]}[kind])
    res, out = _convert(tmp_path, p)
    assert res.exit_code == 2, res.output
    assert str(p) in res.stderr and "error:" in res.stderr
    assert not out.exists()


def test_missing_model_file(tmp_path):
    res, out = _convert(tmp_path, tmp_path / "nope.onnx")
    assert res.exit_code == 2 and "not found" in res.stderr


@pytest.mark.parametrize("opset", [6, 999])
def test_opset_outside_supported_range(tmp_path, opset):
    p = _mlp(tmp_path, opset=opset)
    res, out = _convert(tmp_path, p)
    assert res.exit_code == 2
    assert f"opset {opset} is outside the supported range 7 to" in res.stderr
    assert not out.exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_weights_name_the_node(tmp_path, bad):
    w = np.ones((4, 5), np.float32)
    w[1, 2] = bad
    res, out = _convert(tmp_path, _mlp(tmp_path, w=w))
    assert res.exit_code == 2
    assert "fc1" in res.stderr and "MatMul" in res.stderr and "NaN or Inf" in res.stderr
    assert not out.exists()


def test_several_inputs_or_outputs(tmp_path):
    res, _ = _convert(tmp_path, _mlp(tmp_path, inputs=2))
    assert res.exit_code == 2 and "2 inputs (x, x2)" in res.stderr
    res, _ = _convert(tmp_path, _mlp(tmp_path, outputs=2))
    assert res.exit_code == 2 and "2 outputs (y, r)" in res.stderr


def test_dynamic_dims_beyond_batch_suggest_input_shape(tmp_path):
    p = tmp_path / "dyn.onnx"
    m = onnx.load(SAMPLES / "cnn.onnx")
    for d in list(m.graph.input[0].type.tensor_type.shape.dim)[2:]:
        d.Clear()
        d.dim_param = "s"
    onnx.save(m, p)
    res, out = _convert(tmp_path, p)
    assert res.exit_code == 2 and "--input-shape" in res.stderr
    res, out = _convert(tmp_path, p, "--input-shape", "1,8,8", "--calib",
                        SAMPLES / "digits_train.npz")
    assert res.exit_code == 0, res.output
    assert out.exists()


@pytest.mark.parametrize("case", ["outside", "absolute"])
def test_external_data_outside_the_model_folder(tmp_path, case):
    sub = tmp_path / "models"
    sub.mkdir()
    m = onnx.load(SAMPLES / "cnn.onnx")
    loc = "../secret.bin" if case == "outside" else str(tmp_path / "secret.bin")
    onnx.save(m, sub / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.bin", size_threshold=0)
    (tmp_path / "secret.bin").write_bytes((sub / "w.bin").read_bytes())
    m2 = onnx.load(sub / "m.onnx", load_external_data=False)
    for t in m2.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = loc
    onnx.save(m2, sub / "m.onnx")
    res, out = _convert(tmp_path, sub / "m.onnx")
    assert res.exit_code == 2
    assert "outside the model's folder" in res.stderr


def test_bad_calibration_data_via_cli(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 64), np.float32))
    res, out = _convert(tmp_path, SAMPLES / "cnn.onnx", "--calib", tmp_path / "d.npz")
    assert res.exit_code == 2 and "expects (1, 8, 8)" in res.stderr
    assert "reshape x to (N, 1, 8, 8)" in res.stderr
    assert not out.exists()


def test_unwritable_output_location(tmp_path):
    res = runner.invoke(app, ["convert", str(SAMPLES / "mlp.onnx"), "-o",
                              str(tmp_path / "no" / "such" / "dir" / "m.snn")])
    assert res.exit_code == 2 and "does not exist" in res.stderr
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        res = runner.invoke(app, ["convert", str(SAMPLES / "mlp.onnx"), "-o", str(ro / "m.snn")])
        assert res.exit_code == 2 and "not writable" in res.stderr


def test_internal_error_exit_3_with_hint(tmp_path, monkeypatch):
    import snnconv.api

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(snnconv.api, "convert", boom)
    res = runner.invoke(app, ["convert", str(SAMPLES / "mlp.onnx"), "-o", str(tmp_path / "m.snn")])
    assert res.exit_code == 3
    assert "internal error" in res.stderr and "please report" in res.stderr
    assert "Traceback" not in res.stderr
    res = runner.invoke(app, ["--debug", "convert", str(SAMPLES / "mlp.onnx"), "-o",
                              str(tmp_path / "m.snn")])
    assert res.exit_code == 3 and "Traceback" in res.stderr


def test_help_documents_exit_codes():
    res = runner.invoke(app, ["--help"])
    assert "0 ok, 1 verification mismatch, 2 bad input or usage, 3 internal error" in \
        " ".join(res.stdout.split())


def test_ctrl_c_during_finetune_keeps_the_last_checkpoint(tmp_path):
    """SIGINT mid-training: exit 130 with "interrupted", no output file and no temp file left,
    and the last checkpoint resumes to a complete, loadable .snnq."""
    import signal
    import subprocess
    import sys
    import time

    from snnconv import intmodel

    snn = tmp_path / "mlp.snn"
    snnconv.convert(SAMPLES / "mlp.onnx", SAMPLES / "digits_train.npz").save(snn)
    out = tmp_path / "out.snnq"
    ckpt = Path(str(out) + ".ckpt")
    cmd = [sys.executable, "-m", "snnconv.cli", "finetune", str(snn), "--quantize", "4",
           "--time-bits", "4", "--data", str(SAMPLES / "digits_train.npz"), "-o", str(out),
           "--quiet"]
    # a terminal's default SIGINT, whatever the test runner's workers do with it (a child
    # inherits an ignored SIGINT, and Python then installs no KeyboardInterrupt handler)
    proc = subprocess.Popen(cmd + ["--epochs", "500"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.monotonic()
    while not ckpt.is_file() and proc.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    assert ckpt.is_file(), proc.communicate()[1]
    for _ in range(3):  # as a user would press Ctrl-C again if the first one went unnoticed
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=20)
            break
        except subprocess.TimeoutExpired:
            continue
    else:
        proc.kill()
        pytest.fail("finetune did not stop on SIGINT: " + proc.communicate()[1][-2000:])
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.snn", "out.snnq.ckpt"]
    done = torch.load(ckpt, weights_only=True)["epoch"]  # a plain, pickle-free checkpoint
    res = subprocess.run(cmd + ["--epochs", str(done + 1), "--resume"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert len(intmodel.load(out).layers) == 4


def test_a_pickled_checkpoint_is_refused(tmp_path):
    """--resume reads checkpoints with torch.load(weights_only=True): a checkpoint holding an
    arbitrary Python object is refused with a clear error, nothing of it runs."""
    import pickle

    snn = snnconv.convert(SAMPLES / "mlp.onnx", SAMPLES / "digits_train.npz")
    out = tmp_path / "out.snnq"
    Path(str(out) + ".ckpt").write_bytes(pickle.dumps(_Boom(), protocol=2))
    with pytest.raises(UsageError, match="unreadable checkpoint"):
        ft.finetune(snn, SAMPLES / "digits_train.npz", quantize=4, epochs=1, output=out,
                    resume=True)
    assert not _Boom.ran


class _Boom:
    ran = False

    def __reduce__(self):
        return (_Boom._run, ())

    @staticmethod
    def _run():  # pragma: no cover - must never be called
        _Boom.ran = True
