"""The target hardware as data: what a chip stores and counts, read from a YAML profile.

The quantiser and the fit report only read these fields; a new hardware limit is one field here
(with its allowed values in ``CHOICES`` or ``RANGES``), one line in hardware/*.yaml and, if it
bounds the model, one check in ``fit.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import UsageError
from ..yamlfile import load_mapping


@dataclass
class Profile:
    """What the target hardware supports (a YAML file; unknown keys are refused)."""

    name: str = "generic"
    max_weight_bits: int = 8
    skip_bits: int = 8  # identity/scale synapses (residual skips, concat) get this many bits
    weight_scale: str = "per_channel"  # or per_layer
    ramp: str = "per_channel"  # R per output channel or one per layer
    ramp_power_of_two: bool = False
    max_ticks: int = 256  # per layer window
    max_ramp: int = 65536  # largest R (phase-2 increment of V)
    i_bits: int | None = None  # fixed register widths (None: as wide as the model needs)
    v_bits: int | None = None
    overflow: str = "saturate"  # or wrap
    max_fan_in: int | None = None
    max_delay: int | None = None  # ticks
    threshold_bits: int | None = None
    weight_memory_bytes: int | None = None
    notes: str = ""

    def check(self) -> Profile:
        """Refuse values no hardware has (``CHOICES``, ``RANGES``); returns self."""
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise UsageError(f"profile {self.name}: {key} must be {' or '.join(allowed)}")
        for key, lo, hi, what in RANGES:
            if not lo <= getattr(self, key) <= hi:
                raise UsageError(f"profile {self.name}: {what}")
        return self


#: fields that name one of a few modes, with the modes
CHOICES = {
    "weight_scale": ("per_channel", "per_layer"),
    "ramp": ("per_channel", "per_layer"),
    "overflow": ("saturate", "wrap"),
}

#: (field, lowest, highest, the complaint) for numeric fields, checked in this order
RANGES = (
    ("max_weight_bits", 1, 16, "weight bits out of range"),
    ("skip_bits", 2, 16, "weight bits out of range"),
    ("max_ticks", 1, math.inf, "max_ticks must be >= 1"),
    ("max_ramp", 1, 2 ** 30, "max_ramp must be in 1..2^30"),
)


def load_profile(path=None) -> Profile:
    """The profile in YAML file ``path`` (named after the file unless it says ``name``), checked;
    the generic profile when ``path`` is None."""
    if path is None:
        return Profile()
    d = load_mapping(path, "hardware profile", {f.name for f in fields(Profile)})
    d.setdefault("name", Path(path).stem)
    return Profile(**d).check()
