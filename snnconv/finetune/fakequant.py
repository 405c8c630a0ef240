"""Hardware-aware fine-tuning: train the integer network's real-valued latents with fake
quantisation and straight-through gradients, then export the integers (spec section 5).

The forward pass computes exactly what the integer golden model computes (integer weights,
floor requantisation, clipping at T ticks, integer logits); only the backward pass differs:
round/floor pass gradients straight through, and the clip passes them where 0 < V/R < T, which is
the B=1 TTFS gradient (equal to the ReLU network's). Jitter (``noise``, in ticks) is added to
spiking neurons only and clipped to the window.
"""

from __future__ import annotations

import copy
import io
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import data as data_mod, equivalent, intmodel, ptq, quant
from .errors import DataError, UsageError
from .fileio import atomic_write, check_output, sha256_file
from .intmodel import QNet, apply_op, encode_input, op_array, pool_values
from .snn import SNN

# --- fake-quant network ---------------------------------------------------------------------------


class FakeQuantNet(torch.nn.Module):
    """The integer network with trainable latents. ``forward`` returns integer logits (as floats).

    ``wq``: quantise weights (all, or a set of layer names); ``aq``: floor/clip activations to
    ticks (False: real-valued, still clipped at T). With both on and ``dtype=exact_dtype(net)``,
    the output equals ``intmodel.golden`` bit for bit. Training runs in float32 (``dtype``
    None): exact while the sums stay below 2^24, which real activations do even where the
    worst case does not (8-bit weights, 256 ticks), and several times faster than float64 on
    a CPU; the export is checked in the exact dtype.
    """

    def __init__(self, net: QNet, lat: quant.Latent, dtype: torch.dtype | None = None):
        super().__init__()
        self.net = net
        self.dtype = dtype or torch.float32
        self.w = torch.nn.ParameterDict()
        self.b = torch.nn.ParameterDict()
        self.frozen: dict[tuple[str, int, int], torch.Tensor] = {}
        like = torch.zeros((), dtype=self.dtype)
        for la in net.layers:
            if la.kind not in ("neuron", "readout"):
                continue
            key = _key(la.name)
            for gi, g in enumerate(la.groups):
                w = lat.weights[la.name][gi]
                if w is not None:
                    self.w[f"{key}__{gi}"] = torch.nn.Parameter(torch.as_tensor(
                        np.asarray(w), dtype=torch.float32))
                for oi, op in enumerate(g.ops):
                    a = op_array(op)
                    if a is not None and w is None:
                        self.frozen[(la.name, gi, oi)] = torch.as_tensor(np.asarray(a),
                                                                         dtype=like.dtype)
            self.b[key] = torch.nn.Parameter(torch.as_tensor(np.asarray(lat.bias[la.name]),
                                                             dtype=torch.float32))
        self.ramp = {la.name: torch.as_tensor(np.asarray(la.ramp), dtype=self.dtype)
                     for la in net.layers if la.kind == "neuron"}
        # b_int holds + R//2 so that the floor rounds to nearest; real-valued activations
        # (aq=False) take it out again, or every neuron would carry half a tick too much
        rounding = net.meta.get("quantization", {}).get("round_activations", True)
        self.half = {k: torch.div(r, 2, rounding_mode="floor") if rounding else
                     torch.zeros_like(r) for k, r in self.ramp.items()}
        self.out_step = torch.as_tensor(np.asarray(net.output.step, np.float64),
                                        dtype=torch.float32)

    def latent(self) -> quant.Latent:
        lat = quant.Latent()
        for la in self.net.layers:
            if la.kind not in ("neuron", "readout"):
                continue
            key = _key(la.name)
            lat.weights[la.name] = [
                self.w[f"{key}__{gi}"].detach().double().numpy().copy()
                if f"{key}__{gi}" in self.w else None for gi in range(len(la.groups))]
            lat.bias[la.name] = self.b[key].detach().double().numpy().copy()
        return lat

    def encode(self, x) -> torch.Tensor:
        return encode_input(self.net.input, x, self.dtype)

    def forward(self, x_ticks: torch.Tensor, noise: float = 0.0, wq=True, aq: bool = True,
                generator: torch.Generator | None = None, activity: list | None = None,
                record: dict | None = None) -> torch.Tensor:
        env: dict[str, torch.Tensor] = {}
        uses = intmodel._consumers(self.net)
        for la in self.net.layers:
            if la.kind == "input":
                v = x_ticks  # inputs are ticks in both modes
            elif la.kind == "pool":
                v = pool_values(self.net, la, env[la.source])
            else:
                qw = wq is True or (not isinstance(wq, bool) and la.name in wq)
                z = None
                for gi, g in enumerate(la.groups):
                    y = self._group(la, gi, env[g.source], qw)
                    z = y if z is None else z + y
                b = self.b[_key(la.name)].to(self.dtype)
                b = _ste_round(b) if qw else b
                if la.kind == "readout":
                    return z + b
                r = self.ramp[la.name]
                vz = z + b
                if aq:
                    v = _FloorTicks.apply(vz, r, float(la.ticks))
                else:
                    v = torch.clamp((vz - self.half[la.name]) / r, 0.0, float(la.ticks))
                if noise and self.training:
                    jit = torch.randn(v.shape, generator=generator, dtype=torch.float64)
                    jit = torch.round(jit * noise).to(v.dtype)
                    moved = torch.clamp(v.detach() + jit, 0, la.ticks) - v.detach()
                    v = v + torch.where(v.detach() > 0, moved, torch.zeros_like(moved))
                if activity is not None:
                    activity.append(v / la.ticks)
            if record is not None:
                record[la.name] = v.detach()
            env[la.name] = v
            for s in la.sources():
                uses[s] -= 1
                if uses[s] == 0:
                    env.pop(s, None)
        raise RuntimeError("no readout layer")

    def _group(self, la, gi, x, qw: bool):
        key = f"{_key(la.name)}__{gi}"
        g = la.groups[gi]
        for oi, op in enumerate(g.ops):
            if op_array(op) is None:
                x = op.apply(x)
            elif key in self.w:
                w = self.w[key].to(self.dtype)
                x = apply_op(op, x, _ste_quant(w, g.bits) if qw else w)
            else:
                x = apply_op(op, x, self.frozen[(la.name, gi, oi)])
        return x

    def real_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float() * self.out_step


