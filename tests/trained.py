"""The trained hardware-path nets of sample_models/hardware_nets/ and their data.

Random weights hide quantisation collapses that trained weights show at once; these nets were
trained on the digits sample by sample_models/make_trained.py (see its README).
"""

from __future__ import annotations

import importlib.util

from .conftest import SAMPLES

NETS = SAMPLES / "hardware_nets"


def _maker():
    spec = importlib.util.spec_from_file_location("make_trained", SAMPLES / "make_trained.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_MAKER = _maker()


def path(arch: str, signed: bool, pad: int = 1):
    stem = next(s for s, a, sg, p in _MAKER.NETS if (a, sg, p) == (arch, signed, pad))
    return NETS / f"{stem}.onnx"


def digits(signed: bool, nhwc: bool = False):
    """(x_train, y_train, x_test, y_test) as the net takes them."""
    return _MAKER.digits(signed, nhwc, SAMPLES)
