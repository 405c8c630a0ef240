"""A folder of images as a data set: the class-subfolder layout (label = index of the sorted
class name) or a flat folder with an optional labels CSV. Listing and headers are read first
(odd files are skipped and counted, or refused); pixels are decoded batch by batch in a
background thread pool, the next batch while the current one is used, in file order."""

from __future__ import annotations

import csv
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import budget
from ..errors import DataError
from ..progress import bar
from ..rowsource import RowSource
from .decode import Header, decode, header
from .preprocess import Preprocess, resized


@dataclass
class Listing:
    files: list[Path]
    labels: list[int] | None
    classes: list[str] | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__")


def list_folder(root: Path, pre: Preprocess) -> Listing:
    """Files in deterministic (sorted) order and their labels."""
    subdirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not _hidden(d.name))
    if subdirs:
        files, labels = [], []
        for i, c in enumerate(subdirs):
            for dirpath, dirnames, names in os.walk(root / c, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
                for n in sorted(names):
                    if not _hidden(n):
                        files.append(Path(dirpath) / n)
                        labels.append(i)
        return Listing(files, labels, subdirs)
    csv_path = Path(pre.labels) if pre.labels else root / "labels.csv"
    files = sorted(p for p in root.iterdir() if p.is_file() and not _hidden(p.name)
                   and p.resolve() != csv_path.resolve())
    if not csv_path.is_file():
        if pre.labels:
            raise DataError(f"{csv_path}: labels CSV not found")
        return Listing(files, None, None)
    table, classes = _read_labels(csv_path)
    kept, labels, skipped = [], [], []
    for f in files:
        if f.name in table:
            kept.append(f)
            labels.append(table[f.name])
        else:
            skipped.append((f, f"no label in {csv_path.name}"))
    return Listing(kept, labels, classes, skipped)


def _read_labels(path: Path) -> tuple[dict[str, int], list[str] | None]:
    """``file,label`` rows (a header row is allowed); labels are integers or class names
    (numbered in sorted order)."""
    try:
        with path.open(newline="") as f:
            rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read the labels CSV ({e})") from None
    if rows and rows[0][0].strip().lower() in ("file", "filename", "path", "name", "image"):
        rows = rows[1:]
    for i, r in enumerate(rows):
        if len(r) < 2:
            raise DataError(f"{path}: row {i + 1} has no label", hint="rows are file,label")
    names = {Path(r[0].strip()).name: r[1].strip() for r in rows}
    try:
        table = {k: int(v) for k, v in names.items()}
        if table and min(table.values()) < 0:
            raise DataError(f"{path}: negative label {min(table.values())}")
        return table, None
    except ValueError:
        classes = sorted(set(names.values()))
        index = {c: i for i, c in enumerate(classes)}
        return {k: index[v] for k, v in names.items()}, classes


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def scan(listing: Listing, pre: Preprocess, sample_shape: tuple | None, root: Path,
         progress: bool = False) -> tuple[list[Path], list[int] | None, tuple, list[str]]:
    """Headers of every file: (usable files, their labels, the sample shape, notes). Odd files
    are skipped and counted, or with ``bad_images: error`` refused."""
    with ThreadPoolExecutor(_threads()) as pool, \
            bar("reading image headers", len(listing.files), progress) as adv:
        heads = []
        for h in pool.map(header, listing.files):
            heads.append(h)
            adv(1)
    skipped = list(listing.skipped)
    files, labels, notes = [], [] if listing.labels is not None else None, []
    converted = 0
    for i, (f, h) in enumerate(zip(listing.files, heads)):
        why = h if isinstance(h, str) else _problem(h, pre, sample_shape, f)
        if why is None and sample_shape is None:
            sample_shape = pre.sample_shape(pre.out_hw(h.w, h.h))
        if why is not None:
            skipped.append((f, why))
            continue
        converted += h.mode == "CMYK"
        files.append(f)
        if labels is not None:
            labels.append(listing.labels[i])
    if skipped and pre.bad_images == "error":
        f, why = skipped[0]
        raise DataError(f"{f}: {why} ({len(skipped)} odd file(s) in {root})",
                        hint="remove them, or pass --preprocess bad_images=skip")
    if skipped:
        kinds: dict[str, int] = {}
        for _, why in skipped:
            kinds[why.split(" (")[0]] = kinds.get(why.split(" (")[0], 0) + 1
        first = "; ".join(f"{f.name}: {w}" for f, w in skipped[:3])
        total = len(listing.files) + len(listing.skipped)
        counts = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
        notes.append(f"{root}: skipped {len(skipped)} of {total} files ({counts}; "
                     f"first: {first})")
    if converted:
        notes.append(f"{root}: {converted} CMYK image(s) converted to {pre.color.upper()}")
    if not files:
        raise DataError(f"{root}: no usable images" + (f" ({notes[0]})" if notes else ""),
                        hint="check --preprocess (resize, crop) against the model's input")
    return files, labels, sample_shape, notes


def _problem(h: Header, pre: Preprocess, sample_shape: tuple | None, f: Path) -> str | None:
    """Why a file of this header cannot give a sample of ``sample_shape``, or None."""
    pixels = h.w * h.h * max(h.bands, 3)
    if pixels * 8 > budget.budget():
        return (f"declares {h.w}x{h.h} pixels ({h.w * h.h}), over the memory budget of "
                f"{budget.human(budget.budget())}")
    hw = pre.out_hw(h.w, h.h)
    if pre.crop:
        w, hh = resized(h.w, h.h, pre.resize) if pre.resize else (h.w, h.h)
        if pre.crop[0] > hh or pre.crop[1] > w:
            return f"smaller than the crop ({w}x{hh} pixels, crop {pre.crop[1]}x{pre.crop[0]})"
    if sample_shape is not None and pre.sample_shape(hw) != tuple(sample_shape):
        return (f"wrong size ({h.w}x{h.h} pixels give {pre.sample_shape(hw)}, the model "
                f"expects {tuple(sample_shape)})")
    return None


class ImageArray(RowSource):
    """Preprocessed images ``x[i:j]`` decoded on demand, in order; reading ``x[i:j]`` starts
    decoding ``x[j:2j-i]`` in the background. ``decode_seconds`` sums the decoding time (all
    threads), ``wait_seconds`` the time readers waited for it."""

    dtype = np.dtype(np.float32)

    def __init__(self, files: list[Path], pre: Preprocess, sample_shape: tuple):
        self.files, self.pre = files, pre
        self.shape = (len(files), *sample_shape)
        self.ndim = len(self.shape)
        self.decode_seconds = self.wait_seconds = 0.0
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: tuple[int, int, list] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.files)

    def _one(self, path: Path) -> np.ndarray:
        t = time.perf_counter()
        a = decode(path, self.pre)
        with self._lock:
            self.decode_seconds += time.perf_counter() - t
        if a.shape != self.shape[1:]:
            raise DataError(f"{path}: decodes to {a.shape}, not {self.shape[1:]} as its header "
                            "said")
        return a

    def _submit(self, i: int, j: int) -> list:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_threads(), thread_name_prefix="snnconv-decode")
        return [self._pool.submit(self._one, f) for f in self.files[i:j]]

    def _rows(self, start: int, stop: int) -> np.ndarray:
        if self._ahead and self._ahead[:2] == (start, stop):
            futs = self._ahead[2]
        else:
            self.close_ahead()
            futs = self._submit(start, stop)
        nxt = min(len(self), stop + (stop - start))
        self._ahead = (stop, nxt, self._submit(stop, nxt)) if nxt > stop else None
        t = time.perf_counter()
        try:
            out = [f.result() for f in futs]
        finally:
            self.wait_seconds += time.perf_counter() - t
        return np.stack(out) if out else np.empty((0, *self.shape[1:]), np.float32)

    def __array__(self, dtype=None, copy=None):
        a = self[0:len(self)]
        return a if dtype is None else a.astype(dtype)

    def close_ahead(self) -> None:
        if self._ahead:
            for f in self._ahead[2]:
                f.cancel()
        self._ahead = None

    def close(self) -> None:
        self.close_ahead()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