def _key(name: str) -> str:
    return name.replace(".", "_").replace("/", "|")


class _FloorTicks(torch.autograd.Function):
    """clip(floor(V / R), 0, T) forward (exact on integer-valued V); backward the B=1 TTFS
    gradient 1/R where 0 < V/R < T, else 0."""

    @staticmethod
    def forward(ctx, v, r, ticks):
        y = torch.div(v, r, rounding_mode="floor")
        ctx.save_for_backward(v, r)
        ctx.ticks = ticks
        return torch.clamp(y, 0, ticks)

    @staticmethod
    def backward(ctx, g):
        v, r = ctx.saved_tensors
        u = v / r
        inside = (u > 0) & (u < ctx.ticks)
        return torch.where(inside, g / r, torch.zeros((), dtype=g.dtype)), None, None


class _Quant(torch.autograd.Function):
    """Round to signed levels (sign for 1 bit) forward, identity backward."""

    @staticmethod
    def forward(ctx, w, bits):
        if bits == 1:
            return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
        if bits == 0:
            return torch.round(w)
        m = 2 ** (bits - 1) - 1
        return torch.clamp(torch.round(w), -m, m)

    @staticmethod
    def backward(ctx, g):
        return g, None


def _ste_round(w):
    return _Quant.apply(w, 0)


def _ste_quant(w, bits: int):
    return _Quant.apply(w, bits)


def exact_dtype(net: QNet) -> torch.dtype:
    """float32 when no partial sum can reach 2**24 even with every weight at its largest value."""
    worst = 0.0
    for la in net.layers:
        if la.kind not in ("neuron", "readout"):
            continue
        tot = 0.0
        fan = quant.fan_in(net, la, structural=True)
        for g in la.groups:
            src = net.by_name[g.source]
            q = 1 if g.bits == 1 else 2 ** (g.bits - 1) - 1
            tot += fan * q * src.ticks  # conservative: the whole fan-in at every group's limit
        b = float(np.abs(np.asarray(la.bias)).max())
        r = float(np.max(la.ramp)) * la.ticks if la.kind == "neuron" else 0.0
        worst = max(worst, tot + 4 * b + 2 * r + 1024)
    return torch.float32 if worst < 2 ** 23 else torch.float64


# --- configuration --------------------------------------------------------------------------------

@dataclass
class FinetuneConfig:
    quantize: int = 4
    time_bits: int | None = None
    latency: int | None = None
    noise: float = 0.0
    sparsity: float = 0.0
    epochs: int = 10
    lr: float = 0.01  # Adam step, in weight levels (biases: in ticks)
    batch_size: int = 64
    seed: int = 0
    per_channel: bool | None = None
    first_last_bits: int | None = None
    equalize: float = 0.0  # equalisation strength: 0 off, 1 every channel to the layer's max
    act_range: str | float = "mse"  # clip range per layer: mse, max or a percentile
    val_fraction: float = 0.1  # held out from the training data when no --val is given
    calib_samples: int = 2048
    jitter_eval: float | None = None  # report accuracy under this jitter (ticks); default noise
    #                                   or 1 tick
    lr_decay: str = "cosine"  # or none
    distill: float = 1.0  # weight of the KL term towards the float network's outputs
    keep: str = "best"  # best (validation accuracy, then loss) or last epoch
    ptq: str = "gptq"  # post-training refinement: gptq (GPTQ rounding + bias correction),
    #                    bias (bias correction only) or none (round to nearest)
    ptq_samples: int = 512  # calibration samples for the refinement (fewer for huge layers)
    warn_loss: float = 0.02  # warn when PTQ or the result loses more accuracy than this

    @classmethod
    def from_sources(cls, config=None, **over) -> FinetuneConfig:
        d: dict = {}
        if config is not None:
            import yaml

            p = Path(config)
            if not p.is_file():
                raise UsageError(f"{p}: config file not found")
            try:
                d = yaml.safe_load(p.read_text()) or {}
            except yaml.YAMLError as e:
                raise UsageError(f"{p}: not valid YAML ({e})") from None
            if not isinstance(d, dict):
                raise UsageError(f"{p}: a config is a mapping of option names to values")
            d = {k.replace("-", "_"): v for k, v in d.items()}
            known = set(cls.__dataclass_fields__)
            bad = sorted(set(d) - known - {"target", "data", "val"})
            if bad:
                raise UsageError(f"{p}: unknown options: {', '.join(bad)}",
                                 hint="known: " + ", ".join(sorted(known)))
        d.update({k: v for k, v in over.items() if v is not None})
        extra = {k: d.pop(k) for k in ("target", "data", "val") if k in d}
        cfg = cls(**{k: v for k, v in d.items()})
        cfg._extra = extra
        return cfg.check()

    def check(self) -> FinetuneConfig:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise UsageError("epochs >= 0, batch size >= 1 and lr > 0 are required")
        if self.noise < 0 or self.sparsity < 0:
            raise UsageError("--noise and --sparsity must be >= 0")
        if self.keep not in ("best", "last"):
            raise UsageError("keep must be best or last")
        if not 0 <= self.val_fraction < 1:
            raise UsageError("val_fraction must be in [0, 1)")
        if self.ptq not in ("gptq", "bias", "none"):
            raise UsageError(f"--ptq {self.ptq}: must be gptq, bias or none")
        if self.ptq_samples < 1 or self.warn_loss < 0:
            raise UsageError("ptq_samples >= 1 and warn_loss >= 0 are required")
        return self

    def quant_config(self) -> quant.QuantConfig:
        return quant.QuantConfig(bits=self.quantize, time_bits=self.time_bits,
                                 latency=self.latency, per_channel=self.per_channel,
                                 first_last_bits=self.first_last_bits, equalize=self.equalize,
                                 act_range=self.act_range)

    def as_dict(self) -> dict:
        return asdict(self)


