"""Data files: ``.npz`` with ``x`` (model input layout) and optional ``y``, or ``.npy`` of x.

Never unpickles. Batches stream from disk: ``.npy`` files are memory-mapped, and large ``.npz``
members (which cannot be memory-mapped) are read in chunks straight from the zip stream.

Samples are a ``Dataset`` (indexable arrays) or a ``Stream`` (any iterable of ``(x, y)``
batches, e.g. a DataLoader); both yield ``batches`` and ``head_x``, and ``labelled`` picks one.
torch is imported only when a tensor is given (a tensor cannot exist otherwise), so reading data
does not pay for it.
"""

from __future__ import annotations

import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError, UsageError
from .fileio import sha256_file


#: .npz members above this size are streamed in chunks instead of loaded whole.
STREAM_ABOVE = 256 << 20


class NpzArray:
    """An .npz member read chunk by chunk; sequential slices cost one pass over the stream."""

    def __init__(self, path: Path, member: str):
        self.path, self.member = path, member
        self._z = self._f = None
        self._pos = 0
        with zipfile.ZipFile(path) as z, z.open(member) as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            self.header_len = f.tell()
        if dtype.hasobject:
            raise DataError(f"{path}: '{member}' holds Python objects (pickled); snnconv never "
                            "unpickles")
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

    def __getitem__(self, sl):
        if isinstance(sl, (int, np.integer)):
            return self[int(sl):int(sl) + 1][0]
        start, stop, step = sl.indices(len(self))
        if step != 1:
            raise IndexError("only contiguous slices are supported")
        self._seek(start)
        n = max(0, stop - start)
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


@dataclass
class Dataset:
    x: np.ndarray  # possibly memory-mapped
    y: np.ndarray | None = None
    name: str = "<array>"
    path: str | None = None

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int, limit: int | None = None, start: int = 0):
        """(x, y) batches as float64 / int arrays of samples [start, limit); NaN or Inf is an
        error naming the sample."""
        n = len(self) if limit is None else min(limit, len(self))
        for i in range(start, n, batch_size):
            j = min(n, i + batch_size)
            xb = np.asarray(self.x[i:j], dtype=np.float64)
            bad = ~np.isfinite(xb.reshape(len(xb), -1)).all(1)
            if bad.any():
                raise DataError(f"{self.name}: x contains NaN or Inf (first at sample "
                                f"{i + int(np.argmax(bad))})")
            yield xb, None if self.y is None else np.asarray(self.y[i:j])

    def sha256(self) -> str | None:
        return sha256_file(self.path) if self.path else None

    def head_x(self, n: int) -> np.ndarray:
        """The first ``n`` inputs as float64 (calibration, checks)."""
        return np.asarray(self.x[:n], np.float64)

    def split(self, frac: float, seed: int) -> tuple[Dataset, Dataset | None]:
        """(kept, held out): a seeded random ``frac`` of the samples held out, both in file
        order; no split when ``frac`` is 0."""
        if frac <= 0:
            return self, None
        n = len(self)
        perm = np.random.default_rng(seed).permutation(n)
        k = max(1, int(round(n * frac)))
        va, tr = np.sort(perm[:k]), np.sort(perm[k:])
        x = np.asarray(self.x)
        return (Dataset(x[tr], self.y[tr], self.name),
                Dataset(x[va], self.y[va], self.name + " (held out)"))


class Stream:
    """Labelled batches from an iterable of ``(x, y)`` pairs or ``{"x", "y"}`` dicts, read anew
    on every pass; each batch is checked against the model's input shape."""

    def __init__(self, iterable, shape: tuple, name: str):
        self.iterable, self.shape, self.name = iterable, tuple(shape), name

    def batches(self, batch_size: int | None = None):
        """The iterable's own batches (``batch_size`` is ignored) as arrays, y as int64."""
        for b in self.iterable:
            xb, yb = (b["x"], b["y"]) if isinstance(b, dict) else (b[0], b[1])
            xb, yb = _numpy(xb), _numpy(yb)
            if tuple(xb.shape[1:]) != self.shape:
                raise DataError(f"{self.name}: batch of per-sample shape {xb.shape[1:]}, the "
                                f"model expects {self.shape}")
            yield xb, yb.astype(np.int64)

    def head_x(self, n: int) -> np.ndarray:
        xs, k = [], 0
        for xb, _ in self.batches():
            xs.append(np.asarray(xb, np.float64))
            k += len(xb)
            if k >= n:
                break
        if not xs:
            raise DataError(f"{self.name}: the iterable yielded no batches")
        return np.concatenate(xs)[:n]

    def split(self, frac: float, seed: int) -> tuple[Stream, None]:
        """A stream cannot hold samples out."""
        return self, None


