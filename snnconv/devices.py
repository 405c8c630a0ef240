"""Where torch computes: ``--device auto|cpu|cuda[:N]|mps`` resolved once into a ``Device``.

Every command defaults to the CPU, so nothing changes unless a device is asked for. ``auto`` is
CUDA when torch sees a GPU, else the CPU, and says which. Under torchrun a bare ``cuda`` (or
``auto`` on a GPU machine) means ``cuda:LOCAL_RANK``, one GPU per process. MPS has no float64:
work that must be float64 (exactness checks, calibration, the integer golden model) is refused
there with the remedy rather than silently run in another precision.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import UsageError

CHOICES = "auto, cpu, cuda, cuda:N or mps"


@dataclass(frozen=True)
class Device:
    """A resolved device: the torch device, and how it was chosen (for the output)."""

    name: str  # "cpu", "cuda:0", "mps"
    requested: str = "cpu"
    note: str = ""  # why (auto's choice), shown beside the name

    @property
    def torch(self):
        import torch

        return torch.device(self.name)

    @property
    def type(self) -> str:
        return self.name.split(":")[0]

    @property
    def is_cpu(self) -> bool:
        return self.type == "cpu"

    @property
    def float64(self) -> bool:
        """Whether the device computes in float64 (MPS does not)."""
        return self.type != "mps"

    def describe(self) -> str:
        return f"{self.name} ({self.note})" if self.note else self.name

    def require_float64(self, what: str) -> None:
        """Refuse float64 ``what`` on a device without float64, saying what to do instead."""
        if not self.float64:
            raise UsageError(f"--device {self.requested}: {what} needs float64, which "
                             f"{self.type.upper()} does not have",
                             hint="use --device cpu (or cuda on an NVIDIA GPU)")


CPU = Device("cpu")


def _local_rank() -> int | None:
    v = os.environ.get("LOCAL_RANK")
    return int(v) if v is not None and v.isdigit() else None


def _cuda(index: int | None, requested: str, note: str = "") -> Device:
    import torch

    if not torch.cuda.is_available():
        build = ", a CPU-only build" if "+cpu" in torch.__version__ else ""
        raise UsageError(f"--device {requested}: torch sees no CUDA device (torch "
                         f"{torch.__version__}{build})",
                         hint="install a CUDA build of torch (README: GPUs), or use --device cpu")
    count = torch.cuda.device_count()
    if index is None:
        index = _local_rank() or 0
    if index >= count:
        raise UsageError(f"--device {requested}: cuda:{index} does not exist ({count} CUDA "
                         f"device{'s' if count != 1 else ''}: cuda:0..cuda:{count - 1})")
    return Device(f"cuda:{index}", requested, note)


def resolve(spec=None) -> Device:
    """A ``Device`` from ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``, a ``torch.device``
    or a ``Device`` (None: the CPU). Unknown or absent devices raise ``UsageError``."""
    if spec is None:
        return CPU
    if isinstance(spec, Device):
        return spec
    text = str(spec).strip().lower()
    if text == "cpu":
        return Device("cpu", "cpu")
    if text == "auto":
        import torch

        if torch.cuda.is_available():
            return _cuda(None, "auto", "auto: a CUDA device is present")
        return Device("cpu", "auto", "auto: no CUDA device")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if m:
        return _cuda(None if m.group(1) is None else int(m.group(1)), text)
    if text == "mps":
        import torch

        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise UsageError("--device mps: torch sees no Apple-silicon GPU (MPS)",
                             hint="use --device cpu")
        return Device("mps", "mps")
    raise UsageError(f"--device {spec}: unknown device; choose {CHOICES}")


def to_cpu(t):
    """A tensor (or a dict of them) back on the CPU; CPU tensors are returned as they are."""
    if isinstance(t, dict):
        return {k: to_cpu(v) for k, v in t.items()}
    return t if t is None or t.device.type == "cpu" else t.cpu()
