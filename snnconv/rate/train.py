"""``finetune --proxy``: proxy learning of a rate net (see ``proxy``) for a given T.

Each batch: the IF net runs T steps (no gradient), the ReLU proxy runs once (with gradient),
the cross-entropy is taken on ``ann + (snn - ann).detach()`` (the SNN's readout, membrane / T)
and Adam updates the shared weights and biases. Thresholds are kept as converted: they set the
units the weights are trained in. The epoch with the best SNN accuracy on the validation data
is kept (the converted net counts as epoch 0, so the result is never worse on it).
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .. import data as data_mod
from ..errors import UsageError
from ..progress import bar
from .model import RateNet
from .proxy import ProxyNet


@dataclass
class ProxyConfig:
    steps: int | None = None  # T to train for; default the model's own
    epochs: int = 5
    lr: float = 3e-4
    batch_size: int = 64
    seed: int = 0
    quantize: int | None = None  # weight bits (straight-through), None = float weights
    val_fraction: float = 0.1  # held out from the training data when no val data is given
    lr_decay: str = "cosine"  # or none

    def check(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise UsageError(f"--steps {self.steps} must be >= 1")
        if self.epochs < 0 or self.batch_size < 1 or not self.lr > 0:
            raise UsageError("--epochs must be >= 0, --batch-size >= 1 and --lr > 0")
        if self.quantize is not None and not 1 <= self.quantize <= 16:
            raise UsageError(f"--quantize {self.quantize}: expected 1 to 16 bits")
        if self.lr_decay not in ("cosine", "none"):
            raise UsageError(f"lr_decay {self.lr_decay}: expected cosine or none")


@dataclass
class Epoch:
    epoch: int
    loss: float | None
    train_accuracy: float | None
    val_accuracy: float
    val_agreement: float


@dataclass
class ProxyReport:
    config: dict
    history: list[Epoch] = field(default_factory=list)
    best_epoch: int = 0
    train_samples: int = 0
    val_samples: int = 0

    def as_dict(self) -> dict:
        return {"config": self.config, "history": [asdict(e) for e in self.history],
                "best_epoch": self.best_epoch, "train_samples": self.train_samples,
                "val_samples": self.val_samples}


def _evaluate(model: ProxyNet, x: torch.Tensor, y: torch.Tensor, ref: torch.Tensor, steps: int,
              batch: int = 512) -> tuple[float, float]:
    """SNN accuracy and top-1 agreement with the converted ANN (``ref`` predictions), %."""
    pred = torch.cat([model.snn(x[i:i + batch], steps).argmax(1)
                      for i in range(0, len(x), batch)])
    return 100.0 * float((pred == y).double().mean()), 100.0 * float((pred == ref).double().mean())


def _sets(net: RateNet, data, val, cfg: ProxyConfig):
    shape = tuple(net.input.shape)
    k = int(np.prod(net.output.shape))
    tr = data_mod.load(data, shape, n_classes=k)
    if tr.y is None:
        raise UsageError(f"{tr.name}: proxy learning needs labels (y)")
    va = data_mod.load(val, shape, n_classes=k) if val is not None else None
    if va is None:
        tr, va = tr.split(cfg.val_fraction, cfg.seed)
    if va is None or va.y is None:
        raise UsageError("proxy learning needs labelled validation data (--val, or a held-out "
                         "fraction > 0)")

    def t(ds):
        return (torch.as_tensor(np.asarray(ds.x, np.float32)),
                torch.as_tensor(np.asarray(ds.y, np.int64)))

    return t(tr), t(va)


def train_proxy(net: RateNet, data, val=None, *, progress: bool = False, log=None,
                **options) -> tuple[RateNet, ProxyReport]:
    """Proxy-train ``net``; returns the fine-tuned rate net (with ``meta['proxy']``) and the
    report. ``options``: ProxyConfig fields."""
    cfg = ProxyConfig(**{k: v for k, v in options.items() if v is not None})
    cfg.check()
    steps = cfg.steps or net.steps
    say = log or (lambda m: None)
    torch.manual_seed(cfg.seed)
    (xt, yt), (xv, yv) = _sets(net, data, val, cfg)
    model = ProxyNet(net, cfg.quantize)
    with torch.no_grad():
        ref = torch.cat([model.ann(xv[i:i + 512]).argmax(1) for i in range(0, len(xv), 512)])
    rep = ProxyReport(asdict(cfg) | {"steps": steps}, train_samples=len(xt),
                      val_samples=len(xv))
    acc, agr = _evaluate(model, xv, yv, ref, steps)
    rep.history.append(Epoch(0, None, None, acc, agr))
    say(f"epoch 0 (converted{', quantised' if cfg.quantize else ''}): SNN accuracy {acc:.2f}% "
        f"at T = {steps}, agreement {agr:.2f}%")
    best = ({k: v.detach().clone() for k, v in model.state_dict().items()}, acc)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    total = cfg.epochs * math.ceil(len(xt) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(total, 1)) \
        if cfg.lr_decay == "cosine" else None
    gen = torch.Generator().manual_seed(cfg.seed)
    with bar("proxy learning", total, progress) as adv:
        for ep in range(1, cfg.epochs + 1):
            loss_sum, hits = 0.0, 0
            for idx in torch.randperm(len(xt), generator=gen).split(cfg.batch_size):
                xb, yb = xt[idx], yt[idx]
                ann = model.ann(xb)
                snn = model.snn(xb, steps)
                out = ann + (snn - ann).detach()
                loss = torch.nn.functional.cross_entropy(out, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                loss_sum += float(loss.detach()) * len(idx)
                hits += int((snn.argmax(1) == yb).sum())
                adv(1)
            acc, agr = _evaluate(model, xv, yv, ref, steps)
            rep.history.append(Epoch(ep, loss_sum / len(xt), 100.0 * hits / len(xt), acc, agr))
            say(f"epoch {ep}: loss {loss_sum / len(xt):.4f}  SNN accuracy {acc:.2f}% "
                f"(validation), agreement with the converted ANN {agr:.2f}%")
            if acc > best[1]:
                best = ({k: v.detach().clone() for k, v in model.state_dict().items()}, acc)
                rep.best_epoch = ep
    model.load_state_dict(best[0])
    meta = dict(net.meta)
    meta["proxy"] = rep.as_dict() | {
        "trained": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "thresholds": "kept as converted"}
    out = model.to_net(meta)
    out.steps = steps
    out.meta.setdefault("rate", {})["steps"] = steps
    return out, rep