# --- data -----------------------------------------------------------------------------------------

def _recorded_data(snn: SNN) -> tuple[str, list[str]]:
    info = (snn.meta.get("calibration") or {}).get("data")
    if not info:
        raise UsageError("no --data given and the model records no calibration data file",
                         hint="pass --data TRAIN.npz")
    p = Path(info["path"])
    if not p.is_file():
        raise DataError(f"{p}: the calibration data recorded in the model is missing",
                        hint="pass --data TRAIN.npz")
    if info.get("sha256") and sha256_file(p) != info["sha256"]:
        raise DataError(f"{p}: the calibration data recorded in the model has changed since "
                        "conversion (sha256 differs)", hint="pass --data TRAIN.npz explicitly")
    return str(p), [f"no --data given: training on the calibration data recorded in the model "
                    f"({p})"]


class Source:
    """Training/validation samples: arrays (shuffled by index) or an iterable of batches."""

    def __init__(self, data, shape, name="data"):
        self.ds = None
        self.iterable = None
        self.name = name
        is_arrayish = isinstance(data, (str, os.PathLike, np.ndarray, tuple, data_mod.Dataset)) \
            or torch.is_tensor(data)
        if is_arrayish:
            if isinstance(data, tuple) and len(data) == 2 and torch.is_tensor(data[0]):
                data = (data[0].detach().cpu().numpy(), None if data[1] is None else
                        torch.as_tensor(data[1]).cpu().numpy())
            self.ds = data_mod.load(data, shape)
            if self.ds.y is None:
                raise DataError(f"{self.ds.name}: fine-tuning needs labels (y)")
        else:
            try:
                iter(data)
            except TypeError:
                raise UsageError(f"{name}: expected a path, arrays, (x, y) or an iterable of "
                                 "(x, y) batches") from None
            self.iterable = data
        self.shape = shape

    def __len__(self):
        return len(self.ds) if self.ds is not None else -1

    def head_x(self, n: int) -> np.ndarray:
        if self.ds is not None:
            return np.asarray(self.ds.x[:n], np.float64)
        xs, k = [], 0
        for xb, _ in self._iter():
            xs.append(np.asarray(xb, np.float64))
            k += len(xb)
            if k >= n:
                break
        if not xs:
            raise DataError(f"{self.name}: the iterable yielded no batches")
        return np.concatenate(xs)[:n]

    def _iter(self):
        for b in self.iterable:
            if isinstance(b, dict):
                xb, yb = b["x"], b["y"]
            else:
                xb, yb = b[0], b[1]
            xb = xb.detach().cpu().numpy() if torch.is_tensor(xb) else np.asarray(xb)
            yb = yb.detach().cpu().numpy() if torch.is_tensor(yb) else np.asarray(yb)
            if tuple(xb.shape[1:]) != tuple(self.shape):
                raise DataError(f"{self.name}: batch of per-sample shape {xb.shape[1:]}, the "
                                f"model expects {tuple(self.shape)}")
            yield xb, yb.astype(np.int64)

    def split(self, frac: float, seed: int) -> tuple[Source, Source | None]:
        if self.ds is None or frac <= 0:
            return self, None
        n = len(self.ds)
        perm = np.random.default_rng(seed).permutation(n)
        k = max(1, int(round(n * frac)))
        va, tr = np.sort(perm[:k]), np.sort(perm[k:])
        a, b = copy.copy(self), copy.copy(self)
        a.ds = data_mod.Dataset(np.asarray(self.ds.x)[tr], self.ds.y[tr], self.ds.name)
        b.ds = data_mod.Dataset(np.asarray(self.ds.x)[va], self.ds.y[va], self.ds.name + " (held "
                                "out)")
        return a, b


