"""snnconv: exact conversion of ReLU networks (ONNX) to time-to-first-spike spiking networks."""

__version__ = "0.1.0"

from .convert import convert  # noqa: E402
from .modelfile import load  # noqa: E402
from .simulate import simulate  # noqa: E402

__all__ = ["__version__", "convert", "load", "simulate"]
