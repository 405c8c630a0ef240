"""Training the fake-quant latents: Adam in weight levels, cosine decay, epochs checkpointed
atomically for ``--resume``, DistributedDataParallel under torchrun, the best epoch kept.

The per-epoch generator (seed, epoch) drives both the shuffle and the jitter, so a resumed run
repeats an uninterrupted one exactly (for a fixed world size).
"""

from __future__ import annotations

import copy
import io
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed
from ..data import Dataset, Stream
from ..devices import CPU, Device
from ..errors import DataError, UsageError
from ..fileio import atomic_write
from ..intmodel import encode_input
from ..progress import bar
from ..snn import SNN
from .config import FinetuneConfig
from .evaluate import evaluate_q, teacher_logits
from .fakequant import WEIGHTED_KINDS, FakeQuantNet, param_key


def init_dist(device: Device = CPU) -> tuple[int, int]:
    """(rank, world size); under torchrun (WORLD_SIZE > 1) joins the process group first (gloo,
    or nccl when training on CUDA devices)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        distributed.join(device)
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def checkpoint_path(output) -> Path | None:
    """``OUT.snnq.ckpt`` beside the output (None without an output)."""
    return Path(str(output) + ".ckpt") if output is not None else None


def save_checkpoint(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")  # no pickle
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"{path}: unreadable checkpoint ({type(e).__name__})") from None


class Trainer:
    """The epochs of one fine-tuning run. ``history`` holds a record per epoch, ``best`` the
    kept epoch (accuracy, loss, epoch, state), ``epoch_seconds`` the time of each."""

    def __init__(self, model: FakeQuantNet, teacher: SNN, cfg: FinetuneConfig,
                 train: Dataset | Stream, valid: Dataset | Stream, *, output=None,
                 rank: int = 0, world: int = 1, progress: bool = False,
                 say: Callable[[str], None] = lambda m: None, device: Device = CPU):
        self.model, self.teacher, self.cfg = model, teacher, cfg
        self.device = device
        self.train, self.valid = train, valid
        self.rank, self.world, self.progress, self.say = rank, world, progress, say
        self.ckpt = checkpoint_path(output)
        self.opt = _adam(model, cfg.lr)
        self.base_lrs = [g["lr"] for g in self.opt.param_groups]
        self.history: list[dict] = []
        self.best: dict = {}
        self.first = 1
        self.epoch_seconds: list[float] = []

    def begin(self, ptq_eval: dict, resume: bool) -> None:
        """Start from the post-training model (epoch 0), or from the checkpoint."""
        self.best = {"accuracy": ptq_eval["accuracy"], "loss": ptq_eval["loss"], "epoch": 0,
                     "state": copy.deepcopy(self.model.state_dict())}
        if resume:
            self._resume()

    def _resume(self) -> None:
        if self.ckpt is None or not self.ckpt.is_file():
            raise UsageError("--resume: no checkpoint next to the output",
                             hint=f"expected {self.ckpt}")
        st = load_checkpoint(self.ckpt)
        want = {k: v for k, v in self.cfg.as_dict().items() if k != "epochs"}
        have = {k: v for k, v in st["config"].items() if k != "epochs"}
        if want != have:
            diff = sorted(k for k in want if want[k] != have.get(k))
            raise UsageError(f"--resume: the checkpoint was made with other options "
                             f"({', '.join(diff)})")
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.history = st["history"]
        self.best = st["best"]
        self.first = st["epoch"] + 1
        self.say(f"resuming after epoch {st['epoch']} (best {self.best['accuracy']:.4f} at "
                 f"epoch {self.best['epoch']})")

    def run(self) -> FakeQuantNet:
        """Train the remaining epochs; returns the model holding the kept epoch's state.

        On another device than the CPU each epoch's steps run there and the model comes back to
        the CPU for its evaluation, checkpoints and the export."""
        fwd = self.model
        if self.world > 1 and self.device.is_cpu:
            fwd = torch.nn.parallel.DistributedDataParallel(self.model)
        tensors = self._in_memory()
        for epoch in range(self.first, self.cfg.epochs + 1):
            self._epoch(epoch, fwd, tensors)
        self.model.load_state_dict(self.best["state"])
        return self.model

    def _to(self, device: Device):
        """Model and optimiser state on ``device``; returns the forward to train (DDP-wrapped
        under torchrun)."""
        self.model.to_device(device.torch)
        for st in self.opt.state.values():
            for k, v in st.items():
                if torch.is_tensor(v) and k != "step":  # Adam keeps its step count on the CPU
                    st[k] = v.to(device.torch)
        if self.world > 1 and not device.is_cpu:
            ids = [device.torch.index] if device.type == "cuda" else None
            return torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        return self.model

    def _in_memory(self) -> tuple | None:
        """Arrays encoded once: (input ticks, labels, teacher log-probabilities or None)."""
        if not isinstance(self.train, Dataset):
            return None
        x = np.asarray(self.train.x)
        xtr = encode_input(self.model.net.input, x, self.model.dtype)
        ttr = teacher_logits(self.teacher, x) if self.cfg.distill else None
        return xtr, torch.as_tensor(self.train.y), ttr

    def _epoch(self, epoch: int, fwd, tensors) -> None:
        cfg = self.cfg
        self.model.train()
        if cfg.lr_decay == "cosine" and cfg.epochs > 0:
            f = 0.5 * (1 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
            for g, lr0 in zip(self.opt.param_groups, self.base_lrs):
                g["lr"] = lr0 * f
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        t_ep = time.perf_counter()
        tot_loss = n_seen = 0
        nb, it = self._batches(gen, tensors)
        if not self.device.is_cpu:
            fwd = self._to(self.device)
        with bar(f"epoch {epoch}/{cfg.epochs}", nb, self.progress and self.rank == 0) as adv:
            for xb, yb, tb in it:
                tot_loss += self._step(fwd, xb, yb, tb, gen) * len(yb)
                n_seen += len(yb)
                adv(1)
        if not self.device.is_cpu:
            self._to(CPU)
        self.epoch_seconds.append(time.perf_counter() - t_ep)
        ev = evaluate_q(self.model, self.valid, teacher=self.teacher, distill=cfg.distill)
        rec = {"epoch": epoch, "loss": tot_loss / max(1, n_seen), "val_accuracy": ev["accuracy"],
               "val_loss": ev["loss"], "spikes_per_neuron": ev["spikes_per_neuron"],
               "seconds": self.epoch_seconds[-1]}
        self.history.append(rec)
        if n_seen == 0:
            raise DataError("training data yielded no batches (a one-shot iterator?)")
        self._keep(epoch, ev)
        self.say(f"epoch {epoch}: loss {rec['loss']:.4f}, val accuracy {ev['accuracy']:.4f}, "
                 f"spikes/neuron {ev['spikes_per_neuron']:.3f}, {self.epoch_seconds[-1]:.1f} s")
        if self.ckpt is not None and self.rank == 0:
            save_checkpoint(self.ckpt, {
                "config": cfg.as_dict(), "epoch": epoch, "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(), "history": self.history, "best": self.best})

    def _batches(self, gen: torch.Generator, tensors) -> tuple[int | None, object]:
        """(batch count or None, iterator of (input ticks, labels, teacher or None))."""
        net, dtype, cfg = self.model.net, self.model.dtype, self.cfg
        if tensors is None:
            return None, ((encode_input(net.input, xb, dtype), torch.as_tensor(yb),
                           teacher_logits(self.teacher, xb) if cfg.distill else None)
                          for xb, yb in self.train.batches())
        xtr, ytr, ttr = tensors
        perm = torch.randperm(len(xtr), generator=gen)
        # the same steps on every rank
        perm = perm[:len(perm) - len(perm) % self.world][self.rank::self.world]
        bs = max(1, cfg.batch_size // self.world)
        return math.ceil(len(perm) / bs), ((xtr[perm[i:i + bs]], ytr[perm[i:i + bs]],
                                           None if ttr is None else ttr[perm[i:i + bs]])
                                          for i in range(0, len(perm), bs))

    def _step(self, fwd, xb, yb, tb, gen) -> float:
        """One Adam step on cross-entropy (+ distillation, + sparsity); returns the loss."""
        cfg = self.cfg
        if not self.device.is_cpu:
            dev = self.device.torch
            xb, yb = xb.to(dev), yb.to(dev)
            tb = None if tb is None else tb.to(dev)
        act: list | None = [] if cfg.sparsity else None
        logits = fwd(xb, noise=cfg.noise, generator=gen, activity=act)
        real = logits.float() * self.model.out_step
        loss = F.cross_entropy(real, yb)
        if tb is not None:
            loss = loss + cfg.distill * F.kl_div(F.log_softmax(real, 1), tb,
                                                 reduction="batchmean", log_target=True)
        if act:
            tot = sum(a.sum() for a in act)
            cnt = sum(a[0].numel() for a in act)
            loss = loss + cfg.sparsity * tot.float() / (len(yb) * cnt)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def _keep(self, epoch: int, ev: dict) -> None:
        """Keep this epoch if it is better (accuracy, then loss) or if ``keep: last``."""
        best = self.best
        if self.cfg.keep == "last" or (ev["accuracy"], -ev["loss"]) > \
                (best["accuracy"], -best.get("loss", math.inf)):
            self.best = {"accuracy": ev["accuracy"], "loss": ev["loss"], "epoch": epoch,
                         "state": copy.deepcopy(self.model.state_dict())}


def _adam(model: FakeQuantNet, lr: float) -> torch.optim.Adam:
    """Weights move in levels; biases live in V units, where one tick is R units."""
    ramps = {param_key(la.name): float(np.mean(la.ramp)) if la.kind == "neuron" else 1.0
             for la in model.net.layers if la.kind in WEIGHTED_KINDS}
    groups = [{"params": list(model.w.values()), "lr": lr}]
    groups += [{"params": [p], "lr": lr * ramps[k]} for k, p in model.b.items()]
    return torch.optim.Adam(groups)

