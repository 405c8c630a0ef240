"""Data: ``.npz`` with ``x`` (model input layout) and optional ``y``, ``.npy`` of x, a folder of
images (``images``), arrays and tensors, or any iterable of batches.

Never unpickles. Batches stream from disk (``npyfile``: memory maps and chunked .npz members;
``images``: decoding in a background thread pool). Samples are a ``Dataset`` (indexable arrays)
or a ``Stream`` (an iterable of ``(x, y)`` batches, e.g. a DataLoader, or a torch Dataset of
samples); both yield ``batches`` and ``head_x``. torch is imported only when a tensor is given
(a tensor cannot exist otherwise), so reading data does not pay for it.
"""

from __future__ import annotations

import os
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import npyfile
from .errors import DataError, UsageError
from .fileio import digest_path
from .npyfile import NpzArray

__all__ = ["Dataset", "NpzArray", "Stream", "labelled", "load", "source"]


@dataclass
class Dataset:
    x: np.ndarray  # possibly memory-mapped, streamed (NpzArray) or decoded (ImageArray)
    y: np.ndarray | None = None
    name: str = "<array>"
    path: str | None = None
    notes: list[str] = field(default_factory=list)  # what reading it skipped or converted
    preprocess: dict | None = None  # an image folder's preprocessing, as recorded
    value_range: tuple | None = None  # (lo, hi) every input lies in, known without reading

    def __len__(self) -> int:
        return len(self.x)

    @property
    def labelled(self) -> bool:
        return self.y is not None

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
        return digest_path(self.path) if self.path else None

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
    """Batches from an iterable of ``(x, y)`` pairs, ``{"x", "y"}`` dicts or bare ``x``, read
    anew on every pass (a list or a DataLoader, not a generator); each batch is checked against
    the model's input shape. ``length`` is the number of samples, when known."""

    def __init__(self, iterable, shape: tuple, name: str, length: int | None = None):
        self.iterable, self.shape, self.name, self.length = iterable, tuple(shape), name, length
        self.notes: list[str] = []
        self.path = self.preprocess = self.value_range = None
        self._labelled: bool | None = None

    def batches(self, batch_size: int | None = None, limit: int | None = None, start: int = 0):
        """The iterable's own batches (``batch_size`` is ignored) as arrays, y as int64 (or
        None), at most ``limit`` samples; from the first (``start`` must be 0)."""
        if start:
            raise ValueError("an iterable of batches is read from its start")
        k = 0
        for b in self.iterable:
            if limit is not None and k >= limit:
                return
            xb, yb = _pair(b)
            xb = _numpy(xb)
            if tuple(xb.shape[1:]) != self.shape:
                raise DataError(f"{self.name}: batch of per-sample shape {xb.shape[1:]}, the "
                                f"model expects {self.shape}")
            yb = None if yb is None else _numpy(yb).astype(np.int64)
            if limit is not None and k + len(xb) > limit:
                xb, yb = xb[:limit - k], None if yb is None else yb[:limit - k]
            k += len(xb)
            yield xb, yb

    @property
    def labelled(self) -> bool:
        """Whether the batches carry labels (the first batch tells)."""
        if self._labelled is None:
            self._labelled = next((yb is not None for _, yb in self.batches()), False)
        return self._labelled

    def head_x(self, n: int) -> np.ndarray:
        xs = [np.asarray(xb, np.float64) for xb, _ in self.batches(limit=n)]
        if not xs:
            raise DataError(f"{self.name}: the iterable yielded no batches")
        return np.concatenate(xs)[:n]

    def split(self, frac: float, seed: int) -> tuple[Stream, None]:
        """A stream cannot hold samples out."""
        return self, None


def _pair(b):
    """(x, y or None) of one batch."""
    if isinstance(b, dict):
        return b["x"], b.get("y")
    if isinstance(b, (tuple, list)) and len(b) == 2:
        return b[0], b[1]
    return b, None


