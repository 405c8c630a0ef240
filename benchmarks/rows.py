"""What one benchmark row runs: a lazy builder returning a no-argument callable (one batch).

Rows are built lazily so a memory subprocess builds only its own row. Modules written elsewhere
(event-driven simulator, integer model, fine-tuning) are imported if present; a missing module or
an API this file does not know turns the row into a skip with the reason.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import models as M


@dataclass
class Row:
    name: str
    ref: str | None  # row name of its reference (same process, same batch), None = reference
    build: Callable[[], Callable[[], object]] | None
    target: float | None = None  # max ratio to the reference
    skip: str | None = None
    note: str = ""
    float32_path: bool = False  # memory target applies (<= 2x onnxruntime's)
    budget_s: float = 60.0  # a row whose single run would exceed this is skipped


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


class Ctx:
    """Shared lazy state of one (model, batch): paths, inputs, loaded SNN."""

    def __init__(self, spec: M.Spec, batch: int):
        self.spec, self.batch = spec, batch
        self.x = M.inputs(spec, batch)
        self._snn = None

    @property
    def snn(self):
        if self._snn is None:
            import snnconv

            self._snn = snnconv.load(M.snn_path(self.spec))
        return self._snn


def _ort(ctx: Ctx):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(M.onnx_path(ctx.spec)), so,
                                providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: ctx.x})


def _torch_ann(ctx: Ctx, dtype):
    import torch

    x = torch.as_tensor(ctx.x, dtype=dtype)
    if ctx.spec.kind == "sample":  # no torch module shipped: the imported graph's evaluator
        from snnconv.importer import import_onnx

        g = import_onnx(M.onnx_path(ctx.spec))

        def run():
            with torch.no_grad():
                return g.forward(x, dtype=dtype)[0]
        return run
    m = M.module(ctx.spec).to(dtype)

    def run():
        with torch.no_grad():
            return m(x)
    return run


def _closed(ctx: Ctx, dtype, backend="torch"):
    import torch

    from snnconv.snn.simulate import simulate

    snn = ctx.snn
    x = torch.as_tensor(ctx.x)
    return lambda: simulate(snn, x, dtype, backend=backend)


def _onnx_backend(ctx: Ctx, stats: bool):
    """With counts: what users call, ``simulate(backend="auto")`` (its session cached on the
    SNN); logits only: an ``OnnxSimulator(stats=False)``, which has no ``simulate`` spelling."""
    import torch

    from snnconv.backends.onnx_backend import OnnxSimulator

    if stats:
        return _closed(ctx, torch.float32, backend="auto")
    sim = OnnxSimulator(ctx.snn, torch.float32, stats=False)
    return lambda: sim(ctx.x)


def _event(ctx: Ctx):
    import torch

    from snnconv.snn.event import simulate_events

    snn, x = ctx.snn, torch.as_tensor(ctx.x, dtype=torch.float64)
    return lambda: simulate_events(snn, x, torch.float64, False)


def _int_api():
    """The integer model's entry points, or a reason why they are missing."""
    if not has_module("snnconv.intmodel") or not has_module("snnconv.quant"):
        return None, "snnconv/intmodel not present"
    return importlib.import_module("snnconv.intmodel"), None


def qnet(ctx: Ctx, bits: int = 4, time_bits: int = 4):
    """The integer network finetune starts from (post-training quantisation, 4-bit weights,
    16 ticks per layer), calibrated on the row's own inputs (speed rows; accuracy is
    irrelevant here)."""
    import torch

    from snnconv import quant

    if getattr(ctx, "_qnet", None) is None:
        x = torch.as_tensor(M.inputs(ctx.spec, 64), dtype=torch.float64)
        snn_eq, _ = quant.equalize(ctx.snn, [x])
        stats = quant.act_stats(snn_eq, [x])
        ctx._qnet, _ = quant.build(snn_eq, stats, quant.QuantConfig(bits=bits,
                                                                    time_bits=time_bits),
                                   quant.Profile())
    return ctx._qnet


