"""What verify compares: the ONNX file and the data (given, or recorded in the model at
conversion), the imported network, and the SNN layers whose ONNX tensor can be compared."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import data as data_mod, images, ir
from ..errors import DataError, UsageError
from ..fileio import recorded_file
from ..importer import import_onnx
from ..snn import SNN, Layer

# why a recorded file cannot be used, per problem (recorded_file)
_ONNX_PROBLEMS = {
    "absent": lambda p: UsageError("the model file records no source ONNX file; pass --onnx"),
    "gone": lambda p: DataError(f"{p}: the ONNX model recorded at conversion is gone",
                                hint="pass --onnx MODEL.onnx"),
    "changed": lambda p: DataError(f"{p}: changed since conversion (sha256 differs)",
                                   hint="convert again, or pass --onnx explicitly to compare "
                                   "anyway"),
}
_DATA_PROBLEMS = {
    "absent": lambda p: UsageError("the model file records no calibration data; pass --data"),
    "gone": lambda p: DataError(f"{p}: the calibration data recorded at conversion is gone",
                                hint="pass --data DATA"),
    "changed": lambda p: DataError(f"{p}: changed since conversion (sha256 differs)",
                                   hint="pass --data explicitly"),
}


def _recorded(rec: dict | None, problems: dict) -> Path:
    p, state = recorded_file(rec)
    if state != "ok":
        raise problems[state](p)
    return p


def resolve(snn: SNN, onnx_path, data_path, warnings: list[str]):
    """The ONNX file and data to compare with: as given, else as recorded at conversion."""
    src = snn.meta.get("source") or {}
    if onnx_path is None:
        onnx_path = _recorded(src, _ONNX_PROBLEMS)
    elif recorded_file({"path": onnx_path, "sha256": src.get("sha256")})[1] == "changed":
        warnings.append(f"{onnx_path} is not the file this SNN was converted from")
    if data_path is None:
        data_path = _recorded((snn.meta.get("calibration") or {}).get("data"), _DATA_PROBLEMS)
        warnings.append(f"no --data: verifying on the calibration data {data_path}")
    return Path(onnx_path), data_path


@dataclass
class Inputs:
    onnx_path: Path
    graph: ir.Graph
    ds: data_mod.Dataset | data_mod.Stream
    total: int | None  # samples to verify (None: all a stream of unknown length yields)
    layers: list[Layer]  # the layers compared with an ONNX tensor
    warnings: list[str] = field(default_factory=list)

    @property
    def tensors(self) -> list[str]:
        """The ONNX tensors verify reads: the compared layers' and the output."""
        return sorted({la.relation.tensor for la in self.layers} | {self.graph.output})


def prepare(snn: SNN, onnx_path, data_path, n: int | None, preprocess=None,
            progress: bool = False) -> Inputs:
    """Resolve and load what the SNN is compared with; refuse a network of other shapes.
    ``data_path`` is anything ``data.source`` reads; an image folder is read with the
    preprocessing recorded at conversion, changed by ``preprocess``."""
    warnings: list[str] = []
    onnx_path, data_src = resolve(snn, onnx_path, data_path, warnings)
    graph = import_onnx(onnx_path)
    for what, a, b in (("input", graph.input_shape, snn.input.shape),
                       ("output", graph.output_shape, snn.output.shape)):
        if tuple(a) != tuple(b):
            raise DataError(f"{onnx_path}: {what} shape {tuple(a)} differs from the SNN's "
                            f"{tuple(b)}: not the model this SNN was converted from",
                            hint="pass the ONNX file the SNN was converted from (--onnx)")
    n_classes = int(np.prod(snn.output.shape))
    pre = images.resolve(preprocess, snn.meta, warnings)
    ds = data_mod.source(data_src, graph.input_shape, "data",
                         n_classes=n_classes if len(snn.output.shape) == 1 else None,
                         preprocess=pre, progress=progress)
    warnings += ds.notes
    size = len(ds) if isinstance(ds, data_mod.Dataset) else ds.length
    total = n if size is None else size if n is None else min(n, size)
    if total is not None and total <= 0:
        raise DataError(f"{ds.name}: no samples to verify")
    return Inputs(onnx_path, graph, ds, total, _comparable(snn, graph, warnings), warnings)


def _comparable(snn: SNN, graph: ir.Graph, warnings: list[str]) -> list[Layer]:
    """Layers with an ONNX tensor of their size (another network's tensors are named, skipped)."""
    out = []
    for la in snn.layers:
        if la.relation is None:
            continue
        shp = graph.shapes.get(la.relation.tensor)
        if shp is not None and math.prod(shp) != la.size:
            warnings.append(f"layer {la.name}: ONNX tensor {la.relation.tensor} has shape "
                            f"{tuple(shp)}, not the layer's {la.shape}: not compared")
            continue
        out.append(la)
    return out
