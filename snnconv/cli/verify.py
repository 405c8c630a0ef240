"""``snnconv verify``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import emit, emit_json, run, warn
from .base import app
from .options import JsonOpt, QuietOpt, PreOpt, DeviceOpt, main_process, parse_floats


# option declarations (typer reads them from the annotations)
_Model = Annotated[Path, typer.Argument(
    help="A .snn file, or a .snnq file (its integer models are checked against each other).",
    metavar="MODEL")]
_Onnx = Annotated[Optional[Path], typer.Option(
    "--onnx", help="Original ONNX model \\[default: the one recorded at conversion].")]
_Data = Annotated[Optional[Path], typer.Option(
    "--data", help="Inputs (.npz with x[, y], .npy, or a folder of images) \\[default: the "
    "calibration data].")]
_N = Annotated[Optional[int], typer.Option(
    "--n", "--samples", help="Use the first N samples (--samples under torchrun, whose "
    "own options would take --n as an abbreviation).")]
_Atol = Annotated[Optional[float], typer.Option(
    help="Absolute tolerance vs onnxruntime \\[default: a float32 forward error bound].")]
_Rtol = Annotated[Optional[float], typer.Option(
    help="Relative tolerance vs onnxruntime (x max|output| per sample).")]
_Rtol64 = Annotated[float, typer.Option(
    "--rtol64", help="Tolerance of the float64 mapping error (relative per sample).")]
_AllowClipping = Annotated[bool, typer.Option(
    "--allow-clipping", help="Compare with the windowed network (each ReLU clipped at its "
    "window); report the deviation from the original separately.")]
_Simulator = Annotated[str, typer.Option(help="closed (closed form) or event (event-driven).")]
_BatchSize = Annotated[int, typer.Option(
    "--batch-size", help="Samples per batch (bounds the memory used).")]
_ReferenceN = Annotated[int, typer.Option(
    "--reference-n", help="Samples for the float64 onnx.reference run (0: skip).")]
_Noise = Annotated[Optional[str], typer.Option(
    "--noise", help="Spike-time jitter std (units of tau_c), or a list 0.01,0.05,0.1.")]
_FloatModel = Annotated[Optional[Path], typer.Option(
    "--float", help="For a .snnq: the .snn it was fine-tuned from, compared layer by layer "
    "\\[default: the one recorded in the .snnq, if unchanged].")]
_ReportJson = Annotated[Optional[Path], typer.Option(
    "--report-json", help="Write the report as JSON to this file.")]
_Steps = Annotated[Optional[str], typer.Option(
    "--steps", help="Rate models: the T to report, e.g. 2,4,8,16,32 (the T of the model "
    "is added).")]
_MinAgreement = Annotated[Optional[float], typer.Option(
    "--min-agreement", help="Rate models: exit 1 if top-1 agreement with the ANN at the "
    "T of the model is below this percentage.")]


@app.command()
def verify(
    model: _Model,
    onnx: _Onnx = None,
    data: _Data = None,
    preprocess: PreOpt = None,
    n: _N = None,
    atol: _Atol = None,
    rtol: _Rtol = None,
    rtol64: _Rtol64 = 1e-9,
    allow_clipping: _AllowClipping = False,
    simulator: _Simulator = "closed",
    batch_size: _BatchSize = 128,
    reference_n: _ReferenceN = 16,
    noise: _Noise = None,
    float_model: _FloatModel = None,
    report_json: _ReportJson = None,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="JUnit XML report.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="PNG figure.")] = None,
    steps: _Steps = None,
    min_agreement: _MinAgreement = None,
    device: DeviceOpt = "cpu",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Check that the SNN reproduces the ONNX model on data. Exit 1 on mismatch.

    Compares layer by layer with a float64 evaluation of the network (the
    mapping), with onnxruntime (float32, within a float32 error bound) and
    with onnx.reference (float64); reports clipping, top-1 agreement,
    accuracy and spikes per neuron. Given a .snnq (from finetune), runs the
    integer golden model and the tick-by-tick register-level simulator on
    every sample: logits and every layer's spike ticks must agree bit for bit.
    Under torchrun the processes share the samples and rank 0 prints the
    merged report (docs/scale.md).

    Examples:

        snnconv verify model.snn
        snnconv verify model.snn --onnx model.onnx --data test.npz
        snnconv verify model.snn --data test.npz --junit verify.xml
        snnconv verify model.snnq --data test.npz
        snnconv verify resnet18.snn --data images/val --n 1000
        snnconv verify rate.snn --steps 2,4,8,16,32 --min-agreement 99
        snnconv verify model.snn --data test.npz --device cuda
        torchrun --nproc-per-node 2 -m snnconv verify model.snn --data test.npz

    A rate-coded model (convert --coding rate) is not exact: verify reports
    its top-1 agreement with the ANN and accuracy for each T, spikes per
    neuron and synaptic events, and exits 1 only below --min-agreement.
    """
    from ..api import verify_file

    main = main_process()
    if not main:
        quiet, as_json = True, False
    sigmas = run(parse_floats, noise, "--noise") if noise else None
    ts = [int(t) for t in run(parse_floats, steps, "--steps")] if steps else None
    rep = run(verify_file, model, onnx=onnx, data=data, n=n, atol=atol, rtol=rtol,
              rtol64=rtol64, allow_clipping=allow_clipping, simulator=simulator,
              batch_size=batch_size, reference_n=reference_n, noise=sigmas,
              report_json=report_json, junit=junit, plot=plot, float_model=float_model,
              progress=not quiet and not as_json, steps=ts, min_agreement=min_agreement,
              preprocess=preprocess, device=device)
    if main:
        warn(rep["warnings"])
    if as_json:
        emit_json(rep)
    elif not quiet:
        from ..render import verify_report

        emit(verify_report(rep))
    if not rep["ok"]:
        raise typer.Exit(1)
