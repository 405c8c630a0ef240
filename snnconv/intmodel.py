"""The integer TTFS network of spec section 5: the hardware model, its file, and two simulators.

Time is an integer tick; a neuron of layer n carries x_ticks = t_max - t in [0, T_n] (0 = silent).
A layer's potential at t_min is V0 = sum over groups of W_int x_ticks (delays line the windows up);
with theta = R*T - b the neuron fires at t_min + max(0, ceil((theta - V0)/R)), i.e.

    x_ticks = clip(floor((V0 + b) / R), 0, T)

``golden`` computes this closed form, vectorised. ``regsim`` steps the registers tick by tick in
the order of spec section 5 (I += W for spikes at k; phase 1 V += I; phase 2 compare, then
V += R) and flags overflow of the I and V registers (saturating or wrapping them per profile).
The two must agree bit for bit: that is the contract a hardware team verifies its RTL against.

Groups reuse the synaptic ops of ``snn.py``; their weight/scale arrays hold integers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import modelfile
from .errors import ModelFileError
from .fileio import atomic_write
from .snn import OPS, WEIGHTED, Op, kernels

FORMAT = "snnconv-snnq"
FORMAT_VERSION = 1
INT_OPS = WEIGHTED + ("scale",)
#: float32 sums of integers are exact below this magnitude; float64 below 2**53.
EXACT32 = 2 ** 24
EXACT64 = 2 ** 53


# --- data classes ---------------------------------------------------------------------------------

@dataclass
class QGroup:
    """Synapses from one source: integer op chain (at most one op with an integer array)."""

    source: str
    ops: list[Op]
    delay: int = 0  # ticks
    bits: int = 8  # signed width of its integer weights (1 = sign weights +-1)

    @property
    def weighted(self) -> Op | None:
        return next((o for o in self.ops if o.kind in INT_OPS), None)


@dataclass
class QLayer:
    name: str
    kind: str  # input | neuron | pool | readout
    shape: tuple
    stage: int = 0
    t_min: int = 0
    t_max: int = 0
    groups: list[QGroup] = field(default_factory=list)
    bias: np.ndarray | None = None  # int, broadcastable to shape (neuron, readout)
    ramp: np.ndarray | None = None  # R: positive int per layer or per channel (neuron)
    scale: np.ndarray | None = None  # real value of one tick (neuron/input/pool) or of one
    #                                  logit unit (readout), broadcastable to shape
    step: np.ndarray | None = None  # real value of one V unit (neuron/readout)
    widths: dict = field(default_factory=dict)  # {"I": bits, "V": bits}
    # input
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    # pool
    source: str = ""
    pool: dict = field(default_factory=dict)  # kernel, stride, pads_begin, pads_end, dilation
    minimum: np.ndarray | None = None

    @property
    def ticks(self) -> int:
        return self.t_max - self.t_min

    @property
    def theta(self) -> np.ndarray:
        return np.asarray(self.ramp, np.int64) * self.ticks - np.asarray(self.bias, np.int64)

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    def sources(self) -> list[str]:
        if self.kind == "pool":
            return [self.source]
        return [g.source for g in self.groups]


@dataclass
class QNet:
    layers: list[QLayer]
    overflow: str = "saturate"  # or "wrap"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.by_name = {la.name: la for la in self.layers}

    @property
    def input(self) -> QLayer:
        return self.layers[0]

    @property
    def output(self) -> QLayer:
        return self.layers[-1]

    @property
    def latency(self) -> int:
        return self.output.t_min

    def hidden(self) -> list[QLayer]:
        return [la for la in self.layers if la.kind == "neuron"]

    def pool_args(self, la: QLayer) -> tuple:
        p = la.pool
        return (p["kernel"], p["stride"], p["pads_begin"], p["pads_end"], p["dilation"],
                tuple(la.shape[1:]))

    def weight_count(self) -> tuple[int, float]:
        """(number of stored integer weights, weight memory in bytes at their bit widths)."""
        n, bits = 0, 0.0
        for la in self.layers:
            for g in la.groups:
                w = g.weighted
                if w is None:
                    continue
                a = np.asarray(w.weight if w.kind in ("conv", "dense") else w.scale)
                n += a.size
                bits += a.size * g.bits
        return n, bits / 8

    def check(self) -> None:
        seen: dict[str, QLayer] = {}
        for i, la in enumerate(self.layers):
            if (i == 0) != (la.kind == "input"):
                raise ValueError("the first layer, and only it, must be the input")
            for s in la.sources():
                if s not in seen:
                    raise ValueError(f"layer {la.name}: source {s} is not an earlier layer")
            for g in la.groups:
                shp = seen[g.source].shape
                for op in g.ops:
                    if tuple(op.in_shape) != tuple(shp):
                        raise ValueError(f"layer {la.name}: op {op.kind} expects {op.in_shape},"
                                         f" gets {shp}")
                    shp = op.out_shape
                if tuple(shp) != tuple(la.shape):
                    raise ValueError(f"layer {la.name}: group from {g.source} yields {shp}")
                if g.delay < 0 or seen[g.source].t_max + g.delay != la.t_min:
                    raise ValueError(f"layer {la.name}: delay from {g.source} does not line up")
                w = g.weighted
                if w is not None:
                    a = np.asarray(w.weight if w.kind in ("conv", "dense") else w.scale)
                    if np.any(a != np.round(a)):
                        raise ValueError(f"layer {la.name}: non-integer weights")
                    lim = 1 if g.bits == 1 else 2 ** (g.bits - 1) - 1
                    if np.abs(a).max(initial=0) > lim:
                        raise ValueError(f"layer {la.name}: weights exceed {g.bits} bits")
            if la.kind == "neuron":
                if la.ticks <= 0 or np.any(np.asarray(la.ramp) < 1):
                    raise ValueError(f"layer {la.name}: needs T >= 1 and R >= 1")
            seen[la.name] = la
        if self.layers[-1].kind != "readout":
            raise ValueError("the last layer must be the readout")


# --- shared arithmetic ----------------------------------------------------------------------------

def _t(a, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=like.dtype, device=like.device)


def encode_input(layer: QLayer, x, dtype=torch.float64) -> torch.Tensor:
    """Input value -> ticks: u = (x - lo)/(hi - lo) clipped to [0, 1], x_ticks = round(u*T)
    (half up), computed in float64 so every path encodes identically."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(torch.float64)
    lo = torch.as_tensor(np.asarray(layer.lo, np.float64))
    hi = torch.as_tensor(np.asarray(layer.hi, np.float64))
    u = torch.clamp((x - lo) / (hi - lo), 0.0, 1.0)
    return torch.floor(u * layer.ticks + 0.5).clamp(0, layer.ticks).to(dtype)


