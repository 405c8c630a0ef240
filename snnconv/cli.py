"""Command-line interface: a thin layer over the Python API (nothing imports this module).
Each command parses its options, calls the API and prints what ``render`` makes of the result.
Commands import the API and ``render`` when they run, so ``--version`` and shell completion
import neither (nor numpy and torch).

Exit codes: 0 ok, 1 verification mismatch, 2 bad input or usage, 3 internal error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .console import emit, emit_json, err, run, state, warn
from .errors import UsageError

EXIT_HELP = ("Exit codes: 0 ok, 1 verification mismatch, 2 bad input or usage, "
             "3 internal error.")

app = typer.Typer(add_completion=True, no_args_is_help=True, rich_markup_mode="rich",
                  help="Exact conversion of ReLU networks (ONNX) to time-to-first-spike spiking "
                  "networks, verification, and hardware-aware fine-tuning.\n\n" + EXIT_HELP +
                  "\n\nEvery command takes --json (machine-readable output on stdout) and "
                  "--quiet. Colours are off when the output is not a terminal or NO_COLOR is "
                  "set. Help on one command: snnconv COMMAND --help.",
                  context_settings={"help_option_names": ["-h", "--help"]})

def _version(value: bool):
    if value:
        print(f"snnconv {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
):
    state["debug"] = debug


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    import re

    parts = re.split(r"[,x]", text.strip())
    try:
        shape = tuple(int(v) for v in parts)
    except ValueError:
        raise UsageError(f"--input-shape '{text}': expected integers like 3,32,32") from None
    if not shape or min(shape) <= 0:
        raise UsageError(f"--input-shape '{text}': dimensions must be positive")
    return shape


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No tables, no progress bars.")]
PreOpt = Annotated[Optional[list[str]], typer.Option(
    "--preprocess", metavar="SPEC", help="Image folders: a preset (imagenet, cifar10, mnist), "
    "a YAML file or key=value items (resize, crop, scale, mean, std, layout, color, "
    "bad_images, labels); repeatable, applied in order. Later commands start from what "
    "convert recorded. See docs/data.md.")]

DeviceOpt = Annotated[str, typer.Option(
    "--device", help="Where torch computes: auto (cuda if present, else cpu), cpu, cuda, "
    "cuda:N or mps (no float64: refused where float64 is needed).")]


def _main_process() -> bool:
    """Under torchrun only rank 0 prints (every rank computes; see docs/scale.md)."""
    from .distributed import from_env

    return run(from_env).main


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
    from .api import convert_file

    main = _main_process()
    if not main:
        quiet, as_json = True, False
    res = run(convert_file, model, output, calib=calib, input_range=input_range, margin=margin,
              percentile=percentile, tau_c=tau_c, input_shape=run(_parse_shape, input_shape),
              calib_limit=calib_limit, progress=not quiet and not as_json, windows=windows,
              coding=coding, steps=steps, channelwise=channelwise, reset=reset, v_init=v_init,
              preprocess=preprocess, device=device)
    if not main:
        return
    warn(res["summary"]["warnings"])
    if as_json:
        emit_json(res)
    elif not quiet:
        from .render import convert_summary

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
    from .api import inspect_file

    s = run(inspect_file, model)
    if as_json:
        emit_json(s)
        return
    from .render import inspect_summary

    emit(inspect_summary(s, str(model), table=not quiet))


@app.command()
def verify(
    model: Annotated[Path, typer.Argument(
        help="A .snn file, or a .snnq file (its integer models are checked against each other).",
        metavar="MODEL")],
    onnx: Annotated[Optional[Path], typer.Option(
        "--onnx", help="Original ONNX model \\[default: the one recorded at conversion].")] = None,
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Inputs (.npz with x[, y], .npy, or a folder of images) \\[default: the "
        "calibration data].")] = None,
    preprocess: PreOpt = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Use the first N samples.")] = None,
    atol: Annotated[Optional[float], typer.Option(
        help="Absolute tolerance vs onnxruntime \\[default: a float32 forward error bound].")]
    = None,
    rtol: Annotated[Optional[float], typer.Option(
        help="Relative tolerance vs onnxruntime (x max|output| per sample).")] = None,
    rtol64: Annotated[float, typer.Option(
        "--rtol64", help="Tolerance of the float64 mapping error (relative per sample).")] = 1e-9,
    allow_clipping: Annotated[bool, typer.Option(
        "--allow-clipping", help="Compare with the windowed network (each ReLU clipped at its "
        "window); report the deviation from the original separately.")] = False,
    simulator: Annotated[str, typer.Option(help="closed (closed form) or event (event-driven).")]
    = "closed",
    batch_size: Annotated[int, typer.Option(
        "--batch-size", help="Samples per batch (bounds the memory used).")] = 128,
    reference_n: Annotated[int, typer.Option(
        "--reference-n", help="Samples for the float64 onnx.reference run (0: skip).")] = 16,
    noise: Annotated[Optional[str], typer.Option(
        "--noise", help="Spike-time jitter std (units of tau_c), or a list 0.01,0.05,0.1.")]
    = None,
    float_model: Annotated[Optional[Path], typer.Option(
        "--float", help="For a .snnq: the .snn it was fine-tuned from, compared layer by layer "
        "\\[default: the one recorded in the .snnq, if unchanged].")] = None,
    report_json: Annotated[Optional[Path], typer.Option(
        "--report-json", help="Write the report as JSON to this file.")] = None,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="JUnit XML report.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="PNG figure.")] = None,
    steps: Annotated[Optional[str], typer.Option(
        "--steps", help="Rate models: the T to report, e.g. 2,4,8,16,32 (the T of the model "
        "is added).")] = None,
    min_agreement: Annotated[Optional[float], typer.Option(
        "--min-agreement", help="Rate models: exit 1 if top-1 agreement with the ANN at the "
        "T of the model is below this percentage.")] = None,
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
    from .api import verify_file

    main = _main_process()
    if not main:
        quiet, as_json = True, False
    sigmas = run(_parse_floats, noise, "--noise") if noise else None
    ts = [int(t) for t in run(_parse_floats, steps, "--steps")] if steps else None
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
        from .render import verify_report

        emit(verify_report(rep))
    if not rep["ok"]:
        raise typer.Exit(1)


def _parse_floats(text: str, opt: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{opt} '{text}': expected numbers like 0.01,0.05") from None
    if not vals or min(vals) < 0:
        raise UsageError(f"{opt} '{text}': values must be >= 0")
    return vals


# --- integer models: fine-tune, run, export test vectors ------------------------------------------

@app.command()
def finetune(
    model: Annotated[Path, typer.Argument(help="A .snn file (from convert).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .snnq file.")],
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Training data (.npz with x, y, or a folder of images in class folders) "
        "\\[default: the calibration data recorded in MODEL].")] = None,
    val: Annotated[Optional[Path], typer.Option(
        "--val", help="Validation data for the best epoch \\[default: 10% held out].")] = None,
    preprocess: PreOpt = None,
    quantize: Annotated[Optional[int], typer.Option(
        "--quantize", help="Weight bits, 1 (sign weights) to 8 \\[default 4].")] = None,
    time_bits: Annotated[Optional[int], typer.Option(
        "--time-bits", help="At most 2^B ticks per layer window.")] = None,
    noise: Annotated[Optional[float], typer.Option(
        "--noise", help="Gaussian spike-time jitter (ticks) during training.")] = None,
    latency: Annotated[Optional[int], typer.Option(
        "--latency", help="Total tick budget over all layers.")] = None,
    sparsity: Annotated[Optional[float], typer.Option(
        "--sparsity", help="L1 activity penalty (fewer spikes).")] = None,
    first_last_bits: Annotated[Optional[int], typer.Option(
        "--first-last-bits", help="Weight bits of the first and last layer.")] = None,
    target: Annotated[Optional[Path], typer.Option(
        "--target", help="Hardware profile (YAML), e.g. hardware/generic.yaml.")] = None,
    ptq: Annotated[Optional[str], typer.Option(
        "--ptq", help="Post-training refinement before training: gptq (GPTQ rounding and bias "
        "correction), bias, or none \\[default gptq].")] = None,
    warn_loss: Annotated[Optional[float], typer.Option(
        "--warn-loss", help="Warn when quantisation loses more accuracy than this (0.02 = 2 "
        "points) \\[default 0.02].")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs \\[default 10].")]
    = None,
    lr: Annotated[Optional[float], typer.Option(
        "--lr", help="Adam step in weight levels \\[default 0.01].")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="\\[default 64]")]
    = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="YAML file with these options (the command line overrides it).")]
    = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed \\[default 0].")]
    = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue from OUTPUT.ckpt after an interruption.")] = False,
    device: DeviceOpt = "cpu",
    proxy: Annotated[bool, typer.Option(
        "--proxy", help="MODEL is a rate-coded .snn: proxy learning for --steps T, writes a "
        ".snn (docs/rate.md).")] = False,
    steps: Annotated[Optional[int], typer.Option(
        "--steps", help="With --proxy: simulation length T \\[the T of the model].")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Fine-tune a converted SNN for integer hardware and write the .snnq file.

    Quantises weights (equalising channel ranges first), chooses ticks per layer
    within --time-bits and --latency, trains the equivalent ReLU network with
    fake-quantised weights and tick-floored activations, and writes the integer
    model with its report. See docs/finetune.md.

    Examples:

        snnconv finetune model.snn --quantize 4 --time-bits 4 -o model.snnq
        snnconv finetune model.snn --data train.npz --quantize 1 --noise 0.5 -o bin.snnq
        snnconv finetune model.snn --config ft.yaml --target hardware/generic.yaml -o m.snnq
        snnconv finetune rate.snn --proxy --steps 8 --epochs 5 --data train.npz -o r8.snn

    With --proxy, MODEL is a rate-coded .snn (convert --coding rate): the IF
    net and its ReLU proxy share weights, the loss is taken on the IF net's
    output after T steps and sent back through the proxy (--quantize B rounds
    weights, straight-through); the result is a rate-coded .snn.
    """
    from .api import finetune_file

    if not _main_process():
        quiet, as_json = True, False
    talk = not quiet and not as_json
    rep = run(finetune_file, model, output, data, val=val, quantize=quantize,
              time_bits=time_bits, noise=noise, latency=latency, sparsity=sparsity,
              first_last_bits=first_last_bits, target=target, ptq=ptq, warn_loss=warn_loss,
              epochs=epochs, lr=lr,
              batch_size=batch_size, config=config, seed=seed, resume=resume, device=device,
              preprocess=preprocess,
              progress=talk, log=(lambda m: err.print(m, soft_wrap=True)) if talk else None,
              proxy=proxy, steps=steps)
    if as_json:
        emit_json(rep)
    elif not quiet:
        from .render import finetune_tables

        emit([*finetune_tables(rep), f"wrote {rep['output']}"])


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
    from .api import run_file

    main = _main_process()
    if not main:
        quiet, as_json = True, False
    res = run(run_file, model, data, pred, noise=noise, steps=steps, preprocess=preprocess,
              device=device)
    if main:
        warn(res.get("warnings", []))
    if as_json:
        emit_json(res)
    elif not quiet:
        from .render import run_summary

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
    from .intmodel.vectors import export_vectors as export

    res = run(export, model, data, n, output, preprocess=preprocess)
    if as_json:
        emit_json(res)
    elif not quiet:
        from .render import vectors_summary

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
    from .api import export_nir_file

    res = run(export_nir_file, model, output)
    if as_json:
        emit_json(res)
    elif not quiet:
        from .render import nir_summary

        emit(nir_summary(res))


def entry() -> None:  # console script
    # --debug is accepted anywhere on the line, not only before the command
    if "--debug" in sys.argv[2:]:
        sys.argv.remove("--debug")
        sys.argv.insert(1, "--debug")
    app()


if __name__ == "__main__":  # pragma: no cover
    entry()
