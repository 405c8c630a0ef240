"""Choosing the samples of a run: training data (given, or the calibration file the model
records), validation (given, or held out) and the data the report is evaluated on."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import data as data_mod, images
from ..fileio import require_recorded_file
from ..data import Dataset, Stream
from ..snn import SNN
from .config import FinetuneConfig


@dataclass
class RunData:
    train: Dataset | Stream
    valid: Dataset | Stream
    test: Dataset | Stream  # the report's accuracy table: ``test=`` or the validation data
    path: str | None  # the training data file, recorded in the output
    preprocess: dict | None = None  # image preprocessing, recorded in the output


def recorded_data(snn: SNN) -> Path:
    """The calibration data file recorded in ``snn``, unchanged since conversion."""
    return require_recorded_file(
        (snn.meta.get("calibration") or {}).get("data"),
        "no --data given and the model records no calibration data file",
        "{p}: the calibration data recorded in the model is missing",
        "{p}: the calibration data recorded in the model has changed since conversion "
        "(sha256 differs)",
        hints=("pass --data TRAIN.npz", "pass --data TRAIN.npz",
               "pass --data TRAIN.npz explicitly"))


def run_data(snn: SNN, cfg: FinetuneConfig, data, val, test, warnings: list[str],
             say: Callable[[str], None], preprocess=None, progress: bool = False) -> RunData:
    """The samples of a run; what was chosen for the user goes to ``warnings`` (and the recorded
    training file also to ``say``). Image folders are read with the recorded preprocessing,
    changed by ``preprocess``."""
    shape = tuple(snn.input.shape)
    pre = images.resolve(preprocess, snn.meta, warnings)
    kw = {"preprocess": pre, "progress": progress}
    data_path = None
    if data is None:
        data = recorded_data(snn)
        msg = f"no --data given: training on the calibration data recorded in the model ({data})"
        warnings.append(msg)
        say(msg)
    if isinstance(data, (str, os.PathLike)):
        data_path = str(Path(data).resolve())
    train = data_mod.labelled(data, shape, "training data", **kw)
    read = [train]
    if val is not None:
        valid = data_mod.labelled(val, shape, "validation data", **kw)
        read.append(valid)
    else:
        train, valid = train.split(cfg.val_fraction, cfg.seed)
        if valid is None:
            valid = train
            warnings.append("no validation data: the best epoch is chosen on training data")
        else:
            warnings.append(f"no --val: {len(valid)} training samples held out for validation")
    testsrc = data_mod.labelled(test, shape, "test data", **kw) if test is not None else valid
    used = [s.preprocess for s in read if s.preprocess]
    warnings += [n for s in read for n in s.notes]
    return RunData(train, valid, testsrc, data_path,
                   used[0] if used else snn.meta.get("preprocess"))
