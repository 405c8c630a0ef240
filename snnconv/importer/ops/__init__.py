"""The op handlers, one module per op family. Importing this package fills the registry.

A handler reads one ONNX node through the import context (``..context.Ctx``) and emits IR nodes,
an alias, or a refusal that names a rewrite (``..hints``). To add an op: write a function in the
module of its family (or a new module imported here) and decorate it with
``@register("OpType")``; where the op's layout changed in some opset, register one function per
layout with ``since=<version>`` (see ``..registry``). Handlers for old layouts stay because the
version converter cannot upgrade every old model.
"""

from . import activations, elementwise, heads, linear, pooling, select, shape

__all__ = ["activations", "elementwise", "heads", "linear", "pooling", "select", "shape"]
