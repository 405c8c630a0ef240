"""ONNX importer: the only part of snnconv that reads ONNX models. It returns an ``ir.Graph``."""

from __future__ import annotations

from .. import ir
from . import handlers  # noqa: F401 - fills the registry
from .builder import build
from .loader import prepare, read_model


def import_onnx(source, input_shape: tuple[int, ...] | None = None) -> ir.Graph:
    """Read a path, bytes or ModelProto and import it. Raises ModelImportError on bad input."""
    model, name = read_model(source)
    model = prepare(model, name)
    return build(model, name, input_shape)


def load_checked(source):
    """The ONNX model as a prepared ModelProto (for tools that run the original in onnxruntime)."""
    model, name = read_model(source)
    return model, name


__all__ = ["import_onnx", "load_checked", "handlers"]
