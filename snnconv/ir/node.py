"""The IR's base node: a typed op with its own shape inference and named shape errors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ModelImportError

Shape = tuple[int, ...]


class ShapeError(ModelImportError):
    """A node whose input shapes or attributes do not fit its op."""


@dataclass
class Node:
    name: str
    op_type: str  # the ONNX op the node came from, for messages
    inputs: tuple[str, ...]
    output: str

    def fail(self, msg: str) -> ShapeError:
        return ShapeError(msg, node=self.name, op=self.op_type)

    def infer(self, shapes: list[Shape]) -> Shape:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
