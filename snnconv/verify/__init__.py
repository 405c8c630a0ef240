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
"""

from __future__ import annotations

from .. import modelfile
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
           progress: bool = False, plot: str | None = None, preprocess=None) -> VerifyReport:
    """Compare an SNN (path or object) with its ONNX model on data. ``report.ok`` says whether
    it is equivalent within tolerance; nothing is raised for a mismatch. ``data``: a path
    (.npz, .npy, a folder of images read with ``preprocess`` on top of the recorded
    preprocessing), arrays, a torch Dataset or DataLoader, or a list of batches."""
    model_name = str(model) if not isinstance(model, SNN) else "<SNN>"
    snn = model if isinstance(model, SNN) else modelfile.load(model)
    sim = runners.simulator(simulator)
    inputs = prepare(snn, onnx, data, n, preprocess, progress)
    tol = Tolerance(atol, rtol, rtol64)
    runs = runners.Runs(snn, inputs, tol, sim, allow_clipping)
    accumulators = [checks.LayerErrors(snn, inputs.layers, allow_clipping),
                    checks.LayerCounts(snn), checks.Events(snn, inputs.graph),
                    checks.OutputErrors(snn, allow_clipping), checks.TopOne(),
                    checks.Accuracy(inputs.ds.labelled)]
    with bar("verifying", inputs.total, progress) as adv:
        for batch in runs.batches(batch_size):
            for check in accumulators:
                check.update(batch)
            adv(len(batch))
    results = [check.result() for check in accumulators]
    if reference_n > 0:
        results.append(checks.reference_check(snn, inputs, reference_n))
    if noise:
        results.append(checks.noise_curve(snn, inputs, noise, batch_size, seed, runs.ort))
    rep = build(snn, results, rtol64, model=model_name, onnx=str(inputs.onnx_path),
                data=inputs.ds.name, simulator=simulator, allow_clipping=allow_clipping,
                warnings=inputs.warnings, tolerances=tol.as_dict())
    if plot:
        from ..plots import verify_plot  # matplotlib is an optional extra

        verify_plot(snn, inputs.graph, inputs.ds, plot)
    return rep
