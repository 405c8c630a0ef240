"""The original ONNX file prepared for reference runs: onnxruntime with intermediate tensors
exposed, and a float64 copy for ``onnx.reference`` (independent of the importer's own graph)."""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

from .loader import read_model

F32, F64 = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE


def _produced(model: onnx.ModelProto) -> set[str]:
    names = {i.name for i in model.graph.input}
    for n in model.graph.node:
        names.update(o for o in n.output if o)
    return names


def with_outputs(model: onnx.ModelProto, names, elem=F32) -> tuple[onnx.ModelProto, list[str]]:
    """Expose the named tensors as extra graph outputs (those that exist)."""
    have = _produced(model)
    outs = {o.name for o in model.graph.output}
    added = []
    for n in names:
        if n in have and n not in outs:
            model.graph.output.append(helper.make_tensor_value_info(n, elem, None))
            outs.add(n)
            added.append(n)
    return model, added


def runtime_model(source, extra=()) -> tuple[bytes, list[str], dict]:
    """Serialized model for onnxruntime with ``extra`` tensors exposed, and input facts."""
    model, _ = read_model(source)
    model, added = with_outputs(model, extra)
    return model.SerializeToString(), added, _input_info(model)


def _input_info(model) -> dict:
    inits = {t.name for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    dims = inp.type.tensor_type.shape.dim
    batch = dims[0].dim_value if len(dims) and dims[0].HasField("dim_value") else None
    return {"input": inp.name, "batch": batch, "outputs": [o.name for o in model.graph.output]}


def _t64(t: onnx.TensorProto) -> onnx.TensorProto:
    if t.data_type != F32:
        return t
    return numpy_helper.from_array(numpy_helper.to_array(t).astype("float64"), t.name)


def _retype(vi) -> None:
    tt = vi.type.tensor_type
    if tt.elem_type == F32:
        tt.elem_type = F64


def float64_model(source, extra=()) -> tuple[onnx.ModelProto, list[str], dict]:
    """A float64 copy of the original file (weights, constants, casts and types widened)."""
    model, _ = read_model(source)
    g = model.graph
    for i, t in enumerate(list(g.initializer)):
        g.initializer[i].CopyFrom(_t64(t))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        _retype(vi)
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                a.t.CopyFrom(_t64(a.t))
            elif node.op_type == "Cast" and a.name == "to" and a.i == F32:
                a.i = F64
        if node.op_type == "Constant":
            for a in list(node.attribute):
                if a.name in ("value_float", "value_floats"):
                    import numpy as np

                    val = np.asarray(a.f if a.name == "value_float" else list(a.floats),
                                     dtype=np.float64)
                    node.attribute.remove(a)
                    node.attribute.append(helper.make_attribute(
                        "value", numpy_helper.from_array(val)))
    model, added = with_outputs(model, extra, F64)
    return model, added, _input_info(model)


def reference_evaluator(model: onnx.ModelProto):
    """onnx.reference's evaluator, with BatchNormalization-9..13 run in inference mode.

    onnx.reference treats a BatchNormalization-9 that has a 'momentum' attribute (torch exports
    one) as training mode and normalises with batch statistics; with a single output the ONNX spec
    defines the op as inference only (running statistics).
    """
    import numpy as np
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, spatial=None,
                 is_test=None, training_mode=None):
            if training_mode:
                raise RuntimeError("BatchNormalization in training mode")
            shp = (-1,) + (1,) * (x.ndim - 2)
            eps = 1e-5 if epsilon is None else epsilon
            y = scale.reshape(shp) * (x - mean.reshape(shp)) / np.sqrt(var.reshape(shp) + eps) \
                + bias.reshape(shp)
            return (y.astype(x.dtype),)

    return ReferenceEvaluator(model, new_ops=[BatchNormalization])
