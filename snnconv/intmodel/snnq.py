"""The .snnq file: the integer network in the safetensors container of ``modelfile`` (fields in
docs/format.md). Integer tensors are stored in the smallest int type that holds them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import modelfile
from ..errors import ModelFileError
from ..fileio import atomic_write
from ..snn import Op
from .layers import LAYER_TYPES, QGroup, QInput, QLayer, QNet, QNeuron, QPool, QReadout, \
    QSynaptic

FORMAT = "snnconv-snnq"
FORMAT_VERSION = 1
POOL_FIELDS = ("kernel", "stride", "pads_begin", "pads_end", "dilation")
ENCODING = ("x_ticks = clip(floor(clip((x - lo)/(hi - lo), 0, 1) * ticks + 0.5), 0, ticks) in "
            "float64; spike at tick t_max - x_ticks, none if 0")


def _int_dtype(a: np.ndarray):
    m = float(np.abs(a).max(initial=0))
    for dt, lim in ((np.int8, 127), (np.int16, 32767), (np.int32, 2 ** 31 - 1)):
        if m <= lim:
            return dt
    return np.int64


class _Tensors:
    """The tensors of a file being written; ``put`` returns the key the header names."""

    def __init__(self):
        self.all: dict[str, np.ndarray] = {}

    def put(self, key: str, a, dtype) -> str:
        self.all[key] = np.ascontiguousarray(np.asarray(a).astype(dtype))
        return key


# --- writing --------------------------------------------------------------------------------------

def _write_input(la: QInput, key: str, ts: _Tensors) -> dict:
    return {"lo": ts.put(f"{key}.lo", la.lo, np.float64),
            "hi": ts.put(f"{key}.hi", la.hi, np.float64), "encoding": ENCODING}


def _write_pool(la: QPool, key: str, ts: _Tensors) -> dict:
    return dict(source=la.source, **{k: list(v) for k, v in la.pool.items()},
                minimum=ts.put(f"{key}.minimum", la.minimum, np.uint8))


def _write_synaptic(la: QSynaptic, key: str, ts: _Tensors) -> dict:
    d = {"bias": ts.put(f"{key}.bias", la.bias, np.int64), "widths": dict(la.widths)}
    d["groups"] = [{"source": g.source, "delay": int(g.delay), "bits": int(g.bits),
                    "ops": modelfile.chain_to_header(
                        g.ops, f"{key}.groups.{gi}",
                        lambda k, a: ts.put(k, a, _int_dtype(np.asarray(a))))}
                   for gi, g in enumerate(la.groups)]
    return d


def _write_neuron(la: QNeuron, key: str, ts: _Tensors) -> dict:
    d = _write_synaptic(la, key, ts)
    d["ramp"] = ts.put(f"{key}.ramp", la.ramp, np.int64)
    d["theta"] = ts.put(f"{key}.theta", la.theta, np.int64)
    return d


_WRITERS = {QInput: _write_input, QPool: _write_pool, QNeuron: _write_neuron,
            QReadout: _write_synaptic}


def to_header(net: QNet) -> tuple[dict, dict[str, np.ndarray]]:
    ts = _Tensors()
    layers = []
    for i, la in enumerate(net.layers):
        key = f"layers.{i}"
        d = {"name": la.name, "kind": la.kind, "shape": list(la.shape), "stage": la.stage,
             "t_min": int(la.t_min), "t_max": int(la.t_max), "ticks": int(la.ticks)}
        for f in ("scale", "step"):
            if getattr(la, f, None) is not None:
                d[f] = ts.put(f"{key}.{f}", getattr(la, f), np.float64)
        d.update(_WRITERS[type(la)](la, key, ts))
        layers.append(d)
    header = {"layers": layers, "overflow": net.overflow, "latency_ticks": int(net.latency),
              "meta": net.meta}
    return header, ts.all


# --- reading --------------------------------------------------------------------------------------

class _Reader:
    """One file's tensors by key; a missing one is a named file error."""

    def __init__(self, tensors: dict, name: str):
        self.tensors, self.name = tensors, name

    def __call__(self, k: str) -> np.ndarray:
        if k not in self.tensors:
            raise ModelFileError(f"{self.name}: tensor '{k}' missing")
        return self.tensors[k]

    def fields(self, d: dict, keys: tuple) -> dict:
        return {k: self(d[k]) for k in keys if k in d}

    def ops(self, ds: list[dict]) -> list[Op]:
        """An op chain; integer weights are read back as float64 (exact below 2^53)."""
        return modelfile.chain_from_header(ds, lambda k: self(k).astype(np.float64), self.name)


def _read_input(d: dict, T: _Reader) -> dict:
    return T.fields(d, ("scale", "lo", "hi"))


def _read_pool(d: dict, T: _Reader) -> dict:
    return dict(T.fields(d, ("scale",)), source=d["source"],
                minimum=T(d["minimum"]).astype(bool),
                pool={k: tuple(int(v) for v in d[k]) for k in POOL_FIELDS})


def _read_synaptic(d: dict, T: _Reader) -> dict:
    groups = [QGroup(g["source"], T.ops(g["ops"]), int(g["delay"]), int(g["bits"]))
              for g in d["groups"]]
    return dict(T.fields(d, ("scale", "step")), bias=T(d["bias"]).astype(np.int64),
                widths={k: int(v) for k, v in d["widths"].items()}, groups=groups)


def _read_neuron(d: dict, T: _Reader) -> dict:
    return dict(_read_synaptic(d, T), ramp=T(d["ramp"]).astype(np.int64))


_READERS = {QInput: _read_input, QPool: _read_pool, QNeuron: _read_neuron,
            QReadout: _read_synaptic}


def _read_layer(d: dict, T: _Reader) -> QLayer:
    common = dict(name=d["name"], shape=tuple(int(v) for v in d["shape"]),
                  stage=int(d["stage"]), t_min=int(d["t_min"]), t_max=int(d["t_max"]))
    cls = LAYER_TYPES.get(d["kind"])
    if cls is None:
        raise ModelFileError(f"{T.name}: unknown layer kind '{d['kind']}'")
    la = cls(**common, **_READERS[cls](d, T))
    if isinstance(la, QNeuron) and not np.array_equal(
            np.broadcast_to(la.theta, np.shape(T(d["theta"]))), T(d["theta"])):
        raise ModelFileError(f"{T.name}: layer {la.name}: theta != R*T - bias")
    return la


def from_header(header: dict, tensors: dict, name: str = "") -> QNet:
    T = _Reader(tensors, name)
    try:
        layers = [_read_layer(d, T) for d in header["layers"]]
        net = QNet(layers, overflow=header.get("overflow", "saturate"),
                   meta=header.get("meta") or {})
        if net.overflow not in ("saturate", "wrap"):
            raise ModelFileError(f"{name}: unknown overflow mode '{net.overflow}'")
        net.check()
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ModelFileError(f"{name}: inconsistent integer model file ({type(e).__name__}: {e})"
                             ) from None
    return net


def save(net: QNet, path) -> Path:
    header, tensors = to_header(net)
    atomic_write(path, modelfile.pack(FORMAT, FORMAT_VERSION, header, tensors))
    return Path(path)


def load(path) -> QNet:
    header, tensors = modelfile.unpack(path, FORMAT, FORMAT_VERSION)
    return from_header(header, tensors, str(path))

