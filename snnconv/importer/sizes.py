"""Sizes an ONNX file declares, checked before anything of that size is read or allocated:
every initializer's dims against the bytes it holds (inline or in its external data file) and
every declared tensor shape against the memory budget (``budget``)."""

from __future__ import annotations

import math
from pathlib import Path

import onnx
from onnx import external_data_helper, helper

from .. import budget
from ..errors import ModelImportError

#: per-sample tensors are evaluated in float64
_F64 = 8


def _itemsize(t: onnx.TensorProto) -> int | None:
    try:
        return helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        return None


def check_initializers(model: onnx.ModelProto, base: Path | None, name: str) -> None:
    """Each initializer's declared dims against what it holds; external data against its file,
    before the file is read."""
    for t in external_data_helper._get_all_tensors(model):
        size = _itemsize(t)
        if any(d < 0 for d in t.dims):
            raise ModelImportError(f"tensor '{t.name}' declares negative dims {list(t.dims)}",
                                   file=name)
        if size is None or t.data_type == onnx.TensorProto.STRING:
            continue
        count = math.prod(t.dims)
        nbytes = count * size
        where = f"{name}: tensor '{t.name}'"
        budget.check(nbytes, where, f"declared dims {list(t.dims)}", ModelImportError)
        if external_data_helper.uses_external_data(t):
            if base is None:
                continue
            info = {e.key: e.value for e in t.external_data}
            held = (base / info.get("location", "")).stat().st_size - int(info.get("offset", 0))
            if "length" in info:
                held = min(held, int(info["length"]))
            if nbytes > held:
                raise ModelImportError(f"tensor '{t.name}' declares dims {list(t.dims)} "
                                       f"({nbytes} bytes), its external data holds {held}",
                                       file=name, hint="the .data file is truncated or "
                                       "belongs to another model")
        elif t.raw_data:
            if len(t.raw_data) != nbytes:
                raise ModelImportError(f"tensor '{t.name}' declares dims {list(t.dims)} "
                                       f"({nbytes} bytes) but holds {len(t.raw_data)} bytes",
                                       file=name, hint="the file is corrupt or crafted")
        else:
            field = helper.tensor_dtype_to_field(t.data_type)
            held = len(getattr(t, field))
            if t.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
                held //= 2
            if held != count and not (held == 0 and count == 0):
                raise ModelImportError(f"tensor '{t.name}' declares dims {list(t.dims)} "
                                       f"({count} values) but holds {held}", file=name,
                                       hint="the file is corrupt or crafted")


def check_declared_shapes(model: onnx.ModelProto, name: str) -> None:
    """Every declared (or inferred) tensor shape, per sample, within the memory budget."""
    g = model.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1
                for d in vi.type.tensor_type.shape.dim]
        if any(d < 0 for d in dims):
            raise ModelImportError(f"tensor '{vi.name}' declares negative dims {dims}",
                                   file=name)
        per_sample = math.prod(dims[1:]) if len(dims) > 1 else math.prod(dims)
        budget.check(per_sample * _F64, f"{name}: tensor '{vi.name}'",
                     f"declared shape {dims} (one sample, float64)", ModelImportError)
