"""``convert``: ONNX (or a torch module) -> TTFS SNN with calibrated or guaranteed windows.

The pipeline entry: import (``importer``: ONNX -> IR graph), map (``mapping``: IR -> TTFS layers),
calibrate and lay out time (``windows``). Each stage lives in its own module; this one only
validates the options, chooses the input range and records where the SNN came from.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
from pathlib import Path

import numpy as np

from . import __version__, data as data_mod, distributed
from .devices import resolve as resolve_device
from .errors import UsageError
from .fileio import sha256_file
from .importer import import_onnx
from .mapping import map_graph
from .progress import bar
from .snn import SNN
from .windows import MODES, build_snn, calibrate, choose, data_range


def _from_torch(module, example_input, opset: int = 17) -> bytes:
    import torch

    if example_input is None:
        raise UsageError("converting a torch.nn.Module needs example_input (one batch)")
    module = module.eval()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, (example_input,), buf, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return buf.getvalue()


def _input_range(graph, ds, input_range, margin, warnings: list[str], batch_size: int,
                 world: distributed.World = distributed.SINGLE):
    if input_range is not None:
        lo, hi = (np.asarray(v, np.float64) for v in input_range)
        if np.any(hi <= lo):
            raise UsageError(f"input range [{lo}, {hi}] is empty")
        return lo, hi, "given"
    if ds is not None and ds.value_range is not None:  # image folders: from the preprocessing
        lo, hi = ds.value_range
        return lo, hi, "image preprocessing (pixel values 0..255)"
    if ds is not None:
        start, stop = _shard(ds, None, batch_size, world)
        return data_range((xb for xb, _ in ds.batches(batch_size, stop, start)),
                          graph.input_shape, margin, world)
    warnings.append("no calibration data and no --input-range: assumed inputs in [0, 1]; windows "
                    "hold for that range only (pass --input-range LO HI or --calib DATA to "
                    "change it)")
    return np.array(0.0), np.array(1.0), "assumed"


def _shard(ds, n: int | None, batch_size: int, world: distributed.World):
    """This process's [start, stop) of the first ``n`` samples (None: all). Array files and
    image folders are shared out by whole batches; an iterable of batches cannot be."""
    if isinstance(ds, data_mod.Dataset):
        return distributed.shard(len(ds) if n is None else n, batch_size, world)
    if world.many:
        raise UsageError("under torchrun calibration data must be a file or an image folder "
                         "(an iterable of batches cannot be shared out between processes)")
    return 0, n


def _source(model, example_input) -> tuple[object, dict]:
    """The ONNX model to import (a torch module is exported first) and what the .snn records
    about where it came from."""
    source_meta: dict = {}
    try:
        import torch

        is_module = isinstance(model, torch.nn.Module)
    except ImportError:  # pragma: no cover
        is_module = False
    if is_module:
        model = _from_torch(model, example_input)
        source_meta["kind"] = "torch.nn.Module"
    elif isinstance(model, (str, os.PathLike)):
        p = Path(model)
        source_meta.update(path=str(p.resolve()), name=p.name)
        if p.is_file():
            source_meta["sha256"] = sha256_file(p)
    return model, source_meta


def provenance(graph, source_meta) -> dict:
    """What every converted model file records about its origin (TTFS and rate alike): the
    snnconv version, the time, the source file and the ONNX names verify compares against."""
    return {
        "snnconv_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source_meta,
        "onnx": {"input": graph.input, "input_shape": list(graph.input_shape),
                 "batch": graph.batch, "compared_output": graph.output,
                 "output": graph.onnx_output, "head": graph.head},
    }


def _meta(graph, source_meta, lo, hi, range_src, cal, margin, percentile, warnings,
          compared=None) -> dict:
    """The metadata a converted SNN carries: provenance, input range and calibration."""
    return {
        **provenance(graph, source_meta),
        "input_range": {"lo": np.asarray(lo).tolist(), "hi": np.asarray(hi).tolist(),
                        "source": range_src},
        "calibration": {"method": cal.method, "source": cal.source, "samples": cal.samples,
                        "margin": margin, "percentile": percentile, "maxima": cal.maxima,
                        "active": cal.active, **(compared or {})},
        "warnings": warnings,
    }


def convert(model, calib=None, *, input_range=None, margin: float = 1.5,
            percentile: float | None = None, tau_c: float = 1.0, example_input=None,
            input_shape: tuple[int, ...] | None = None, batch_size: int = 256,
            calib_limit: int | None = None, progress: bool = False,
            windows: str = "auto", preprocess=None, device=None) -> SNN:
    """Convert a ReLU network to an exactly equivalent TTFS SNN.

    ``model``: ONNX path, bytes, ``onnx.ModelProto``, or a ``torch.nn.Module`` (with
    ``example_input``). ``calib``: data that sets the windows and the input range: a path
    (.npz, .npy, a folder of images read with ``preprocess``), arrays, ``(x, y)``, a torch
    Dataset or DataLoader, or a list of batches. Without it, ``windows`` chooses: "guaranteed"
    (bounds over ``input_range``, exact for every input in it), "estimate" (from the network
    alone, not guaranteed) or "auto" (guaranteed unless they are over ``windows.AUTO_LIMIT``
    times the estimate).
    ``device``: where calibration runs (``devices.resolve``; float64 there too). Under torchrun
    the processes share the calibration batches; every process returns the same SNN.
    """
    if margin < 1.0:
        raise UsageError(f"margin {margin} < 1 would clip the calibration data itself",
                         hint="use --percentile to trade exactness for latency")
    if percentile is not None and not 0 < percentile <= 100:
        raise UsageError(f"percentile {percentile} is not in (0, 100]")
    if percentile is not None and calib is None:
        raise UsageError("--percentile needs calibration data (--calib)")
    if tau_c <= 0:
        raise UsageError("tau_c must be positive")
    if windows not in MODES:
        raise UsageError(f"windows '{windows}': expected one of {', '.join(MODES)}")
    model, source_meta = _source(model, example_input)
    graph = import_onnx(model, input_shape=input_shape)

    ds = None
    world = distributed.SINGLE
    dev = resolve_device(device)
    if calib is not None:
        dev.require_float64("calibration (float64 maxima)")
        ds = data_mod.source(calib, graph.input_shape, "calibration data",
                             preprocess=preprocess, progress=progress)
        world = distributed.join(dev)
    warnings: list[str] = [] if ds is None else list(ds.notes)
    lo, hi, range_src = _input_range(graph, ds, input_range, margin, warnings, batch_size,
                                     world)
    layers = map_graph(graph, lo, hi)

    compared: dict = {}
    if ds is not None:
        size = len(ds) if isinstance(ds, data_mod.Dataset) else ds.length
        n = calib_limit if size is None else size if calib_limit is None else \
            min(calib_limit, size)
        start, stop = _shard(ds, n, batch_size, world)
        with bar("calibrating", None if stop is None else stop - start,
                 progress and world.main) as adv:
            cal = calibrate(layers, (xb for xb, _ in ds.batches(batch_size, stop, start)),
                            percentile=percentile, progress=adv,
                            device=None if dev.is_cpu else dev.torch, world=world)
    else:
        cal, compared, notes = choose(layers, windows, margin, graph.priors)
        warnings += notes

    meta = _meta(graph, source_meta, lo, hi, range_src, cal, margin, percentile, warnings,
                 compared)
    if ds is not None and ds.path:
        meta["calibration"]["data"] = {"path": str(Path(ds.path).resolve()),
                                       "sha256": ds.sha256()}
    if ds is not None and ds.preprocess:
        meta["preprocess"] = ds.preprocess  # reused by verify, run and finetune
    return build_snn(layers, cal, tau_c=tau_c, margin=margin,
                     use_percentile=percentile is not None, head=graph.head, meta=meta)
