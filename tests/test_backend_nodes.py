"""ONNX backend node tests of the supported ops, run through import + mapping + conversion.

The tests ship inside the onnx 1.22.0 wheel (``onnx/backend/test/data/node/``). The wheel is fetched
once with ``pip download`` into ``build/onnx-wheel`` (gitignored) and read straight from the zip.

A node test is selected when every op of its graph is one snnconv supports. Its graph inputs after
the first are the op's weights/parameters: they become initializers (from the test's input_*.pb), so
the importer sees constants; the first input is the activation, and the test's input is also its
calibration data. The SNN's float64 output must equal the float64 reference (1e-9 relative) and the
expected output_*.pb within the float32 forward error bound of ``helpers``.

Tests whose activations do not fit the TTFS model (ops on the batch axis, integer tensors, several
activation inputs, ...) are skipped; the importer's refusal must then match one of the stated
reasons in ``SKIP_REASONS`` (any other error fails the test). ``BACKEND_NODE_REPORT`` (build/) gets
the counts per outcome and reason.
"""

from __future__ import annotations

import collections
import fcntl
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import snnconv
from snnconv.errors import ModelImportError
from snnconv.importer import import_onnx

from .helpers import EPS32, ROOT, TOL64, abs_forward

VERSION = "1.22.0"
CACHE = ROOT / "build" / "onnx-wheel"
REPORT = ROOT / "build" / "backend-node-report.json"
PREFIX = "onnx/backend/test/data/node/"

SUPPORTED = {"Conv", "Relu", "Clip", "BatchNormalization", "MaxPool", "AveragePool",
             "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "Gemm", "MatMul",
             "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Pad", "Add", "Sub", "Mul",
             "Div", "Identity", "Dropout", "Softmax", "LogSoftmax",
             # op coverage for real-world exports
             "ConvTranspose", "LeakyRelu", "PRelu", "Abs", "Max", "Min", "Neg", "HardSigmoid",
             "Sum", "Transpose", "Slice", "Split", "Gather", "Resize", "Upsample"}
#: Tests whose expected output the onnx test suite writes by hand with this many decimals (from
#: inputs that were rounded too): one unit of the last decimal is allowed on top of the bound.
ROUNDED_EXPECTED = {"test_averagepool_2d_ceil_last_window_starts_on_pad": 4}
FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}

#: Refusals that are correct for the TTFS model: (reason shown in the report, message pattern).
SKIP_REASONS = [
    ("acts on the batch axis (the test's first axis is data, not a batch)",
     r"batch axis|mixes the batch axis|varies along the batch axis|squeezes the batch"),
    ("reduces or pads over the channel axis", r"reduces over axes \[.*1|pads the batch or channel"),
    ("Pad mode other than constant zeros", r"Pad mode|padding with"),
    ("Gemm with transA=1 (transposes the batch axis)", r"transA=1"),
    ("matrix product on a tensor of rank > 1 per sample, or a 1-d weight",
     r"matrix product on a per-sample tensor|weight of rank"),
    ("several activation inputs (concatenated with a constant here)",
     r"concatenates constants with activations"),
    ("Softmax/LogSoftmax not over the class axis of (N, classes), or inside the network",
     r"Softmax over axis|LogSoftmax over axis|allowed only at the output"),
    ("the graph is the identity or a constant (nothing to convert)",
     r"graph is the identity|does not depend on the input|empty clip range"),
    ("BatchNormalization or Dropout in training mode",
     r"training mode|running-statistics outputs"),
    ("Resize with an interpolating mode (linear, cubic): not a copy of spikes",
     r"interpolates between neighbours"),
    ("products of two activations (an expanded non-linear function)",
     r"of two activations is not piecewise linear"),
    ("MatMul with a batch of different constant matrices", r"batch of different matrices"),
    ("an empty output tensor", r"selects nothing"),
]


