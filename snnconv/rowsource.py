"""Arrays read from a file by contiguous row ranges (an .npz member, an image folder):
``a[i]`` and ``a[i:j]`` as numpy gives them, without loading the whole file."""

from __future__ import annotations

import numpy as np


class RowSource:
    """Indexing for a lazy (N, ...) array; subclasses define ``__len__`` and ``_rows``."""

    def __getitem__(self, sl):
        if isinstance(sl, (int, np.integer)):
            return self[int(sl):int(sl) + 1][0]
        start, stop, step = sl.indices(len(self))
        if step != 1:
            raise IndexError("only contiguous slices are supported")
        return self._rows(start, max(start, stop))

    def _rows(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError
