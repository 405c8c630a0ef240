"""File-level entry points behind the CLI commands, usable from notebooks and scripts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import distributed, modelfile
from .conversion import convert
from .devices import resolve as resolve_device
from .errors import UsageError
from .fileio import atomic_write, check_output, recorded_file, require_recorded_file
from .report import summary


def convert_file(model, output=None, coding: str = "ttfs", **kw) -> dict:
    """Convert an ONNX file and write the .snn. Returns the summary that convert prints.
    ``coding`` "rate" writes a rate-coded IF net (``snnconv.rate``) instead of the exact TTFS
    one."""
    if coding not in ("ttfs", "rate"):
        raise UsageError(f"--coding {coding}: expected ttfs or rate")
    rate_kw = {k: kw.pop(k) for k in _RATE_ONLY if k in kw}
    model = Path(model)
    if output is None:
        output = model.with_suffix(".snn")
    output = Path(output)
    if output.suffix in (".onnx", ".npz", ".npy"):
        raise UsageError(f"-o {output}: refusing to write a model file with suffix "
                         f"{output.suffix}", hint="use a .snn suffix")
    if coding == "rate":
        from .rate.files import convert_rate_file

        return convert_rate_file(model, output, **kw, **{k: v for k, v in rate_kw.items()
                                                          if v is not None})
    given = [k for k, v in rate_kw.items() if v not in (None, False)]
    if given:
        raise UsageError(f"--{given[0].replace('_', '-')} applies to --coding rate only")
    check_output(output, [model, kw.get("calib")])
    dev = resolve_device(kw.pop("device", None))
    snn = convert(model, device=dev, **kw)
    if distributed.from_env().main:  # under torchrun every rank has the SNN; rank 0 writes it
        modelfile.save(snn, output)
    res = {"output": str(output), "summary": summary(snn)}
    if not dev.is_cpu or dev.note:
        res["device"] = dev.describe()
    return res


#: convert options of the rate coding only
_RATE_ONLY = ("steps", "channelwise", "reset", "v_init")


def inspect_file(path) -> dict:
    if modelfile.peek_format(path) == "snnconv-rate":
        from .rate.files import inspect_rate_file

        return inspect_rate_file(path)
    return summary(modelfile.load(path))


def finetune_file(model, output, data=None, proxy: bool = False, steps=None, **kw) -> dict:
    """``snnconv finetune``: the integer fine-tuning of a TTFS .snn (writes .snnq), or with
    ``proxy`` the proxy learning of a rate .snn (writes .snn)."""
    fmt = modelfile.peek_format(model)
    if proxy or fmt == "snnconv-rate":
        if not proxy or fmt != "snnconv-rate":
            raise UsageError(f"{model}: --proxy fine-tunes rate-coded models (convert --coding "
                             "rate), and a rate-coded model needs --proxy")
        from .rate.files import finetune_proxy_file

        return finetune_proxy_file(model, output, data, steps=steps, **kw)
    if steps is not None:
        raise UsageError("--steps applies to --proxy only")
    from .finetune import finetune_file as finetune_integer

    return finetune_integer(model, output, data, **kw)


def run_file(path, data, out=None, **kw) -> dict:
    """``snnconv run``: predictions of a .snnq (integer golden model) or of a rate model."""
    if modelfile.peek_format(path) == "snnconv-rate":
        from .rate.files import run_rate_file

        if kw.get("noise"):
            raise UsageError("--noise applies to .snnq models only")
        return run_rate_file(path, data, out, steps=kw.get("steps"))
    from .intmodel import run_file as run_integer

    if kw.get("steps") is not None:
        raise UsageError("--steps applies to rate models only")
    return run_integer(path, data, out, noise=kw.get("noise", 0.0),
                       preprocess=kw.get("preprocess"), device=kw.get("device"))


def verify_file(model, *, report_json=None, junit=None, plot=None, **kw) -> dict:
    """Run verify and write the requested reports. Returns the report as a dict."""
    import json

    from .junit import verify_junit
    from .verify import verify

    inputs = [model, kw.get("onnx"), kw.get("data")]
    for p in (report_json, junit, plot):
        if p is not None:
            check_output(p, inputs)
    float_model = kw.pop("float_model", None)
    rate_kw = {k: kw.pop(k, None) for k in ("steps", "min_agreement")}
    if modelfile.peek_format(model) == "snnconv-rate":
        from .rate.files import verify_rate_file

        if junit is not None or plot is not None:
            raise UsageError("--junit and --plot apply to TTFS models only")
        return verify_rate_file(model, report_json=report_json, **rate_kw, **kw)
    if any(v is not None for v in rate_kw.values()):
        raise UsageError("--steps and --min-agreement apply to rate models only")
    if modelfile.peek_format(model) == "snnconv-snnq":
        return _verify_integer_file(model, report_json=report_json, junit=junit, plot=plot,
                                    float_model=float_model, **kw)
    dev = resolve_device(kw.pop("device", None))
    rep = verify(model, plot=str(plot) if plot else None, device=dev, **kw)
    d = rep.to_dict()
    if not dev.is_cpu or dev.note:  # say where it ran when it was not the default CPU
        d["device"] = dev.describe()
    if float_model is not None:
        d.setdefault("warnings", []).append("--float applies to .snnq models only; ignored")
    if distributed.from_env().main:  # under torchrun: every rank has the report, rank 0 writes
        if report_json is not None:
            atomic_write(report_json, json.dumps(d, indent=2).encode())
        if junit is not None:
            atomic_write(junit, verify_junit(rep))
    return d


# options of the float verify that mean nothing for an integer model
_FLOAT_ONLY = ("onnx", "atol", "rtol", "allow_clipping", "noise")


def _verify_integer_file(model, *, report_json=None, junit=None, plot=None, data=None, n=None,
                         batch_size=256, progress=False, float_model=None, preprocess=None,
                         device=None,
                         **kw) -> dict:
    """A .snnq: the integer golden model against the register-level simulator, bit for bit."""
    import json

    from .intmodel import load, verify_integer
    from .junit import integer_junit

    warnings = [f"--{k.replace('_', '-')} applies to .snn models only; ignored"
                for k in _FLOAT_ONLY if kw.get(k) not in (None, False)]
    if plot is not None:
        warnings.append("--plot applies to .snn models only; ignored")
    if not resolve_device(device).is_cpu:
        warnings.append(f"--device {device}: the register-level simulator of a .snnq runs on "
                        "the CPU; ignored")
    net = load(model)
    if data is None:
        data = str(require_recorded_file(
            net.meta.get("training_data"),
            f"{model}: no --data given and the model records no data file",
            f"{model}: the training data recorded in the model is missing ({{p}})",
            f"{model}: the training data recorded in the model ({{p}}) has changed since "
            "fine-tuning (sha256 differs)",
            hints=("pass --data DATA.npz",) * 3))
        warnings.append(f"no --data given: using the training data recorded in the model "
                        f"({data})")
    d = verify_integer(net, data, batch_size=batch_size, limit=n, progress=progress,
                       preprocess=preprocess)
    d.update(model=str(model), data=str(data), kind="integer", warnings=warnings)
    snn, why = _float_source(net, float_model)
    if snn is not None:
        world = distributed.from_env()  # not sharded: rank 0 compares, the others receive
        d["float_comparison"] = distributed.from_main(
            _compare_float(net, snn, data, n, batch_size, preprocess) if world.main else None,
            world)
        d["float_model"] = str(float_model or net.meta["float_model"]["path"])
    elif why:
        warnings.append(why)
    if distributed.from_env().main:
        if report_json is not None:
            atomic_write(report_json, json.dumps(d, indent=2).encode())
        if junit is not None:
            atomic_write(junit, integer_junit(d))
    return d


def _float_source(net, float_model):
    """The float SNN a .snnq came from: ``float_model``, or the file recorded at fine-tuning if
    it still exists unchanged. Returns (SNN or None, why not)."""
    if float_model is not None:
        return modelfile.load(float_model), None
    rec = net.meta.get("float_model")
    p, state = recorded_file(rec)
    if state == "absent":
        return None, None
    if state != "ok":
        return None, (f"the float model recorded at fine-tuning ({rec['path']}) "
                      f"{'is gone' if state == 'gone' else 'has changed'}: no layer-by-layer "
                      "comparison (pass --float MODEL.snn)")
    return modelfile.load(p), None


def _compare_float(net, snn, data, n, batch_size, preprocess=None) -> dict:
    from . import data as data_mod, images
    from .intmodel.compare import compare

    if tuple(snn.input.shape) != tuple(net.input.shape) or \
            [la.name for la in snn.layers] != [la.name for la in net.layers]:
        raise UsageError("the float model is not the one this integer model was quantised from "
                         "(its layers differ)")
    ds = data_mod.load(data, tuple(net.input.shape),
                       preprocess=images.resolve(preprocess, net.meta))
    m = len(ds) if n is None else min(n, len(ds))
    batches = (np.asarray(ds.x[i:min(i + batch_size, m)], np.float64)
               for i in range(0, m, batch_size))
    return compare(net, snn, batches).as_dict()


def export_nir_file(model, output=None) -> dict:
    """``snnconv export-nir``: a rate-coded .snn as a NIR graph file (``snnconv.nirio``; needs
    the optional extra ``nir``). TTFS models are refused: docs/nir.md says why."""
    from .nirio.files import export_nir_file as export

    return export(model, output)
