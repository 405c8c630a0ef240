"""Windows without calibration data, and which kind a bare ``convert`` uses.

Guaranteed windows are exact for every input in range but grow with depth (a trained ResNet-20:
~1e12 tau_c against ~100 calibrated); the estimate (``estimate``) stays near the calibrated
windows but is not a guarantee. ``auto`` takes the guaranteed windows unless they are more than
AUTO_LIMIT times longer than the estimate, and says which it used.
"""

from __future__ import annotations

from ..errors import UsageError
from ..snn import Layer
from .calibrate import Calibration
from .estimate import describe, estimate_calibration
from .guaranteed import bound_calibration
from .layout import stage_ends

MODES = ("auto", "guaranteed", "estimate")
#: Guaranteed windows longer than this many times the estimate are replaced by it under "auto"
#: (and warned about under "guaranteed").
AUTO_LIMIT = 100.0


def latency(layers: list[Layer], cal: Calibration, margin: float) -> float:
    """Latency in tau_c of windows from ``cal`` (the last stage's end)."""
    ends = stage_ends(layers, cal, 1.0, margin)
    return ends[max(ends)]


def choose(layers: list[Layer], mode: str, margin: float, priors: dict | None = None
           ) -> tuple[Calibration, dict, list[str]]:
    """The calibration to use, what was compared (latencies in tau_c), and warnings."""
    if mode not in MODES:
        raise UsageError(f"--windows {mode}: expected one of {', '.join(MODES)}")
    est = estimate_calibration(layers, priors)
    if mode == "estimate":
        return est, {"estimated_latency": latency(layers, est, margin)}, [_estimate_note(est)]
    bound = bound_calibration(layers)
    g, e = latency(layers, bound, margin), latency(layers, est, margin)
    info = {"guaranteed_latency": g, "estimated_latency": e}
    if g <= AUTO_LIMIT * e:
        return bound, info, []
    if mode == "guaranteed":
        return bound, info, [
            f"guaranteed windows give a latency of {g:.3g} tau_c, {g / e:.3g}x the estimate "
            f"from the network ({e:.3g}): pass --calib DATA for calibrated windows (usually "
            "near the estimate)"]
    return est, info, [
        f"guaranteed windows would give a latency of {g:.3g} tau_c, {g / e:.3g}x the "
        f"estimate ({e:.3g}); using the estimate. {_estimate_note(est)}; pass --calib DATA for "
        "calibrated windows, or --windows guaranteed"]


def _estimate_note(est: Calibration) -> str:
    return (f"windows estimated from the network ({describe(est.source)}), not guaranteed: "
            "verify reports clipping if they are too small")
