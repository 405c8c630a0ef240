"""ONNX importer: the only part of snnconv that reads ONNX models. It returns an ``ir.Graph``.

loader (read, check, upgrade, fold) -> builder (walk the graph) -> registry -> ops (one handler
per op and opset layout, which see the graph only through context.Ctx); hints hold the refusals.
"""

from __future__ import annotations

from .. import ir
from ..errors import ModelImportError, SnnconvError
from .builder import build
from .loader import prepare, read_model


def import_onnx(source, input_shape: tuple[int, ...] | None = None) -> ir.Graph:
    """Read a path, bytes or ModelProto and import it. Raises ModelImportError on bad input.

    A malformed model can make the onnx library or a handler fail in ways the checker did not
    foresee; those failures are reported as ModelImportError naming the file (and node), with a
    hint to report the model if onnxruntime runs it.
    """
    model, name = read_model(source)
    try:
        model = prepare(model, name)
        return build(model, name, input_shape)
    except SnnconvError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, UnicodeError,
            RuntimeError, AssertionError, ZeroDivisionError, OverflowError) as e:
        raise ModelImportError(f"malformed or unexpected model ({type(e).__name__}: {e})",
                               file=name, hint="if onnxruntime runs this model, please report "
                               "it (with --debug output)") from e


__all__ = ["import_onnx"]
