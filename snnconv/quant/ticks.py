"""The integer model's units: ticks per stage, tick size s_n, weight step u and ramp R = s_n / u.

- Ticks: each stage gets ``cap`` ticks; a latency budget shrinks windows greedily, taking ticks
  from the stage whose activation quantisation error (relative to its signal) grows least.
- Tick size s_n = X / T per layer: the clip range X minimising the rounding error of the
  calibration activations with T ticks (or their maximum, or a percentile); saturating
  (ReLU6-like) layers use cap / T.
- Weight step u per output channel or per layer: the step minimising the rounding error of the
  folded weights, but never so small that a frozen skip array clips.
- Ramp R = s_n / u rounded to a positive integer (or power of two), capped by the profile.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UsageError
from ..intmodel import op_array
from ..mapping import full
from ..snn import SNN, InputLayer, NeuronLayer, Op
from .fold import channel_full
from .levels import qmax, row_steps
from .profile import Profile
from .stats import ActStats

#: "mse" tries these fractions of the maximum as clip range
MSE_FRACTIONS = np.geomspace(0.05, 1.0, 40)
#: "mse" chooses on a fixed subsample of at most this many values
MSE_SAMPLE = 20_000


# --- tick size and ticks per stage ---------------------------------------------------------------

def best_range(v: np.ndarray, vmax: float, ticks: int, rule="mse") -> tuple[float, float]:
    """Clip range X (tick size X/T) and the relative round-to-nearest error. ``rule``: "mse"
    (X minimising the error), "max", or a percentile (float) of the values."""
    if vmax <= 0 or v.size == 0:
        return 1.0, 0.0
    if rule != "mse":
        x = vmax if rule == "max" else float(np.percentile(v, float(rule)))
        x = x if x > 0 else vmax
        t = torch.as_tensor(v, dtype=torch.float64)
        s = x / ticks
        q = torch.clamp(torch.floor(t / s + 0.5), 0, ticks) * s
        return x, float(((t - q) ** 2).mean()) / (float((t * t).mean()) or 1.0)
    t = torch.as_tensor(v, dtype=torch.float32)
    if t.numel() > MSE_SAMPLE:  # a fixed subsample is plenty for choosing one number
        t = t[torch.linspace(0, t.numel() - 1, MSE_SAMPLE).long()]
    power = float((t * t).mean()) or 1.0
    alphas = torch.as_tensor(MSE_FRACTIONS, dtype=torch.float32)[:, None]
    s = alphas * vmax / ticks
    q = torch.clamp(torch.floor(t[None, :] / s + 0.5), 0, ticks) * s
    e = ((t[None, :] - q) ** 2).mean(1)
    i = int(torch.argmin(e))
    return float(alphas[i, 0]) * vmax, float(e[i]) / power


def stage_layers(snn: SNN) -> dict[int, list]:
    """The input and neuron layers of each stage (they share one window)."""
    st: dict[int, list] = {}
    for la in snn.layers:
        if isinstance(la, (InputLayer, NeuronLayer)):
            st.setdefault(la.stage, []).append(la)
    return st


def _stage_error(layers: list, t: int, stats: ActStats, rule) -> float:
    """Summed relative activation error of a stage's layers with ``t`` ticks."""
    tot = 0.0
    for la in layers:
        if isinstance(la, NeuronLayer) and la.saturating:
            v = stats.values.get(la.name, np.zeros(1))
            s = la.cap / t
            q = np.clip(np.floor(v / s + 0.5), 0, t) * s
            tot += float(((v - q) ** 2).mean()) / (float((v * v).mean()) or 1.0)
        else:
            tot += best_range(stats.values.get(la.name, np.zeros(1)),
                              stats.maxima.get(la.name, 0.0), t, rule)[1]
    return tot


