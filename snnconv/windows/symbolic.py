"""Guaranteed windows that keep correlations: symbolic intervals over the encoded input.

Plain interval bounds forget that two paths carry the same input, so on deep nets they grow like
the product of the layers' |W| norms. Here every value carries two linear functions of the
encoded input u in [0, 1]^d (Wang et al., ReluVal / Neurify; the forward half of DeepPoly):

    L(u) <= value <= U(u),   concretised as  c0 + sum_j max(c_j, 0)  (upper)

- Weighted maps: U' = W+ U + W- L, L' = W+ L + W- U (exact for linear maps).
- ReLU, z in [l, u] concretely: active (l >= 0) keeps both; dead (u <= 0) gives 0; otherwise the
  upper line through (l, 0) and (u, u), lambda (U - l) with lambda = u / (u - l), and the lower
  function 0 (never a negative bound). A cap above u's range is a constant.
- Max-pools concretise (the upper bound of a max is the max of the upper bounds).
- Every concrete bound is intersected with the interval bound of the same neuron, so the result
  is never looser than plain intervals, and is sound wherever either is.

Cost: each layer holds (d + 1) x its size coefficients, twice, and the work is that of running the
network on 4 (d + 1) inputs. Over BUDGET coefficients, plain intervals.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..snn import InputLayer, NeuronLayer, PoolLayer
from ..tensors import like
from ..walk import walk

#: Coefficients summed over all layers ((d + 1) x layer size each): beyond it plain intervals.
#: 2e7 is a few seconds on two cores and under 400 MB; a 784-input ResNet-20 needs 1.6e8 (30 s).
BUDGET = 20_000_000


class _Sym:
    """Upper and lower linear functions (coefficient rows for u_1..u_d, then the constant) and
    the concrete bounds they imply, intersected with the interval ones."""

    __slots__ = ("U", "L", "lo", "hi")

    def __init__(self, U, L, lo, hi):
        self.U, self.L, self.lo, self.hi = U, L, lo, hi


def _upper(E: torch.Tensor) -> torch.Tensor:
    return E[-1] + E[:-1].clamp_min(0).sum(0)


def _lower(E: torch.Tensor) -> torch.Tensor:
    return E[-1] + E[:-1].clamp_max(0).sum(0)


def _const(v: torch.Tensor, rows: int) -> torch.Tensor:
    E = v.new_zeros((rows, *v.shape))
    E[-1] = v
    return E


def _input(la: InputLayer) -> _Sym:
    d = math.prod(la.shape)
    E = torch.cat([torch.eye(d, dtype=torch.float64),
                   torch.zeros((1, d), dtype=torch.float64)]).reshape(d + 1, *la.shape)
    zeros = torch.zeros(la.shape, dtype=torch.float64)
    return _Sym(E, E, zeros, torch.ones_like(zeros))


def _through(ops, s: _Sym) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    U, L, lo, hi = s.U, s.L, s.lo[None], s.hi[None]
    for op in ops:
        if op.structural:
            U, L = op.apply(U), op.apply(L)
        else:
            U, L = op.apply(U, 1) + op.apply(L, -1), op.apply(L, 1) + op.apply(U, -1)
        lo, hi = op.interval(lo, hi)
    return U, L, lo[0], hi[0]


def _neuron(la: NeuronLayer, env: dict) -> _Sym:
    U = L = lo = hi = 0
    for g in la.groups:
        u_, l_, a, b = _through(g.ops, env[g.source])
        U, L, lo, hi = U + u_, L + l_, lo + a, hi + b
    th = like(la.theta_rel, U)
    U, L = U.clone(), L.clone()
    U[-1] -= th
    L[-1] -= th
    zl = torch.maximum(_lower(L), lo - th)
    zu = torch.minimum(_upper(U), hi - th)
    active, dead = zl >= 0, zu <= 0
    lam = torch.where(active | dead, torch.ones_like(zu), zu / (zu - zl).clamp_min(1e-300))
    Uo = torch.where(dead, torch.zeros_like(U), lam * U)
    Uo[-1] -= torch.where(active | dead, torch.zeros_like(zl), lam * zl)
    Lo = torch.where(active, L, torch.zeros_like(L))
    new_lo, new_hi = zl.clamp_min(0.0), torch.minimum(_upper(Uo), zu).clamp_min(0.0)
    if la.cap is not None:
        over = new_hi > la.cap
        Uo = torch.where(over, _const(torch.full_like(zu, float(la.cap)), U.shape[0]), Uo)
        Lo = torch.where(zu > la.cap, torch.zeros_like(Lo), Lo)
        new_lo, new_hi = new_lo.clamp_max(la.cap), new_hi.clamp_max(la.cap)
    return _Sym(Uo, Lo, new_lo, new_hi)


def _pool(la: PoolLayer, s: _Sym) -> _Sym:
    lo, hi = la.apply(s.lo[None])[0], la.apply(s.hi[None])[0]
    rows = s.U.shape[0]
    return _Sym(_const(hi, rows), _const(lo, rows), lo, hi)


def fits(layers) -> bool:
    """Whether the coefficients, summed over the layers, stay within BUDGET."""
    d = next(math.prod(la.shape) for la in layers if isinstance(la, InputLayer))
    return (d + 1) * sum(math.prod(la.shape) for la in layers) <= BUDGET


def bounds(layers) -> dict[str, np.ndarray]:
    """Per-neuron upper bounds of every neuron and pool layer's value, inputs in range."""
    out: dict[str, np.ndarray] = {}

    def step(la, env):
        if isinstance(la, InputLayer):
            return _input(la)
        if isinstance(la, PoolLayer):
            s = _pool(la, env[la.source])
        elif isinstance(la, NeuronLayer):
            s = _neuron(la, env)
        else:
            return None
        out[la.name] = s.hi.numpy()
        return s

    with torch.no_grad():
        walk(layers, step, name=lambda la: la.name, sources=lambda la: la.sources())
    return out
