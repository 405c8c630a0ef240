"""Reading an ONNX file safely and bringing it to a form the per-op handlers can import.

Uses the onnx library's own tools: load, checker, version_converter, shape inference (with data
propagation, for Shape->Gather->Concat flatten chains) and onnxscript's constant folder; constant
subgraphs the folder leaves are evaluated by ``onnx.reference`` during import (see builder).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import onnx
from onnx import external_data_helper

from ..errors import ModelImportError
from .sizes import check_initializers

MIN_OPSET = 7
#: Old opsets are upgraded to this one first, so handlers see one attribute layout where possible.
UPGRADE_TO = 13


def max_opset() -> int:
    return onnx.defs.onnx_opset_version()


def _check_external_data(model: onnx.ModelProto, base: Path, name: str) -> None:
    """External data only from inside the model's folder: no absolute paths, no '..'."""
    base = base.resolve()
    for t in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(t):
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        p = Path(loc)
        if not loc or p.is_absolute() or ".." in p.parts or loc.startswith(("/", "\\")):
            raise ModelImportError(
                f"tensor '{t.name}' refers to external data at '{loc}', outside the model's folder;"
                " snnconv reads external data only from files beside the model", file=name)
        target = (base / p).resolve()
        if base not in target.parents and target != base:
            raise ModelImportError(f"tensor '{t.name}': external data '{loc}' leaves the model's "
                                   "folder", file=name)
        if not target.is_file():
            raise ModelImportError(f"tensor '{t.name}': external data file '{loc}' is missing "
                                   f"(expected at {target})", file=name,
                                   hint="copy the .data file next to the .onnx file")


def read_model(source) -> tuple[onnx.ModelProto, str]:
    """Load from a path, bytes or a ModelProto. Returns the model and a name for messages."""
    if isinstance(source, onnx.ModelProto):
        model = copy.deepcopy(source)
        name = "<ModelProto>"
        for t in external_data_helper._get_all_tensors(model):
            if external_data_helper.uses_external_data(t):
                raise ModelImportError(f"tensor '{t.name}' has external data that was not loaded",
                                       file=name, hint="pass the file path instead")
        check_initializers(model, None, name)
        return model, name
    if isinstance(source, (bytes, bytearray)):
        try:
            model = onnx.load_model_from_string(bytes(source))
        except Exception as e:  # noqa: BLE001 - protobuf raises several types
            raise ModelImportError(f"not a valid ONNX model ({type(e).__name__})",
                                   file="<bytes>") from None
        check_initializers(model, None, "<bytes>")
        return model, "<bytes>"
    path = Path(os.fspath(source))
    name = str(path)
    if not path.exists():
        raise ModelImportError("file not found", file=name)
    if not path.is_file():
        raise ModelImportError("not a file", file=name)
    if path.stat().st_size == 0:
        raise ModelImportError("the file is empty", file=name)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - DecodeError, RuntimeWarning-as-error, OSError
        raise ModelImportError(f"not a valid ONNX model: cannot parse it ({type(e).__name__}); "
                               "is the file truncated or of another format?", file=name) from None
    if not model.graph.node and not model.graph.input:
        raise ModelImportError("not an ONNX model (the graph is empty)", file=name)
    _check_external_data(model, path.parent, name)
    check_initializers(model, path.parent.resolve(), name)
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as e:  # noqa: BLE001
        raise ModelImportError(f"cannot read external data: {e}", file=name) from None
    return model, name


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def prepare(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """Check, upgrade old opsets, fold constants. Errors name the file."""
    opset = default_opset(model)
    newest = max_opset()
    if opset < MIN_OPSET or opset > newest:
        raise ModelImportError(
            f"opset {opset} is outside the supported range {MIN_OPSET} to {newest}", file=name,
            hint="re-export the model with an opset in that range" if opset < MIN_OPSET else
            "upgrade the onnx package or re-export with an older opset")
    for imp in model.opset_import:
        if imp.domain not in ("", "ai.onnx"):
            used = {n.op_type for n in model.graph.node if n.domain == imp.domain}
            if used:
                raise ModelImportError(f"uses ops of the custom domain '{imp.domain}' "
                                       f"({', '.join(sorted(used))})", file=name)
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - ValidationError, and decode errors on garbage
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelImportError(f"the ONNX checker rejects the model: {first}", file=name) from None
    if opset < UPGRADE_TO:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                up = onnx.version_converter.convert_version(model, UPGRADE_TO)
            onnx.checker.check_model(up)
            model = up
        except Exception:  # noqa: BLE001 - keep the original opset; handlers read old layouts
            pass
    model = _fold(model)
    return model


def _fold(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        import onnxscript.optimizer as opt

        folded = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.fold_constants(folded)
            opt.remove_unused_nodes(folded)
        onnx.checker.check_model(folded)
        return folded
    except Exception:  # noqa: BLE001 - the builder's onnx.reference fallback folds what is left
        return model


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - partial information is fine, the IR checks shapes itself
        return model
