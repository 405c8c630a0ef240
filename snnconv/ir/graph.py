"""The IR graph: one input, one output, nodes in topological order, checked on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ModelImportError
from ..walk import walk
from .node import Node, Shape


@dataclass
class Graph:
    """A ReLU network: one input, one output, nodes in topological order."""

    input: str
    input_shape: Shape
    output: str
    nodes: list[Node]
    source: str = "<memory>"
    batch: int | None = None  # fixed batch size of the ONNX graph, None if dynamic
    head: str | None = None  # output op stripped by the importer (argmax-preserving)
    onnx_output: str | None = None  # the ONNX output tensor (after the head)
    shapes: dict[str, Shape] = field(default_factory=dict)
    #: tensor -> per-channel (mean, std) of its pre-activation the training data had, from
    #: BatchNormalization parameters: estimates for data-free windows, never used for exactness
    priors: dict[str, tuple] = field(default_factory=dict)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        shapes = {self.input: tuple(self.input_shape)}
        for node in self.nodes:
            for i in node.inputs:
                if i not in shapes:
                    raise node.fail(f"input '{i}' is not produced before this node")
            shapes[node.output] = tuple(node.infer([shapes[i] for i in node.inputs]))
        if self.output not in shapes:
            raise ModelImportError(f"graph output '{self.output}' is never produced")
        self.shapes = shapes

    @property
    def output_shape(self) -> Shape:
        return self.shapes[self.output]

    def forward(self, x, keep: set[str] | None = None, dtype=torch.float64):
        """Float64 reference evaluation. Returns the output, and the tensors named in ``keep``."""
        x = torch.as_tensor(x if torch.is_tensor(x) else np.asarray(x), dtype=dtype)
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"input shape {tuple(x.shape[1:])} != {self.input_shape}")
        keep = keep or set()

        def step(n: Node, env: dict) -> torch.Tensor:
            return n.forward(*(env[i] for i in n.inputs))

        env = walk(self.nodes, step, name=lambda n: n.output, sources=lambda n: n.inputs,
                   env={self.input: x}, keep={*keep, self.output})
        produced = [self.input] + [n.output for n in self.nodes]
        kept = {t: env[t] for t in produced if t in keep and t in env}
        return env[self.output], kept