def _eval_batches(src: Source, bs: int):
    if src.ds is not None:
        yield from src.ds.batches(bs)
    else:
        yield from src._iter()


# --- evaluation -----------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_q(model: FakeQuantNet, src: Source, bs: int = 512, wq=True, aq=True,
               teacher: SNN | None = None, distill: float = 0.0) -> dict:
    """Accuracy, spikes/neuron and the training objective (cross-entropy, plus ``distill`` times
    the KL divergence to ``teacher``'s outputs) on ``src``."""
    model.eval()
    correct = n = spikes = 0
    loss = 0.0
    hid = model.net.hidden()
    size = sum(la.size for la in hid)
    for xb, yb in _eval_batches(src, bs):
        rec: dict = {}
        lg = model(model.encode(xb), wq=wq, aq=aq, record=rec)
        real = model.real_logits(lg)
        loss += float(F.cross_entropy(real, torch.as_tensor(yb), reduction="sum"))
        if teacher is not None and distill:
            loss += distill * float(F.kl_div(F.log_softmax(real, 1), teacher_logits(teacher, xb),
                                             reduction="sum", log_target=True))
        correct += int((lg.argmax(1).numpy() == yb).sum())
        spikes += sum(int((rec[la.name] > 0).sum()) for la in hid)
        n += len(yb)
    return {"accuracy": correct / max(1, n), "spikes_per_neuron": spikes / max(1, n * size),
            "samples": n, "loss": loss / max(1, n)}


@torch.no_grad()
def evaluate_int(net: QNet, src: Source, noise: float = 0.0, seed: int = 0,
                 bs: int = 512) -> dict:
    correct = n = 0
    spn = 0.0
    gen = torch.Generator().manual_seed(seed)
    comp = intmodel.Compiled(net, None)  # per-layer precision (exact either way)
    for xb, yb in _eval_batches(src, bs):
        r = intmodel.golden(net, xb, compiled=comp, noise=noise, generator=gen)
        correct += int((r.logits.argmax(1).numpy() == yb).sum())
        spn += r.spikes_per_neuron(net) * len(yb)
        n += len(yb)
    return {"accuracy": correct / max(1, n), "spikes_per_neuron": spn / max(1, n)}


@torch.no_grad()
def evaluate_float(snn: SNN, src: Source, noise: float | dict = 0.0, seed: int = 0,
                   bs: int = 512) -> dict:
    """ANN (equivalent ReLU net, unclipped) and exact SNN (closed form) accuracy."""
    ann = snn_c = n = 0
    act = 0.0
    gen = torch.Generator().manual_seed(seed)
    hid = snn.neuron_layers()
    size = sum(la.size for la in hid)
    for xb, yb in _eval_batches(src, bs):
        counts = []

        def obs(layer, v, counts=counts):
            if layer in hid:
                counts.append(int((v > 0).sum()))
        a = equivalent.forward(snn.layers, xb, observe=obs)
        ann += int((a.argmax(1).numpy() == yb).sum())
        act += sum(counts)
        r = snn.simulate(xb, noise=noise, generator=gen)
        snn_c += int((r.logits.argmax(1).numpy() == yb).sum())
        n += len(yb)
    return {"ann": ann / max(1, n), "snn": snn_c / max(1, n),
            "spikes_per_neuron": act / max(1, n * size)}


def float_weight_bytes(snn: SNN) -> int:
    n = 0
    for la in snn.layers:
        for g in getattr(la, "groups", []):
            for op in g.ops:
                a = op_array(op)
                if a is not None:
                    n += np.asarray(a).size
    return 4 * n


# --- training -------------------------------------------------------------------------------------

@dataclass
class FinetuneResult:
    net: QNet
    report: dict
    model: FakeQuantNet | None = None
    warnings: list[str] = field(default_factory=list)