def _int_row(ctx: Ctx, which: str):
    im, _ = _int_api()
    net = qnet(ctx)
    if which == "golden":  # per-layer precision (the default), as `snnconv run` uses it
        comp = im.Compiled(net, None)
        return lambda: im.golden(net, ctx.x, compiled=comp)
    return lambda: im.regsim(net, ctx.x)


def rows_for(ctx: Ctx) -> list[Row]:
    import torch

    big = ctx.spec.shape[-1] >= 224
    rows = [
        Row("onnxruntime ANN f32", None, lambda: _ort(ctx), float32_path=True),
        Row("PyTorch ANN f32", "onnxruntime ANN f32", lambda: _torch_ann(ctx, torch.float32),
            note="imported-graph evaluator" if ctx.spec.kind == "sample" else "nn.Module",
            float32_path=True),
        Row("SNN closed form f32, torch", "onnxruntime ANN f32",
            lambda: _closed(ctx, torch.float32), float32_path=True,
            note="simulate(backend='torch')"),
        Row("SNN closed form f32, onnx backend", "onnxruntime ANN f32",
            lambda: _onnx_backend(ctx, True), target=1.5, float32_path=True,
            note="simulate(backend='auto'): logits + spike/clip counts"),
        Row("SNN closed form f32, onnx, logits only", "onnxruntime ANN f32",
            lambda: _onnx_backend(ctx, False), target=1.5, float32_path=True,
            note="OnnxSimulator(stats=False)"),
        Row("PyTorch ANN f64", None, lambda: _torch_ann(ctx, torch.float64)),
        Row("SNN closed form f64, torch", "PyTorch ANN f64", lambda: _closed(ctx, torch.float64),
            target=1.5),
    ]
    ev = Row("event-driven simulator f64", "onnxruntime ANN f32", lambda: _event(ctx),
             target=100.0, budget_s=30.0)
    if not has_module("snnconv.snn.event"):
        ev.build, ev.skip = None, "snnconv/snn/event.py not present"
    rows.append(ev)
    api, why = _int_api()
    for which, target in (("golden", 3.0), ("registers", 30.0)):
        r = Row(f"integer {'golden model' if which == 'golden' else 'register-level sim'}",
                "onnxruntime ANN f32", lambda w=which: _int_row(ctx, w), target=target,
                budget_s=30.0)
        if api is None:
            r.build, r.skip = None, why
        rows.append(r)
    lean = ctx.spec.lean_at is not None and ctx.batch >= ctx.spec.lean_at
    if lean:  # time budget: float64 and the slow paths are measured at batch 1 and on VGG
        for r in rows:
            if r.skip is None and (r.name.endswith(("f64", "f64, torch")) or "torch" in r.name
                                   and "closed" in r.name or r.name.startswith(("event",
                                                                               "integer"))):
                r.build, r.skip = None, "not run at this batch size (time budget)"
    if big:  # the ImageNet-sized net is there for memory; keep its timing rows to the cheap ones
        for r in rows:
            if r.name.startswith(("event", "integer")) and r.skip is None:
                r.build, r.skip = None, "not run at 224x224 (time budget)"
    return rows


def row_by_name(ctx: Ctx, name: str) -> Row:
    return next(r for r in rows_for(ctx) if r.name == name)


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_now_mb() -> float:
    return _status_mb("VmRSS")


def rss_peak_mb() -> float:
    """VmHWM: the high-water mark of this process image (ru_maxrss would carry the parent's
    peak across fork and exec on Linux)."""
    return _status_mb("VmHWM")


def mem_main(model: str, batch: int, row: str) -> dict:
    """Peak RSS of one row in this (fresh) process: imports first (common baseline), then the
    row's model, inputs and one run."""
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401

    import snnconv  # noqa: F401
    from snnconv.backends import onnx_backend  # noqa: F401

    base = rss_now_mb()
    ctx = Ctx(M.SPECS[model], batch)
    r = row_by_name(ctx, row)
    fn = r.build()
    fn()
    return {"baseline_mb": base, "peak_mb": rss_peak_mb(), "x_mb": np.asarray(ctx.x).nbytes / 2**20}
