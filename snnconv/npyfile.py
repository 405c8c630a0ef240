"""Reading ``.npy`` and ``.npz`` data files without unpickling, and without trusting their
headers: the shape and dtype an array header declares are checked against the bytes the file
holds and against the memory budget before anything is allocated.

``.npy`` files are memory-mapped; large ``.npz`` members (which cannot be memory-mapped) are
read in chunks straight from the zip stream.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from . import budget
from .errors import DataError
from .rowsource import RowSource

#: .npz members above this size are streamed in chunks instead of loaded whole.
STREAM_ABOVE = 256 << 20


def read_header(f, where: str) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran order, dtype, header length) of the array at ``f``'s position."""
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f, max_header_size=1 << 20)
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise DataError(f"{where}: holds Python objects (pickled); snnconv never unpickles",
                            hint="save plain numeric arrays") from None
        raise DataError(f"{where}: not a numpy array, or a corrupt header ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects (pickled); snnconv never unpickles",
                        hint="save plain numeric arrays")
    return tuple(int(s) for s in shape), fortran, dtype, f.tell()


def check_declared(where: str, shape: tuple, dtype: np.dtype, held: int,
                   in_memory: bool) -> None:
    """The declared array must be exactly the bytes held and, when it is to be loaded whole,
    within the memory budget."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != held:
        raise DataError(f"{where}: the header declares shape {shape} of {dtype} "
                        f"({nbytes} bytes) but the file holds {held} bytes",
                        hint="the file is truncated, corrupt or crafted")
    if in_memory:
        budget.check(nbytes, where, f"an array of shape {shape} ({dtype})")


class NpzArray(RowSource):
    """An .npz member read chunk by chunk; sequential slices cost one pass over the stream."""

    def __init__(self, path: Path, member: str, header=None):
        self.path, self.member = path, member
        self._z = self._f = None
        self._pos = 0
        if header is None:
            with zipfile.ZipFile(path) as z, z.open(member) as f:
                header = read_header(f, f"{path}: '{member}'")
        shape, fortran, dtype, self.header_len = header
        if fortran and len(shape) > 1:
            raise DataError(f"{path}: '{member}' is stored in Fortran order; save it C-ordered")
        self.shape, self.dtype, self.ndim = tuple(shape), dtype, len(shape)
        self.row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _seek(self, i: int) -> None:
        if self._f is None or i < self._pos:
            self.close()
            self._z = zipfile.ZipFile(self.path)
            self._f = self._z.open(self.member)
            self._f.read(self.header_len)
            self._pos = 0
        if i > self._pos:
            self._f.read((i - self._pos) * self.row)
            self._pos = i

    def _rows(self, start: int, stop: int) -> np.ndarray:
        self._seek(start)
        n = stop - start
        buf = self._f.read(n * self.row)
        if len(buf) != n * self.row:
            raise DataError(f"{self.path}: '{self.member}' is truncated")
        self._pos = stop
        return np.frombuffer(buf, dtype=self.dtype).reshape((n, *self.shape[1:]))

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._z.close()
        self._f = self._z = None


def read_npy(p: Path):
    """The array of an .npy file, memory-mapped, after its header is checked."""
    with p.open("rb") as f:
        shape, fortran, dtype, hl = read_header(f, str(p))
    check_declared(str(p), shape, dtype, p.stat().st_size - hl, in_memory=False)
    return np.load(p, mmap_mode="r", allow_pickle=False)


def read_npz(p: Path) -> tuple[object, np.ndarray | None]:
    """(x, y or None) of an .npz: each member's header is checked before it is read; a large x
    is streamed."""
    with zipfile.ZipFile(p) as zf:
        names = {i.filename: i for i in zf.infolist()}
        if "x.npy" not in names:
            found = ", ".join(n.removesuffix(".npy") for n in names) or "none"
            raise DataError(f"{p}: no array named 'x' (found: {found})",
                            hint="save with np.savez(path, x=inputs, y=labels)")
        heads = {}
        for m in ("x.npy", "y.npy"):
            if m in names:
                with zf.open(m) as f:
                    heads[m] = read_header(f, f"{p}: '{m[0]}'")
                shape, _, dtype, hl = heads[m]
                big = m == "x.npy" and names[m].file_size > STREAM_ABOVE
                check_declared(f"{p}: '{m[0]}'", shape, dtype, names[m].file_size - hl,
                               in_memory=not big)
    x_big = names["x.npy"].file_size > STREAM_ABOVE
    with np.load(p, allow_pickle=False) as z:
        x = NpzArray(p, "x.npy", heads["x.npy"]) if x_big else z["x"]
        y = z["y"] if "y.npy" in heads else None
    return x, y
