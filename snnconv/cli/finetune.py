"""``snnconv finetune``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import emit, emit_json, err, run
from .base import app
from .options import JsonOpt, QuietOpt, PreOpt, DeviceOpt, main_process


# option declarations (typer reads them from the annotations)
_Data = Annotated[Optional[Path], typer.Option(
    "--data", help="Training data (.npz with x, y, or a folder of images in class folders) "
    "\\[default: the calibration data recorded in MODEL].")]
_Val = Annotated[Optional[Path], typer.Option(
    "--val", help="Validation data for the best epoch \\[default: 10% held out].")]
_Quantize = Annotated[Optional[int], typer.Option(
    "--quantize", help="Weight bits, 1 (sign weights) to 8 \\[default 4].")]
_TimeBits = Annotated[Optional[int], typer.Option(
    "--time-bits", help="At most 2^B ticks per layer window.")]
_Noise = Annotated[Optional[float], typer.Option(
    "--noise", help="Gaussian spike-time jitter (ticks) during training.")]
_Latency = Annotated[Optional[int], typer.Option(
    "--latency", help="Total tick budget over all layers.")]
_Sparsity = Annotated[Optional[float], typer.Option(
    "--sparsity", help="L1 activity penalty (fewer spikes).")]
_FirstLastBits = Annotated[Optional[int], typer.Option(
    "--first-last-bits", help="Weight bits of the first and last layer.")]
_Target = Annotated[Optional[Path], typer.Option(
    "--target", help="Hardware profile (YAML), e.g. hardware/generic.yaml.")]
_Ptq = Annotated[Optional[str], typer.Option(
    "--ptq", help="Post-training refinement before training: gptq (GPTQ rounding and bias "
    "correction), bias, or none \\[default gptq].")]
_WarnLoss = Annotated[Optional[float], typer.Option(
    "--warn-loss", help="Warn when quantisation loses more accuracy than this (0.02 = 2 "
    "points) \\[default 0.02].")]
_Epochs = Annotated[Optional[int], typer.Option("--epochs", help="Epochs \\[default 10].")]
_Lr = Annotated[Optional[float], typer.Option(
    "--lr", help="Adam step in weight levels \\[default 0.01].")]
_BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="\\[default 64]")]
_Config = Annotated[Optional[Path], typer.Option(
    "--config", help="YAML file with these options (the command line overrides it).")]
_Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed \\[default 0].")]
_Resume = Annotated[bool, typer.Option(
    "--resume", help="Continue from OUTPUT.ckpt after an interruption.")]
_Proxy = Annotated[bool, typer.Option(
    "--proxy", help="MODEL is a rate-coded .snn: proxy learning for --steps T, writes a "
    ".snn (docs/rate.md).")]
_Steps = Annotated[Optional[int], typer.Option(
    "--steps", help="With --proxy: simulation length T \\[the T of the model].")]


@app.command()
def finetune(
    model: Annotated[Path, typer.Argument(help="A .snn file (from convert).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .snnq file.")],
    data: _Data = None,
    val: _Val = None,
    preprocess: PreOpt = None,
    quantize: _Quantize = None,
    time_bits: _TimeBits = None,
    noise: _Noise = None,
    latency: _Latency = None,
    sparsity: _Sparsity = None,
    first_last_bits: _FirstLastBits = None,
    target: _Target = None,
    ptq: _Ptq = None,
    warn_loss: _WarnLoss = None,
    epochs: _Epochs = None,
    lr: _Lr = None,
    batch_size: _BatchSize = None,
    config: _Config = None,
    seed: _Seed = None,
    resume: _Resume = False,
    device: DeviceOpt = "cpu",
    proxy: _Proxy = False,
    steps: _Steps = None,
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
    from ..api import finetune_file

    if not main_process():
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
        from ..render import finetune_tables

        emit([*finetune_tables(rep), f"wrote {rep['output']}"])
