"""The synaptic ops of ``snnconv.snn`` as the integer model uses them: the array of an op that
holds integers, the op applied with that array given as a tensor, and its absolute-value twin for
worst-case register bounds. The ops answer for themselves (``Op.array``, ``Op.apply_array``,
``Op.abs``); these names keep the integer model's vocabulary."""

from __future__ import annotations

import numpy as np
import torch

from ..snn import WEIGHTED, Op

#: ops that may carry the group's integer array
INT_OPS = WEIGHTED + ("scale",)


def op_array(op: Op) -> np.ndarray | None:
    return op.array()


def stored_array(w: Op):
    """The integers a group's weighted op stores (its weight, else its scale)."""
    return w.array()


def apply_op(op: Op, x: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:
    """Apply an op with an explicit (torch) array for its weight/scale."""
    return op.apply(x) if a is None else op.apply_array(x, a)


def abs_op(op: Op) -> Op:
    """The op with |array|: applied to all-ones it bounds |output| per unit input."""
    return op.abs()


def ops_apply(ops: list[Op], x: torch.Tensor) -> torch.Tensor:
    for op in ops:
        x = op.apply(x)
    return x
