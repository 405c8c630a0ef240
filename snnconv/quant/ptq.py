"""Post-training refinement of an integer model on calibration data, layer by layer.

Round-to-nearest puts every weight on its nearest level on its own; the rounding errors of a
neuron's many synapses add up, and along a deep (residual) network they compound. Two standard
remedies, applied in topological order so that each layer is fitted to the integer inputs its
predecessors really produce:

- GPTQ (Frantar et al. 2022, "GPTQ", after Optimal Brain Quantization): quantise one input
  column of a weight matrix at a time and spread its rounding error over the columns not yet
  quantised, through the inverse Hessian of the layer's integer inputs X (H = X X^T). It
  minimises ||W X - W_int X||^2 greedily, in closed form per column; columns go in order of
  decreasing H_ii (inputs that carry most signal first).
- Bias correction (Nagel et al. 2019, "Data-free quantization"): shift each channel's bias by
  the mean difference between the float network's pre-activation (in V units) and the integer
  one, over the neurons the ReLU lets through in either. It also removes the mean error the
  inputs bring from earlier layers.

Frozen groups (identity skips, concatenations) keep their integers. The latents come back
with integer-valued weights (what the integer model will hold) and real biases (rounded by the
model, trained further by fine-tuning).
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..intmodel import QLayer, QNet, apply_op, encode_input, op_array, pool_values
from ..snn import SNN, NeuronLayer, ReadoutLayer, chain_apply, equivalent, kernels
from ..walk import walk
from .latent import Latent
from .levels import qmax, quantize_weights

#: GPTQ's damping: this share of the mean Hessian diagonal is added to every diagonal entry
DAMP = 0.01
#: a weight matrix with a wider fan-in keeps round-to-nearest (the Hessian would not fit)
MAX_FAN_IN = 8192
#: memory for the refinement's live layers (float values and ticks of a few layers at once)
BUDGET_BYTES = 1 << 30
#: samples of unfolded conv input per chunk of the Hessian sum (bounds memory)
CHUNK_ELEMENTS = 32 * 2 ** 20


def sample_budget(snn: SNN, wanted: int) -> int:
    """Calibration samples the refinement can hold: up to ``wanted``, fewer when layers are
    large (ImageNet-size nets), never below 16."""
    widest = max((la.size for la in snn.layers), default=1)
    return max(16, min(wanted, BUDGET_BYTES // (8 * 6 * widest)))


class _Values(NamedTuple):
    """A layer's output in both models, side by side."""

    real: torch.Tensor  # float SNN values
    ticks: torch.Tensor  # integer model ticks


@torch.no_grad()
def refine(net: QNet, lat: Latent, snn: SNN, x: np.ndarray, gptq: bool = True,
           bias: bool = True, progress: bool = False) -> Latent:
    """Refined latents for ``net`` (built from ``snn`` by ``quant.build``) on inputs ``x``."""
    from ..progress import bar

    lat = copy.deepcopy(lat)
    x = np.asarray(x, np.float64)
    floats = {la.name: la for la in snn.layers}
    rounding = (net.meta.get("quantization") or {}).get("round_activations", True)
    steps = sum(1 for la in net.layers if la.name in lat.weights)
    with bar("refining quantisation", steps, progress) as adv:

        def step(la: QLayer, env: dict[str, _Values]) -> _Values | None:
            fl = floats[la.name]
            if la.kind == "input":
                return _Values(torch.clamp(equivalent.input_values(fl, torch.as_tensor(x)),
                                           0.0, 1.0), encode_input(la, x))
            if la.kind == "pool":
                src = env[la.source]
                return _Values(fl.apply(src.real), pool_values(net, la, src.ticks))
            zf = _float_pre(fl, env)
            if la.name in lat.weights and gptq:
                _gptq_layer(la, lat, env)
            zi = _int_sum(la, lat, env)
            if la.name in lat.weights:
                if bias:
                    _correct_bias(la, lat, zf, zi, rounding)
                adv(1)
            if la.kind == "readout":
                return None
            return _Values(torch.clamp(zf, 0.0, fl.cap if fl.cap is not None else None),
                           _fire(la, lat, zi))

        walk(net.layers, step, name=lambda la: la.name,
             sources=lambda la: floats[la.name].sources())
    return lat


