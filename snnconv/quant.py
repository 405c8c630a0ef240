"""From a float TTFS network to integers: hardware profile, equalisation, ticks, scales, ramps.

Choices (docs/finetune.md explains them):
- Equalisation (positive homogeneity, exact for ReLU nets): every channel of a neuron layer is
  scaled by 1/a so that its calibrated range equals the layer's; consumers' input channels get a.
  Max/min pools pass a positive scale through. Afterwards one tick size per layer serves all
  channels.
- Ticks: each stage gets 2^time_bits ticks; a latency budget shrinks windows greedily, taking a
  tick from the stage whose activation quantisation error (relative to its signal) grows least.
- Tick size s_n per layer: the clip range X minimising the rounding error of the calibration
  activations with T ticks (s_n = X / T); saturating (ReLU6-like) layers use cap / T.
- Weight step u (value of one V unit) per output channel or per layer: the step minimising the
  rounding error of the folded weights (W times the source's tick size), sign weights use mean|W|.
- Ramp R = s_n / u rounded to a positive integer (or power of two), per channel or per layer;
  u is then set to s_n / R so every group of the layer lands on the same unit.
- Bias b_int = round(b / u) + floor(R / 2): the floor of the integer model then rounds to nearest.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .snn import equivalent
from .errors import UsageError
from .intmodel import QGroup, QLayer, QNet, op_array, set_widths
from .mapping import compress, dense_matrix, full, simplify
from .snn import (
    SNN, WEIGHTED, DenseOp, InputLayer, NeuronLayer, Op, PoolLayer, ReadoutLayer, ReshapeOp,
    ScaleOp,
)

# --- hardware profile -----------------------------------------------------------------------------


@dataclass
class Profile:
    """What the target hardware supports (a YAML file; unknown keys are refused)."""

    name: str = "generic"
    max_weight_bits: int = 8
    skip_bits: int = 8  # identity/scale synapses (residual skips, concat) get this many bits
    weight_scale: str = "per_channel"  # or per_layer
    ramp: str = "per_channel"  # R per output channel or one per layer
    ramp_power_of_two: bool = False
    max_ticks: int = 256  # per layer window
    max_ramp: int = 65536  # largest R (phase-2 increment of V)
    i_bits: int | None = None  # fixed register widths (None: as wide as the model needs)
    v_bits: int | None = None
    overflow: str = "saturate"  # or wrap
    max_fan_in: int | None = None
    max_delay: int | None = None  # ticks
    threshold_bits: int | None = None
    weight_memory_bytes: int | None = None
    notes: str = ""

    def check(self) -> Profile:
        if self.weight_scale not in ("per_channel", "per_layer"):
            raise UsageError(f"profile {self.name}: weight_scale must be per_channel or per_layer")
        if self.ramp not in ("per_channel", "per_layer"):
            raise UsageError(f"profile {self.name}: ramp must be per_channel or per_layer")
        if self.overflow not in ("saturate", "wrap"):
            raise UsageError(f"profile {self.name}: overflow must be saturate or wrap")
        if not 1 <= self.max_weight_bits <= 16 or not 2 <= self.skip_bits <= 16:
            raise UsageError(f"profile {self.name}: weight bits out of range")
        if self.max_ticks < 1:
            raise UsageError(f"profile {self.name}: max_ticks must be >= 1")
        if not 1 <= self.max_ramp <= 2 ** 30:
            raise UsageError(f"profile {self.name}: max_ramp must be in 1..2^30")
        return self


def load_profile(path=None) -> Profile:
    if path is None:
        return Profile()
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: hardware profile not found")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(d, dict):
        raise UsageError(f"{p}: a hardware profile is a mapping of keys to values")
    known = {f.name for f in fields(Profile)}
    bad = sorted(set(d) - known)
    if bad:
        raise UsageError(f"{p}: unknown profile keys: {', '.join(bad)}",
                         hint="known: " + ", ".join(sorted(known)))
    d.setdefault("name", p.stem)
    return Profile(**d).check()


#: Synapse ops the integer model holds: weighted maps and every wiring op (a permutation or
#: selection of lines is free in hardware; scales move through it to the weighted map).
INTEGER_OPS = ("conv", "dense", "sumpool", "scale", "reshape", "place", "pad", "transpose",
               "select")


def check_supported(snn: SNN) -> None:
    """Refuse, before any work, a network whose synapses the integer model cannot hold."""
    for la in snn.layers:
        for g in getattr(la, "groups", []):
            bad = [o.kind for o in g.ops if o.kind not in INTEGER_OPS]
            if bad:
                raise UsageError(
                    f"layer {la.name} (input from {g.source}) uses {bad[0]} synapses, which the "
                    "integer model of finetune does not support yet",
                    hint="supported synapse ops: " + ", ".join(INTEGER_OPS) + "; the float "
                    ".snn model still converts, verifies and simulates")


def fit_report(net: QNet, prof: Profile) -> dict:
    """Check an integer model against a profile; each row says ok or what exceeds."""
    rows = []
    mem = net.weight_count()[1]
    for la in net.layers:
        if la.kind not in ("neuron", "readout"):
            continue
        r = {"layer": la.name, "issues": []}
        for g in la.groups:
            if g.weighted is not None and g.weighted.kind in ("conv", "dense") and \
                    g.bits > prof.max_weight_bits:
                r["issues"].append(f"{g.bits}-bit weights > {prof.max_weight_bits}")
            if prof.max_delay is not None and g.delay > prof.max_delay:
                r["issues"].append(f"delay {g.delay} > {prof.max_delay} ticks")
        fan = fan_in(net, la)
        r["fan_in"] = fan
        if prof.max_fan_in is not None and fan > prof.max_fan_in:
            r["issues"].append(f"fan-in {fan} > {prof.max_fan_in}")
        for reg, lim in (("I", prof.i_bits), ("V", prof.v_bits)):
            need = la.widths.get(f"{reg}_needed", la.widths[reg])
            r[f"{reg}_bits"] = need
            if lim is not None and need > lim:
                r["issues"].append(f"{reg} needs {need} bits > {lim} (overflow possible: "
                                   f"{prof.overflow})")
        if la.kind == "neuron" and prof.threshold_bits is not None:
            th = int(np.abs(la.theta).max())
            if th >= 2 ** (prof.threshold_bits - 1):
                r["issues"].append(f"threshold {th} needs more than {prof.threshold_bits} bits")
        if la.kind == "neuron" and la.ticks > prof.max_ticks:
            r["issues"].append(f"{la.ticks} ticks > {prof.max_ticks}")
        r["ok"] = not r["issues"]
        rows.append(r)
    mem_ok = prof.weight_memory_bytes is None or mem <= prof.weight_memory_bytes
    return {"profile": prof.name, "layers": rows, "weight_memory_bytes": mem,
            "memory_ok": mem_ok, "ok": mem_ok and all(r["ok"] for r in rows)}


def fan_in(net: QNet, la: QLayer, structural: bool = False) -> int:
    """Largest number of synapses of one neuron: non-zero weights, or (``structural``) every
    weight slot, which training may fill."""
    tot = None
    for g in la.groups:
        src = net.by_name[g.source]
        x = torch.ones((1, *src.shape), dtype=torch.float64)
        for op in g.ops:
            a = op_array(op)
            if a is not None:
                op = _with_array(op, np.ones_like(np.asarray(a, np.float64)) if structural
                                 else (np.asarray(a) != 0).astype(np.float64))
            x = op.apply(x)
        tot = x if tot is None else tot + x
    return int(tot.max()) if tot is not None else 0


def _with_array(op: Op, a: np.ndarray) -> Op:
    import dataclasses

    if op.kind in ("conv", "dense"):
        return dataclasses.replace(op, weight=a)
    return dataclasses.replace(op, scale=a)


# --- folding scales into synapse chains -----------------------------------------------------------

def _sink_scales(ops: list[Op]) -> list[Op]:
    """Move a scale that follows a reshape/place/pad in front of it (so it can meet the weighted
    op and fold into it)."""
    ops = list(ops)
    changed = True
    while changed:
        changed = False
        for i in range(1, len(ops)):
            a, b = ops[i - 1], ops[i]
            if b.kind != "scale" or a.kind not in ("reshape", "place", "pad", "transpose",
                                                   "select"):
                continue
            s = full(b.scale, b.in_shape)
            if a.kind == "reshape":
                s_in = s.reshape(a.in_shape)
            elif a.kind == "transpose":
                s_in = s.transpose(np.argsort(a.perm))
            elif a.kind == "select":
                s_in = _unselect(s, a)
                if s_in is None:
                    continue
            elif a.kind == "place":
                idx = [slice(None)] * len(a.in_shape)
                idx[a.axis] = slice(a.offset, a.offset + a.in_shape[a.axis])
                s_in = s[tuple(idx)]
            else:
                if min(a.pads_begin, default=0) < 0 or min(a.pads_end, default=0) < 0:
                    continue
                idx = [slice(None)] + [slice(pb, pb + n) for pb, n in
                                       zip(a.pads_begin, a.in_shape[1:])]
                s_in = s[tuple(idx)]
            ops = ops[:i - 1] + [ScaleOp(tuple(a.in_shape), scale=compress(s_in, a.in_shape)),
                                 a] + ops[i + 1:]
            changed = True
            break
    return ops


def _unselect(s: np.ndarray, sel: Op) -> np.ndarray | None:
    """A scale after a selection as a scale before it: every copy of an input must carry the
    same factor (inputs no output copies get 1). None if copies disagree."""
    s_in = np.ones(sel.in_shape)
    seen = np.zeros(sel.in_shape[sel.axis], bool)
    for j, i in enumerate(sel.index):
        v = np.take(s, j, axis=sel.axis)
        if seen[i] and not np.array_equal(np.take(s_in, i, axis=sel.axis), v):
            return None
        idx = [slice(None)] * len(sel.in_shape)
        idx[sel.axis] = i
        s_in[tuple(idx)] = v
        seen[i] = True
    return s_in


def fold_chain(ops: list[Op], in_shape, out_shape, s_in=None, s_out=None,
               dense_limit: int = 8_000_000) -> list[Op]:
    """``s_out * chain(s_in * x)`` as one chain with at most one op that holds an array."""
    ops = list(ops)
    if s_in is not None:
        ops = [ScaleOp(tuple(in_shape), scale=compress(s_in, in_shape))] + ops
    if s_out is not None:
        ops = ops + [ScaleOp(tuple(out_shape), scale=compress(s_out, out_shape))]
    for _ in range(4):
        new = simplify(_sink_scales(simplify(ops)))
        if [o.kind for o in new] == [o.kind for o in ops]:
            ops = new
            break
        ops = new
    holders = [o for o in ops if o.kind in WEIGHTED or o.kind == "scale"]
    if len(holders) <= 1:
        return ops
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    if n_in * n_out > dense_limit:
        raise UsageError(f"a synapse chain ({' -> '.join(o.kind for o in ops)}) cannot be "
                         "written as one integer weight array")
    m = dense_matrix(ops)
    out = [DenseOp(tuple(in_shape), weight=m)]
    if len(out_shape) != 1:
        out.append(ReshapeOp((n_out,), shape=tuple(out_shape)))
    return out


def channel_full(a: np.ndarray, shape) -> np.ndarray:
    """A per-channel vector (or scalar) broadcast to a per-sample shape."""
    a = np.asarray(a, np.float64)
    if a.ndim == 0:
        return np.full(shape, float(a))
    return np.broadcast_to(a.reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()


def channel_max(v: torch.Tensor) -> np.ndarray:
    dims = (0,) + tuple(range(2, v.dim()))
    return v.amax(dim=dims).numpy() if v.dim() > 1 else v.amax().reshape(1).numpy()


# --- equalisation ---------------------------------------------------------------------------------

def equalize(snn: SNN, batches, strength: float = 1.0, floor: float = 1e-4
             ) -> tuple[SNN, dict[str, np.ndarray]]:
    """Scale channel c of each non-saturating neuron layer by 1/a_c, a_c = (max_c / max)^strength
    (exact: consumers get a_c). strength 1 gives every channel the layer's calibrated max; less
    keeps headroom for data beyond the calibration maxima. Returns a new SNN and the factors."""
    snn = copy.deepcopy(snn)
    maxc: dict[str, np.ndarray] = {}

    def obs(layer, v):
        if isinstance(layer, NeuronLayer) and not layer.saturating and v.dim() >= 2:
            m = channel_max(v)
            maxc[layer.name] = m if layer.name not in maxc else np.maximum(maxc[layer.name], m)

    for xb in batches:
        equivalent.forward(snn.layers, xb, observe=obs)
    fac: dict[str, np.ndarray] = {}
    for la in snn.layers:
        if isinstance(la, NeuronLayer) and la.name in maxc:
            m = maxc[la.name]
            top = float(m.max()) if m.size else 0.0
            if top > 0 and len(m) == la.shape[0]:
                a = np.where(m > 0, np.maximum(m / top, floor) ** strength, 1.0)
                if np.any(a != 1.0):
                    fac[la.name] = a
        elif isinstance(la, PoolLayer) and la.source in fac:
            fac[la.name] = fac[la.source]
    for la in snn.layers:
        if not isinstance(la, (NeuronLayer, ReadoutLayer)):
            continue
        a_out = fac.get(la.name) if isinstance(la, NeuronLayer) else None
        for g in la.groups:
            src = snn.by_name[g.source]
            a_in = fac.get(g.source)
            if a_in is None and a_out is None:
                continue
            g.ops = fold_chain(g.ops, src.shape, la.shape,
                               None if a_in is None else channel_full(a_in, src.shape),
                               None if a_out is None else channel_full(1.0 / a_out, la.shape))
        if a_out is not None:
            af = channel_full(a_out, la.shape)
            la.theta_rel = compress(full(la.theta_rel, la.shape) / af, la.shape)
            if la.relation is not None:
                la.relation.scale = compress(full(la.relation.scale, la.shape) / af, la.shape)
                la.relation.shift = compress(full(la.relation.shift, la.shape) / af, la.shape)
    for la in snn.layers:
        if isinstance(la, PoolLayer) and la.name in fac and la.relation is not None:
            af = channel_full(fac[la.name], la.shape)
            la.relation.scale = compress(full(la.relation.scale, la.shape) / af, la.shape)
            la.relation.shift = compress(full(la.relation.shift, la.shape) / af, la.shape)
    snn.meta = dict(snn.meta)
    snn.meta["equalization"] = {k: {"min_factor": float(v.min()), "channels": int(v.size)}
                                for k, v in fac.items()}
    return snn, fac


# --- activation statistics and ticks --------------------------------------------------------------

@dataclass
class ActStats:
    """A random sample of each layer's values (input: normalised u in [0, 1])."""

    values: dict[str, np.ndarray]
    maxima: dict[str, float]


