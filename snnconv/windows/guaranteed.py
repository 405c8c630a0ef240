"""Guaranteed windows: upper bounds of every layer's value for every input in the input range.

Interval bounds (``snn.equivalent.bounds``) always; symbolic intervals (``symbolic``), which keep
the correlations between paths and are never looser, when their coefficients fit the budget.
Sound either way, so a window from them never clips an input inside the declared range.
"""

from __future__ import annotations

import numpy as np

from ..snn import Layer, NeuronLayer, equivalent
from . import symbolic
from .calibrate import Calibration


def bounds(layers: list[Layer]) -> tuple[dict[str, np.ndarray], str]:
    """Per-neuron upper bounds and the method that gave them ("symbolic" or "interval")."""
    if symbolic.fits(layers):
        return symbolic.bounds(layers), "symbolic"
    return equivalent.bounds(layers), "interval"


def bound_calibration(layers: list[Layer]) -> Calibration:
    b, how = bounds(layers)
    neurons = {la.name for la in layers if isinstance(la, NeuronLayer)}
    return Calibration({k: float(v.max()) if v.size else 0.0 for k, v in b.items()
                        if k in neurons}, None, 0, "bounds", source=how)
