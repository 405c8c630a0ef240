"""The TTFS network: what the model file holds and every simulator reads.

``ops`` (synaptic ops a synapse group chains), ``layers`` (input, neuron, pool and readout layers,
synapse groups), ``model`` (the ``SNN``), ``results`` (what simulations return), ``kernels``
(tensor kernels, shared with the IR), ``simulate`` (closed form), ``event`` (event-driven) and
``equivalent`` (the windowed ReLU network, on values). The network's names are re-exported here:
``from snnconv.snn import SNN, NeuronLayer, DenseOp``.
"""

from .layers import Group, InputLayer, Layer, NeuronLayer, PoolLayer, ReadoutLayer, Relation
from .model import SNN
from .ops import (
    OPS, WEIGHTED, ConvOp, ConvTransposeOp, DenseOp, Op, PadOp, PlaceOp, ReshapeOp, ScaleOp,
    SelectOp, Shape, SumPoolOp, TransposeOp, chain_apply, chain_interval,
)

__all__ = [
    "OPS", "SNN", "WEIGHTED", "ConvOp", "ConvTransposeOp", "DenseOp", "Group", "InputLayer",
    "Layer", "NeuronLayer", "Op", "PadOp", "PlaceOp", "PoolLayer", "ReadoutLayer", "Relation",
    "ReshapeOp", "ScaleOp", "SelectOp", "Shape", "SumPoolOp", "TransposeOp", "chain_apply",
    "chain_interval",
]
