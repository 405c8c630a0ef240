"""The passes over the finished layer list: drop what the readout does not read, and name in each
layer's relation the ONNX nodes it carries (for reports)."""

from __future__ import annotations

from .. import ir
from ..snn import Layer


def prune(layers: list[Layer]) -> list[Layer]:
    """Drop layers the readout (the last layer) does not depend on: dead branches of the ONNX
    graph."""
    needed = {layers[-1].name, "input"}
    for layer in reversed(layers):
        if layer.name in needed:
            needed.update(layer.sources())
    return [la for la in layers if la.name in needed]


def describe(node: ir.Node) -> str:
    folded = " (folded)" if isinstance(node, ir.Affine) else ""
    return f"{node.op_type} {node.name or node.output}{folded}"


def record_fused(layers: list[Layer], graph: ir.Graph) -> None:
    """Name, in each layer's relation, the ONNX nodes it carries: those between the tensors
    other layers carry (or the graph input) and the layer's own tensor, so reports can say
    "Conv c1 + BatchNormalization bn1 (folded) + Relu r1" rather than only the tensor."""
    producer = {n.output: n for n in graph.nodes}
    order = {n.output: i for i, n in enumerate(graph.nodes)}
    carried = {la.relation.tensor for la in layers if la.relation is not None} | {graph.input}
    for la in layers:
        rel = la.relation
        if rel is None or la.kind == "input":
            continue
        seen: set[str] = set()
        stack = [rel.tensor]
        while stack:
            t = stack.pop()
            if t in seen or (t != rel.tensor and t in carried) or t not in producer:
                continue
            seen.add(t)
            stack.extend(producer[t].inputs)
        walked = tuple(describe(producer[t]) for t in sorted(seen, key=order.__getitem__))
        # a piece of a split activation relates to the activation's input: the mapper named
        # the activation itself beforehand
        rel.fused = walked + tuple(f for f in rel.fused if f not in walked)
