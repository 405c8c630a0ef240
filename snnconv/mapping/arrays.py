"""Broadcast forms of per-sample constants: biases, scales and thresholds are kept as a scalar, a
per-channel column or a full array, whichever is smallest, so equal forms compare cheaply."""

from __future__ import annotations

import numpy as np


def full(a, shape) -> np.ndarray:
    return np.broadcast_to(np.asarray(a, np.float64), shape).copy()


def compress(a: np.ndarray, shape) -> np.ndarray:
    """The smallest broadcastable form of a per-sample array: scalar, per-channel or full."""
    a = full(a, shape)
    if a.size == 0 or np.all(a == a.flat[0]):
        return np.array(a.flat[0] if a.size else 0.0)
    if len(shape) > 1:
        per_c = a[(slice(None),) + (slice(0, 1),) * (len(shape) - 1)]
        if np.all(a == per_c):
            return per_c.copy()
    return a


def per_channel(a, shape) -> np.ndarray | None:
    """The (C,) vector if ``a`` varies only along axis 0 of ``shape``, else None."""
    a = compress(a, shape)
    if a.ndim == 0:
        return np.full(shape[0], float(a))
    if len(shape) == 1 or all(d == 1 for d in a.shape[1:]):
        return a.reshape(shape[0]) if a.shape[0] == shape[0] else None
    return None


def column(shape) -> tuple:
    """The broadcast shape of a per-channel vector against a tensor of rank ``len(shape)``."""
    return (-1,) + (1,) * (len(shape) - 1)
