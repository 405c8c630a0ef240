"""The memory budget: sizes a file declares (array headers, tensor tables, ONNX shapes, image
dimensions) are checked against it before anything of that size is allocated, so a crafted or
corrupt file is a clear error (exit 2) and not a MemoryError deep inside numpy or Pillow.

``SNNCONV_MEMORY_BUDGET`` sets it (bytes, or with a K/M/G/T suffix); the default is half the
machine's physical memory.
"""

from __future__ import annotations

import os

from .errors import DataError, UsageError

ENV = "SNNCONV_MEMORY_BUDGET"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def budget() -> int:
    """Bytes one array (or one decoded image) may take."""
    text = os.environ.get(ENV, "").strip().upper().removesuffix("B")
    if text:
        unit = text[-1] if text[-1] in _UNITS else ""
        try:
            value = float(text[:-1] if unit else text) * _UNITS[unit]
        except ValueError:
            raise UsageError(f"{ENV}={os.environ[ENV]!r}: expected bytes like 4G or 512M") \
                from None
        if value <= 0:
            raise UsageError(f"{ENV}={os.environ[ENV]!r}: must be positive")
        return int(value)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 8 << 30


def human(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def check(nbytes: int, where: str, what: str, error: type = DataError) -> None:
    """Refuse ``nbytes`` over the budget; ``where`` names the file, ``what`` the declared
    size."""
    b = budget()
    if nbytes > b:
        raise error(f"{where}: {what} needs {human(nbytes)} ({nbytes} bytes), over the memory "
                    f"budget of {human(b)}",
                    hint=f"a corrupt or crafted file? If it is real, raise {ENV}")
