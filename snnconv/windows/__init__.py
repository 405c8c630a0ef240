"""Windows: how long each stage's spikes may take (spec section 1), from calibration data, from
guaranteed bounds over the input range, or estimated from the network alone; then time laid out
stage by stage."""

from .calibrate import Calibration, calibrate
from .datafree import AUTO_LIMIT, MODES, choose
from .estimate import SIGMAS, estimate, estimate_calibration
from .guaranteed import bound_calibration, bounds
from .inputs import data_range
from .layout import MARGINED, WINDOW_BITS, assign_times, build_snn, round_window, stage_ends

__all__ = [
    "AUTO_LIMIT", "Calibration", "MARGINED", "MODES", "SIGMAS", "WINDOW_BITS", "assign_times",
    "bound_calibration", "bounds", "build_snn", "calibrate", "choose", "data_range", "estimate",
    "estimate_calibration", "round_window", "stage_ends",
]
