"""Image folders as data: ``--calib/--data/--val FOLDER`` with the preprocessing of
``preprocess`` (presets, YAML, ``key=value``). See docs/data.md."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .folder import ImageArray, list_folder, scan
from .preprocess import Preprocess, build
from .presets import PRESETS

__all__ = ["ImageArray", "PRESETS", "Preprocess", "build", "folder_digest", "open_folder",
           "resolve"]


def open_folder(root, pre: Preprocess | None = None, input_shape: tuple | None = None,
                progress: bool = False):
    """A ``data.Dataset`` whose x decodes the folder's images on demand; its ``notes`` say what
    was skipped, its ``preprocess`` what was applied, its ``value_range`` the range of every
    input the preprocessing can give."""
    from ..data import Dataset

    root = Path(root)
    pre = (pre or Preprocess())
    if input_shape is not None:
        pre = pre.for_model(tuple(input_shape))
    elif pre.color is None:
        pre = build({"color": "rgb"}, pre.as_dict())
    listing = list_folder(root, pre)
    files, labels, shape, notes = scan(listing, pre, input_shape, root, progress)
    import numpy as np

    y = None if labels is None else np.asarray(labels, np.int64)
    ds = Dataset(ImageArray(files, pre, tuple(shape)), y, str(root), str(root))
    ds.notes, ds.preprocess, ds.value_range = notes, pre.as_dict(), pre.value_range()
    return ds


def folder_digest(root) -> str:
    """sha256 over the folder's file names, sizes and modification times (not the contents:
    hashing 50,000 JPEGs would take minutes)."""
    h = hashlib.sha256()
    root = Path(root)
    for dirpath, dirnames, names in os.walk(root, followlinks=True):
        dirnames.sort()
        for n in sorted(names):
            st = os.stat(os.path.join(dirpath, n))
            rel = os.path.relpath(os.path.join(dirpath, n), root)
            h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def resolve(items, meta: dict | None, warnings: list[str] | None = None) -> Preprocess:
    """The preprocessing of a later command: the one recorded in the model (``meta``) with
    ``items`` applied on top (a preset replaces it). Differences go to ``warnings``."""
    recorded = (meta or {}).get("preprocess")
    pre = build(items, recorded)
    if warnings is not None and items and recorded and pre.as_dict() != build(None, recorded) \
            .as_dict():
        changed = sorted(k for k, v in pre.as_dict().items() if recorded.get(k) != v)
        warnings.append("image preprocessing differs from the one recorded at conversion ("
                        + ", ".join(changed) + ")")
    return pre
