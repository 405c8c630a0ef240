"""The importer's handler registry: keyed by (domain, op type, since version), loud on duplicates,
and still holding every op the single handlers module registered before the split (issue 14)."""

from __future__ import annotations

import pytest

from snnconv.errors import EXIT_INTERNAL, SnnconvError, UnsupportedOpError
from snnconv.importer import import_onnx
from snnconv.importer.ops import activations, heads, linear, pooling, select, shape
from snnconv.importer.registry import HANDLERS, DuplicateHandlerError, Registry

from .helpers import G

#: The op types of the old ``snnconv.importer.handlers.HANDLERS`` (commit 2758316).
OLD_HANDLERS = [
    "Abs", "Add", "ArgMax", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Conv",
    "ConvTranspose", "Div", "Dropout", "Flatten", "Gather", "Gemm", "GlobalAveragePool",
    "GlobalMaxPool", "HardSigmoid", "Identity", "LeakyRelu", "Log", "LogSoftmax", "MatMul", "Max",
    "MaxPool", "Min", "Mul", "Neg", "PRelu", "Pad", "ReduceMax", "ReduceMean", "Relu", "Reshape",
    "Resize", "Shape", "Sigmoid", "Slice", "Softmax", "Split", "Squeeze", "Sub", "Sum", "Tanh",
    "Transpose", "Unsqueeze", "Upsample",
]


def _v1(ctx, node):
    pass


def _v13(ctx, node):
    pass


def test_duplicate_registration_raises_a_named_error():
    reg = Registry()
    reg.register("Foo")(_v1)
    with pytest.raises(DuplicateHandlerError, match=r"Foo \(domain '', since opset 1\)"):
        reg.register("Foo")(_v13)
    with pytest.raises(DuplicateHandlerError):
        reg.register("Foo", domain="ai.onnx")(_v13)  # another spelling of the default domain
    assert reg.lookup("Foo", 17) is _v1  # the first one stays
    reg.register("Foo", since=13)(_v13)  # another version or domain is no duplicate
    reg.register("Foo", domain="com.example")(_v13)
    assert issubclass(DuplicateHandlerError, SnnconvError)
    assert DuplicateHandlerError.exit_code == EXIT_INTERNAL


def test_the_importers_registry_refuses_a_second_conv():
    with pytest.raises(DuplicateHandlerError, match="linear.conv"):
        HANDLERS.register("Conv")(_v1)
    assert HANDLERS.lookup("Conv", 17) is linear.conv


def test_lookup_picks_the_newest_version_not_newer_than_the_opset():
    reg = Registry()
    reg.register("Foo")(_v1)
    reg.register("Foo", since=13)(_v13)
    assert reg.lookup("Foo", 17) is _v13
    assert reg.lookup("Foo", 13) is _v13
    assert reg.lookup("Foo", 12) is _v1
    assert reg.lookup("Foo", 11) is _v1
    assert reg.lookup("Foo", 17, domain="ai.onnx") is _v13
    assert reg.lookup("Foo", 17, domain="com.example") is None
    assert reg.lookup("Bar", 17) is None
    assert reg.versions("Foo") == (1, 13)
    late = Registry()
    late.register("Foo", since=13)(_v13)
    assert late.lookup("Foo", 11) is None


@pytest.mark.parametrize("op,old,new,since", [
    ("Clip", activations.clip_v1, activations.clip_v11, 11),
    ("Slice", select.slice_v1, select.slice_v10, 10),
    ("Split", select.split_v1, select.split_v13, 13),
    ("Pad", shape.pad_v1, shape.pad_v11, 11),
    ("ReduceMean", pooling.reduce_v1, pooling.reduce_v18, 18),
    ("ReduceMax", pooling.reduce_v1, pooling.reduce_v18, 18),
    ("Softmax", heads.softmax_v1, heads.softmax_v13, 13),
    ("LogSoftmax", heads.softmax_v1, heads.softmax_v13, 13),
])
def test_opset_layouts_are_separate_registrations(op, old, new, since):
    assert HANDLERS.versions(op) == (1, since)
    assert HANDLERS.lookup(op, since - 1) is old
    assert HANDLERS.lookup(op, since) is new
    assert HANDLERS.lookup(op, 22) is new


def test_every_op_supported_before_is_still_registered():
    assert sorted(HANDLERS) == OLD_HANDLERS
    assert len(HANDLERS) == len(OLD_HANDLERS)
    for op in OLD_HANDLERS:
        assert op in HANDLERS
        assert HANDLERS.lookup(op, 7) is not None  # every op from the oldest accepted opset on


UNSUPPORTED = {
    "Sin": "<ModelProto>: node 'n' (Sin): op Sin has no TTFS mapping in snnconv\n  hint: rewrite "
           "the node with supported ops (README, 'Supported ONNX ops'): every piecewise-linear "
           "function is a sum of ReLUs; otherwise replace it by a ReLU variant and fine-tune",
    "Elu": "<ModelProto>: node 'n' (Elu): cannot be mapped exactly to a TTFS network: ELU is not "
           "piecewise linear\n  hint: replace it by ReLU (or LeakyReLU / ReLU6) and fine-tune the "
           "ANN before converting",
    "Tanh": "<ModelProto>: node 'n' (Tanh): cannot be mapped exactly to a TTFS network: Tanh is "
            "not piecewise linear (allowed only as the last op)\n  hint: replace hidden Tanh by "
            "Clip(-1, 1) (HardTanh) or ReLU and fine-tune",
    "Softmax": "<ModelProto>: node 'n' (Softmax): cannot be mapped exactly to a TTFS network: "
               "Softmax is allowed only at the output\n  hint: Softmax/LogSoftmax are accepted as "
               "the last op only",
}


@pytest.mark.parametrize("op", list(UNSUPPORTED))
def test_unsupported_ops_keep_their_message(op):
    """The messages of commit 2758316, word for word (an unknown op, a non-piecewise-linear op,
    and head ops inside the network)."""
    g = G((10,), opset=13)
    y = g.op(op, [g.gemm(g.input, 10, 8)], name="n")
    with pytest.raises(UnsupportedOpError) as ei:
        import_onnx(g.model(g.gemm(y, 8, 3)))
    assert str(ei.value) == UNSUPPORTED[op]
    assert (ei.value.node, ei.value.op) == ("n", op)
