"""The starting point of training: post-training quantisation of the float SNN (equalise,
calibrate the ranges, build the integer network, refine with GPTQ / bias correction)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .. import quant
from ..quant import ptq
from ..data import Dataset, Stream
from ..intmodel import QNet
from ..snn import SNN
from .config import FinetuneConfig
from .fakequant import FakeQuantNet


@dataclass
class PostTraining:
    net: QNet  # the integer network's structure (its weights: the round-to-nearest ones)
    rounded: quant.Latent  # latents rounded to nearest, before any refinement
    refined: quant.Latent  # after ``cfg.ptq``: what training starts from
    model: FakeQuantNet  # the trainable forward, initialised with ``refined``
    result: QNet  # ``net`` with the refined integers: the post-training quantised model


def post_training(snn: SNN, cfg: FinetuneConfig, prof, train: Dataset | Stream,
                  progress: bool, say: Callable[[str], None]) -> PostTraining:
    t0 = time.perf_counter()
    cal_x = train.head_x(cfg.calib_samples)
    batches = [torch.as_tensor(cal_x[i:i + 512]) for i in range(0, len(cal_x), 512)]
    snn_q, factors = snn, {}
    if cfg.equalize:
        snn_q, factors = quant.equalize(snn, batches, float(cfg.equalize))
    stats = quant.act_stats(snn_q, batches, seed=cfg.seed)
    net, rounded = quant.build(snn_q, stats, cfg.quant_config(), prof)
    net.meta["quantization"]["equalization"] = {k: np.asarray(v, np.float64).tolist()
                                                for k, v in factors.items()}
    refined = rounded
    if cfg.ptq != "none":
        n_ref = ptq.sample_budget(snn_q, cfg.ptq_samples)
        refined = ptq.refine(net, rounded, snn_q, cal_x[:n_ref], gptq=cfg.ptq == "gptq",
                             progress=progress)
        net.meta["quantization"]["refinement"] = {"method": cfg.ptq, "samples": n_ref}
    model = FakeQuantNet(net, refined)
    result = quant.with_latent(net, model.latent())
    say(f"post-training quantisation: {time.perf_counter() - t0:.1f} s, latency "
        f"{result.latency} ticks, dtype {model.dtype}")
    return PostTraining(net, rounded, refined, model, result)
