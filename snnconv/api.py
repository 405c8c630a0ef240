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
    if modelfile.peek_format(model) == "snnconv-snnq":
        return _verify_integer_file(model, report_json=report_json, junit=junit, plot=plot, **kw)
    rep = verify(model, plot=str(plot) if plot else None, **kw)
    d = rep.to_dict()
    if report_json is not None:
        atomic_write(report_json, json.dumps(d, indent=2).encode())
    if junit is not None:
        atomic_write(junit, verify_junit(rep))
    return d


# options of the float verify that mean nothing for an integer model
_FLOAT_ONLY = ("onnx", "atol", "rtol", "allow_clipping", "noise")


def _verify_integer_file(model, *, report_json=None, junit=None, plot=None, data=None, n=None,
                         batch_size=256, progress=False, **kw) -> dict:
    """A .snnq: the integer golden model against the register-level simulator, bit for bit."""
    import json

    from .fileio import atomic_write
    from .intmodel import load, verify_integer
    from .junit import integer_junit

    warnings = [f"--{k.replace('_', '-')} applies to .snn models only; ignored"
                for k in _FLOAT_ONLY if kw.get(k) not in (None, False)]
    if plot is not None:
        warnings.append("--plot applies to .snn models only; ignored")
    net = load(model)
    if data is None:
        rec = (net.meta.get("training_data") or {}).get("path")
        if not rec or not Path(rec).is_file():
            raise UsageError(f"{model}: no --data given and the model records no data file that "
                             "still exists", hint="pass --data DATA.npz")
        data = rec
        warnings.append(f"no --data given: using the training data recorded in the model "
                        f"({rec})")
    d = verify_integer(net, data, batch_size=batch_size, limit=n, progress=progress)
    d.update(model=str(model), data=str(data), kind="integer", warnings=warnings)
    if report_json is not None:
        atomic_write(report_json, json.dumps(d, indent=2).encode())
    if junit is not None:
        atomic_write(junit, integer_junit(d))
    return d