def act_stats(snn: SNN, batches, keep: int = 50_000, seed: int = 0) -> ActStats:
    rng = np.random.default_rng(seed)
    vals: dict[str, list[np.ndarray]] = {}
    mx: dict[str, float] = {}

    def obs(layer, v):
        if isinstance(layer, (NeuronLayer, InputLayer)):
            a = v.reshape(-1).numpy()
            mx[layer.name] = max(mx.get(layer.name, 0.0), float(a.max()) if a.size else 0.0)
            if a.size > keep // 4:
                a = rng.choice(a, keep // 4, replace=False)
            vals.setdefault(layer.name, []).append(a)

    for xb in batches:
        equivalent.forward(snn.layers, xb, observe=obs)
    out = {}
    for k, v in vals.items():
        a = np.concatenate(v)
        if a.size > keep:
            a = rng.choice(a, keep, replace=False)
        out[k] = a
    return ActStats(out, mx)


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
    if t.numel() > 20_000:  # a fixed subsample is plenty for choosing one number
        t = t[torch.linspace(0, t.numel() - 1, 20_000).long()]
    power = float((t * t).mean()) or 1.0
    alphas = torch.as_tensor(np.geomspace(0.05, 1.0, 40), dtype=torch.float32)[:, None]
    s = alphas * vmax / ticks
    q = torch.clamp(torch.floor(t[None, :] / s + 0.5), 0, ticks) * s
    e = ((t[None, :] - q) ** 2).mean(1)
    i = int(torch.argmin(e))
    return float(alphas[i, 0]) * vmax, float(e[i]) / power


def stage_layers(snn: SNN) -> dict[int, list]:
    st: dict[int, list] = {}
    for la in snn.layers:
        if isinstance(la, (InputLayer, NeuronLayer)):
            st.setdefault(la.stage, []).append(la)
    return st


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

    def err(k, t):
        tot = 0.0
        for la in stages[k]:
            if isinstance(la, NeuronLayer) and la.saturating:
                v = stats.values.get(la.name, np.zeros(1))
                s = la.cap / t
                q = np.clip(np.floor(v / s + 0.5), 0, t) * s
                tot += float(((v - q) ** 2).mean()) / (float((v * v).mean()) or 1.0)
            else:
                tot += best_range(stats.values.get(la.name, np.zeros(1)),
                                  stats.maxima.get(la.name, 0.0), t, rule)[1]
        return tot

    cache: dict[tuple[int, int], float] = {}

    def e(k, t):
        if (k, t) not in cache:
            cache[(k, t)] = err(k, t)
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


# --- weight steps ---------------------------------------------------------------------------------

def qmax(bits: int) -> int:
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


def row_steps(rows: np.ndarray, bits: int) -> np.ndarray:
    """Per-row step minimising the weight rounding error (sign weights: mean |w|)."""
    rows = np.asarray(rows, np.float64)
    absr = np.abs(rows)
    if bits == 1:
        s = absr.mean(1)
        return np.where(s > 0, s, 1.0)
    m = absr.max(1)
    q = qmax(bits)
    t = torch.as_tensor(rows)
    best_e = torch.full((rows.shape[0],), math.inf, dtype=torch.float64)
    best_s = torch.as_tensor(np.where(m > 0, m / q, 1.0))
    for a in np.linspace(0.3, 1.0, 36):
        s = torch.as_tensor(np.where(m > 0, a * m / q, 1.0))[:, None]
        e = ((t - torch.clamp(torch.round(t / s), -q, q) * s) ** 2).sum(1)
        better = e < best_e
        best_e = torch.where(better, e, best_e)
        best_s = torch.where(better, s[:, 0], best_s)
    return best_s.numpy()


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


def _channel_steps(folded: list[list[Op]], C: int, bits: int, per_channel: bool,
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


def _per_channel_max(ops: list[Op], wi: int, per_el: np.ndarray, C: int) -> np.ndarray:
    y = _to_layer(ops, wi, per_el)
    if y.ndim <= 1:
        return y.reshape(C)
    y = y.reshape(C, -1)
    return np.where(np.isnan(y).all(1), np.nan, np.nanmax(np.where(np.isnan(y), -np.inf, y), 1))


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


# --- the builder ----------------------------------------------------------------------------------

@dataclass
class QuantConfig:
    bits: int = 4
    time_bits: int | None = None
    latency: int | None = None
    per_channel: bool | None = None  # None: the profile's weight_scale
    first_last_bits: int | None = None  # e.g. 8 for binary nets
    equalize: float = 0.0  # strength: 0 off, 1 full
    round_activations: bool = True
    act_range: str | float = "mse"  # mse, max, or a percentile of the calibration values

    def check(self, prof: Profile) -> QuantConfig:
        if not 1 <= self.bits <= 8:
            raise UsageError(f"--quantize {self.bits}: weight bits must be 1..8")
        if self.bits > prof.max_weight_bits:
            raise UsageError(f"--quantize {self.bits} exceeds the profile's "
                             f"{prof.max_weight_bits}-bit weights")
        if self.first_last_bits is not None and not 1 <= self.first_last_bits <= 8:
            raise UsageError("first/last layer bits must be 1..8")
        if self.time_bits is not None and not 1 <= self.time_bits <= 16:
            raise UsageError(f"--time-bits {self.time_bits}: must be 1..16")
        if self.latency is not None and self.latency < 1:
            raise UsageError("--latency must be positive")
        return self


@dataclass
class Latent:
    """Real-valued (integer-unit) parameters that round to the integer model: what fine-tuning
    trains. ``weights[layer][group]`` is None for frozen groups."""

    weights: dict[str, list] = field(default_factory=dict)
    bias: dict[str, np.ndarray] = field(default_factory=dict)


def _round_ramp(r: np.ndarray, pow2: bool) -> np.ndarray:
    r = np.maximum(np.asarray(r, np.float64), 1.0)
    if pow2:
        return (2 ** np.round(np.log2(r))).astype(np.int64)
    return np.maximum(np.round(r), 1).astype(np.int64)


def quantize_weights(a: np.ndarray, bits: int) -> np.ndarray:
    if bits == 1:
        return np.where(a >= 0, 1.0, -1.0)
    q = qmax(bits)
    return np.clip(np.round(a), -q, q)


def build(snn: SNN, stats: ActStats, cfg: QuantConfig, prof: Profile) -> tuple[QNet, Latent]:
    """Post-training quantisation of an (equalised) SNN into a QNet plus its latent reals."""
    cfg.check(prof)
    cap = min(prof.max_ticks, 2 ** cfg.time_bits if cfg.time_bits else prof.max_ticks)
    ticks = allocate_ticks(snn, stats, cap, cfg.latency, cfg.act_range)
    per_channel = (prof.weight_scale == "per_channel") if cfg.per_channel is None \
        else cfg.per_channel
    first = {la.name for la in snn.layers if isinstance(la, (NeuronLayer, ReadoutLayer)) and
             any(g.source == snn.input.name for g in la.groups)}
    # time layout
    t_end: dict[int, int] = {}
    acc = 0
    for k in sorted(ticks):
        acc += ticks[k]
        t_end[k] = acc
    qlayers: list[QLayer] = []
    by: dict[str, QLayer] = {}
    lat = Latent()
    info: dict[str, dict] = {}
    for la in snn.layers:
        if isinstance(la, InputLayer):
            T = ticks[la.stage]
            q = QLayer(la.name, "input", tuple(la.shape), stage=0, t_min=0, t_max=T,
                       scale=np.array(1.0 / T), lo=np.asarray(la.lo, np.float64),
                       hi=np.asarray(la.hi, np.float64))
        elif isinstance(la, PoolLayer):
            src = by[la.source]
            q = QLayer(la.name, "pool", tuple(la.shape), stage=src.stage, t_min=src.t_min,
                       t_max=src.t_max, scale=src.scale, source=la.source,
                       pool=dict(kernel=tuple(la.kernel), stride=tuple(la.stride),
                                 pads_begin=tuple(la.pads_begin), pads_end=tuple(la.pads_end),
                                 dilation=tuple(la.dilation)),
                       minimum=np.asarray(la.minimum, bool))
        else:
            q, w_lat, b_lat, inf = _build_layer(la, snn, by, ticks, t_end, stats, cfg, prof,
                                                per_channel, first)
            lat.weights[la.name] = w_lat
            lat.bias[la.name] = b_lat
            info[la.name] = inf
        qlayers.append(q)
        by[la.name] = q
    net = QNet(qlayers, overflow=prof.overflow)
    set_widths(net, prof.i_bits, prof.v_bits)
    net.check()
    net.meta["quantization"] = {"ticks_per_stage": {str(k): int(v) for k, v in ticks.items()},
                                "cap": cap, "per_channel_weights": per_channel,
                                "round_activations": cfg.round_activations,
                                "profile": asdict(prof), "layers": info}
    return net, lat


def _build_layer(la, snn, by, ticks, t_end, stats, cfg, prof, per_channel, first):
    is_out = isinstance(la, ReadoutLayer)
    shape = tuple(la.shape)
    C = shape[0]
    bits = cfg.bits
    if cfg.first_last_bits is not None and (is_out or la.name in first):
        bits = cfg.first_last_bits
    # 1) fold each source's tick size into its group (value units per source tick)
    folded = []
    for g in la.groups:
        src = by[g.source]
        s_in = channel_full(src.scale, src.shape) if np.ndim(src.scale) else \
            np.full(src.shape, float(src.scale))
        folded.append(fold_chain(g.ops, src.shape, shape, s_in, None))
    # 2) weight step per layer channel: the optimum of the trainable groups, never below the
    #    step at which a frozen group (identity skip, concatenation, sum pool) would clip
    u_opt, u_hard = _channel_steps(folded, C, bits, per_channel, prof)
    # 3) tick size, ramp, final step
    inf: dict = {"bits": bits}
    if is_out:
        # one logit unit for every class: the hardware's argmax compares integers
        u = np.full(C, max(float(np.max(u_opt)), float(np.max(u_hard))))
        R = None
        s_n = u
        q = QLayer(la.name, "readout", shape, stage=la.stage, t_min=t_end[la.stage - 1],
                   t_max=t_end[la.stage - 1])
    else:
        T = ticks[la.stage]
        if la.saturating:
            X = float(la.cap)
        else:
            X, rel = best_range(stats.values.get(la.name, np.zeros(1)),
                                stats.maxima.get(la.name, 0.0), T, cfg.act_range)
            inf["rel_error"] = rel
        s_n, R = choose_ramp(np.full(C, X / T), u_opt, u_hard, prof)
        inf["range"] = float(np.max(s_n)) * T
        u = s_n / R
        q = QLayer(la.name, "neuron", shape, stage=la.stage, t_min=t_end[la.stage - 1],
                   t_max=t_end[la.stage])
        inf["ramp"] = [int(R.min()), int(R.max())]
    cs = (-1,) + (1,) * (len(shape) - 1)
    # 4) integer units: divide every group's output by u, round
    groups, w_lat = [], []
    for g, ops in zip(la.groups, folded):
        src = by[g.source]
        ops = fold_chain(ops, src.shape, shape, None, channel_full(1.0 / u, shape))
        if not any(op_array(o) is not None for o in ops):
            ops = ops + [ScaleOp(shape, scale=np.array(1.0))]
        wi = next(i for i, o in enumerate(ops) if op_array(o) is not None)
        op = ops[wi]
        trainable = op.kind in ("conv", "dense")
        gb = bits if trainable else prof.skip_bits
        real = np.asarray(op_array(op), np.float64)
        ops[wi] = _with_array(op, compress(quantize_weights(real, gb), np.shape(real))
                              if not trainable else quantize_weights(real, gb))
        w_lat.append(real.copy() if trainable else None)
        groups.append(QGroup(g.source, ops, delay=q.t_min - src.t_max, bits=gb))
    bias_val = -full(la.theta_rel, shape) if not is_out else full(la.bias, shape)
    b_real = bias_val / channel_full(u, shape)
    if not is_out and cfg.round_activations:
        b_real = b_real + channel_full(R // 2, shape)
    b_real = compress(b_real, shape)
    q.groups = groups
    q.bias = np.round(b_real).astype(np.int64)
    q.step = u.reshape(cs) if len(shape) > 1 else u
    q.scale = (s_n.reshape(cs) if len(shape) > 1 else s_n) if not is_out else q.step
    if R is not None:
        q.ramp = R.reshape(cs) if len(shape) > 1 else R
    return q, w_lat, b_real, inf


def with_latent(net: QNet, lat: Latent) -> QNet:
    """A copy of ``net`` whose integers are the rounded latents (after fine-tuning)."""
    net = copy.deepcopy(net)
    for la in net.layers:
        if la.name not in lat.weights:
            continue
        for g, w in zip(la.groups, lat.weights[la.name]):
            if w is None:
                continue
            wi = next(i for i, o in enumerate(g.ops) if op_array(o) is not None)
            g.ops[wi] = _with_array(g.ops[wi], quantize_weights(np.asarray(w), g.bits))
        la.bias = np.round(np.asarray(lat.bias[la.name], np.float64)).astype(np.int64)
    set_widths(net, *(net.meta.get("quantization", {}).get("profile", {}).get(k) for k in
                      ("i_bits", "v_bits")))
    net.check()
    return net
