"""File-level entry points behind the CLI commands, usable from notebooks and scripts."""

from __future__ import annotations

from pathlib import Path

from . import modelfile
from .conversion import convert
from .errors import UsageError
from .fileio import check_output
from .report import summary


def convert_file(model, output=None, **kw) -> dict:
    """Convert an ONNX file and write the .snn. Returns the summary that convert prints."""
    model = Path(model)
    if output is None:
        output = model.with_suffix(".snn")
    output = Path(output)
    if output.suffix in (".onnx", ".npz", ".npy"):
        raise UsageError(f"-o {output}: refusing to write a model file with suffix "
                         f"{output.suffix}", hint="use a .snn suffix")
    check_output(output, [model, kw.get("calib")])
    snn = convert(model, **kw)
    modelfile.save(snn, output)
    return {"output": str(output), "summary": summary(snn)}


def inspect_file(path) -> dict:
    return summary(modelfile.load(path))


def verify_file(model, *, report_json=None, junit=None, plot=None, **kw) -> dict:
    """Run verify and write the requested reports. Returns the report as a dict."""
    import json

    from .fileio import atomic_write
    from .junit import verify_junit
    from .verify import verify

    inputs = [model, kw.get("onnx"), kw.get("data")]
    for p in (report_json, junit, plot):
        if p is not None:
            check_output(p, inputs)
    rep = verify(model, plot=str(plot) if plot else None, **kw)
    d = rep.to_dict()
    if report_json is not None:
        atomic_write(report_json, json.dumps(d, indent=2).encode())
    if junit is not None:
        atomic_write(junit, verify_junit(rep))
    return d
