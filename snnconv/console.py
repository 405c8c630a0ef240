"""The CLI's terminal: stdout for results, stderr for messages, progress and warnings; API
errors become a message and the documented exit code."""

from __future__ import annotations

import sys
import traceback

import typer
from rich.console import Console

from .errors import EXIT_INTERNAL, SnnconvError

# Not a terminal (logs, CI): no colours, and wide enough that tables do not truncate.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)
state = {"debug": False}


def run(fn, *args, **kwargs):
    """Call an API function; turn errors into a message and the documented exit code."""
    try:
        return fn(*args, **kwargs)
    except SnnconvError as e:
        err.print(f"[bold red]error:[/] {e.message}", markup=True, soft_wrap=True)
        if e.hint:
            err.print(f"  hint: {e.hint}", soft_wrap=True)
        if state["debug"]:
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
        if state["debug"]:
            traceback.print_exc()
        raise typer.Exit(EXIT_INTERNAL) from None


def emit_json(obj) -> None:
    from .render import to_json  # on use: numpy stays out of --version and completion

    sys.stdout.write(to_json(obj))


def emit(items) -> None:
    """Print what ``render`` made (tables, and lines with markup) on stdout."""
    for item in items:
        out.print(item)


def warn(warnings) -> None:
    for w in warnings:
        err.print(f"[bold yellow]warning:[/] {w}", soft_wrap=True)
