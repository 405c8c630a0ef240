"""``snnconv convert`` and ``snnconv inspect``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import emit, emit_json, run, warn
from .base import app
from .options import JsonOpt, QuietOpt, PreOpt, DeviceOpt, main_process, parse_shape


@app.command()
def convert(
    model: Annotated[Path, typer.Argument(help="ONNX model file.", metavar="MODEL.onnx")],
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Output .snn file \\[default: MODEL with suffix .snn].")] = None,
    calib: Annotated[Optional[Path], typer.Option(
        "--calib", help="Calibration data (.npz with x[, y], .npy, or a folder of images): "
        "windows from the data.")] = None,
    preprocess: PreOpt = None,
    input_range: Annotated[Optional[tuple[float, float]], typer.Option(
        "--input-range", help="Range LO HI of the input values. Without --calib, windows are "
        "derived from it by interval bounds (exact for every input in range).")] = None,
    margin: Annotated[float, typer.Option(help="Window = margin x calibrated max.")] = 1.5,
    percentile: Annotated[Optional[float], typer.Option(
        help="Window = this percentile of calibrated values (shorter latency; clipping is "
        "reported).")] = None,
    tau_c: Annotated[float, typer.Option("--tau-c", help="Time constant tau_c.")] = 1.0,
    input_shape: Annotated[Optional[str], typer.Option(
        "--input-shape", help="Per-sample input shape, e.g. 3,32,32, for dynamic dimensions.")]
    = None,
    calib_limit: Annotated[Optional[int], typer.Option(
        "--calib-limit", help="Use at most this many calibration samples.")] = None,
    windows: Annotated[str, typer.Option(
        "--windows", help="Without --calib: guaranteed (bounds over the input range), estimate "
        "(from the network alone, not guaranteed) or auto (guaranteed unless over 100x the "
        "estimate).")] = "auto",
    coding: Annotated[str, typer.Option(
        "--coding", help="ttfs (exact single-spike SNN) or rate (rate-coded IF neurons on a "
        "time-step grid, approximate; needs --calib; see docs/rate.md).")] = "ttfs",
    steps: Annotated[Optional[int], typer.Option(
        "--steps", help="Rate coding: the simulation length T the model records \\[32].")]
    = None,
    channelwise: Annotated[bool, typer.Option(
        "--channelwise", help="Rate coding: one threshold per channel (else per layer).")]
    = False,
    reset: Annotated[Optional[str], typer.Option(
        "--reset", help="Rate coding: subtract (default) or zero.")] = None,
    v_init: Annotated[Optional[float], typer.Option(
        "--v-init", help="Rate coding: initial membrane as a fraction of the threshold \\[0].")]
    = None,
    device: DeviceOpt = "cpu",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Convert an ONNX ReLU network to an exactly equivalent TTFS SNN (.snn).

    Windows come from calibration data (--calib), or without data from
    bounds over the input range (exact for every input in range) or, on deep
    nets where those are far too long, from an estimate (--windows).
    Prints the layers, their windows and thresholds, and the latency.

    Examples:

        snnconv convert model.onnx --calib train.npz -o model.snn
        snnconv convert model.onnx --input-range -1 1
        snnconv convert model.onnx --calib train.npz --percentile 99.9
        snnconv convert model.onnx --coding rate --steps 8 --calib train.npz
        snnconv convert resnet18.onnx --calib images/train --preprocess imagenet
    """
    from ..api import convert_file

    main = main_process()
    if not main:
        quiet, as_json = True, False
    res = run(convert_file, model, output, calib=calib, input_range=input_range, margin=margin,
              percentile=percentile, tau_c=tau_c, input_shape=run(parse_shape, input_shape),
              calib_limit=calib_limit, progress=not quiet and not as_json, windows=windows,
              coding=coding, steps=steps, channelwise=channelwise, reset=reset, v_init=v_init,
              preprocess=preprocess, device=device)
    if not main:
        return
    warn(res["summary"]["warnings"])
    if as_json:
        emit_json(res)
    elif not quiet:
        from ..render import convert_summary

        emit(convert_summary(res))


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="A .snn file.", metavar="MODEL.snn")],
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Print layers, neuron counts, windows, threshold ranges and latency of a model file.

    The model file is checked (format, version, checksum) on the way.
    With --quiet only the summary line is printed.

    Examples:

        snnconv inspect model.snn
        snnconv inspect model.snn --json
    """
    from ..api import inspect_file

    s = run(inspect_file, model)
    if as_json:
        emit_json(s)
        return
    from ..render import inspect_summary

    emit(inspect_summary(s, str(model), table=not quiet))
