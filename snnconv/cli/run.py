"""``snnconv run``, ``export-vectors`` and ``export-nir``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import emit, emit_json, run, warn
from .base import app
from .options import JsonOpt, QuietOpt, PreOpt, DeviceOpt, main_process


@app.command("run")
def run_cmd(
    model: Annotated[Path, typer.Argument(help="A .snnq file, or a rate-coded .snn.")],
    data: Annotated[Path, typer.Option(
        "--data", help="Data (.npz with x[, y], .npy, or a folder of images).")],
    preprocess: PreOpt = None,
    pred: Annotated[Optional[Path], typer.Option(
        "--out", help="Write predictions and integer logits to this .npz.")] = None,
    noise: Annotated[float, typer.Option(
        "--noise", help="Spike-time jitter (ticks) to test robustness.")] = 0.0,
    steps: Annotated[Optional[int], typer.Option(
        "--steps", help="Rate models: simulate T steps \\[the T of the model].")] = None,
    device: DeviceOpt = "cpu",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Predictions of the integer golden model, from the .snnq file alone
    (or of a rate-coded model, simulated for T steps).

    Examples:

        snnconv run model.snnq --data test.npz
        snnconv run model.snnq --data test.npz --out pred.npz --noise 1
        snnconv run rate.snn --data test.npz --steps 8
        torchrun --nproc-per-node 2 -m snnconv run model.snnq --data test.npz
    """
    from ..api import run_file

    main = main_process()
    if not main:
        quiet, as_json = True, False
    res = run(run_file, model, data, pred, noise=noise, steps=steps, preprocess=preprocess,
              device=device)
    if main:
        warn(res.get("warnings", []))
    if as_json:
        emit_json(res)
    elif not quiet:
        from ..render import run_summary

        emit(run_summary(res))


@app.command("export-vectors")
def export_vectors(
    model: Annotated[Path, typer.Argument(help="A .snnq file.")],
    data: Annotated[Path, typer.Option("--data", help="Data to draw samples from.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")],
    n: Annotated[int, typer.Option("--n", help="Number of samples (corner cases first).")]
    = 16,
    preprocess: PreOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Stimulus and expected spike ticks of every layer, as $readmemh hex and CSV.

    Corner cases (most saturated and near-threshold neurons) come first, then
    ordinary samples; manifest.json describes every file.

    Examples:

        snnconv export-vectors model.snnq --data test.npz --n 32 -o vectors/
    """
    from ..intmodel.vectors import export_vectors as export

    res = run(export, model, data, n, output, preprocess=preprocess)
    if as_json:
        emit_json(res)
    elif not quiet:
        from ..render import vectors_summary

        emit(vectors_summary(res))


@app.command("export-nir")
def export_nir(
    model: Annotated[Path, typer.Argument(help="A rate-coded .snn file (convert --coding rate "
                                          "--reset zero).", metavar="MODEL.snn")],
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Output NIR file \\[default: MODEL with suffix .nir].")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Write a rate-coded model as a NIR graph (Neuromorphic Intermediate Representation).

    Input, Affine/Linear, Conv2d, IF (r = 1, reset to zero, dt = 1 step), Scale, AvgPool2d,
    SumPool2d, Flatten and Output; residual adds become summed edges. Refused with exit 2,
    naming the node: reset by subtraction, nonzero v_init, max-pooling, input shifts, and
    TTFS models (no exact NIR form; see docs/nir.md). Needs the optional extra nir
    (the packages nir and h5py).

    Examples:

        snnconv export-nir mlp_rate.snn -o mlp_rate.nir
    """
    from ..api import export_nir_file

    res = run(export_nir_file, model, output)
    if as_json:
        emit_json(res)
    elif not quiet:
        from ..render import nir_summary

        emit(nir_summary(res))
