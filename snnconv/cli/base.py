"""The typer application and its global options (--version, --debug)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..console import state
from .. import __version__

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
