"""Running the computations verify compares, batch by batch: the SNN in the chosen simulator,
the imported network in float64 (with the float32 error bound riding along), onnxruntime on the
original file, the windowed network, and ``onnx.reference`` in float64 on a subset."""

from __future__ import annotations

import warnings as _warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch

from ..devices import CPU, Device, to_cpu
from ..snn.equivalent import forward as windowed_forward
from ..snn.event import simulate_events
from ..importer.runtime import float64_model, reference_evaluator, runtime_model
from ..snn.results import LayerStats, SimResult
from ..snn.simulate import simulate
from ..snn import SNN
from ..errors import UsageError
from .bound import Float32Bound, Tolerance
from .inputs import Inputs

Simulator = Callable[[SNN, torch.Tensor], tuple[SimResult, dict[str, torch.Tensor]]]


def _closed(snn: SNN, x: torch.Tensor):
    values: dict[str, torch.Tensor] = {}
    res = simulate(snn, x, dtype=torch.float64,
                   observe=lambda layer, s: values.__setitem__(layer.name, s))
    return res, values


def _event(snn: SNN, x: torch.Tensor):
    res = simulate_events(snn, x, dtype=torch.float64, record=True)
    return res, dict(res.offsets)


SIMULATORS: dict[str, Simulator] = {"closed": _closed, "event": _event}


def simulator(name: str) -> Simulator:
    """The simulator verify runs: (snn, x) -> (result, every layer's spike offsets)."""
    if name not in SIMULATORS:
        raise UsageError(f"--simulator {name}: choose 'closed' or 'event'")
    return SIMULATORS[name]


class OrtRunner:
    """onnxruntime on the original file, batch-size aware (fixed batch sizes are chunked)."""

    def __init__(self, onnx_path, extra):
        blob, self.extra, info = runtime_model(onnx_path, extra)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
        self.input = info["input"]
        self.batch = info["batch"]
        self.names = [o.name for o in self.sess.get_outputs()]

    def run(self, x: np.ndarray, want: list[str]) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.batch:
            outs = self.sess.run(want, {self.input: x})
            return dict(zip(want, outs))
        parts: dict[str, list] = {w: [] for w in want}
        for i in range(0, len(x), self.batch):
            chunk = x[i:i + self.batch]
            k = len(chunk)
            if k < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - k, *x.shape[1:]),
                                                        np.float32)])
            for w, o in zip(want, self.sess.run(want, {self.input: chunk})):
                parts[w].append(o[:k])
        return {w: np.concatenate(v) for w, v in parts.items()}


def reference64(onnx_path, out_name: str, x: np.ndarray) -> np.ndarray:
    """The original file cast to float64, run by ``onnx.reference`` (an independent float64
    reference: onnxruntime has no float64 Conv)."""
    model, _, info = float64_model(onnx_path, [out_name])
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        ev = reference_evaluator(model)
        outs = []
        step = info["batch"] or len(x)
        for i in range(0, len(x), step):
            chunk = x[i:i + step].astype(np.float64)
            k = len(chunk)
            if info["batch"] and k < step:
                chunk = np.concatenate([chunk, np.zeros((step - k, *x.shape[1:]))])
            outs.append(np.asarray(ev.run([out_name], {info["input"]: chunk})[0])[:k])
    return np.concatenate(outs)


@dataclass
class Batch:
    """One batch of samples through every computation verify compares."""

    x: torch.Tensor  # float64 inputs (float32 values)
    y: np.ndarray | None  # labels, if the data has them
    logits: torch.Tensor  # the SNN's output
    values: dict[str, torch.Tensor]  # every layer's spike offsets s = t_max - t
    stats: dict[str, LayerStats]  # the simulator's per-layer counts
    ref64: torch.Tensor  # the imported network's output, float64
    kept: dict[str, torch.Tensor]  # its tensors of the compared layers
    ort: dict[str, np.ndarray]  # onnxruntime's tensors
    ort_y: torch.Tensor  # onnxruntime's output, float64, in the logits' shape
    allowed: torch.Tensor  # the allowed |snn - ort| per output element (Tolerance)
    windowed: dict[str, torch.Tensor] | None  # the windowed network's layers (allow_clipping)

    def __len__(self) -> int:
        return len(self.x)


class Runs:
    """Every computation of one verify, run batch by batch over its data."""

    def __init__(self, snn: SNN, inputs: Inputs, tol: Tolerance, sim: Simulator,
                 allow_clipping: bool, device: Device = CPU):
        self.snn, self.inputs, self.tol, self.sim = snn, inputs, tol, sim
        self.device, self.allow_clipping = device, allow_clipping
        self.tensors = inputs.tensors
        self.ort = OrtRunner(inputs.onnx_path, self.tensors)
        self.ort_tensors = [t for t in self.tensors if t in self.ort.names]
        self.bound = Float32Bound(inputs.graph)  # |W| prepared once for every batch
        self.caps = ({la.name: la.window / float(snn.tau_c) for la in snn.neuron_layers()}
                     if allow_clipping else None)

    def batches(self, batch_size: int, start: int = 0,
                stop: int | None = None) -> Iterator[Batch]:
        """The batches of samples [start, stop) (default: all verified samples)."""
        stop = self.inputs.total if stop is None else stop
        for xb, yb in self.inputs.ds.batches(batch_size, stop, start):
            yield self.compute(xb, yb)

    def compute(self, xb: np.ndarray, yb: np.ndarray | None) -> Batch:
        """One batch through the SNN, the float64 network (and bound), onnxruntime and, with
        clipping allowed, the windowed network. On another device than the CPU the torch
        computations run there (in float64 too) and the batch comes back to the CPU."""
        xb32 = xb.astype(np.float32)
        x64 = torch.as_tensor(xb32.astype(np.float64))
        if not self.device.is_cpu:
            x64 = x64.to(self.device.torch)
        ort_out = self.ort.run(xb32, self.ort_tensors)
        bound32 = None
        if self.tol.uses_bound:  # the float32 error bound in the same pass
            ref64, kept, bound32 = self.bound(x64, keep=set(self.tensors))
        else:
            ref64, kept = self.inputs.graph.forward(x64, keep=set(self.tensors))
        res, values = self.sim(self.snn, x64)
        windowed = None
        if self.caps is not None:
            windowed = {}
            windowed[self.snn.output.name] = windowed_forward(
                self.snn.layers, x64, caps=self.caps,
                observe=lambda la, v: windowed.__setitem__(la.name, v))
        ort_y = torch.as_tensor(ort_out[self.inputs.graph.output].astype(np.float64)).reshape(
            res.logits.shape)
        allowed = self.tol.elementwise(ort_y.to(ref64.device), ref64, bound32)
        if not self.device.is_cpu:  # the checks run on the CPU
            x64, ref64, allowed = x64.cpu(), ref64.cpu(), allowed.cpu()
            res.logits, values, kept = res.logits.cpu(), to_cpu(values), to_cpu(kept)
            windowed = None if windowed is None else to_cpu(windowed)
        return Batch(x64, yb, res.logits, values, res.stats, ref64, kept, ort_out, ort_y,
                     allowed, windowed)
