"""The snnconv.snn package: ops answer for their own arrays, the independent simulators do not
import the reference one, op chains round-trip through the model-file header, and the modules
of the package stay small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from snnconv import modelfile
from snnconv.snn import (
    OPS, WEIGHTED, ConvOp, ConvTransposeOp, DenseOp, PadOp, ReshapeOp, ScaleOp, SelectOp,
    SumPoolOp, chain_apply,
)
from snnconv.tensors import like

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
RNG = np.random.default_rng(0)


def _ops():
    """One op of each kind with an array (signed entries and zeros), on matching shapes."""
    w = RNG.normal(size=(4, 2, 3, 3))
    w[0, 0] = 0.0
    return [
        (ConvOp((2, 6, 6), weight=w, stride=(1, 1), pads_begin=(1, 1), pads_end=(1, 1),
                dilation=(1, 1)), (2, 6, 6)),
        (DenseOp((3, 2), weight=np.array([[1.0, -2.0, 0.0, 3.0, 0.5, -1.0]])), (3, 2)),
        (SumPoolOp((2, 4, 4), kernel=(2, 2), stride=(2, 2), pads_begin=(0, 0), pads_end=(0, 0),
                   dilation=(1, 1), out_spatial=(2, 2), scale=np.array([0.25, -0.5, 0.0, 1.0])
                   .reshape(1, 2, 2)), (2, 4, 4)),
        (ScaleOp((2, 3), scale=np.array([[-1.0], [0.0]])), (2, 3)),
        (ConvTransposeOp((2, 3, 3), weight=RNG.normal(size=(2, 3, 2, 2)), stride=(2, 2),
                         pads_begin=(0, 0), pads_end=(0, 0), dilation=(1, 1),
                         output_padding=(0, 0)), (2, 3, 3)),
    ]


def test_weighted_kinds_are_unchanged():
    assert WEIGHTED == ("conv", "dense", "sumpool", "convtranspose")
    assert set(OPS) == {"conv", "dense", "sumpool", "scale", "reshape", "place", "pad",
                        "convtranspose", "transpose", "select"}


@pytest.mark.parametrize("i", range(5))
def test_ops_answer_for_their_arrays(i):
    op, shape = _ops()[i]
    a = op.array()
    assert a is getattr(op, op.array_name) and not op.structural
    assert op.arrays() == {op.array_name: a}
    x = torch.as_tensor(RNG.normal(size=(3, *shape)))
    # the map with an explicit array is the map
    assert torch.equal(op.apply_array(x, like(a, x)), op.apply(x))
    assert torch.allclose(op.with_array(2 * a).apply(x), 2 * op.apply(x))
    # |W| and the indicator W != 0
    np.testing.assert_array_equal(op.abs().array(), np.abs(a))
    np.testing.assert_array_equal(op.indicator().array(), (a != 0).astype(np.float64))
    assert op.array() is a  # the originals are untouched
    assert op.abs().nonneg() and op.indicator().nonneg() and not op.nonneg()
    # the positive and negative parts add up to the map
    assert torch.allclose(op.apply(x, 1) + op.apply(x, -1), op.apply(x))


def test_wiring_ops_are_their_own_abs_and_indicator():
    for op in (ReshapeOp((2, 3), shape=(6,)), PadOp((1, 2, 2), pads_begin=(1, 0), pads_end=(0, 1)),
               SelectOp((4,), axis=0, index=(3, 0, 0))):
        assert op.structural and op.array() is None and op.arrays() == {}
        assert op.abs() is op and op.indicator() is op and op.nonneg()


def test_op_chains_round_trip_through_the_header():
    ops = [o for o, _ in _ops()[:1]] + [ReshapeOp((4, 6, 6), shape=(144,))]
    tensors: dict[str, np.ndarray] = {}

    def put(k, a):
        tensors[k] = np.asarray(a, np.float64)
        return k

    d = modelfile.chain_to_header(ops, "g", put)
    assert [o["kind"] for o in d] == ["conv", "reshape"]
    back = modelfile.chain_from_header(d, tensors.__getitem__, "test")
    x = torch.as_tensor(RNG.normal(size=(2, 2, 6, 6)))
    assert torch.equal(chain_apply(back, x), chain_apply(ops, x))
    bad = [dict(d[0], kind="nope")]
    with pytest.raises(Exception, match="unknown op kind 'nope'"):
        modelfile.chain_from_header(bad, tensors.__getitem__, "test")


def test_independent_simulators_do_not_import_the_reference_one():
    code = ("import sys; import snnconv.backends.onnx_backend, snnconv.snn.event, "
            "snnconv.modelfile; print('snnconv.snn.simulate' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "False"


def test_modules_of_the_package_stay_small():
    files = sorted((ROOT / "snnconv" / "snn").glob("*.py")) + \
        sorted((ROOT / "snnconv" / "backends").glob("*.py")) + [ROOT / "snnconv" / "modelfile.py"]
    for f in files:
        text = f.read_text()
        assert len(text.splitlines()) <= 400, f
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno + 1 <= 80, (f, node.name)


def test_every_simulator_records_the_layers_a_frozenset_names():
    """``record`` may be any set of layer names; the onnx backend took frozensets already."""
    import snnconv
    from snnconv.snn.event import simulate_events

    d = np.load(SAMPLES / "digits_test.npz")
    snn = snnconv.convert(SAMPLES / "mlp.onnx", SAMPLES / "digits_train.npz")
    name = snn.neuron_layers()[0].name
    x = d["x"][:4]
    for res in (snn.simulate(x, record=frozenset({name}), backend="torch"),
                simulate_events(snn, x, record=frozenset({name}))):
        assert list(res.offsets) == [name]
