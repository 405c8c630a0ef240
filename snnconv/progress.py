"""Progress bars (rich, on stderr) for long work; silent when disabled or not on a terminal."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def bar(description: str, total: int | None, enabled: bool = True):
    """Yields ``advance(n)``. Draws only when enabled and stderr is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as p:
        task = p.add_task(description, total=total)
        yield lambda n=1: p.advance(task, n)
