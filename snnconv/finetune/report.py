"""The fine-tuning report: the accuracy table (ANN, exact SNN, post-training, fine-tuned; plain
and under jitter), warnings naming the costly layer, and what the .snnq file records.
Rendering it for people is ``tables``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import __version__, quant
from ..data import Dataset
from ..fileio import digest_path, sha256_file
from ..intmodel import QNet
from ..snn import SNN
from .config import FinetuneConfig
from .evaluate import (Samples, evaluate_float, evaluate_int, float_jitter, float_weight_bytes,
                       layer_errors)
from .inputs import RunData
from .posttrain import PostTraining
from .trainer import Trainer


def jitter_ticks(cfg: FinetuneConfig) -> float:
    """The jitter of the report's robustness column: ``jitter_eval``, else the training noise,
    else one tick."""
    return cfg.jitter_eval if cfg.jitter_eval is not None else (cfg.noise or 1.0)


def accuracy_rows(snn: SNN, ptq_net: QNet, final: QNet, src: Samples, sigma: float,
                  seed: int) -> tuple[list[dict], dict[str, float]]:
    """The accuracy table and the float SNN's jitter per layer (tau_c) matching ``sigma``."""
    fl = evaluate_float(snn, src)
    # the same jitter as the integer rows: one tick of layer n is worth s_n in value, and a
    # value x is a time tau_c * x in the float SNN, so sigma ticks are sigma * s_n tau_c
    jit = float_jitter(final, snn, sigma)
    fl_j = evaluate_float(snn, src, noise=jit, seed=seed)
    rows = [
        {"model": "ANN (float)", "accuracy": fl["ann"], "spikes_per_neuron":
         fl["spikes_per_neuron"], "latency": None, "weight_bytes": float_weight_bytes(snn),
         "accuracy_jitter": None},
        {"model": "exact SNN (float)", "accuracy": fl["snn"], "spikes_per_neuron":
         fl["spikes_per_neuron"], "latency": f"{snn.latency:.4g} tau_c",
         "weight_bytes": float_weight_bytes(snn), "accuracy_jitter": fl_j["snn"]},
    ]
    for label, net in (("post-training quantised", ptq_net), ("fine-tuned", final)):
        e = evaluate_int(net, src)
        ej = evaluate_int(net, src, noise=sigma, seed=seed)
        rows.append({"model": label, "accuracy": e["accuracy"],
                     "spikes_per_neuron": e["spikes_per_neuron"],
                     "latency": f"{net.latency} ticks", "weight_bytes": net.weight_count()[1],
                     "accuracy_jitter": ej["accuracy"]})
    return rows, jit


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


def build(cfg: FinetuneConfig, prof: quant.Profile, snn: SNN, post: PostTraining, final: QNet,
          trainer: Trainer, sets: RunData, sens: list[dict], ptq_eval: dict,
          warnings: list[str], say: Callable[[str], None]) -> dict:
    """The report of a run; accuracy warnings are added to ``warnings`` and said."""
    sigma = jitter_ticks(cfg)
    rows, jit = accuracy_rows(snn, post.result, final, sets.test, sigma, cfg.seed)
    for m in accuracy_warnings(rows, sens, cfg.warn_loss):
        warnings.append(m)
        say(m)
    best = trainer.best
    return {
        "config": cfg.as_dict(), "profile": asdict(prof), "rows": rows,
        "jitter_ticks": sigma, "jitter_tau_c_for_float": {k: float(v) for k, v in jit.items()},
        "evaluated_on": _name(sets.test),
        "validation": {"on": _name(sets.valid), "ptq_accuracy": ptq_eval["accuracy"],
                       "best_epoch": best["epoch"], "best_accuracy": best["accuracy"]},
        "history": trainer.history, "sensitivity": sens,
        "layer_errors": layer_errors(final, snn, sets.test),
        "ticks_per_stage": post.net.meta["quantization"]["ticks_per_stage"],
        "latency_ticks": final.latency,
        "layers": layer_rows(final),
        "fit": quant.fit_report(final, prof),
        "epoch_seconds": trainer.epoch_seconds, "world_size": trainer.world,
        "warnings": warnings,
        "train_dtype": str(trainer.model.dtype).replace("torch.", ""),
    }


def _name(src: Samples) -> str:
    return src.name if isinstance(src, Dataset) else "iterable"


def record(final: QNet, cfg: FinetuneConfig, report: dict, snn: SNN, float_model,
           data_path: str | None, preprocess: dict | None = None) -> None:
    """What the .snnq file keeps of the run (``meta``): config, report, provenance."""
    final.meta.update({
        "config": cfg.as_dict(), "report": {k: v for k, v in report.items()
                                            if k not in ("layers",)},
        "source": snn.meta.get("source"), "snnconv_version": __version__,
        "float_model": {"path": str(Path(float_model).resolve()),
                        "sha256": sha256_file(float_model)} if float_model else None,
        "training_data": {"path": data_path, "sha256": digest_path(data_path)} if data_path
        else None,
    })
    if preprocess:  # image preprocessing, reused by run and verify
        final.meta["preprocess"] = preprocess


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
