"""The synaptic ops of ``snn.py`` as the integer model uses them: which array of an op holds
integers, the op applied with that array given as a tensor, and its absolute-value twin for
worst-case register bounds."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..snn import kernels
from ..snn import WEIGHTED, Op

#: ops that may carry the group's integer array
INT_OPS = WEIGHTED + ("scale",)
#: the field of each op kind that holds an integer array (the other kinds carry none)
ARRAY_FIELD = {"conv": "weight", "dense": "weight", "scale": "scale", "sumpool": "scale"}


def op_array(op: Op) -> np.ndarray | None:
    f = ARRAY_FIELD.get(op.kind)
    return None if f is None else getattr(op, f)


def stored_array(w: Op):
    """The integers a group's weighted op stores (its weight, else its scale)."""
    return getattr(w, ARRAY_FIELD.get(w.kind, "scale"))


def _conv(op, x, a):
    return kernels.conv(x, a, None, op.stride, op.pads_begin, op.pads_end, op.dilation,
                        op.groups)


def _dense(op, x, a):
    return x.reshape(x.shape[0], -1) @ a.T


def _sumpool(op, x, a):
    y = kernels.pool(x, "sum", op.kernel, op.stride, op.pads_begin, op.pads_end, op.dilation,
                     op.out_spatial)
    return y * a


def _scale(op, x, a):
    return x * a


_APPLY = {"conv": _conv, "dense": _dense, "sumpool": _sumpool, "scale": _scale}


def apply_op(op: Op, x: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:
    """Apply an op with an explicit (torch) array for its weight/scale."""
    if a is None:
        return op.apply(x)
    if op.kind not in _APPLY:
        raise ValueError(op.kind)
    return _APPLY[op.kind](op, x, a)


def abs_op(op: Op) -> Op:
    """The op with |array|: applied to all-ones it bounds |output| per unit input."""
    f = ARRAY_FIELD.get(op.kind)
    return op if f is None else dataclasses.replace(op, **{f: np.abs(getattr(op, f))})


def ops_apply(ops: list[Op], x: torch.Tensor) -> torch.Tensor:
    for op in ops:
        x = op.apply(x)
    return x
