"""Command-line interface: a thin layer over the Python API (nothing imports this module).
Each command parses its options, calls the API and prints what ``render`` makes of the result.
Commands import the API and ``render`` when they run, so ``--version`` and shell completion
import neither (nor numpy and torch).

Exit codes: 0 ok, 1 verification mismatch, 2 bad input or usage, 3 internal error.
"""

from __future__ import annotations

import sys

from .base import app
from . import convert, verify, finetune, run  # noqa: E402,F401  (registers the commands in order)

__all__ = ["app", "entry"]


def entry() -> None:  # console script
    # --debug is accepted anywhere on the line, not only before the command
    if "--debug" in sys.argv[2:]:
        sys.argv.remove("--debug")
        sys.argv.insert(1, "--debug")
    app()


if __name__ == "__main__":  # pragma: no cover
    entry()
