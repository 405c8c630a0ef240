"""The integer TTFS network of spec section 5: the hardware model, its file, and two simulators.

``layers`` holds the model as data (typed layers, synapse groups, ``QNet``); ``golden`` computes
each layer's closed form, vectorised; ``regsim`` steps the registers tick by tick; the two must
agree bit for bit (``check.verify_integer``). ``snnq`` is the file, ``run`` and ``vectors`` the
file-level commands, ``compare`` sets the model against the float SNN it came from.

The functions ``golden`` and ``regsim`` re-exported here shadow their modules of the same name as
package attributes; the modules stay reachable through ``sys.modules`` / ``importlib``.
"""

from .bounds import (
    EXACT32, EXACT64, abs_bounds, bits_for, exact_dtype, full_np, layer_dtypes, set_widths,
)
from .check import verify_integer
from .common import Compiled, IntResult, encode_input, fire_ticks, limit, pool_values
from .golden import golden
from .layers import (
    LAYER_TYPES, QGroup, QInput, QLayer, QNet, QNeuron, QPool, QReadout, QSynaptic,
)
from .ops import INT_OPS, apply_op, op_array, ops_apply
from .regsim import _layer_ticks, regsim
from .run import run_file
from .snnq import FORMAT, FORMAT_VERSION, from_header, load, save, to_header

#: the old private name of ``common.limit`` (tests use it)
_limit = limit

__all__ = [
    "EXACT32", "EXACT64", "FORMAT", "FORMAT_VERSION", "INT_OPS", "LAYER_TYPES", "Compiled",
    "IntResult", "QGroup", "QInput", "QLayer", "QNet", "QNeuron", "QPool", "QReadout",
    "QSynaptic", "abs_bounds", "apply_op", "bits_for", "encode_input", "exact_dtype",
    "fire_ticks", "from_header", "full_np", "golden", "layer_dtypes", "limit", "load",
    "op_array", "ops_apply", "pool_values", "regsim", "run_file", "save", "set_widths",
    "to_header", "verify_integer", "_layer_ticks", "_limit",
]
