"""Post-training quantisation: the float SNN becomes a QNet (integers) plus its latent reals.

Layer by layer, in order (every source is built before its consumers):
1. fold each source's tick size into the group's synapses (value units per source tick);
2. choose the weight step per layer channel (``ticks.channel_steps``): the optimum of the
   trainable groups, never below the step at which a frozen skip would clip;
3. choose tick size and ramp (``ticks.choose_ramp``), hence the final step u = s_n / R; the
   readout gets one logit unit for every class;
4. divide every group's output by u and round onto the weight levels;
5. bias b_int = round(b / u) + floor(R / 2): the integer model's floor then rounds to nearest.
docs/finetune.md explains the choices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UsageError
from ..intmodel import (
    QGroup, QInput, QLayer, QNet, QNeuron, QPool, QReadout, op_array, set_widths,
)
from ..mapping import compress, full
from ..snn import SNN, InputLayer, NeuronLayer, PoolLayer, ReadoutLayer, ScaleOp
from .fold import channel_full, fold_chain
from .latent import Latent
from .levels import quantize_weights
from .profile import Profile
from .stats import ActStats
from .ticks import allocate_ticks, best_range, channel_steps, choose_ramp


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
class _Plan:
    """What every layer's build reads: the network-wide choices made before the first layer."""

    ticks: dict[int, int]  # ticks per stage
    t_end: dict[int, int]  # the tick at which each stage's window ends
    stats: ActStats
    cfg: QuantConfig
    prof: Profile
    per_channel: bool  # weight steps per output channel (else per layer)
    first: set[str]  # layers fed by the network input (first_last_bits applies)


def build(snn: SNN, stats: ActStats, cfg: QuantConfig, prof: Profile) -> tuple[QNet, Latent]:
    """Post-training quantisation of an (equalised) SNN into a QNet plus its latent reals."""
    cfg.check(prof)
    cap = min(prof.max_ticks, 2 ** cfg.time_bits if cfg.time_bits else prof.max_ticks)
    ticks = allocate_ticks(snn, stats, cap, cfg.latency, cfg.act_range)
    per_channel = (prof.weight_scale == "per_channel") if cfg.per_channel is None \
        else cfg.per_channel
    plan = _Plan(ticks, _time_layout(ticks), stats, cfg, prof, per_channel, _first_layers(snn))
    qlayers: list[QLayer] = []
    by: dict[str, QLayer] = {}
    lat = Latent()
    info: dict[str, dict] = {}
    for la in snn.layers:
        if isinstance(la, InputLayer):
            q = _input_layer(la, ticks[la.stage])
        elif isinstance(la, PoolLayer):
            q = _pool_layer(la, by[la.source])
        else:
            q, lat.weights[la.name], lat.bias[la.name], info[la.name] = \
                _build_layer(la, by, plan)
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


def _time_layout(ticks: dict[int, int]) -> dict[int, int]:
    """Stages follow each other: stage k's window ends after the ticks of stages 0..k."""
    t_end: dict[int, int] = {}
    acc = 0
    for k in sorted(ticks):
        acc += ticks[k]
        t_end[k] = acc
    return t_end


def _first_layers(snn: SNN) -> set[str]:
    return {la.name for la in snn.layers if isinstance(la, (NeuronLayer, ReadoutLayer)) and
            any(g.source == snn.input.name for g in la.groups)}


def _input_layer(la: InputLayer, T: int) -> QLayer:
    return QInput(la.name, tuple(la.shape), stage=0, t_min=0, t_max=T,
                  scale=np.array(1.0 / T), lo=np.asarray(la.lo, np.float64),
                  hi=np.asarray(la.hi, np.float64))


def _pool_layer(la: PoolLayer, src: QLayer) -> QLayer:
    """Pools take their source's window and tick size (a max of ticks is the max of values)."""
    return QPool(la.name, tuple(la.shape), stage=src.stage, t_min=src.t_min,
                 t_max=src.t_max, scale=src.scale, source=la.source,
                 pool=dict(kernel=tuple(la.kernel), stride=tuple(la.stride),
                           pads_begin=tuple(la.pads_begin), pads_end=tuple(la.pads_end),
                           dilation=tuple(la.dilation)),
                 minimum=np.asarray(la.minimum, bool))


