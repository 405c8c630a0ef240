"""Command-line interface: a thin layer over the Python API (nothing imports this module).

Exit codes: 0 ok, 1 verification mismatch, 2 bad input or usage, 3 internal error.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from . import __version__
from .errors import EXIT_INTERNAL, SnnconvError, UsageError

EXIT_HELP = ("Exit codes: 0 ok, 1 verification mismatch, 2 bad input or usage, "
             "3 internal error.")

app = typer.Typer(add_completion=True, no_args_is_help=True, rich_markup_mode="rich",
                  help="Exact conversion of ReLU networks (ONNX) to time-to-first-spike spiking "
                  "networks, verification, and hardware-aware fine-tuning.\n\n" + EXIT_HELP,
                  context_settings={"help_option_names": ["-h", "--help"]})

# Not a terminal (logs, CI): no colours, and wide enough that tables do not truncate.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)
_state = {"debug": False}


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
    _state["debug"] = debug


def run(fn, *args, **kwargs):
    """Call an API function; turn errors into a message and the documented exit code."""
    try:
        return fn(*args, **kwargs)
    except SnnconvError as e:
        err.print(f"[bold red]error:[/] {e.message}", markup=True, soft_wrap=True)
        if e.hint:
            err.print(f"  hint: {e.hint}", soft_wrap=True)
        if _state["debug"]:
            traceback.print_exc()
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as e:  # noqa: BLE001 - the documented "internal error" exit
        err.print(f"[bold red]internal error:[/] {type(e).__name__}: {e}", markup=True,
                  soft_wrap=True)
        err.print("  this is a bug in snnconv: please report it with the command and "
                  "--debug output")
        if _state["debug"]:
            traceback.print_exc()
        raise typer.Exit(EXIT_INTERNAL) from None


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--input-shape '{text}': expected integers like 3,32,32") from None
    if not shape or min(shape) <= 0:
        raise UsageError(f"--input-shape '{text}': dimensions must be positive")
    return shape


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No tables, no progress bars.")]


@app.command()
def convert(
    model: Annotated[Path, typer.Argument(help="ONNX model file.")],
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Output .snn file [default: MODEL with suffix .snn].")] = None,
    calib: Annotated[Optional[Path], typer.Option(
        "--calib", help="Calibration data (.npz with x[, y], or .npy): windows from the data.")]
    = None,
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
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Convert an ONNX ReLU network to an exactly equivalent TTFS SNN (.snn)."""
    from .api import convert_file

    res = run(convert_file, model, output, calib=calib, input_range=input_range, margin=margin,
              percentile=percentile, tau_c=tau_c, input_shape=run(_parse_shape, input_shape),
              calib_limit=calib_limit, progress=not quiet and not as_json)
    for w in res["summary"]["warnings"]:
        err.print(f"[bold yellow]warning:[/] {w}", soft_wrap=True)
    if as_json:
        emit_json(res)
        return
    if quiet:
        return
    from .report import layer_table

    s = res["summary"]
    out.print(layer_table(s["layers"], title=f"{res['output']}"))
    rng = s["input_range"]
    out.print(f"input range   {_fmt_range(rng)}  ({rng['source']})")
    cal = s["calibration"]
    how = (f"{cal['samples']} calibration samples, margin {cal['margin']}" if cal["method"] ==
           "data" else "interval bounds over the input range (guaranteed, no data)")
    if cal.get("percentile"):
        how += f", percentile {cal['percentile']}"
    out.print(f"windows       {how}")
    out.print(f"latency       {s['latency']:.6g} (tau_c = {s['tau_c']:g}), {s['stages']} stages")
    out.print(f"neurons       {s['neurons']:,}   synapses {s['synapses']:,}")
    if s["spikes_per_neuron_calibration"] is not None:
        out.print(f"spikes/neuron {s['spikes_per_neuron_calibration']:.3f} on the calibration "
                  "data")
    out.print(f"wrote         {res['output']}")


