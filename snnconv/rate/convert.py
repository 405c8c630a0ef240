"""``convert --coding rate``: ONNX -> rate-coded IF net with data-normalised thresholds.

Reuses the importer (the one ONNX reader) and its IR; thresholds come from the calibration data
(``thresholds``), the nodes from the IR (``lower``). Rate coding approximates the ReLU network
(more steps, closer); it is not exact, unlike the TTFS conversion, which stays the default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import data as data_mod
from ..conversion import _source, provenance
from ..errors import UsageError
from ..importer import import_onnx
from ..progress import bar
from .lower import lower
from .model import RESETS, RateNet
from .thresholds import measure


def _check(steps, percentile, reset, v_init, calib):
    if calib is None:
        raise UsageError("rate coding needs calibration data (--calib): thresholds are set by "
                         "data-based normalisation")
    if steps < 1:
        raise UsageError(f"steps {steps} must be >= 1")
    if percentile is not None and not 0 < percentile <= 100:
        raise UsageError(f"percentile {percentile} is not in (0, 100]")
    if reset not in RESETS:
        raise UsageError(f"reset '{reset}': expected one of {', '.join(RESETS)}")
    if not 0.0 <= v_init < 1.0:
        raise UsageError(f"v_init {v_init} is not in [0, 1) (a fraction of the threshold)")


def convert_rate(model, calib=None, *, steps: int = 32, percentile: float | None = None,
                 channelwise: bool = False, reset: str = "subtract", v_init: float = 0.0,
                 input_shape: tuple[int, ...] | None = None, batch_size: int = 256,
                 calib_limit: int | None = None, progress: bool = False) -> RateNet:
    """Convert a ReLU network (ONNX path, bytes or ModelProto) to a rate-coded IF net.

    Thresholds are the max (or ``percentile``) of each ReLU's activations on ``calib``, per
    layer or per channel; ``v_init`` starts membranes at that fraction of the threshold (0.5
    rounds instead of truncating the rate); ``steps`` is the T the model records as its own.
    """
    _check(steps, percentile, reset, v_init, calib)
    model, source_meta = _source(model, None)
    graph = import_onnx(model, input_shape=input_shape)
    ds = data_mod.load(calib, graph.input_shape)
    n = len(ds) if calib_limit is None else min(calib_limit, len(ds))
    with bar("calibrating", n, progress) as adv:
        th = measure(graph, (xb for xb, _ in ds.batches(batch_size, n)), percentile,
                     channelwise, progress=adv)
    nodes = lower(graph, th.values, reset, v_init)
    meta = {
        **provenance(graph, source_meta),
        "calibration": {"method": th.method(), "percentile": percentile,
                        "channelwise": channelwise, "samples": th.samples,
                        "thresholds": {k: np.asarray(v).tolist() for k, v in th.values.items()}},
        "rate": {"reset": reset, "v_init": v_init, "steps": steps, "exact": False},
        "warnings": [],
    }
    if ds.path:
        meta["calibration"]["data"] = {"path": str(Path(ds.path).resolve()),
                                       "sha256": ds.sha256()}
    net = RateNet(nodes, steps=steps, head=graph.head, meta=meta)
    net.check()
    return net
