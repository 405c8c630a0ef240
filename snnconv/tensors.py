"""Small tensor conversions shared by the simulators and the quantiser."""

from __future__ import annotations

import numpy as np
import torch


def like(a, ref: torch.Tensor) -> torch.Tensor:
    """``a`` (array, scalar or tensor) as a tensor with ``ref``'s dtype and device."""
    if torch.is_tensor(a):
        return a.to(dtype=ref.dtype, device=ref.device)
    return torch.as_tensor(np.asarray(a), dtype=ref.dtype, device=ref.device)