def _fmt_range(rng) -> str:
    import numpy as np

    lo, hi = np.asarray(rng["lo"]).reshape(-1), np.asarray(rng["hi"]).reshape(-1)
    if lo.size == 1:
        return f"[{lo[0]:.6g}, {hi[0]:.6g}]"
    return "per channel " + ", ".join(f"[{a:.4g}, {b:.4g}]" for a, b in zip(lo, hi))


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="A .snn file.")],
    as_json: JsonOpt = False,
):
    """Print layers, neuron counts, windows, threshold ranges and latency of a model file."""
    from .api import inspect_file

    s = run(inspect_file, model)
    if as_json:
        emit_json(s)
        return
    from .report import layer_table

    out.print(layer_table(s["layers"], title=str(model)))
    out.print(f"latency {s['latency']:.6g}  neurons {s['neurons']:,}  synapses "
              f"{s['synapses']:,}  source {(s.get('source') or {}).get('name', '?')}")


# --- integer models: fine-tune, run, export test vectors ------------------------------------------

@app.command()
def finetune(
    model: Annotated[Path, typer.Argument(help="A .snn file (from convert).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .snnq file.")],
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Training data (.npz with x, y) [default: the calibration data recorded "
        "in MODEL].")] = None,
    val: Annotated[Optional[Path], typer.Option(
        "--val", help="Validation data for the best epoch [default: 10% held out].")] = None,
    quantize: Annotated[Optional[int], typer.Option(
        "--quantize", help="Weight bits, 1 (sign weights) to 8 [default 4].")] = None,
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
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs [default 10].")]
    = None,
    lr: Annotated[Optional[float], typer.Option(
        "--lr", help="Adam step in weight levels [default 0.01].")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="[default 64]")]
    = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="YAML file with these options (the command line overrides it).")]
    = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed [default 0].")]
    = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue from OUTPUT.ckpt after an interruption.")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Fine-tune a converted SNN for integer hardware and write the .snnq file."""
    from .finetune import finetune_file

    talk = not quiet and not as_json
    rep = run(finetune_file, model, output, data, val=val, quantize=quantize,
              time_bits=time_bits, noise=noise, latency=latency, sparsity=sparsity,
              first_last_bits=first_last_bits, target=target, epochs=epochs, lr=lr,
              batch_size=batch_size, config=config, seed=seed, resume=resume, device=device,
              progress=talk, log=(lambda m: err.print(m, soft_wrap=True)) if talk else None)
    if as_json:
        emit_json(rep)
        return
    if quiet:
        return
    from .finetune import report_tables

    for t in report_tables(rep):
        out.print(t)
    out.print(f"wrote {rep['output']}")


@app.command("run")
def run_cmd(
    model: Annotated[Path, typer.Argument(help="A .snnq file.")],
    data: Annotated[Path, typer.Option("--data", help="Data (.npz with x[, y], or .npy).")],
    pred: Annotated[Optional[Path], typer.Option(
        "--out", help="Write predictions and integer logits to this .npz.")] = None,
    noise: Annotated[float, typer.Option(
        "--noise", help="Spike-time jitter (ticks) to test robustness.")] = 0.0,
    as_json: JsonOpt = False,
):
    """Predictions of the integer golden model, from the .snnq file alone."""
    from .intmodel import run_file

    res = run(run_file, model, data, pred, noise=noise)
    if as_json:
        emit_json(res)
        return
    acc = f"accuracy {res['accuracy']:.4f}  " if "accuracy" in res else ""
    out.print(f"{res['samples']} samples  {acc}spikes/neuron {res['spikes_per_neuron']:.3f}  "
              f"latency {res['latency_ticks']} ticks  overflow {res['overflow']}")
    if "output" in res:
        out.print(f"wrote {res['output']}")


@app.command("export-vectors")
def export_vectors(
    model: Annotated[Path, typer.Argument(help="A .snnq file.")],
    data: Annotated[Path, typer.Option("--data", help="Data to draw samples from.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")],
    n: Annotated[int, typer.Option("--n", help="Number of samples (corner cases first).")]
    = 16,
    as_json: JsonOpt = False,
):
    """Stimulus and expected spike ticks of every layer, as $readmemh hex and CSV."""
    from .vectors import export_vectors as export

    res = run(export, model, data, n, output)
    if as_json:
        emit_json(res)
        return
    why = ", ".join(f"{v} {k}" for k, v in res["reasons"].items())
    out.print(f"wrote {res['files']} files for {res['samples']} samples ({why}) to "
              f"{res['output']}")


def entry() -> None:  # console script
    app()


if __name__ == "__main__":  # pragma: no cover
    entry()