def labelled(source, input_shape: tuple, name: str = "data") -> Dataset | Stream:
    """Samples with labels (for training): a path, arrays, ``(x, y)`` of arrays or tensors, or a
    ``Dataset`` load as a ``Dataset``; any other iterable streams as ``(x, y)`` batches."""
    if isinstance(source, (str, os.PathLike, np.ndarray, tuple, Dataset)) or _is_tensor(source):
        if isinstance(source, tuple) and len(source) == 2 and _is_tensor(source[0]):
            torch = sys.modules["torch"]
            source = (_numpy(source[0]), None if source[1] is None else
                      torch.as_tensor(source[1]).cpu().numpy())
        ds = load(source, input_shape)
        if ds.y is None:
            raise DataError(f"{ds.name}: fine-tuning needs labels (y)")
        return ds
    try:
        iter(source)
    except TypeError:
        raise UsageError(f"{name}: expected a path, arrays, (x, y) or an iterable of (x, y) "
                         "batches") from None
    return Stream(source, input_shape, name)


def _is_tensor(a) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.is_tensor(a)


def _numpy(a) -> np.ndarray:
    """An array; a tensor is detached and copied to the CPU first."""
    return a.detach().cpu().numpy() if _is_tensor(a) else np.asarray(a)


def load(source, input_shape: tuple | None = None, n_classes: int | None = None,
         name: str | None = None) -> Dataset:
    """Load and validate; errors name the file and say what is wrong."""
    if isinstance(source, Dataset):
        ds = source
    elif isinstance(source, (str, os.PathLike)):
        ds = _load_path(Path(source))
    elif isinstance(source, tuple) and len(source) == 2:
        ds = Dataset(np.asarray(source[0]), None if source[1] is None else np.asarray(source[1]),
                     name or "<arrays>")
    else:
        try:
            import torch
            if torch.is_tensor(source):
                source = source.detach().cpu().numpy()
        except ImportError:  # pragma: no cover
            pass
        ds = Dataset(np.asarray(source), None, name or "<array>")
    _validate(ds, input_shape, n_classes)
    return ds


def _load_path(p: Path) -> Dataset:
    if not p.is_file():
        raise DataError(f"{p}: data file not found")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            x = np.load(p, mmap_mode="r", allow_pickle=False)
            return Dataset(x, None, str(p), str(p))
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise DataError(f"{p}: no array named 'x' (found: "
                                    f"{', '.join(z.files) or 'none'})",
                                    hint="save with np.savez(path, x=inputs, y=labels)")
                with zipfile.ZipFile(p) as zf:
                    big = zf.getinfo("x.npy").file_size > STREAM_ABOVE
                x = NpzArray(p, "x.npy") if big else z["x"]
                y = z["y"] if "y" in z.files else None
            return Dataset(x, y, str(p), str(p))
    except DataError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(f"{p}: holds Python objects (pickled); snnconv never unpickles",
                            hint="save plain numeric arrays") from None
        raise DataError(f"{p}: cannot read ({e})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{p}: cannot read, truncated or not a numpy file ({e})") from None
    raise DataError(f"{p}: unknown data format '{suffix}'", hint="use .npz (x, y) or .npy (x)")


def _validate(ds: Dataset, input_shape, n_classes) -> None:
    x = ds.x
    if x.dtype == object or x.dtype == bool or not (np.issubdtype(x.dtype, np.floating) or
                                                    np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{ds.name}: x has dtype {x.dtype}; a numeric array is needed")
    if x.ndim < 1 or len(x) == 0:
        raise DataError(f"{ds.name}: x is empty")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        n = int(np.prod(input_shape))
        hint = None
        if int(np.prod(x.shape[1:])) == n:
            hint = f"reshape x to (N, {', '.join(map(str, input_shape))})"
        raise DataError(f"{ds.name}: x has per-sample shape {tuple(x.shape[1:])}, the model "
                        f"expects {tuple(input_shape)}", hint=hint)
    if isinstance(x, np.ndarray) and not isinstance(x, np.memmap) and \
            np.issubdtype(x.dtype, np.floating):  # in memory: check now; streams check per batch
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(1)
        if bad.any():
            raise DataError(f"{ds.name}: x contains NaN or Inf (first at sample "
                            f"{int(np.argmax(bad))})")
    if ds.y is not None:
        y = ds.y
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{ds.name}: y has shape {y.shape}, expected ({len(x)},)")
        if not np.issubdtype(y.dtype, np.integer):
            if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
                ds.y = y.astype(np.int64)
            else:
                raise DataError(f"{ds.name}: y must hold integer class labels, not {y.dtype}")
        if n_classes is not None and len(ds.y) and (ds.y.min() < 0 or ds.y.max() >= n_classes):
            raise DataError(f"{ds.name}: labels range {int(ds.y.min())}..{int(ds.y.max())}, the "
                            f"model has {n_classes} classes")