def _build_layer(la, by: dict[str, QLayer], plan: _Plan):
    """A neuron or readout layer: (QLayer, latent weights per group, latent bias, info)."""
    is_out = isinstance(la, ReadoutLayer)
    shape = tuple(la.shape)
    bits = plan.cfg.bits
    if plan.cfg.first_last_bits is not None and (is_out or la.name in plan.first):
        bits = plan.cfg.first_last_bits
    folded = [fold_chain(g.ops, by[g.source].shape, shape, _tick_sizes(by[g.source]), None)
              for g in la.groups]
    u_opt, u_hard = channel_steps(folded, shape[0], bits, plan.per_channel, plan.prof)
    inf: dict = {"bits": bits}
    if is_out:
        q, s_n, R = _readout_units(la, shape, u_opt, u_hard, plan.t_end)
        u = s_n
    else:
        q, s_n, R = _neuron_units(la, shape, u_opt, u_hard, plan, inf)
        u = s_n / R
    groups, w_lat = [], []
    for g, ops in zip(la.groups, folded):
        qg, w = _integer_group(g.source, ops, by[g.source], q, shape, u, bits, plan.prof)
        groups.append(qg)
        w_lat.append(w)
    b_real = _latent_bias(la, shape, u, R, plan.cfg.round_activations)
    _set_units(q, groups, b_real, u, s_n, R, shape)
    return q, w_lat, b_real, inf


def _tick_sizes(src: QLayer) -> np.ndarray:
    """The source's tick size at each of its positions."""
    return channel_full(src.scale, src.shape) if np.ndim(src.scale) else \
        np.full(src.shape, float(src.scale))


def _readout_units(la, shape, u_opt, u_hard, t_end):
    """One logit unit for every class (the hardware's argmax compares integers): (q, u, None)."""
    u = np.full(shape[0], max(float(np.max(u_opt)), float(np.max(u_hard))))
    q = QReadout(la.name, shape, stage=la.stage, t_min=t_end[la.stage - 1],
                 t_max=t_end[la.stage - 1])
    return q, u, None


def _neuron_units(la, shape, u_opt, u_hard, plan: _Plan, inf: dict):
    """Tick size from the layer's range (or its cap) and the ramp: (q, s_n, R); the range,
    its error and the ramps go to ``inf``."""
    T = plan.ticks[la.stage]
    if la.saturating:
        X = float(la.cap)
    else:
        X, rel = best_range(plan.stats.values.get(la.name, np.zeros(1)),
                            plan.stats.maxima.get(la.name, 0.0), T, plan.cfg.act_range)
        inf["rel_error"] = rel
    s_n, R = choose_ramp(np.full(shape[0], X / T), u_opt, u_hard, plan.prof)
    inf["range"] = float(np.max(s_n)) * T
    t_end = plan.t_end
    q = QNeuron(la.name, shape, stage=la.stage, t_min=t_end[la.stage - 1],
                t_max=t_end[la.stage])
    inf["ramp"] = [int(R.min()), int(R.max())]
    return q, s_n, R


def _integer_group(source: str, ops, src: QLayer, q: QLayer, shape, u: np.ndarray, bits: int,
                   prof: Profile) -> tuple[QGroup, np.ndarray | None]:
    """A group in V units (output divided by u) with its array rounded: trainable weights to
    ``bits`` (latent: the real array), frozen arrays to the profile's ``skip_bits``."""
    ops = fold_chain(ops, src.shape, shape, None, channel_full(1.0 / u, shape))
    if not any(op_array(o) is not None for o in ops):
        ops = ops + [ScaleOp(shape, scale=np.array(1.0))]
    wi = next(i for i, o in enumerate(ops) if op_array(o) is not None)
    op = ops[wi]
    trainable = op.kind in ("conv", "dense")
    gb = bits if trainable else prof.skip_bits
    real = np.asarray(op_array(op), np.float64)
    ops[wi] = op.with_array(compress(quantize_weights(real, gb), np.shape(real))
                         if not trainable else quantize_weights(real, gb))
    return QGroup(source, ops, delay=q.t_min - src.t_max, bits=gb), \
        (real.copy() if trainable else None)


def _latent_bias(la, shape, u: np.ndarray, R, rounding: bool) -> np.ndarray:
    """The bias in V units; a neuron's carries floor(R / 2) so that the floor rounds."""
    is_out = isinstance(la, ReadoutLayer)
    bias_val = -full(la.theta_rel, shape) if not is_out else full(la.bias, shape)
    b_real = bias_val / channel_full(u, shape)
    if not is_out and rounding:
        b_real = b_real + channel_full(R // 2, shape)
    return compress(b_real, shape)


def _set_units(q: QLayer, groups, b_real, u, s_n, R, shape) -> None:
    """Give ``q`` its groups, integer bias, step, tick size (readout: its unit) and ramp."""
    cs = (-1,) + (1,) * (len(shape) - 1)
    is_out = R is None
    q.groups = groups
    q.bias = np.round(b_real).astype(np.int64)
    q.step = u.reshape(cs) if len(shape) > 1 else u
    q.scale = (s_n.reshape(cs) if len(shape) > 1 else s_n) if not is_out else q.step
    if R is not None:
        q.ramp = R.reshape(cs) if len(shape) > 1 else R