def op_array(op: Op) -> np.ndarray | None:
    if op.kind in ("conv", "dense"):
        return op.weight
    if op.kind in ("scale", "sumpool"):
        return op.scale
    return None


def apply_op(op: Op, x: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:
    """Apply an op with an explicit (torch) array for its weight/scale."""
    if a is None:
        return op.apply(x)
    if op.kind == "conv":
        return kernels.conv(x, a, None, op.stride, op.pads_begin, op.pads_end, op.dilation,
                            op.groups)
    if op.kind == "dense":
        return x.reshape(x.shape[0], -1) @ a.T
    if op.kind == "sumpool":
        y = kernels.pool(x, "sum", op.kernel, op.stride, op.pads_begin, op.pads_end,
                         op.dilation, op.out_spatial)
        return y * a
    if op.kind == "scale":
        return x * a
    raise ValueError(op.kind)


class Compiled:
    """Integer arrays of a QNet as torch tensors (converted once per run): all in ``dtype``, or
    with ``dtype=None`` each layer in the narrowest float dtype that holds its sums exactly
    (``layer_dtypes``)."""

    def __init__(self, net: QNet, dtype: torch.dtype | None):
        self.dtype = dtype
        self.dtypes = layer_dtypes(net) if dtype is None else \
            {la.name: dtype for la in net.layers}
        self.arrays: dict[tuple[str, int], list] = {}
        self.bias, self.ramp = {}, {}
        for la in net.layers:
            like = torch.zeros((), dtype=self.dtypes[la.name])
            for gi, g in enumerate(la.groups):
                self.arrays[(la.name, gi)] = [None if op_array(o) is None else
                                              _t(op_array(o), like) for o in g.ops]
            if la.bias is not None:
                self.bias[la.name] = _t(la.bias, like)
            if la.ramp is not None:
                self.ramp[la.name] = _t(la.ramp, like)

    def group(self, la: QLayer, gi: int, x: torch.Tensor) -> torch.Tensor:
        for op, a in zip(la.groups[gi].ops, self.arrays[(la.name, gi)]):
            x = apply_op(op, x, a)
        return x


def pool_values(net: QNet, la: QLayer, x: torch.Tensor) -> torch.Tensor:
    """Earliest spike = max of x_ticks (min of x_ticks on min-pool channels)."""
    args = net.pool_args(la)
    mins = np.asarray(la.minimum, bool).reshape(-1)
    if not mins.any():
        return kernels.pool(x, "max", *args)
    mx, mn = kernels.pool(x, "max", *args), kernels.pool(x, "min", *args)
    sel = torch.as_tensor(mins).reshape((1, -1) + (1,) * (len(la.shape) - 1))
    return torch.where(sel, mn, mx)


def abs_bounds(net: QNet) -> dict[str, dict[str, float]]:
    """Worst-case |I| and |V| per layer (over neurons), from |W|, T and b."""
    out = {}
    for la in net.layers:
        if la.kind not in ("neuron", "readout"):
            continue
        i_b = v_b = None
        for g in la.groups:
            src = net.by_name[g.source]
            ops = [_abs_op(o) for o in g.ops]
            ones = torch.ones((1, *src.shape), dtype=torch.float64)
            gi = ops_apply(ops, ones)[0]
            i_b = gi if i_b is None else i_b + gi
            v_b = gi * src.ticks if v_b is None else v_b + gi * src.ticks
        b = torch.as_tensor(np.abs(full_np(la.bias, la.shape)))
        if la.kind == "neuron":
            r = torch.as_tensor(full_np(la.ramp, la.shape))
            v_b = torch.maximum(v_b + r * la.ticks, b + r * la.ticks) + b
        else:
            v_b = v_b + b
        out[la.name] = {"I": float(i_b.max()), "V": float(v_b.max())}
    return out


def full_np(a, shape) -> np.ndarray:
    return np.broadcast_to(np.asarray(a, np.float64), shape).copy()


def _abs_op(op: Op) -> Op:
    if op.kind in ("conv", "dense"):
        return dataclasses.replace(op, weight=np.abs(op.weight))
    if op.kind in ("scale", "sumpool"):
        return dataclasses.replace(op, scale=np.abs(op.scale))
    return op


def ops_apply(ops: list[Op], x: torch.Tensor) -> torch.Tensor:
    for op in ops:
        x = op.apply(x)
    return x


def bits_for(bound: float) -> int:
    """Signed two's complement width holding every integer in [-bound, bound]."""
    return int(math.ceil(math.log2(bound + 1))) + 1 if bound > 0 else 1


def set_widths(net: QNet, i_bits: int | None = None, v_bits: int | None = None) -> None:
    """Register widths from the worst-case bounds, or the profile's fixed widths."""
    for name, b in abs_bounds(net).items():
        la = net.by_name[name]
        la.widths = {"I": i_bits or bits_for(b["I"]), "V": v_bits or bits_for(b["V"]),
                     "I_needed": bits_for(b["I"]), "V_needed": bits_for(b["V"])}


def layer_dtypes(net: QNet) -> dict[str, torch.dtype]:
    """Per layer, float32 when every partial sum of that layer stays below 2**24, else float64:
    one layer with a wide register (a huge ramp, say) does not send the whole net to float64,
    which has no fast convolution on the CPU. Layers without sums (input, pool) take float32:
    tick counts are small integers."""
    bounds = abs_bounds(net)
    out = {}
    for la in net.layers:
        worst = bounds.get(la.name, {"V": 0.0})["V"]
        if worst >= EXACT64:
            raise ValueError(f"layer {la.name}: integer sums exceed 2**53; the model cannot be "
                             "evaluated exactly")
        out[la.name] = torch.float32 if worst < EXACT32 else torch.float64
    return out


def exact_dtype(net: QNet) -> torch.dtype:
    """The one float dtype that holds every layer's sums exactly: the widest of
    ``layer_dtypes``."""
    return torch.float64 if torch.float64 in layer_dtypes(net).values() else torch.float32


def _limit(v: torch.Tensor, bits: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a register's width: returns (value, overflow mask)."""
    hi = 2 ** (bits - 1) - 1
    lo = -(2 ** (bits - 1))
    if v.numel() == 0:
        return v, None
    mn, mx = torch.aminmax(v)
    if int(mn) >= lo and int(mx) <= hi:
        return v, None
    if v.is_floating_point():  # exact integers in a float dtype: wrap in int64, exactly
        w, bad = _limit(v.to(torch.int64), bits, mode)
        return w.to(v.dtype), bad
    bad = (v > hi) | (v < lo)
    if mode == "wrap":
        m = 2 ** bits
        return torch.remainder(v - lo, m) + lo, bad
    return torch.clamp(v, lo, hi), bad


# --- closed-form golden model ---------------------------------------------------------------------

@dataclass
class IntResult:
    logits: torch.Tensor  # int64 (N, classes): V(t_min) + b of the readout
    ticks: dict[str, torch.Tensor] = field(default_factory=dict)  # x_ticks per layer (record)
    spikes: dict[str, int] = field(default_factory=dict)  # neuron-samples with x > 0
    overflow: dict[str, int] = field(default_factory=dict)  # neuron-samples that overflowed
    samples: int = 0

    def spikes_per_neuron(self, net: QNet) -> float:
        hid = net.hidden()
        tot = sum(la.size for la in hid) * max(1, self.samples)
        return sum(self.spikes.get(la.name, 0) for la in hid) / max(1, tot)

    def real_logits(self, net: QNet) -> torch.Tensor:
        return self.logits.to(torch.float64) * _t(net.output.scale, torch.zeros(
            (), dtype=torch.float64))


def _consumers(net: QNet) -> dict[str, int]:
    n: dict[str, int] = {}
    for la in net.layers:
        for s in la.sources():
            n[s] = n.get(s, 0) + 1
    return n


@torch.no_grad()
def golden(net: QNet, x, record: bool | set = False, dtype: torch.dtype | None = None,
           noise: float = 0.0, generator: torch.Generator | None = None,
           compiled: Compiled | None = None) -> IntResult:
    """Closed-form integer model on a batch. ``noise``: Gaussian spike jitter in ticks (rounded to
    whole ticks; silent neurons do not jitter; a jittered spike is clipped to its window).
    ``dtype``: one float dtype for every layer; None: per layer (``layer_dtypes``). Exact
    either way: the result does not depend on it."""
    comp = compiled if compiled is not None and compiled.dtype == dtype else Compiled(net, dtype)
    uses = _consumers(net)
    env: dict[str, torch.Tensor] = {}
    res = IntResult(logits=None)
    for la in net.layers:
        if la.kind == "input":
            v = encode_input(la, x, comp.dtypes[la.name])
            res.samples = v.shape[0]
        elif la.kind == "pool":
            v = pool_values(net, la, env[la.source])
        else:
            z = None
            d = comp.dtypes[la.name]
            for gi, g in enumerate(la.groups):
                y = comp.group(la, gi, env[g.source].to(d))
                z = y if z is None else z + y
            v = _fire_in_range(la, z, comp, noise, generator)
            if v is not None:  # the usual case: no register can overflow on this batch
                res.overflow[la.name] = 0
                if la.kind == "readout":
                    res.logits = v
                    break
            else:
                v = _fire_int64(la, z, d, net.overflow, res, noise, generator)
                if la.kind == "readout":
                    break
        if la.kind in ("neuron", "pool"):
            res.spikes[la.name] = int(torch.count_nonzero(v))  # ticks are >= 0
        if record is True or (isinstance(record, set) and la.name in record):
            res.ticks[la.name] = v.to(torch.int64)
        env[la.name] = v
        for s in la.sources():
            uses[s] -= 1
            if uses[s] == 0:
                env.pop(s, None)
    return res


def _fire_int64(la: QLayer, z: torch.Tensor, d: torch.dtype, mode: str, res: IntResult,
                noise: float, generator: torch.Generator | None) -> torch.Tensor:
    """The layer's output when a register may overflow: int64, V wrapped or saturated, every
    overflow counted in ``res.overflow``; the readout's logits go to ``res.logits``."""
    z, bad = _limit(z.to(torch.int64), la.widths["V"], mode)
    nb = 0 if bad is None else int(bad.sum())
    if bad is None:
        bad = torch.zeros((), dtype=torch.bool)
    if la.kind == "readout":
        res.logits = z + torch.as_tensor(np.asarray(la.bias, np.int64))
        res.overflow[la.name] = nb
        return res.logits
    r = torch.as_tensor(np.asarray(la.ramp, np.int64))
    end = z + r * la.ticks  # V after the last phase-2 tick
    hi, lo = 2 ** (la.widths["V"] - 1) - 1, -(2 ** (la.widths["V"] - 1))
    nb += int((((end > hi) | (end < lo)) & ~bad).sum())
    res.overflow[la.name] = nb
    b = torch.as_tensor(np.asarray(la.bias, np.int64))
    xi = torch.clamp(torch.div(z + b, r, rounding_mode="floor"), 0, la.ticks)
    return _jitter(xi.to(d), la.ticks, noise, generator)


def _jitter(v: torch.Tensor, ticks: int, noise: float, generator) -> torch.Tensor:
    """Gaussian spike-time jitter of ``noise`` ticks, rounded to whole ticks; silent neurons
    do not jitter; a jittered spike stays in its window."""
    if not noise:
        return v
    jit = torch.round(torch.randn(v.shape, generator=generator, dtype=torch.float64) * noise)
    return torch.where(v > 0, torch.clamp(v + jit.to(v.dtype), 0, ticks), v)


def _fire_in_range(la: QLayer, z: torch.Tensor, comp: Compiled, noise: float,
                   generator: torch.Generator | None) -> torch.Tensor | None:
    """A layer's output from its potential z (integers held exactly in z's float dtype) when
    no V register overflows: readout logits (int64), or x_ticks = clamp(floor((z + b) / R), 0,
    T) in z's dtype. None when a register might overflow (the caller's int64 path then counts
    it exactly). Float division floors exactly here: for integers |p| < 2^24 (2^53 in float64,
    ``layer_dtypes``) a non-integer p / R is at least 1 / R from every integer and the rounding
    error is below |p| 2^-24 / R. One new tensor, then in place: the int64 path's conversions
    and int64 division cost more than the convolutions."""
    bits = la.widths["V"]
    hi, lo = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
    if z.numel() == 0:
        return None
    zmin, zmax = (float(t) for t in torch.aminmax(z))
    if zmin < lo or zmax > hi:
        return None
    if la.kind == "readout":
        return z.to(torch.int64) + torch.as_tensor(np.asarray(la.bias, np.int64))
    r = np.asarray(la.ramp, np.float64)
    if zmin + float(r.min()) * la.ticks < lo or zmax + float(r.max()) * la.ticks > hi:
        return None  # V after the last phase-2 tick might leave the register
    v = torch.add(z, comp.bias[la.name]).div_(comp.ramp[la.name]).floor_().clamp_(0, la.ticks)
    return _jitter(v, la.ticks, noise, generator)


def fire_ticks(la: QLayer, x_ticks: torch.Tensor) -> torch.Tensor:
    """Absolute firing tick of each neuron, -1 where silent."""
    t = la.t_max - x_ticks.to(torch.int64)
    return torch.where(x_ticks > 0, t, torch.full_like(t, -1))


# --- register-level simulator ---------------------------------------------------------------------

@torch.no_grad()
def regsim(net: QNet, x, record: bool | set = False, dtype: torch.dtype | None = None) -> IntResult:
    """Tick-by-tick simulation of the I and V registers (spec section 5 event order).

    Spike trains are kept as absolute firing ticks (-1 = silent); a layer's synapse groups see a
    source spike at its firing tick plus the group's delay. ``dtype`` of the registers: one for
    every layer, or None for each layer's own (``layer_dtypes``); exact either way.
    """
    comp = Compiled(net, dtype)  # None: per-layer precision, as golden
    uses = _consumers(net)
    env: dict[str, torch.Tensor] = {}  # firing ticks (int64), -1 = silent
    res = IntResult(logits=None)
    for la in net.layers:
        if la.kind == "input":
            xt = encode_input(la, x, torch.float64).to(torch.int64)
            tk = fire_ticks(la, xt)
            res.samples = tk.shape[0]
        elif la.kind == "pool":
            tk = _pool_ticks(net, la, env[la.source])
        else:
            tk, ov, logits = _layer_ticks(net, la, comp, env, comp.dtypes[la.name])
            res.overflow[la.name] = ov
            if la.kind == "readout":
                res.logits = logits
                break
        if la.kind in ("neuron", "pool"):
            res.spikes[la.name] = int((tk >= 0).sum())
        if record is True or (isinstance(record, set) and la.name in record):
            res.ticks[la.name] = torch.where(tk >= 0, la.t_max - tk, torch.zeros_like(tk))
        env[la.name] = tk
        for s in la.sources():
            uses[s] -= 1
            if uses[s] == 0:
                env.pop(s, None)
    return res


def _pool_ticks(net: QNet, la: QLayer, src: torch.Tensor) -> torch.Tensor:
    """A pool unit has no register: its output line is the OR (max-pool) or the AND (min-pool
    channels) of its input spike lines, so it first carries a spike at the earliest input
    firing tick (OR) or, once every input has fired, at the latest (AND; never if one stays
    silent). Padded taps carry no line."""
    args = net.pool_args(la)
    mins = np.asarray(la.minimum, bool).reshape(-1)
    # silent (-1), or outside the pool's window: never
    live = (src >= la.t_min) & (src < la.t_max)
    t = torch.where(live, src.to(torch.float64), math.inf)
    y = None
    if not mins.all():
        y = kernels.pool(t, "min", *args)  # padded taps are +inf: never first
    if mins.any():
        last = kernels.pool(t, "max", *args)  # padded taps are -inf: never last
        if y is None:
            y = last
        else:
            sel = torch.as_tensor(mins).reshape((1, -1) + (1,) * (len(la.shape) - 1))
            y = torch.where(sel, last, y)
    return torch.nan_to_num(y, posinf=-1.0).to(torch.int64)


def _layer_ticks(net: QNet, la: QLayer, comp: Compiled, env, dtype):
    """The registers of one layer, tick by tick. I and V hold integers in ``dtype`` (exact: every
    value the registers can take is below 2^24, or 2^53 in float64, ``layer_dtypes``), updated
    in place; a register that leaves its width is wrapped or saturated exactly (``_limit``)."""
    n = next(iter(env.values())).shape[0]
    shape = (n, *la.shape)
    wv, wi = la.widths["V"], la.widths["I"]
    mode = net.overflow
    V = torch.zeros(shape, dtype=dtype)
    current = torch.zeros(shape, dtype=dtype)
    bad = torch.zeros(shape, dtype=torch.bool)
    out = torch.full(shape, -1, dtype=torch.int64)
    fired = torch.zeros(shape, dtype=torch.bool)
    # arrival tick of each source spike at this layer's synapses
    arrivals = []
    k0 = la.t_min
    for g in la.groups:
        src_t = env[g.source]
        arr = torch.where(src_t >= 0, src_t + g.delay, torch.full_like(src_t, -1))
        arrivals.append(arr)
        hit = arr[arr >= 0]
        if hit.numel():
            k0 = min(k0, int(hit.min()))
    is_out = la.kind == "readout"
    k_end = la.t_min if is_out else la.t_max
    if not is_out:
        R = comp.ramp[la.name]
        theta = torch.as_tensor(np.asarray(la.theta, np.float64), dtype=dtype)
    # the ticks at which any spike arrives (others only integrate I)
    busy = set()
    for arr in arrivals:
        busy.update(torch.unique(arr[arr >= 0]).tolist())
    for k in range(k0, k_end):
        for gi, arr in enumerate(arrivals):
            if k not in busy:
                break
            current.add_(comp.group(la, gi, (arr == k).to(dtype)))
            current, b = _limit(current, wi, mode)
            if b is not None:
                bad |= b
        if k < la.t_min:
            V, b = _limit(V.add_(current), wv, mode)
        else:
            fire = (V >= theta).logical_and_(~fired)
            out.masked_fill_(fire, k)
            fired.logical_or_(fire)
            V, b = _limit(V.add_(R), wv, mode)
        if b is not None:
            bad |= b
    logits = None
    if is_out:
        logits = V.to(torch.int64) + torch.as_tensor(np.asarray(la.bias, np.int64))
    return out, int(bad.sum()), logits


# --- file -----------------------------------------------------------------------------------------

def _arr(tensors: dict, key: str, a, dtype) -> str:
    tensors[key] = np.ascontiguousarray(np.asarray(a).astype(dtype))
    return key


def _int_dtype(a: np.ndarray):
    m = float(np.abs(a).max(initial=0))
    for dt, lim in ((np.int8, 127), (np.int16, 32767), (np.int32, 2 ** 31 - 1)):
        if m <= lim:
            return dt
    return np.int64


def to_header(net: QNet) -> tuple[dict, dict[str, np.ndarray]]:
    tensors: dict[str, np.ndarray] = {}
    layers = []
    for i, la in enumerate(net.layers):
        key = f"layers.{i}"
        d = {"name": la.name, "kind": la.kind, "shape": list(la.shape), "stage": la.stage,
             "t_min": int(la.t_min), "t_max": int(la.t_max), "ticks": int(la.ticks)}
        if la.scale is not None:
            d["scale"] = _arr(tensors, f"{key}.scale", la.scale, np.float64)
        if la.step is not None:
            d["step"] = _arr(tensors, f"{key}.step", la.step, np.float64)
        if la.kind == "input":
            d["lo"] = _arr(tensors, f"{key}.lo", la.lo, np.float64)
            d["hi"] = _arr(tensors, f"{key}.hi", la.hi, np.float64)
            d["encoding"] = "x_ticks = clip(floor(clip((x - lo)/(hi - lo), 0, 1) * ticks + 0.5)" \
                            ", 0, ticks) in float64; spike at tick t_max - x_ticks, none if 0"
        if la.kind == "pool":
            d.update(source=la.source, **{k: list(v) for k, v in la.pool.items()},
                     minimum=_arr(tensors, f"{key}.minimum", la.minimum, np.uint8))
        if la.kind in ("neuron", "readout"):
            d["bias"] = _arr(tensors, f"{key}.bias", la.bias, np.int64)
            d["widths"] = dict(la.widths)
            groups = []
            for gi, g in enumerate(la.groups):
                ops = []
                for oi, op in enumerate(g.ops):
                    arrays = {}
                    for name, a in op.arrays().items():
                        k = f"{key}.groups.{gi}.ops.{oi}.{name}"
                        a = np.asarray(a)
                        arrays[name] = _arr(tensors, k, a, _int_dtype(a))
                    ops.append({"kind": op.kind, "in_shape": list(op.in_shape),
                                "params": op.params(), "arrays": arrays})
                groups.append({"source": g.source, "delay": int(g.delay), "bits": int(g.bits),
                               "ops": ops})
            d["groups"] = groups
        if la.kind == "neuron":
            d["ramp"] = _arr(tensors, f"{key}.ramp", la.ramp, np.int64)
            d["theta"] = _arr(tensors, f"{key}.theta", la.theta, np.int64)
        layers.append(d)
    header = {"layers": layers, "overflow": net.overflow, "latency_ticks": int(net.latency),
              "meta": net.meta}
    return header, tensors


def from_header(header: dict, tensors: dict, name: str = "") -> QNet:
    def T(k):
        if k not in tensors:
            raise ModelFileError(f"{name}: tensor '{k}' missing")
        return tensors[k]

    layers = []
    try:
        for d in header["layers"]:
            kw = dict(name=d["name"], kind=d["kind"], shape=tuple(int(v) for v in d["shape"]),
                      stage=int(d["stage"]), t_min=int(d["t_min"]), t_max=int(d["t_max"]))
            if d["kind"] not in ("input", "neuron", "pool", "readout"):
                raise ModelFileError(f"{name}: unknown layer kind '{d['kind']}'")
            for k in ("scale", "step", "lo", "hi"):
                if k in d:
                    kw[k] = T(d[k])
            if d["kind"] == "pool":
                kw.update(source=d["source"], minimum=T(d["minimum"]).astype(bool),
                          pool={k: tuple(int(v) for v in d[k]) for k in
                                ("kernel", "stride", "pads_begin", "pads_end", "dilation")})
            if d["kind"] in ("neuron", "readout"):
                kw["bias"] = T(d["bias"]).astype(np.int64)
                kw["widths"] = {k: int(v) for k, v in d["widths"].items()}
                groups = []
                for g in d["groups"]:
                    ops = []
                    for o in g["ops"]:
                        cls = OPS.get(o["kind"])
                        if cls is None:
                            raise ModelFileError(f"{name}: unknown op kind '{o['kind']}'")
                        p = {k: (tuple(v) if isinstance(v, list) else v)
                             for k, v in o["params"].items()}
                        p.update({k: T(v).astype(np.float64) for k, v in o["arrays"].items()})
                        ops.append(cls(tuple(int(v) for v in o["in_shape"]), **p))
                    groups.append(QGroup(g["source"], ops, int(g["delay"]), int(g["bits"])))
                kw["groups"] = groups
            if d["kind"] == "neuron":
                kw["ramp"] = T(d["ramp"]).astype(np.int64)
            la = QLayer(**kw)
            if d["kind"] == "neuron" and not np.array_equal(
                    np.broadcast_to(la.theta, np.shape(T(d["theta"]))), T(d["theta"])):
                raise ModelFileError(f"{name}: layer {la.name}: theta != R*T - bias")
            layers.append(la)
        net = QNet(layers, overflow=header.get("overflow", "saturate"),
                   meta=header.get("meta") or {})
        if net.overflow not in ("saturate", "wrap"):
            raise ModelFileError(f"{name}: unknown overflow mode '{net.overflow}'")
        net.check()
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ModelFileError(f"{name}: inconsistent integer model file ({type(e).__name__}: {e})"
                             ) from None
    return net


def save(net: QNet, path) -> Path:
    header, tensors = to_header(net)
    atomic_write(path, modelfile.pack(FORMAT, FORMAT_VERSION, header, tensors))
    return Path(path)


def load(path) -> QNet:
    header, tensors = modelfile.unpack(path, FORMAT, FORMAT_VERSION)
    return from_header(header, tensors, str(path))


# --- file-level functions behind the CLI ----------------------------------------------------------

def _batches(x, batch_size):
    for i in range(0, len(x), batch_size):
        yield i, np.asarray(x[i:i + batch_size], dtype=np.float64)


def run_file(path, data, out=None, batch_size: int = 512, noise: float = 0.0,
             seed: int = 0) -> dict:
    """Predictions of the golden model from the file alone; optional PRED.npz."""
    from . import data as data_mod
    from .fileio import check_output

    net = load(path)
    ds = data_mod.load(data, tuple(net.input.shape))
    if out is not None:
        check_output(out, [path, data])
    comp = Compiled(net, None)  # per-layer precision: exact, and float32 where it can be
    gen = torch.Generator().manual_seed(seed)
    logits, preds = [], []
    spikes = {la.name: 0 for la in net.hidden()}
    ovf = 0
    for _, xb in _batches(ds.x, batch_size):
        r = golden(net, xb, compiled=comp, noise=noise, generator=gen)
        logits.append(r.logits.numpy())
        preds.append(r.logits.argmax(1).numpy())
        for k in spikes:
            spikes[k] += r.spikes.get(k, 0)
        ovf += sum(r.overflow.values())
    logits = np.concatenate(logits)
    pred = np.concatenate(preds)
    n = len(pred)
    hid = net.hidden()
    spn = sum(spikes.values()) / max(1, n * sum(la.size for la in hid))
    res = {"model": str(path), "samples": n, "latency_ticks": net.latency,
           "spikes_per_neuron": spn, "overflow": ovf}
    if ds.y is not None:
        res["accuracy"] = float((pred == ds.y).mean())
    if out is not None:
        buf = __import__("io").BytesIO()
        np.savez(buf, pred=pred, logits=logits,
                 real_logits=logits * np.asarray(net.output.scale, np.float64))
        atomic_write(out, buf.getvalue())
        res["output"] = str(out)
    return res


def verify_integer(path, data, batch_size: int = 256, limit: int | None = None,
                   progress: bool = False) -> dict:
    """Golden model vs register-level simulator on every sample: logits and every layer's spike
    ticks must agree bit for bit; overflow counts are reported. ``ok`` is the verdict."""
    from . import data as data_mod

    net = load(path) if not isinstance(path, QNet) else path
    ds = data_mod.load(data, tuple(net.input.shape))
    n = len(ds) if limit is None else min(limit, len(ds))
    names = {la.name for la in net.layers if la.kind in ("neuron", "pool")}
    diff_layers: dict[str, int] = {}
    logit_diff = 0
    overflow: dict[str, int] = {}
    correct = 0
    from .progress import bar

    with bar("verifying (integer)", n, progress) as adv:
        for i, xb in _batches(ds.x[:n], batch_size):
            g = golden(net, xb, record=names)
            r = regsim(net, xb, record=names)
            logit_diff += int((g.logits != r.logits).any(1).sum())
            for k in names:
                d = int((g.ticks[k] != r.ticks[k]).reshape(len(xb), -1).any(1).sum())
                if d:
                    diff_layers[k] = diff_layers.get(k, 0) + d
            for k, v in r.overflow.items():
                overflow[k] = overflow.get(k, 0) + v + g.overflow.get(k, 0)
            if ds.y is not None:
                correct += int((g.logits.argmax(1).numpy() == ds.y[i:i + len(xb)]).sum())
            adv(len(xb))
    ok = logit_diff == 0 and not diff_layers
    res = {"model": str(path), "samples": n, "ok": ok, "logit_mismatches": logit_diff,
           "layer_mismatches": diff_layers, "overflow": overflow,
           "overflow_total": sum(overflow.values()), "latency_ticks": net.latency}
    if ds.y is not None:
        res["accuracy"] = correct / max(1, n)
    return res