def _float_pre(fl, env: dict[str, _Values]) -> torch.Tensor:
    """The float layer's pre-activation (value units)."""
    z = None
    for g in fl.groups:
        y = chain_apply(g.ops, env[g.source].real)
        z = y if z is None else z + y
    if isinstance(fl, ReadoutLayer):
        return z + torch.as_tensor(np.asarray(fl.bias, np.float64))
    assert isinstance(fl, NeuronLayer)
    return z - torch.as_tensor(np.asarray(fl.theta_rel, np.float64))


def _arrays(la: QLayer, lat: Latent, gi: int) -> list:
    g = la.groups[gi]
    w = lat.weights[la.name][gi]
    return [None if op_array(o) is None else torch.as_tensor(np.asarray(
        quantize_weights(np.asarray(w), g.bits) if w is not None else op_array(o), np.float64))
        for o in g.ops]


def _int_sum(la: QLayer, lat: Latent, env: dict[str, _Values]) -> torch.Tensor:
    """V at t_min in V units: sum over groups of integer weights times source ticks."""
    z = None
    for gi, g in enumerate(la.groups):
        y = env[g.source].ticks
        for op, a in zip(g.ops, _arrays(la, lat, gi)):
            y = apply_op(op, y, a)
        z = y if z is None else z + y
    return z


def _fire(la: QLayer, lat: Latent, z: torch.Tensor) -> torch.Tensor:
    """x_ticks = clip(floor((V + b_int) / R), 0, T) from V = ``z``, as the golden model does."""
    b = torch.as_tensor(np.round(np.asarray(lat.bias[la.name], np.float64)))
    r = torch.as_tensor(np.asarray(la.ramp, np.float64))
    return torch.clamp(torch.floor((z + b) / r), 0, la.ticks)


# --- bias correction ------------------------------------------------------------------------------

def _correct_bias(la: QLayer, lat: Latent, zf: torch.Tensor, z: torch.Tensor,
                  rounding: bool) -> None:
    """b += mean over samples and positions of (float target - integer V), per channel, where
    the ReLU passes either value (neurons below zero in both, or saturated in both, do not care).
    The target is the float pre-activation in V units, plus the R/2 that the bias carries for
    rounding (so b_int's convention is kept)."""
    step = torch.as_tensor(np.asarray(la.step, np.float64))
    b = torch.as_tensor(np.asarray(lat.bias[la.name], np.float64))
    zi = z + torch.round(b)
    if la.kind == "readout":
        zt = zf / step
        live = torch.ones_like(zt, dtype=torch.bool)
    else:
        r = torch.as_tensor(np.asarray(la.ramp, np.float64))
        zt = zf / step + (torch.div(r, 2, rounding_mode="floor") if rounding else 0.0)
        top = r * la.ticks
        live = ~(((zt < r) & (zi < r)) | ((zt >= top) & (zi >= top)))
    d = torch.where(live, zt - zi, torch.zeros((), dtype=zt.dtype))
    dims = (0,) + tuple(range(2, d.dim()))
    cnt = live.sum(dim=dims).to(torch.float64)
    shift = d.sum(dim=dims) / cnt.clamp(min=1)
    shift = shift.reshape((-1,) + (1,) * (len(la.shape) - 1)).numpy()
    lat.bias[la.name] = np.asarray(lat.bias[la.name], np.float64) + shift


# --- GPTQ -----------------------------------------------------------------------------------------

