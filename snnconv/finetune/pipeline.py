"""The fine-tuning run, step by step: options, samples, post-training quantisation, its
sensitivity, training, the exported integers checked against the training forward, the report,
the .snnq file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import modelfile, quant
from ..devices import resolve as resolve_device
from ..errors import UsageError
from ..fileio import check_output
from ..intmodel import QNet, save
from ..snn import SNN
from . import report as report_mod
from .config import FinetuneConfig
from .evaluate import assert_bit_exact, evaluate_q, sensitivity
from .fakequant import FakeQuantNet
from .inputs import run_data
from .posttrain import post_training
from .trainer import Trainer, init_dist


@dataclass
class FinetuneResult:
    net: QNet
    report: dict
    model: FakeQuantNet | None = None
    warnings: list[str] = field(default_factory=list)


def finetune(snn: SNN, data=None, *, val=None, test=None, config=None, target=None,
             output=None, resume: bool = False, device="cpu", progress: bool = False,
             log=None, float_model=None, preprocess=None, **options) -> FinetuneResult:
    """Fine-tune ``snn`` for integer hardware; returns the integer network and the report.

    ``data``/``val``/``test``: a path, arrays, ``(x, y)``, tensors or an iterable of ``(x, y)``
    batches (e.g. a DataLoader), a torch Dataset, or a folder of images (read with
    ``preprocess`` on top of the preprocessing recorded at conversion). ``options``: any
    FinetuneConfig field (quantize, time_bits, ...); they override ``config`` (a YAML file).
    ``target``: hardware profile YAML. ``output``: the .snnq path (its ``.ckpt`` sibling holds
    checkpoints for ``resume``). ``device``: where the training steps run
    (``devices.resolve``); evaluation and the export stay on the CPU.
    """
    cfg, files = FinetuneConfig.from_sources(config, **options)
    dev = resolve_device(device)
    dev.require_float64("fine-tuning (the export is checked in float64)")
    prof = _hardware(snn, cfg, files.target if target is None else target)
    say = log or (lambda m: None)
    warnings: list[str] = []
    sets = run_data(snn, cfg, files.data if data is None else data,
                    files.val if val is None else val, test, warnings, say, preprocess,
                    progress)
    rank, world = init_dist(dev)
    if not dev.is_cpu or dev.note:
        say(f"training steps on {dev.describe()}")
    torch.manual_seed(cfg.seed)

    post = post_training(snn, cfg, prof, sets.train, progress and rank == 0, say)
    sens = sensitivity(post.net, post.rounded, post.refined, sets.valid, cfg.batch_size * 8)
    ptq_eval = evaluate_q(post.model, sets.valid, teacher=snn, distill=cfg.distill)

    trainer = Trainer(post.model, snn, cfg, sets.train, sets.valid, output=output, rank=rank,
                      world=world, progress=progress, say=say, device=dev)
    trainer.begin(ptq_eval, resume)
    model = trainer.run()
    final = quant.with_latent(post.net, model.latent())
    assert_bit_exact(model, final, sets.valid)

    rep = report_mod.build(cfg, prof, snn, post, final, trainer, sets, sens, ptq_eval,
                           warnings, say)
    if not dev.is_cpu or dev.note:
        rep["device"] = dev.describe()
    report_mod.record(final, cfg, rep, snn, float_model, sets.path, sets.preprocess)
    if output is not None and rank == 0:
        save(final, output)
    return FinetuneResult(final, rep, model, warnings)


def _hardware(snn: SNN, cfg: FinetuneConfig, target) -> quant.Profile:
    """The hardware profile, refusing what this version cannot fine-tune."""
    quant.check_supported(snn)
    prof = quant.load_profile(target)
    cfg.quant_config().check(prof)
    return prof


def finetune_file(model, output, data=None, **kw) -> dict:
    """Load MODEL.snn, fine-tune, write OUT.snnq. Returns the report."""
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
