"""``verify``: prove that an SNN reproduces its ReLU network, layer by layer (spec section 4).

Three references, all reported:
- mapping exactness: the SNN simulated in float64 vs the imported network evaluated in float64
  (``ir.Graph.forward``), ~1e-9 relative;
- importer correctness: vs onnxruntime on the original file (float32), within a forward error bound
  derived from the network (about n * eps32 * (|W||x| + |b|) per layer, accumulated);
- an independent float64 reference: the original file cast to float64 and run by ``onnx.reference``
  on a subset (onnxruntime has no float64 Conv).
Errors are per sample: max|a - b| / max|ref|.

The parts: ``inputs`` (what is compared), ``runners`` (the computations, batch by batch),
``bound`` (the float32 error bound and the tolerances), ``checks`` (one accumulator per check),
``report`` (the report and its verdict).

Under torchrun each process verifies its own contiguous run of batches (``distributed.shard``)
and the accumulators' states are merged, so every process ends with the one-process report;
the ``onnx.reference`` subset, the noise curve and the plot run on rank 0 alone.
"""

from __future__ import annotations

from .. import data as data_mod, distributed, modelfile
from ..devices import resolve as resolve_device
from ..errors import UsageError
from ..progress import bar
from ..snn import SNN
from . import checks, runners
from .bound import DEFAULT_RTOL64, EPS32, Float32Bound, Tolerance, float32_bound
from .inputs import prepare
from .report import LayerCheck, VerifyReport, build

__all__ = ["verify", "VerifyReport", "LayerCheck", "Float32Bound", "float32_bound", "EPS32",
           "DEFAULT_RTOL64"]


def verify(model, onnx=None, data=None, *, n: int | None = None, atol: float | None = None,
           rtol: float | None = None, rtol64: float = DEFAULT_RTOL64,
           allow_clipping: bool = False, simulator: str = "closed", batch_size: int = 128,
           reference_n: int = 16, noise: list[float] | None = None, seed: int = 0,
           progress: bool = False, plot: str | None = None, preprocess=None,
           device=None) -> VerifyReport:
    """Compare an SNN (path or object) with its ONNX model on data. ``report.ok`` says whether
    it is equivalent within tolerance; nothing is raised for a mismatch. ``data``: a path
    (.npz, .npy, a folder of images read with ``preprocess`` on top of the recorded
    preprocessing), arrays, a torch Dataset or DataLoader, or a list of batches.

    ``device``: where the SNN and the float64 network run (``devices.resolve``; default the
    CPU). Under torchrun the processes share the batches and all return the merged report."""
    dev = resolve_device(device)
    dev.require_float64("verify (the float64 mapping check)")
    model_name = str(model) if not isinstance(model, SNN) else "<SNN>"
    snn = model if isinstance(model, SNN) else modelfile.load(model)
    sim = runners.simulator(simulator)
    inputs = prepare(snn, onnx, data, n, preprocess, progress)
    world = distributed.join(dev)
    tol = Tolerance(atol, rtol, rtol64)
    runs = runners.Runs(snn, inputs, tol, sim, allow_clipping, dev)
    start, stop = _shard(inputs, batch_size, world)
    accumulators = accumulate(snn, inputs, runs, batch_size, start, stop,
                              progress and world.main)
    _merge(accumulators, world)
    results = [check.result() for check in accumulators]
    results += distributed.from_main(
        _main_only(snn, inputs, runs, reference_n, noise, batch_size, seed) if world.main
        else None, world)
    warnings = list(inputs.warnings)
    if noise and world.many:
        warnings.append("the noise curve is one random stream over all samples: rank 0 ran it "
                        "alone")
    rep = build(snn, results, rtol64, model=model_name, onnx=str(inputs.onnx_path),
                data=inputs.ds.name, simulator=simulator, allow_clipping=allow_clipping,
                warnings=warnings, tolerances=tol.as_dict())
    if plot and world.main:
        from ..plots import verify_plot  # matplotlib is an optional extra

        verify_plot(snn, inputs.graph, inputs.ds, plot)
    return rep


def _shard(inputs, batch_size: int, world: distributed.World) -> tuple[int, int | None]:
    """This process's [start, stop) of the verified samples: whole batches of a file or image
    folder; an iterable of batches cannot be shared out."""
    if isinstance(inputs.ds, data_mod.Dataset):
        return distributed.shard(inputs.total, batch_size, world)
    if world.many:
        raise UsageError("under torchrun verify data must be a file or an image folder (an "
                         "iterable of batches cannot be shared out between processes)")
    return 0, inputs.total


def accumulate(snn: SNN, inputs, runs: runners.Runs, batch_size: int, start: int,
               stop: int | None, progress: bool = False) -> list:
    """The checks' accumulators after the batches of samples [start, stop)."""
    accumulators = [checks.LayerErrors(snn, inputs.layers, runs.allow_clipping),
                    checks.LayerCounts(snn), checks.Events(snn, inputs.graph),
                    checks.OutputErrors(snn, runs.allow_clipping), checks.TopOne(),
                    checks.Accuracy(inputs.ds.labelled)]
    with bar("verifying", None if stop is None else stop - start, progress) as adv:
        for batch in runs.batches(batch_size, start, stop):
            for check in accumulators:
                check.update(batch)
            adv(len(batch))
    return accumulators


def _merge(accumulators: list, world: distributed.World) -> None:
    """Fold every other rank's accumulator states into this rank's. Maxima and integer counts
    (synaptic events are integer-valued floats) combine exactly in any order, so every rank
    ends with the same state, the one a single process reaches."""
    if not world.many:
        return
    states = distributed.gather([a.state() for a in accumulators], world)
    for r, rank_states in enumerate(states):
        if r != world.rank:
            for a, st in zip(accumulators, rank_states):
                a.merge(st)


def _main_only(snn, inputs, runs, reference_n, noise, batch_size, seed) -> list[dict]:
    """The checks that are not sharded: the float64 onnx.reference subset, the noise curve."""
    out = []
    if reference_n > 0:
        out.append(checks.reference_check(snn, inputs, reference_n))
    if noise:
        out.append(checks.noise_curve(snn, inputs, noise, batch_size, seed, runs.ort))
    return out
