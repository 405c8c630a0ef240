"""The rate-coded model file: the .snn container (safetensors + JSON header, checksum, atomic
write; ``snnconv.modelfile``) with format name ``snnconv-rate`` and ``"coding": "rate"`` in
its header, so ``modelfile.peek_format`` tells it from a TTFS .snn ("snnconv-snn")."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..fileio import atomic_write
from ..modelfile import pack, unpack
from .model import ARRAYS, KINDS, Node, RateNet

FORMAT = "snnconv-rate"
FORMAT_VERSION = 1
CODING = "rate"
_COMMON = ("name", "inputs", "shape")


def to_header(net: RateNet) -> tuple[dict, dict[str, np.ndarray]]:
    tensors: dict[str, np.ndarray] = {}
    nodes = []
    for i, n in enumerate(net.nodes):
        d = {"name": n.name, "kind": n.kind, "inputs": list(n.inputs), "shape": list(n.shape),
             "params": {}, "arrays": {}}
        for f in fields(n):
            if f.name in _COMMON:
                continue
            v = getattr(n, f.name)
            if f.name in ARRAYS:
                if v is not None:
                    key = f"nodes.{i}.{f.name}"
                    tensors[key] = np.asarray(v, np.float64)
                    d["arrays"][f.name] = key
            else:
                d["params"][f.name] = list(v) if isinstance(v, tuple) else v
        nodes.append(d)
    header = {"coding": CODING, "steps": net.steps, "head": net.head, "meta": net.meta,
              "nodes": nodes}
    return header, tensors


def from_header(header: dict, tensors: dict[str, np.ndarray], name: str = "") -> RateNet:
    if header.get("coding") != CODING:
        raise ModelFileError(f"{name}: header coding is {header.get('coding')!r}, not 'rate'")
    nodes: list[Node] = []
    try:
        for d in header["nodes"]:
            cls = KINDS.get(d["kind"])
            if cls is None:
                raise ModelFileError(f"{name}: unknown node kind '{d['kind']}'")
            kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d["params"].items()}
            for k, key in d["arrays"].items():
                if key not in tensors:
                    raise ModelFileError(f"{name}: tensor '{key}' missing")
                kw[k] = tensors[key]
            nodes.append(cls(name=d["name"], inputs=tuple(d["inputs"]),
                             shape=tuple(int(s) for s in d["shape"]), **kw))
        net = RateNet(nodes, steps=int(header["steps"]), head=header.get("head"),
                      meta=header.get("meta") or {})
        net.check()
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{name}: inconsistent rate model file ({type(e).__name__}: {e})") \
            from None
    return net


def save(net: RateNet, path) -> Path:
    """Write the model file atomically."""
    header, tensors = to_header(net)
    atomic_write(path, pack(FORMAT, FORMAT_VERSION, header, tensors))
    return Path(path)


def load(path) -> RateNet:
    header, tensors = unpack(path, FORMAT, FORMAT_VERSION)
    return from_header(header, tensors, str(path))
