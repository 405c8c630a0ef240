"""``snnconv export-nir``: a rate-coded .snn to a NIR file (HDF5, written atomically)."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from .. import modelfile
from ..errors import ModelFileError, UnsupportedOpError, UsageError
from ..fileio import atomic_write, check_output

#: why a TTFS model is not exported (docs/nir.md, "TTFS models", says it at length)
TTFS_REFUSAL = (
    "is a TTFS model: its neuron (integrate until t_min, then a ramp of fixed slope, one spike "
    "per inference, the value in the spike time) has no exact NIR form: NIR's neurons (IF, LIF, "
    "CubaLIF, LI, I) fire again at every threshold crossing, have no phase switch at t_min, "
    "and a time-stepped consumer quantises spike times")


def _nir():
    try:
        import nir
    except ImportError as e:
        raise UsageError(f"export-nir needs the 'nir' package ({e})",
                         hint="install the optional extra nir: pip install nir h5py") from None
    return nir


def export_nir_file(model, output=None) -> dict:
    """Write the NIR graph of a rate-coded model file; refuses TTFS models and what NIR cannot
    express (exit 2, naming the node). Returns a summary."""
    from ..rate import file as rate_file
    from .export import to_nir

    model = Path(model)
    fmt = modelfile.peek_format(model)
    if fmt in ("snnconv-snn", "snnconv-snnq"):
        raise UnsupportedOpError(
            f"{model} {TTFS_REFUSAL}", hint="convert the ONNX model with --coding rate --reset "
            "zero for a NIR export; see docs/nir.md")
    if fmt != "snnconv-rate":
        raise ModelFileError(f"{model}: not a snnconv model file")
    output = Path(output) if output is not None else model.with_suffix(".nir")
    check_output(output, [model])
    nir = _nir()
    net = rate_file.load(model)
    graph = to_nir(net)
    buf = io.BytesIO()
    nir.write(buf, graph)
    atomic_write(output, buf.getvalue())
    kinds = Counter(type(n).__name__ for n in graph.nodes.values())
    return {"model": str(model), "output": str(output), "nir_version": nir.__version__,
            "steps": net.steps, "nodes": dict(sorted(kinds.items())),
            "edges": len(graph.edges), "bytes": len(buf.getvalue())}