def allocate_ticks(snn: SNN, stats: ActStats, cap: int, latency: int | None,
                   rule="mse") -> dict[int, int]:
    """Ticks per stage: ``cap`` each, then greedily remove ticks (largest chunk first) from the
    stage whose summed relative activation error grows least, until the budget holds."""
    stages = stage_layers(snn)
    ticks = {k: cap for k in stages}
    if latency is None or sum(ticks.values()) <= latency:
        return ticks
    if latency < len(stages):
        raise UsageError(f"--latency {latency} is below one tick per stage ({len(stages)} "
                         "stages)")
    cache: dict[tuple[int, int], float] = {}

    def e(k, t):
        if (k, t) not in cache:
            cache[(k, t)] = _stage_error(stages[k], t, stats, rule)
        return cache[(k, t)]

    while sum(ticks.values()) > latency:
        excess = sum(ticks.values()) - latency
        step = max(1, excess // (2 * len(stages)))
        cands = []
        for k, t in ticks.items():
            d = min(step, t - 1)
            if d >= 1:
                cands.append((e(k, t - d) - e(k, t), k, d))
        if not cands:
            break
        _, k, d = min(cands)
        ticks[k] -= d
    return ticks


# --- weight step per channel ----------------------------------------------------------------------

def _weight_rows(op: Op) -> tuple[np.ndarray, np.ndarray]:
    """(rows, index of each output element into rows) for a weighted op's output elements."""
    if op.kind == "conv":
        rows = op.weight.reshape(op.weight.shape[0], -1)
        idx = channel_full(np.arange(rows.shape[0]), op.out_shape)
        return rows, idx
    if op.kind == "dense":
        return op.weight, np.arange(op.weight.shape[0]).astype(np.float64)
    a = full(op.scale, op.out_shape if op.kind == "sumpool" else op.in_shape).reshape(-1, 1)
    return a, np.arange(a.shape[0]).astype(np.float64).reshape(
        op.out_shape if op.kind == "sumpool" else op.in_shape)


def _to_layer(ops: list[Op], wi: int, a: np.ndarray) -> np.ndarray:
    """Push a per-output-element tensor of op ``wi`` through the structural ops after it
    (positions no element reaches are NaN)."""
    x = torch.as_tensor(full(a, ops[wi].out_shape) + 1.0)[None]
    for op in ops[wi + 1:]:
        x = op.apply(x)
    y = x[0].numpy() - 1.0
    y[x[0].numpy() == 0] = np.nan
    return y


def _per_channel_max(ops: list[Op], wi: int, per_el: np.ndarray, C: int) -> np.ndarray:
    """Largest per-element value of op ``wi`` reaching each layer channel (NaN: none)."""
    y = _to_layer(ops, wi, per_el)
    if y.ndim <= 1:
        return y.reshape(C)
    y = y.reshape(C, -1)
    return np.where(np.isnan(y).all(1), np.nan, np.nanmax(np.where(np.isnan(y), -np.inf, y), 1))


def channel_steps(folded: list[list[Op]], C: int, bits: int, per_channel: bool,
                   prof: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Per layer channel: (u_opt, u_hard). u_opt minimises the rounding error of the trainable
    (conv/dense) weights at ``bits``; u_hard is the smallest step at which every frozen array
    (identity/scale skips, sum pools) fits ``skip_bits`` unclipped. A skip that clips loses what
    its main path keeps, and the error compounds along a residual chain."""
    u_opt, u_hard = np.full(C, np.nan), np.zeros(C)
    for ops in folded:
        wi = next((i for i, o in enumerate(ops) if op_array(o) is not None), None)
        if wi is None:
            continue
        trainable = ops[wi].kind in ("conv", "dense")
        rows, idx = _weight_rows(ops[wi])
        if trainable:
            st = row_steps(rows, bits) if per_channel else \
                np.full(len(rows), row_steps(np.asarray(rows).reshape(1, -1), bits)[0])
            u_opt = np.fmax(u_opt, _per_channel_max(ops, wi, st[idx.astype(np.int64)], C))
        else:
            need = np.abs(np.asarray(rows, np.float64)).max(1) / qmax(prof.skip_bits)
            u_hard = np.fmax(u_hard, _per_channel_max(ops, wi, need[idx.astype(np.int64)], C))
    if not per_channel:
        u_opt[:] = np.nanmax(u_opt, initial=np.nan) if np.any(np.isfinite(u_opt)) else np.nan
        u_hard[:] = u_hard.max(initial=0.0)
    ok = np.isfinite(u_opt) & (u_opt > 0)
    fallback = float(u_opt[ok].max()) if ok.any() else (float(u_hard.max()) or 1.0)
    return np.where(ok, u_opt, fallback), np.nan_to_num(u_hard)


# --- ramp -----------------------------------------------------------------------------------------

def _round_ramp(r: np.ndarray, pow2: bool) -> np.ndarray:
    r = np.maximum(np.asarray(r, np.float64), 1.0)
    if pow2:
        return (2 ** np.round(np.log2(r))).astype(np.int64)
    return np.maximum(np.round(r), 1).astype(np.int64)


def choose_ramp(s_n: np.ndarray, u_opt: np.ndarray, u_hard: np.ndarray, prof: Profile
                ) -> tuple[np.ndarray, np.ndarray]:
    """Ramp R (the weight step is then u = s_n / R) per channel or one per layer.

    R is the integer (or power of two) nearest s_n / u_opt, but at most s_n / u_hard (no frozen
    skip clips) and at most the profile's ``max_ramp`` (register width; a nearly silent layer is
    no reason for a 39-bit V: one weight unit is then below 1/max_ramp of a tick, a rounding
    error no one can measure). Where even R = 1 would clip a skip, the tick grows to u_hard
    instead. Returns (s_n, R)."""
    ratio = s_n / u_opt
    if prof.ramp == "per_layer":
        ratio = np.full_like(ratio, np.exp(np.mean(np.log(ratio))))
    R = _round_ramp(np.minimum(ratio, prof.max_ramp), prof.ramp_power_of_two).astype(np.float64)
    with np.errstate(divide="ignore"):
        limit = np.where(u_hard > 0, s_n / u_hard, np.inf)
    if prof.ramp == "per_layer":
        limit = np.full_like(limit, limit.min())
    if prof.ramp_power_of_two:
        cap = np.where(limit >= 1, 2.0 ** np.floor(np.log2(np.maximum(limit, 1.0))), 1.0)
    else:
        cap = np.maximum(np.floor(np.minimum(limit, 2.0 ** 62)), 1.0)
    R = np.minimum(R, cap)
    s_n = np.maximum(s_n, R * u_hard)  # only where R = 1 could not avoid clipping
    return s_n, R.astype(np.int64)
