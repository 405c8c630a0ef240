"""Symmetric integer weight levels: how many a bit width gives, the step that wastes least of
them, and rounding onto them. Sign weights (1 bit) are -1/+1 with step mean |w|, as BS4NN."""

from __future__ import annotations

import math

import numpy as np
import torch

#: candidate steps are these fractions of max|w| / qmax (clipping the largest weights can pay)
STEP_FRACTIONS = np.linspace(0.3, 1.0, 36)


def qmax(bits: int) -> int:
    """Largest level: levels are -qmax..qmax (1 bit: -1, +1)."""
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


def quantize_weights(a: np.ndarray, bits: int) -> np.ndarray:
    """``a`` (in step units) rounded onto the levels of ``bits``."""
    if bits == 1:
        return np.where(a >= 0, 1.0, -1.0)
    q = qmax(bits)
    return np.clip(np.round(a), -q, q)


def row_steps(rows: np.ndarray, bits: int) -> np.ndarray:
    """Per-row step minimising the weight rounding error (sign weights: mean |w|)."""
    rows = np.asarray(rows, np.float64)
    absr = np.abs(rows)
    if bits == 1:
        s = absr.mean(1)
        return np.where(s > 0, s, 1.0)
    m = absr.max(1)
    q = qmax(bits)
    t = torch.as_tensor(rows)
    best_e = torch.full((rows.shape[0],), math.inf, dtype=torch.float64)
    best_s = torch.as_tensor(np.where(m > 0, m / q, 1.0))
    for a in STEP_FRACTIONS:
        s = torch.as_tensor(np.where(m > 0, a * m / q, 1.0))[:, None]
        e = ((t - torch.clamp(torch.round(t / s), -q, q) * s) ** 2).sum(1)
        better = e < best_e
        best_e = torch.where(better, e, best_e)
        best_s = torch.where(better, s[:, 0], best_s)
    return best_s.numpy()
