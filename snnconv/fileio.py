"""Safe file writing, hashing, and the files a model records: shared by every command that writes
or records files."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .errors import OutputError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def digest_path(path) -> str:
    """sha256 of a file, or of a folder's listing (``images.folder_digest``)."""
    if Path(path).is_dir():
        from .images import folder_digest

        return folder_digest(path)
    return sha256_file(path)


def same_file(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or (
            Path(b).exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output(path, inputs=()) -> Path:
    """Refuse an output that is one of the inputs, or that cannot be written."""
    p = Path(path)
    for i in inputs:
        if i is not None and isinstance(i, (str, os.PathLike)) and same_file(p, i):
            raise OutputError(f"{p}: the output would overwrite the input {i}",
                              hint="choose another output path with -o")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"{p}: the folder {parent} does not exist")
    if p.exists() and p.is_dir():
        raise OutputError(f"{p}: is a folder")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{p}: the folder {parent} is not writable")
    return p


def atomic_write(path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written file."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    fd, tmp = None, None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, "wb") as f:
            fd = None
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, p)
        tmp = None
    except OSError as e:
        raise OutputError(f"{p}: cannot write ({e.strerror or e})") from None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def recorded_file(rec: dict | None, check_hash: bool = True) -> tuple[Path | None, str]:
    """A file a model records in its meta (``{"path", "sha256"}``: the ONNX source, the
    calibration data or image folder, the float model) and whether it can be used: "ok",
    "absent" (none recorded), "gone" (no longer there) or "changed" (its sha256 differs)."""
    if not rec or not rec.get("path"):
        return None, "absent"
    p = Path(rec["path"])
    if not (p.is_file() or p.is_dir()):
        return p, "gone"
    if check_hash and rec.get("sha256") and digest_path(p) != rec["sha256"]:
        return p, "changed"
    return p, "ok"


def require_recorded_file(rec: dict | None, absent: str, gone: str, changed: str,
                          hints: tuple[str | None, str | None, str | None] = (None, None, None)
                          ) -> Path:
    """``recorded_file``, refusing what cannot be used: unrecorded (UsageError ``absent``),
    missing (DataError ``gone``) or changed (DataError ``changed``); ``{p}`` in a message is the
    path, ``hints`` go with the three."""
    from .errors import DataError, UsageError

    p, state = recorded_file(rec)
    if state == "absent":
        raise UsageError(absent, hint=hints[0])
    if state == "gone":
        raise DataError(gone.format(p=p), hint=hints[1])
    if state == "changed":
        raise DataError(changed.format(p=p), hint=hints[2])
    return p
