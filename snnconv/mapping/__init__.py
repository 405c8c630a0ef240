"""Mapping pass: IR graph -> TTFS layers (spec sections 2 and 3), before windows are chosen.

Every IR tensor is tracked as an affine expression over non-negative layer values,
``sum_k map_k(value of layer k) + bias``. Linear ops and affine maps act on the expression (folding
BatchNorm, input normalisation and average pooling into the synapses); a ReLU-like op turns an
expression into a neuron layer whose threshold is the negated bias. An expression that a linear op
cannot absorb (two weighted maps in a row with no ReLU between) is split into two neuron layers
carrying z+ and z- (exact: z = z+ - z-). Max-pooling acts on spike times directly when it pools a
layer's value; a max-pool of a signed expression waits for the ReLU after it (they commute).

Where things are: ``expressions`` (expressions and synapse-chain algebra), ``rules`` (the chain
rewrite rules), ``mapper`` (the walk and the neuron layers), ``lowering`` and ``activations`` (one
function per IR node type), ``maxpool`` (spike-time pooling, offset coding), ``bounds`` (interval
bounds while mapping), ``finish`` (pruning, provenance for reports), ``arrays`` (broadcast forms).
"""

from .arrays import compress, full, per_channel
from .expressions import FUSE_LIMIT, Expr, Pending, Term, compose, dense_matrix, simplify
from .finish import record_fused
from .lowering import LOWERING
from .mapper import Mapper, map_graph
from .rules import MOVES, RULES

__all__ = [
    "FUSE_LIMIT", "LOWERING", "MOVES", "RULES", "Expr", "Mapper", "Pending", "Term", "compose",
    "compress", "dense_matrix", "full", "map_graph", "per_channel", "record_fused",
    "simplify",
]
