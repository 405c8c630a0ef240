"""The import context: what a handler sees while the builder walks the ONNX graph.

Handlers never touch the ONNX graph around their node; they ask the context for constants,
per-sample shapes and consumers, and hand it IR nodes or aliases. Kept in its own module so that
the builder and the op handlers both depend on it instead of on each other.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .. import ir
from ..errors import UnsupportedOpError
from .hints import GENERIC_HINT, REWRITE_HINT
from .loader import default_opset

PROBE_BATCH = 7919  # a prime no real dimension product is likely to equal


class Ctx:
    """What a handler sees: constants, per-sample shapes, and where to put IR nodes."""

    def __init__(self, file: str, model: onnx.ModelProto, batch, input_name: str):
        self.file = file
        self.model = model
        self.opset = default_opset(model)
        self.batch = batch
        self.consts: dict[str, np.ndarray] = {}
        self.shape_data: set[str] = set()
        #: Shape-derived tensors evaluated with the batch size set to PROBE_BATCH (dynamic batch):
        #: a reshape target taken from them shows where the batch axis went.
        self.probes: dict[str, np.ndarray] = {}
        #: Tensors whose ONNX-inferred shape is known to be wrong (see builder._old_ceil_rule).
        self.untrusted: set[str] = set()
        self.alias: dict[str, str] = {}
        self.nodes: list[ir.Node] = []
        self.shapes: dict[str, tuple] = {}  # per-sample shapes of activations
        self.onnx_shapes: dict[str, tuple] = {}  # full inferred shapes (None for unknown dims)
        self.head: str | None = None
        #: tensor -> per-channel (mean, std) of its pre-activation, from a BatchNormalization's
        #: parameters (a BN output, or a ReLU of one): estimates for data-free windows
        self.priors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.graph_output: str | None = None
        self.input_name = input_name
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self._n = 0

    def opset_for(self, domain: str) -> int:
        """The model's opset version for a domain ("" and "ai.onnx" are the default one)."""
        if domain in ("", "ai.onnx"):
            return self.opset
        return next((i.version for i in self.model.opset_import if i.domain == domain), 1)

    # --- tensors -------------------------------------------------------------------------------
    def name(self, t: str) -> str:
        while t in self.alias:
            t = self.alias[t]
        return t

    def is_const(self, t: str) -> bool:
        return t in self.consts

    def const(self, node, t: str, what: str = "this input") -> np.ndarray:
        if t not in self.consts:
            raise self.fail(node, f"{what} ('{t}') must be a constant, but it depends on the "
                            "network input")
        return self.consts[t]

    def opt_const(self, node, idx: int) -> np.ndarray | None:
        if len(node.input) <= idx or not node.input[idx]:
            return None
        return self.const(node, node.input[idx], f"input {idx}")

    def is_act(self, t: str) -> bool:
        return bool(t) and self.name(t) in self.shapes

    def shape(self, t: str) -> tuple:
        return self.shapes[self.name(t)]

    def inferred(self, t: str) -> tuple | None:
        """Per-sample shape ONNX inferred for tensor t, if static."""
        if t in self.untrusted:
            return None
        full = self.onnx_shapes.get(t)
        if full is None or len(full) < 1 or any(d is None for d in full[1:]):
            return None
        return tuple(full[1:])

    @property
    def probe_batch(self) -> int:
        return self.batch if isinstance(self.batch, int) and self.batch > 0 else PROBE_BATCH

    def shape_value(self, t: str) -> np.ndarray | None:
        """A constant or probe-evaluated shape tensor, else None."""
        if t in self.consts:
            return self.consts[t]
        return self.probes.get(t)

    # --- emitting ------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}::{self._n}"

    def emit(self, node: ir.Node) -> str:
        shapes = [self.shapes[i] for i in node.inputs]
        self.shapes[node.output] = tuple(node.infer(shapes))
        self.nodes.append(node)
        return node.output

    def set_alias(self, out: str, src: str) -> None:
        self.alias[out] = self.name(src)

    def fail(self, node, msg: str, hint: str | None = None, cls=UnsupportedOpError):
        if hint is None and issubclass(cls, UnsupportedOpError):  # every refusal names a rewrite
            hint = REWRITE_HINT.get(node.op_type, GENERIC_HINT)
        return cls(msg, file=self.file, node=node.name or "(unnamed)", op=node.op_type,
                   hint=hint)

    def attr(self, node, key: str, default=None):
        for a in node.attribute:
            if a.name == key:
                v = helper.get_attribute_value(a)
                return v.decode() if isinstance(v, bytes) else v
        return default
