"""Rate-coded integrate-and-fire target: model (``model``), file (``file``), conversion from the
imported IR (``convert``, ``lower``, ``thresholds``) and time-stepped simulation
(``simulate``). Rate coding approximates the ReLU network; the TTFS target is the exact one."""

from .convert import convert_rate
from .file import load, save
from .model import RateNet
from .simulate import RateResult, simulate
from .train import train_proxy

__all__ = ["RateNet", "RateResult", "convert_rate", "load", "save", "simulate", "train_proxy"]
