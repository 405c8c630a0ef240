"""Running one ONNX node on known values with ``onnx.reference``.

The builder folds the constant subgraphs the constant folder left with it, and the Resize handler
runs its own node on index probes, so every coordinate mode is ONNX's own, not a re-implementation.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import helper


def evaluate_node(node: onnx.NodeProto, ctx, values=None) -> list[np.ndarray]:
    """The outputs of a node whose inputs are all in ``values`` (default: the context's
    constants), evaluated at the model's opset and IR version (``ctx`` is the import context)."""
    from onnx.reference import ReferenceEvaluator

    values = ctx.consts if values is None else values
    inputs = [i for i in node.input if i]
    g = helper.make_graph(
        [node], "fold",
        [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(values[i].dtype),
                                       values[i].shape) for i in inputs],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
         for o in node.output if o])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", ctx.opset)])
    m.ir_version = ctx.model.ir_version
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ReferenceEvaluator(m).run(None, {i: values[i] for i in inputs})
    return [np.asarray(r) for r in res]
