"""Options and parsers several commands share."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..console import run
from ..errors import UsageError


def parse_shape(text: str | None) -> tuple[int, ...] | None:
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


def main_process() -> bool:
    """Under torchrun only rank 0 prints (every rank computes; see docs/scale.md)."""
    from ..distributed import from_env

    return run(from_env).main


def parse_floats(text: str, opt: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{opt} '{text}': expected numbers like 0.01,0.05") from None
    if not vals or min(vals) < 0:
        raise UsageError(f"{opt} '{text}': values must be >= 0")
    return vals
