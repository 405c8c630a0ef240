"""Graph IR: the imported ReLU network as typed nodes with their own shape checks.

Everything after the importer speaks this IR, never ONNX. Shapes are per sample (no batch axis);
tensors passed to ``forward`` carry a leading batch axis. Node parameters are float64 numpy arrays,
so the IR's own ``forward`` is the float64 reference evaluation of the imported network.

The nodes live by family (``sliding``: windows over space; ``elementwise``: maps and activations;
``layout``: moves), the graph in ``graph``; every name is re-exported here, so ``ir.Conv`` works.
"""

from .elementwise import Abs, Add, Affine, Clip, Dense, Extremum, PRelu, Relu
from .graph import Graph
from .layout import Concat, Pad, Reshape, Select, Transpose
from .node import Node, Shape, ShapeError
from ..snn.kernels import convtranspose_out, pool_out_size
from .sliding import Conv, ConvTranspose, Pool, check_window

__all__ = [
    "Abs", "Add", "Affine", "Clip", "Concat", "Conv", "ConvTranspose", "Dense", "Extremum",
    "Graph", "Node", "PRelu", "Pad", "Pool", "Relu", "Reshape", "Select", "Shape", "ShapeError",
    "Transpose", "check_window", "convtranspose_out", "pool_out_size",
]