class _Samples:
    """A torch map-style Dataset of single samples, as batches of ``batch_size`` in order."""

    def __init__(self, ds, batch_size: int = 256):
        self.ds, self.batch_size = ds, batch_size

    def __iter__(self):
        n = len(self.ds)
        for i in range(0, n, self.batch_size):
            items = [_pair(self.ds[k]) for k in range(i, min(n, i + self.batch_size))]
            ys = [y for _, y in items]
            yield (np.stack([_numpy(x) for x, _ in items]),
                   None if any(y is None for y in ys) else np.asarray([int(y) for y in ys]))


def source(obj, input_shape: tuple, name: str = "data", n_classes: int | None = None,
           preprocess=None, progress: bool = False) -> Dataset | Stream:
    """Samples from anything a user holds: a path (.npz, .npy, image folder), arrays, ``(x, y)``
    of arrays or tensors, a ``Dataset``, a torch Dataset of samples, or an iterable of
    batches (a DataLoader, a list)."""
    if isinstance(obj, (str, os.PathLike, np.ndarray, tuple, Dataset)) or _is_tensor(obj):
        if isinstance(obj, tuple) and len(obj) == 2 and _is_tensor(obj[0]):
            torch = sys.modules["torch"]
            obj = (_numpy(obj[0]), None if obj[1] is None else
                   torch.as_tensor(obj[1]).cpu().numpy())
        return load(obj, input_shape, n_classes, preprocess=preprocess, progress=progress)
    if isinstance(obj, Stream):
        return obj
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.utils.data.Dataset) and \
            not isinstance(obj, torch.utils.data.IterableDataset) and hasattr(obj, "__len__"):
        return Stream(_Samples(obj), input_shape, name, len(obj))
    try:
        it = iter(obj)
    except TypeError:
        raise UsageError(f"{name}: expected a path, arrays, (x, y), a torch Dataset or an "
                         "iterable of (x, y) batches") from None
    if it is obj:
        raise UsageError(f"{name}: an iterator or generator can be read only once; pass a list "
                         "or a DataLoader (the data is read more than once)")
    ds = getattr(obj, "dataset", None)  # a DataLoader over a sized dataset
    drop = getattr(obj, "drop_last", False)
    length = len(ds) if ds is not None and hasattr(ds, "__len__") and not drop else None
    return Stream(obj, input_shape, name, length)


def labelled(obj, input_shape: tuple, name: str = "data", preprocess=None,
             progress: bool = False) -> Dataset | Stream:
    """Samples with labels (for training), as ``source`` reads them; a Dataset without y is
    refused."""
    ds = source(obj, input_shape, name, preprocess=preprocess, progress=progress)
    if isinstance(ds, Dataset) and ds.y is None:
        raise DataError(f"{ds.name}: fine-tuning needs labels (y)")
    return ds


def _is_tensor(a) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.is_tensor(a)


def _numpy(a) -> np.ndarray:
    """An array; a tensor is detached and copied to the CPU first."""
    return a.detach().cpu().numpy() if _is_tensor(a) else np.asarray(a)


def load(source, input_shape: tuple | None = None, n_classes: int | None = None,
         name: str | None = None, preprocess=None, progress: bool = False) -> Dataset:
    """Load and validate; errors name the file and say what is wrong. ``preprocess`` applies to
    a folder of images (``images.build`` reads it)."""
    if isinstance(source, Dataset):
        ds = source
    elif isinstance(source, (str, os.PathLike)):
        ds = _load_path(Path(source), preprocess, input_shape, progress)
    elif isinstance(source, tuple) and len(source) == 2:
        ds = Dataset(np.asarray(source[0]), None if source[1] is None else np.asarray(source[1]),
                     name or "<arrays>")
    else:
        ds = Dataset(_numpy(source), None, name or "<array>")
    _validate(ds, input_shape, n_classes)
    return ds


def _load_path(p: Path, preprocess, input_shape, progress: bool) -> Dataset:
    if p.is_dir():
        from . import images

        return images.open_folder(p, images.build(preprocess), input_shape, progress)
    if not p.is_file():
        raise DataError(f"{p}: data file or image folder not found")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return Dataset(npyfile.read_npy(p), None, str(p), str(p))
        if suffix == ".npz":
            x, y = npyfile.read_npz(p)
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
    raise DataError(f"{p}: unknown data format '{suffix}'",
                    hint="use .npz (x, y), .npy (x) or a folder of images")


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