def _gptq_layer(la: QLayer, lat: Latent, env: dict[str, _Values]) -> None:
    for gi, g in enumerate(la.groups):
        w = lat.weights[la.name][gi]
        if w is None:
            continue
        wi = next(i for i, o in enumerate(g.ops) if op_array(o) is not None)
        op = g.ops[wi]
        if op.kind not in ("conv", "dense"):
            continue
        xin = env[g.source].ticks
        for o in g.ops[:wi]:
            xin = o.apply(xin)
        w = np.asarray(w, np.float64)
        if op.kind == "dense":
            if w.shape[1] > MAX_FAN_IN:
                continue
            h = _dense_hessian(xin)[None]
            rows = torch.as_tensor(w)[None]
        else:
            if len(op.weight.shape) > 4 or w[0].size > MAX_FAN_IN:
                continue
            h = _conv_hessian(op, xin)
            grp = op.groups
            rows = torch.as_tensor(w).reshape(grp, w.shape[0] // grp, -1)
        q = torch.stack([gptq(rows[k], h[k], g.bits) for k in range(rows.shape[0])])
        lat.weights[la.name][gi] = q.reshape(w.shape).numpy()


def _dense_hessian(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    return x.T @ x


def _conv_hessian(op, x: torch.Tensor) -> torch.Tensor:
    """sum over samples and output positions of the unfolded input column's outer product,
    per convolution group: (groups, fan_in, fan_in)."""
    one_d = x.dim() == 3
    if one_d:
        x = x.unsqueeze(2)
    k = op.weight.shape[2:] if not one_d else (1, op.weight.shape[2])
    stride = tuple(op.stride) if not one_d else (1, op.stride[0])
    dil = tuple(op.dilation) if not one_d else (1, op.dilation[0])
    pb = tuple(op.pads_begin) if not one_d else (0, op.pads_begin[0])
    pe = tuple(op.pads_end) if not one_d else (0, op.pads_end[0])
    x = kernels.pad_spatial(x.to(torch.float32), pb, pe)
    grp = op.groups
    fan = (x.shape[1] // grp) * math.prod(k)
    h = torch.zeros((grp, fan, fan), dtype=torch.float64)
    per = fan * grp * max(1, math.prod(op.out_shape[1:]))
    chunk = max(1, CHUNK_ELEMENTS // max(1, per))
    for i in range(0, x.shape[0], chunk):
        u = F.unfold(x[i:i + chunk], k, dilation=dil, stride=stride)  # (n, C k k, L)
        u = u.reshape(u.shape[0], grp, fan, -1).permute(1, 2, 0, 3).reshape(grp, fan, -1)
        h += torch.bmm(u, u.transpose(1, 2)).to(torch.float64)
    return h


def gptq(w: torch.Tensor, h: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer levels for the rows of ``w`` (rows x fan_in, in integer units) minimising
    ||(W - Q) X||^2 greedily column by column, given H = X X^T (fan_in x fan_in)."""
    w = w.clone().to(torch.float64)
    h = h.clone().to(torch.float64)
    n = w.shape[1]
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    perm = torch.argsort(torch.diagonal(h), descending=True)
    w, h = w[:, perm], h[perm][:, perm]
    h += DAMP * float(torch.diagonal(h).mean()) * torch.eye(n, dtype=h.dtype)
    try:
        u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    except RuntimeError:  # not positive definite even with damping: keep round-to-nearest
        return torch.as_tensor(quantize_weights(w.numpy(), bits))[:, torch.argsort(perm)]
    q = torch.empty_like(w)
    lim = qmax(bits)
    for i in range(n):
        col = w[:, i]
        qi = torch.where(col >= 0, 1.0, -1.0).to(col.dtype) if bits == 1 else \
            torch.clamp(torch.round(col), -lim, lim)
        q[:, i] = qi
        err = (col - qi) / u[i, i]
        w[:, i + 1:] -= err[:, None] * u[i, i + 1:][None, :]
    return q[:, torch.argsort(perm)]
