"""The mapping pass dispatches on the IR node's class: a node type without a lowering fails with a
named error (not an AttributeError), and every IR node type the importer can build has one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from snnconv import ir
from snnconv.errors import EXIT_INTERNAL, ModelImportError, UnmappedNodeError
from snnconv.mapping import LOWERING, RULES, map_graph


@dataclass
class Square(ir.Node):
    """An elementwise op the mapping pass does not know."""

    def infer(self, shapes):
        return tuple(shapes[0])

    def forward(self, x):
        return x * x


def test_unmapped_node_is_a_named_error():
    nodes = [ir.Dense("fc", "Gemm", ("x",), "h", weight=np.ones((3, 4))),
             Square("sq", "Square", ("h",), "y")]
    graph = ir.Graph("x", (4,), "y", nodes, source="net.onnx")
    with pytest.raises(UnmappedNodeError) as info:
        map_graph(graph, np.array(0.0), np.array(1.0))
    err = info.value
    assert isinstance(err, ModelImportError) and err.exit_code == EXIT_INTERNAL
    assert (err.file, err.node, err.op) == ("net.onnx", "sq", "Square")
    assert str(err) == ("net.onnx: node 'sq' (Square): IR node of type Square has no lowering "
                        "to TTFS layers")


def test_every_ir_node_type_has_a_lowering():
    kinds = {v for v in vars(ir).values()
             if isinstance(v, type) and issubclass(v, ir.Node) and v is not ir.Node}
    assert kinds and kinds <= set(LOWERING), sorted(k.__name__ for k in kinds - set(LOWERING))


def test_rewrite_rules_have_distinct_names():
    names = [r[0] for r in RULES]
    assert len(names) == len(set(names))