def _dist():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _maybe_init_dist():
    """Under torchrun (WORLD_SIZE > 1): join the process group (gloo on CPU)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")  # the training tensors live on the CPU
    return _dist()


def finetune(snn: SNN, data=None, *, val=None, test=None, config=None, target=None,
             output=None, resume: bool = False, device: str = "cpu", progress: bool = False,
             log=None, float_model=None, **options) -> FinetuneResult:
    """Fine-tune ``snn`` for integer hardware; returns the integer network and the report.

    ``data``/``val``/``test``: a path, arrays, ``(x, y)``, tensors or an iterable of ``(x, y)``
    batches (e.g. a DataLoader). ``options``: any FinetuneConfig field (quantize, time_bits, ...);
    they override ``config`` (a YAML file). ``target``: hardware profile YAML. ``output``: the
    .snnq path (its ``.ckpt`` sibling holds checkpoints for ``resume``).
    """
    cfg = FinetuneConfig.from_sources(config, **options)
    extra = getattr(cfg, "_extra", {})
    target = target if target is not None else extra.get("target")
    data = data if data is not None else extra.get("data")
    val = val if val is not None else extra.get("val")
    quant.check_supported(snn)
    prof = quant.load_profile(target)
    cfg.quant_config().check(prof)
    if device != "cpu":
        raise UsageError(f"--device {device}: fine-tuning runs on the CPU only in this version",
                         hint="use --device cpu (several CPU processes: torchrun)")
    say = log or (lambda m: None)
    warnings: list[str] = []
    shape = tuple(snn.input.shape)
    data_path = None
    if data is None:
        data, w = _recorded_data(snn)
        warnings += w
        for m in w:
            say(m)
    if isinstance(data, (str, os.PathLike)):
        data_path = str(Path(data).resolve())
    train = Source(data, shape, "training data")
    if val is not None:
        valid = Source(val, shape, "validation data")
    else:
        train, valid = train.split(cfg.val_fraction, cfg.seed)
        if valid is None:
            valid = train
            warnings.append("no validation data: the best epoch is chosen on training data")
        else:
            warnings.append(f"no --val: {len(valid)} training samples held out for validation")
    testsrc = Source(test, shape, "test data") if test is not None else valid
    rank, world = _maybe_init_dist()
    torch.manual_seed(cfg.seed)

    # post-training quantisation
    t0 = time.perf_counter()
    cal_x = train.head_x(cfg.calib_samples)
    batches = [torch.as_tensor(cal_x[i:i + 512]) for i in range(0, len(cal_x), 512)]
    snn_q, factors = snn, {}
    if cfg.equalize:
        snn_q, factors = quant.equalize(snn, batches, float(cfg.equalize))
    stats = quant.act_stats(snn_q, batches, seed=cfg.seed)
    net0, lat0 = quant.build(snn_q, stats, cfg.quant_config(), prof)
    net0.meta["quantization"]["equalization"] = {k: np.asarray(v, np.float64).tolist()
                                                 for k, v in factors.items()}
    lat_rtn = lat0
    if cfg.ptq != "none":
        n_ref = ptq.sample_budget(snn_q, cfg.ptq_samples)
        lat0 = ptq.refine(net0, lat0, snn_q, cal_x[:n_ref], gptq=cfg.ptq == "gptq",
                          progress=progress and rank == 0)
        net0.meta["quantization"]["refinement"] = {"method": cfg.ptq, "samples": n_ref}
    model = FakeQuantNet(net0, lat0)
    ptq_net = quant.with_latent(net0, model.latent())
    say(f"post-training quantisation: {time.perf_counter() - t0:.1f} s, latency "
        f"{ptq_net.latency} ticks, dtype {model.dtype}")

    sens = sensitivity(net0, lat_rtn, lat0, valid, cfg.batch_size * 8)
    ptq_eval = evaluate_q(model, valid, teacher=snn, distill=cfg.distill)

    # training
    ckpt = Path(str(output) + ".ckpt") if output is not None else None
    ramps = {_key(la.name): float(np.mean(la.ramp)) if la.kind == "neuron" else 1.0
             for la in net0.layers if la.kind in ("neuron", "readout")}
    # weights move in levels; biases live in V units, where one tick is R units
    groups = [{"params": list(model.w.values()), "lr": cfg.lr}]
    groups += [{"params": [p], "lr": cfg.lr * ramps[k]} for k, p in model.b.items()]
    opt = torch.optim.Adam(groups)
    base_lrs = [g["lr"] for g in opt.param_groups]
    history: list[dict] = []
    best = {"accuracy": ptq_eval["accuracy"], "loss": ptq_eval["loss"], "epoch": 0,
            "state": copy.deepcopy(model.state_dict())}
    start = 1
    if resume:
        if ckpt is None or not ckpt.is_file():
            raise UsageError("--resume: no checkpoint next to the output",
                             hint=f"expected {ckpt}")
        st = _load_ckpt(ckpt)
        want = {k: v for k, v in cfg.as_dict().items() if k != "epochs"}
        have = {k: v for k, v in st["config"].items() if k != "epochs"}
        if want != have:
            diff = sorted(k for k in want if want[k] != have.get(k))
            raise UsageError(f"--resume: the checkpoint was made with other options "
                             f"({', '.join(diff)})")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        history = st["history"]
        best = st["best"]
        start = st["epoch"] + 1
        say(f"resuming after epoch {st['epoch']} (best {best['accuracy']:.4f} at epoch "
            f"{best['epoch']})")
    ddp = None
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model)
    fwd = ddp if ddp is not None else model
    xtr = ytr = ttr = None
    if train.ds is not None:
        xtr = encode_input(net0.input, np.asarray(train.ds.x), model.dtype)
        ytr = torch.as_tensor(train.ds.y)
        if cfg.distill:
            ttr = teacher_logits(snn, np.asarray(train.ds.x))
    out_step = model.out_step
    epoch_times = []
    from .progress import bar

    for epoch in range(start, cfg.epochs + 1):
        model.train()
        if cfg.lr_decay == "cosine" and cfg.epochs > 0:
            f = 0.5 * (1 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
            for g, lr0 in zip(opt.param_groups, base_lrs):
                g["lr"] = lr0 * f
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        t_ep = time.perf_counter()
        tot_loss = n_seen = 0
        if xtr is not None:
            perm = torch.randperm(len(xtr), generator=gen)
            perm = perm[:len(perm) - len(perm) % world][rank::world]  # same steps on every rank
            bs = max(1, cfg.batch_size // world)
            nb = math.ceil(len(perm) / bs)
            it = ((xtr[perm[i:i + bs]], ytr[perm[i:i + bs]],
                   None if ttr is None else ttr[perm[i:i + bs]])
                  for i in range(0, len(perm), bs))
        else:
            nb = None
            it = ((encode_input(net0.input, xb, model.dtype), torch.as_tensor(yb),
                   teacher_logits(snn, xb) if cfg.distill else None)
                  for xb, yb in train._iter())
        with bar(f"epoch {epoch}/{cfg.epochs}", nb, progress and rank == 0) as adv:
            for xb, yb, tb in it:
                act: list | None = [] if cfg.sparsity else None
                logits = fwd(xb, noise=cfg.noise, generator=gen, activity=act)
                real = logits.float() * out_step
                loss = F.cross_entropy(real, yb)
                if tb is not None:
                    loss = loss + cfg.distill * F.kl_div(F.log_softmax(real, 1), tb,
                                                         reduction="batchmean", log_target=True)
                if act:
                    tot = sum(a.sum() for a in act)
                    cnt = sum(a[0].numel() for a in act)
                    loss = loss + cfg.sparsity * tot.float() / (len(yb) * cnt)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot_loss += float(loss.detach()) * len(yb)
                n_seen += len(yb)
                adv(1)
        epoch_times.append(time.perf_counter() - t_ep)
        ev = evaluate_q(model, valid, teacher=snn, distill=cfg.distill)
        rec = {"epoch": epoch, "loss": tot_loss / max(1, n_seen), "val_accuracy": ev["accuracy"],
               "val_loss": ev["loss"],
               "spikes_per_neuron": ev["spikes_per_neuron"], "seconds": epoch_times[-1]}
        history.append(rec)
        if n_seen == 0:
            raise DataError("training data yielded no batches (a one-shot iterator?)")
        if cfg.keep == "last" or (ev["accuracy"], -ev["loss"]) > (best["accuracy"],
                                                                    -best.get("loss", math.inf)):
            best = {"accuracy": ev["accuracy"], "loss": ev["loss"], "epoch": epoch,
                    "state": copy.deepcopy(model.state_dict())}
        say(f"epoch {epoch}: loss {rec['loss']:.4f}, val accuracy {ev['accuracy']:.4f}, "
            f"spikes/neuron {ev['spikes_per_neuron']:.3f}, {epoch_times[-1]:.1f} s")
        if ckpt is not None and rank == 0:
            _save_ckpt(ckpt, {"config": cfg.as_dict(), "epoch": epoch,
                              "model": model.state_dict(), "optimizer": opt.state_dict(),
                              "history": history, "best": best})
    model.load_state_dict(best["state"])
    final = quant.with_latent(net0, model.latent())
    _assert_bit_exact(model, final, valid)

    # report
    sigma = cfg.jitter_eval if cfg.jitter_eval is not None else (cfg.noise or 1.0)
    fl = evaluate_float(snn, testsrc)
    # the same jitter as the integer rows: one tick of layer n is worth s_n in value, and a
    # value x is a time tau_c * x in the float SNN, so sigma ticks are sigma * s_n tau_c
    jit = float_jitter(final, snn, sigma)
    fl_j = evaluate_float(snn, testsrc, noise=jit, seed=cfg.seed)
    rows = [
        {"model": "ANN (float)", "accuracy": fl["ann"], "spikes_per_neuron":
         fl["spikes_per_neuron"], "latency": None, "weight_bytes": float_weight_bytes(snn),
         "accuracy_jitter": None},
        {"model": "exact SNN (float)", "accuracy": fl["snn"], "spikes_per_neuron":
         fl["spikes_per_neuron"], "latency": f"{snn.latency:.4g} tau_c",
         "weight_bytes": float_weight_bytes(snn), "accuracy_jitter": fl_j["snn"]},
    ]
    for label, net in (("post-training quantised", ptq_net), ("fine-tuned", final)):
        e = evaluate_int(net, testsrc)
        ej = evaluate_int(net, testsrc, noise=sigma, seed=cfg.seed)
        rows.append({"model": label, "accuracy": e["accuracy"],
                     "spikes_per_neuron": e["spikes_per_neuron"],
                     "latency": f"{net.latency} ticks", "weight_bytes": net.weight_count()[1],
                     "accuracy_jitter": ej["accuracy"]})
    for m in accuracy_warnings(rows, sens, cfg.warn_loss):
        warnings.append(m)
        say(m)
    report = {
        "config": cfg.as_dict(), "profile": asdict(prof), "rows": rows,
        "jitter_ticks": sigma, "jitter_tau_c_for_float": {k: float(v) for k, v in jit.items()},
        "evaluated_on": testsrc.ds.name if testsrc.ds is not None else "iterable",
        "validation": {"on": valid.ds.name if valid.ds is not None else "iterable",
                       "ptq_accuracy": ptq_eval["accuracy"], "best_epoch": best["epoch"],
                       "best_accuracy": best["accuracy"]},
        "history": history, "sensitivity": sens,
        "layer_errors": _layer_errors(final, snn, testsrc),
        "ticks_per_stage": net0.meta["quantization"]["ticks_per_stage"],
        "latency_ticks": final.latency,
        "layers": layer_rows(final),
        "fit": quant.fit_report(final, prof),
        "epoch_seconds": epoch_times, "world_size": world, "warnings": warnings,
        "train_dtype": str(model.dtype).replace("torch.", ""),
    }
    final.meta.update({
        "config": cfg.as_dict(), "report": {k: v for k, v in report.items()
                                            if k not in ("layers",)},
        "source": snn.meta.get("source"), "snnconv_version": _version(),
        "float_model": {"path": str(Path(float_model).resolve()),
                        "sha256": sha256_file(float_model)} if float_model else None,
        "training_data": {"path": data_path, "sha256": sha256_file(data_path)} if data_path
        else None,
    })
    if output is not None and rank == 0:
        intmodel.save(final, output)
    return FinetuneResult(final, report, model, warnings)


@torch.no_grad()
def teacher_logits(snn: SNN, x, bs: int = 1024) -> torch.Tensor:
    """Log-probabilities of the float network (the distillation target)."""
    out = [equivalent.forward(snn.layers, np.asarray(x[i:i + bs], np.float64)).float()
           for i in range(0, len(x), bs)]
    return F.log_softmax(torch.cat(out), 1)


def _version():
    from . import __version__

    return __version__


def _save_ckpt(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getvalue())


def _load_ckpt(path: Path) -> dict:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")  # no pickle
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"{path}: unreadable checkpoint ({type(e).__name__})") from None


def _assert_bit_exact(model: FakeQuantNet, net: QNet, src: Source, n: int = 256) -> None:
    """The exported integers must reproduce the training forward exactly (internal check), the
    forward computed in a dtype that holds every sum exactly."""
    x = src.head_x(n)
    model = FakeQuantNet(model.net, model.latent(), dtype=exact_dtype(model.net))
    model.eval()
    with torch.no_grad():
        a = model(model.encode(x)).to(torch.int64)
    b = intmodel.golden(net, x).logits
    if not torch.equal(a, b):
        raise RuntimeError("exported integer model differs from the fine-tuned forward")


def sensitivity(net: QNet, real: quant.Latent, final: quant.Latent, src: Source,
                bs: int = 512) -> list[dict]:
    """Post-training quantisation layer by layer, to find the culprit when it hurts: accuracy
    with real weights and real activations clipped to the windows, then with only one layer's
    weights (and bias) quantised as ``final`` has them, only the ticks, and everything. ``loss``
    is the drop from the first row; the largest weight row is marked ``worst``."""
    def acc(lat, **kw):
        return evaluate_q(FakeQuantNet(net, lat), src, bs, **kw)["accuracy"]

    base = acc(real, wq=False, aq=False)
    rows = [{"what": "none (real weights, real activations clipped to windows)",
             "accuracy": base}]
    for la in net.layers:
        if la.kind not in ("neuron", "readout") or all(w is None for w in
                                                        real.weights.get(la.name, [None])):
            continue
        bits = max(g.bits for g, w in zip(la.groups, real.weights[la.name]) if w is not None)
        one = copy.copy(real)
        one.weights = {**real.weights, la.name: final.weights[la.name]}
        one.bias = {**real.bias, la.name: final.bias[la.name]}
        rows.append({"what": f"weights of {la.name} ({bits} bits)", "layer": la.name,
                     "accuracy": acc(one, wq={la.name}, aq=False)})
    rows.append({"what": "activations only (ticks)", "accuracy": acc(real, wq=False)})
    rows.append({"what": "all (integer model)", "accuracy": acc(final)})
    for r in rows:
        r["loss"] = base - r["accuracy"]
    layer_rows_ = [r for r in rows if "layer" in r]
    if layer_rows_:
        worst = max(layer_rows_, key=lambda r: r["loss"])
        worst["worst"] = worst["loss"] > 0
    return rows


def float_jitter(net: QNet, snn: SNN, sigma: float) -> dict[str, float]:
    """Per neuron layer, ``sigma`` ticks of the integer model as a spike-time jitter of the
    float SNN in units of tau_c (the mean tick value over the layer's neurons)."""
    from .intcompare import tick_values

    ticks = tick_values(net)
    return {la.name: float(sigma * ticks[la.name].mean()) for la in snn.neuron_layers()
            if la.name in ticks}


def accuracy_warnings(rows: list[dict], sens: list[dict], limit: float) -> list[str]:
    """A warning for each integer model that loses more than ``limit`` against the ANN, naming
    the layer whose weights cost most in the sensitivity table."""
    ann = rows[0]["accuracy"]
    worst = next((r for r in sens if r.get("worst")), None)
    out = []
    for r in rows[2:]:
        drop = ann - r["accuracy"]
        if drop <= limit:
            continue
        msg = (f"the {r['model']} model loses {100 * drop:.1f} points against the ANN "
               f"({100 * ann:.2f}% -> {100 * r['accuracy']:.2f}%, limit {100 * limit:g})")
        if worst is not None:
            msg += (f"; the weights of {worst['layer']} cost most when quantised alone "
                    f"({100 * worst['loss']:.1f} points, sensitivity table)")
        act = next((x for x in sens if x["what"].startswith("activations")), None)
        if act is not None and act["loss"] > limit / 2:
            msg += f"; the ticks alone cost {100 * act['loss']:.1f} points (more --time-bits)"
        out.append(msg + "; the per-layer error table shows where the error grows")
    return out


def _layer_errors(net: QNet, snn: SNN, src: Source, limit: int = 1000) -> dict:
    """The integer model against the float SNN, layer by layer, on up to ``limit`` samples."""
    from . import intcompare

    def batches():
        n = 0
        for xb, _ in _eval_batches(src, 250):
            if n >= limit:
                return
            yield np.asarray(xb[:limit - n], np.float64)
            n += len(xb)

    return intcompare.compare(net, snn, batches()).as_dict()


def layer_rows(net: QNet) -> list[dict]:
    rows = []
    for la in net.layers:
        r = {"name": la.name, "kind": la.kind, "shape": list(la.shape), "t_min": la.t_min,
             "t_max": la.t_max, "ticks": la.ticks}
        if la.kind == "neuron":
            r["ramp"] = [int(np.min(la.ramp)), int(np.max(la.ramp))]
            r["theta"] = [int(np.min(la.theta)), int(np.max(la.theta))]
        if la.kind in ("neuron", "readout"):
            r["widths"] = la.widths
            r["groups"] = [{"source": g.source, "delay": g.delay, "bits": g.bits,
                            "op": g.weighted.kind if g.weighted is not None else None}
                           for g in la.groups]
        rows.append(r)
    return rows


# --- tables for people ----------------------------------------------------------------------------

def report_tables(rep: dict) -> list:
    """Rich tables of a fine-tuning report: the comparison, sensitivity, epochs, hardware fit."""
    from rich.table import Table

    def pct(v):
        return "" if v is None else f"{100 * v:.2f}"

    t = Table(title=f"accuracy on {rep['evaluated_on']} (jitter: {rep['jitter_ticks']:g} ticks)",
              title_justify="left")
    for c in ("model", "accuracy %", "spikes/neuron", "latency", "weight memory (bytes)",
              "accuracy % under jitter"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for r in rep["rows"]:
        t.add_row(r["model"], pct(r["accuracy"]), f"{r['spikes_per_neuron']:.3f}",
                  r["latency"] or "", f"{r['weight_bytes']:,.0f}", pct(r["accuracy_jitter"]))
    s = Table(title=f"post-training quantisation sensitivity (on {rep['validation']['on']})",
              title_justify="left")
    s.add_column("quantised")
    s.add_column("accuracy %", justify="right")
    s.add_column("loss (points)", justify="right")
    for r in rep["sensitivity"]:
        s.add_row(r["what"] + ("  [bold yellow]<- largest[/]" if r.get("worst") else ""),
                  pct(r["accuracy"]), "" if "loss" not in r else f"{100 * r['loss']:.2f}")
    h = Table(title=f"epochs (best: {rep['validation']['best_epoch']})", title_justify="left")
    for c in ("epoch", "loss", "val accuracy %", "spikes/neuron", "seconds"):
        h.add_column(c, justify="right")
    for r in rep["history"]:
        h.add_row(str(r["epoch"]), f"{r['loss']:.4f}", pct(r["val_accuracy"]),
                  f"{r['spikes_per_neuron']:.3f}", f"{r['seconds']:.1f}")
    f = Table(title=f"hardware profile '{rep['fit']['profile']}': "
              f"{'fits' if rep['fit']['ok'] else 'does NOT fit'}", title_justify="left")
    for c in ("layer", "ticks", "R", "fan-in", "I bits", "V bits", "issues"):
        f.add_column(c, justify="left" if c in ("layer", "issues") else "right")
    lay = {r["name"]: r for r in rep.get("layers", [])}
    for r in rep["fit"]["layers"]:
        la = lay.get(r["layer"], {})
        ramp = la.get("ramp")
        f.add_row(r["layer"], str(la.get("ticks", "")),
                  "" if not ramp else (str(ramp[0]) if ramp[0] == ramp[1] else
                                       f"{ramp[0]}..{ramp[1]}"),
                  str(r["fan_in"]), str(r["I_bits"]), str(r["V_bits"]),
                  "; ".join(r["issues"]) or "ok")
    tables = [t, s, h, f]
    if rep.get("layer_errors"):
        from .report import quant_error_table

        tables.append(quant_error_table(rep["layer_errors"], "fine-tuned integer model vs the "
                                        "float SNN, layer by layer"))
    return tables


# --- file-level entry point -----------------------------------------------------------------------

def finetune_file(model, output, data=None, **kw) -> dict:
    """Load MODEL.snn, fine-tune, write OUT.snnq. Returns the report."""
    from . import modelfile

    output = Path(output)
    if output.suffix != ".snnq":
        raise UsageError(f"-o {output}: an integer model file needs the suffix .snnq")
    check_output(output, [model, data, kw.get("val"), kw.get("config"), kw.get("target")])
    snn = modelfile.load(model)
    res = finetune(snn, data, output=output, float_model=model, **kw)
    rep = dict(res.report)
    rep["output"] = str(output)
    rep["warnings"] = res.warnings
    return rep
