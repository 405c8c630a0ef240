"""Sizes files declare are checked against what the files hold and against the memory budget
before anything is allocated: crafted .npy/.npz headers, safetensors tables of .snn files, ONNX
initializer dims and tensor shapes all exit 2 naming the file and the number."""

import json
import struct
import zipfile

import numpy as np
import onnx
import pytest
from onnx import external_data_helper
from typer.testing import CliRunner

import snnconv
from snnconv.cli import app

from .conftest import SAMPLES

runner = CliRunner()


def _exit2(args, *needles):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    for s in needles:
        assert s in r.output, (s, r.output)


def _npy_bytes(shape, dtype="<f8", payload=b""):
    head = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode()
    head += b" " * (63 - (len(head) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head + payload


def test_npy_and_npz_headers_are_checked(tmp_path, monkeypatch):
    onnx_path = SAMPLES / "cnn.onnx"
    p = tmp_path / "huge.npy"
    p.write_bytes(_npy_bytes((10**12, 1, 8, 8), payload=b"\0" * 80))
    _exit2(["convert", onnx_path, "--calib", p, "-o", tmp_path / "a.snn"],
           "huge.npy", "(1000000000000, 1, 8, 8)", "512000000000000 bytes")
    q = tmp_path / "lying.npz"
    with zipfile.ZipFile(q, "w") as z:
        z.writestr("x.npy", _npy_bytes((5000, 1, 8, 8), payload=b"\0" * 800))
    snn = snnconv.convert(onnx_path, input_range=(0, 1))
    snn.save(tmp_path / "a.snn")
    _exit2(["verify", tmp_path / "a.snn", "--onnx", onnx_path, "--data", q],
           "lying.npz: 'x'", "2560000 bytes", "holds 800 bytes")
    big = tmp_path / "big.npz"
    np.savez(big, x=np.zeros((2000, 1, 8, 8)))
    monkeypatch.setenv("SNNCONV_MEMORY_BUDGET", "100K")
    _exit2(["verify", tmp_path / "a.snn", "--onnx", onnx_path, "--data", big],
           "big.npz: 'x'", "1024000 bytes", "over the memory budget of 100.0 KiB")


def _rewrite_snn(src, dst, edit):
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    outer = json.loads(raw[8:8 + n])
    edit(outer)
    head = json.dumps(outer).encode()
    dst.write_bytes(struct.pack("<Q", len(head)) + head + raw[8 + n:])


def test_snn_tensor_table_is_checked(tmp_path):
    snn = snnconv.convert(SAMPLES / "cnn.onnx", input_range=(0, 1))
    snn.save(tmp_path / "ok.snn")
    key = next(k for k in json.loads((tmp_path / "ok.snn").read_bytes()[8:8 + struct.unpack(
        "<Q", (tmp_path / "ok.snn").read_bytes()[:8])[0]]) if k != "__metadata__")

    def grow(outer):
        outer[key]["shape"] = [10**6, 10**6]
    _rewrite_snn(tmp_path / "ok.snn", tmp_path / "bad.snn", grow)
    _exit2(["inspect", tmp_path / "bad.snn"], "bad.snn", f"tensor '{key}'",
           "[1000000, 1000000]")

    def past_end(outer):
        a, b = outer[key]["data_offsets"]
        outer[key]["data_offsets"] = [a + 10**9, b + 10**9]
    _rewrite_snn(tmp_path / "ok.snn", tmp_path / "bad2.snn", past_end)
    _exit2(["inspect", tmp_path / "bad2.snn"], "bad2.snn", "the file holds")


def test_onnx_declared_dims_and_shapes_are_checked(tmp_path):
    m = onnx.load(SAMPLES / "cnn.onnx")
    init = max(m.graph.initializer, key=lambda t: len(t.raw_data))
    init.dims[0] *= 1000
    onnx.save(m, tmp_path / "dims.onnx")
    _exit2(["convert", tmp_path / "dims.onnx", "--input-range", "0", "1"],
           "dims.onnx", f"tensor '{init.name}'", "but holds")

    m = onnx.load(SAMPLES / "cnn.onnx")
    for d, v in zip(m.graph.input[0].type.tensor_type.shape.dim[1:], (1, 300000, 300000)):
        d.Clear()
        d.dim_value = v
    onnx.save(m, tmp_path / "shape.onnx")
    _exit2(["convert", tmp_path / "shape.onnx", "--input-range", "0", "1"],
           "shape.onnx", "[1, 1, 300000, 300000]", "over the memory budget")

    m = onnx.load(SAMPLES / "cnn.onnx")
    external_data_helper.convert_model_to_external_data(m, location="w.data",
                                                        size_threshold=0)
    onnx.save(m, tmp_path / "ext.onnx")
    data = (tmp_path / "w.data").read_bytes()
    (tmp_path / "w.data").write_bytes(data[:len(data) // 2])
    _exit2(["convert", tmp_path / "ext.onnx", "--input-range", "0", "1"],
           "ext.onnx", "its external data holds")


@pytest.mark.parametrize("value", ["lots", "-1G"])
def test_a_bad_budget_setting_is_a_usage_error(tmp_path, monkeypatch, value):
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 8, 8)))
    monkeypatch.setenv("SNNCONV_MEMORY_BUDGET", value)
    _exit2(["convert", SAMPLES / "cnn.onnx", "--calib", tmp_path / "x.npy", "-o",
            tmp_path / "a.snn"], "SNNCONV_MEMORY_BUDGET")