def _download() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:  # xdist workers share one download
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = sorted(CACHE.glob(f"onnx-{VERSION}-*.whl"))
        if not found:
            cmd = [sys.executable, "-m", "pip", "download", f"onnx=={VERSION}", "--no-deps",
                   "--only-binary=:all:", "-q", "-d", str(CACHE)]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.TimeoutExpired) as e:
                pytest.skip(f"cannot download onnx {VERSION}: {e}")
            if r.returncode != 0:
                pytest.skip(f"cannot download onnx {VERSION} with pip (no registry access?): "
                            f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
            found = sorted(CACHE.glob(f"onnx-{VERSION}-*.whl"))
        if not found:
            pytest.skip(f"pip download left no onnx {VERSION} wheel in {CACHE}")
        return found[0]


@pytest.fixture(scope="session")
def node_tests():
    """name -> {relative path: zip member} for every node test with only supported ops."""
    wheel = zipfile.ZipFile(_download())
    files: dict[str, dict[str, str]] = collections.defaultdict(dict)
    for n in wheel.namelist():
        if n.startswith(PREFIX) and not n.endswith("/"):
            test, rel = n[len(PREFIX):].split("/", 1)
            files[test][rel] = n
    selected = {}
    for test, fs in sorted(files.items()):
        if "model.onnx" not in fs:
            continue
        m = onnx.load_model_from_string(wheel.read(fs["model.onnx"]))
        ops = {n.op_type for n in m.graph.node}
        if ops and ops <= SUPPORTED:
            selected[test] = (m, fs)
    return wheel, selected


def _read_tensor(data: bytes):
    t = onnx.TensorProto()
    t.ParseFromString(data)
    return t


def _prepare(wheel, model: onnx.ModelProto, fs: dict, dataset: str):
    """The model with every graph input but the first turned into an initializer, the activation
    input and the expected output; or a skip reason."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(g.output) != 1:
        return "several graph outputs (mask/indices/statistics are checked too)"
    for vi in [inputs[0], *g.output]:
        if not vi.type.HasField("tensor_type"):
            return "non-tensor inputs or outputs (sequence/optional)"
        if vi.type.tensor_type.elem_type not in FLOATS:
            return "integer or non-float tensors"
    pbs = sorted(k for k in fs if k.startswith(dataset + "/input_"))
    outs = sorted(k for k in fs if k.startswith(dataset + "/output_"))
    if len(pbs) != len(inputs) or len(outs) != 1:
        return "inputs or outputs missing from the test data"
    tensors = [numpy_helper.to_array(_read_tensor(wheel.read(fs[k]))) for k in pbs]
    expected = numpy_helper.to_array(_read_tensor(wheel.read(fs[outs[0]])))
    x = tensors[0]
    if x.ndim < 2:
        return "a rank-1 activation (no batch axis)"
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.input[:]
    m.graph.input.append(inputs[0])
    for vi, arr in zip(inputs[1:], tensors[1:]):
        m.graph.initializer.append(numpy_helper.from_array(arr, vi.name))
    return m, x, expected


def _classify(err: ModelImportError) -> str | None:
    msg = str(err)
    for reason, pat in SKIP_REASONS:
        if re.search(pat, msg):
            return reason
    return None


def run_node_test(wheel, name, model, fs) -> tuple[str, str | dict]:
    """('pass', errors) or ('skip', reason); AssertionError on a mismatch."""
    datasets = sorted({k.split("/")[0] for k in fs if k.startswith("test_data_set_")})
    errs = {"err64": 0.0, "bound_ratio": 0.0, "err32": 0.0}
    for ds in datasets:
        prep = _prepare(wheel, model, fs, ds)
        if isinstance(prep, str):
            return "skip", prep
        m, x, expected = prep
        try:
            graph = import_onnx(m)
            snn = snnconv.convert(m, x)
        except ModelImportError as e:
            reason = _classify(e)
            if reason is None:
                raise AssertionError(f"{name}: unexpected refusal: {e}") from None
            return "skip", reason
        xt = torch.as_tensor(np.asarray(x, np.float64))
        out = snn.simulate(xt, dtype=torch.float64).logits
        ref, _ = graph.forward(xt)
        n = len(x)
        if graph.head is not None:  # the expected output is after the stripped head
            fn = torch.softmax if graph.head.startswith("Softmax") else torch.log_softmax
            out, ref = fn(out, dim=1), fn(ref, dim=1)
            if graph.head == "Softmax+Log":
                out, ref = out.log(), ref.log()
        o2, r2 = out.reshape(n, -1), ref.reshape(n, -1)
        scale = r2.abs().amax(1).clamp_min(1e-300)
        err64 = ((o2 - r2).abs().amax(1) / scale).max().item()
        assert err64 <= TOL64, f"{name}: float64 SNN vs reference {err64:.3g}"
        e = torch.as_tensor(np.asarray(expected, np.float64)).reshape(n, -1)
        assert e.shape == o2.shape, f"{name}: output shape {tuple(out.shape)} vs " \
            f"{expected.shape}"
        a, gamma = abs_forward(graph, xt)
        if graph.head is not None:  # softmax/log-softmax: error of the logits, magnified <= 2x
            a = a.reshape(n, -1).amax(1, keepdim=True) * 2
        bound = gamma * EPS32 * a.reshape(n, -1) + TOL64 * scale[:, None] + 1e-30
        if name in ROUNDED_EXPECTED:
            bound = bound + 10.0 ** -ROUNDED_EXPECTED[name]
        ratio = ((o2 - e).abs() / bound).max().item()
        assert ratio <= 1.0, f"{name}: SNN vs expected output exceeds the float32 bound " \
            f"({ratio:.3g} x bound, max abs diff {(o2 - e).abs().max().item():.3g})"
        errs["err64"] = max(errs["err64"], err64)
        errs["bound_ratio"] = max(errs["bound_ratio"], ratio)
        errs["err32"] = max(errs["err32"], ((o2 - e).abs().amax(1) / e.abs().amax(1)
                                           .clamp_min(1e-300)).max().item())
    return "pass", errs


FAMILIES = {
    "conv": ("Conv",),
    "pool": ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean",
             "ReduceMax"),
    "linear": ("Gemm", "MatMul", "BatchNormalization"),
    "elementwise": ("Relu", "Clip", "Add", "Sub", "Mul", "Div"),
    "shape": ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Pad", "Identity",
              "Dropout"),
    "head": ("Softmax", "LogSoftmax"),
    "convtranspose": ("ConvTranspose",),
    "activation": ("LeakyRelu", "PRelu", "Abs", "Max", "Min", "Neg", "HardSigmoid", "Sum"),
    "wiring": ("Transpose", "Slice", "Split", "Gather", "Resize", "Upsample"),
}


def _family(model) -> str:
    ops = [n.op_type for n in model.graph.node]
    for fam, members in FAMILIES.items():
        if ops and ops[0] in members:
            return fam
    return "other"


def _record(family: str, outcomes: dict) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with open(REPORT.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(REPORT.read_text()) if REPORT.exists() else {}
        data[family] = outcomes
        REPORT.write_text(json.dumps(data, indent=1, sort_keys=True))


@pytest.mark.parametrize("family", [*FAMILIES, "other"])
def test_backend_node_family(node_tests, family):
    wheel, selected = node_tests
    outcomes: dict[str, dict] = {"pass": {}, "skip": {}}
    failures = []
    for name, (model, fs) in selected.items():
        if _family(model) != family:
            continue
        try:
            kind, info = run_node_test(wheel, name, model, fs)
        except AssertionError as e:
            failures.append(str(e))
            continue
        outcomes[kind][name] = info
    _record(family, outcomes)
    assert not failures, "\n".join(failures)
    if family not in ("other", "head"):  # head-only graphs are the identity once stripped
        assert outcomes["pass"], f"no {family} node test ran"


def test_backend_node_selection(node_tests):
    """The selection is not empty and includes the core ops (a changed wheel layout fails here)."""
    _, selected = node_tests
    names = set(selected)
    for must in ("test_conv_with_strides_padding", "test_maxpool_2d_pads", "test_gemm_alpha",
                 "test_averagepool_2d_pads_count_include_pad", "test_batchnorm_example",
                 "test_relu", "test_globalaveragepool"):
        assert must in names, must
    assert len(selected) > 150
