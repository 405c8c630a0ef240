"""The .snn model file: safetensors with a JSON header (see docs/format.md).

Safetensors is a flat, pickle-free container with readers in Rust, C++, JavaScript and Python; the
JSON header (in the container's ``__metadata__``) describes layers, groups and ops and names the
tensors they use. A SHA-256 over the header and all tensors detects corruption.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import budget
from .errors import ModelFileError
from .fileio import atomic_write
from .snn import (
    OPS, SNN, Group, InputLayer, Layer, NeuronLayer, Op, PoolLayer, ReadoutLayer, Relation,
)

FORMAT = "snnconv-snn"
FORMAT_VERSION = 1


def digest(header: str, tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(header.encode())
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def pack(fmt: str, version: int, header: dict, tensors: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    text = json.dumps(header, sort_keys=True, allow_nan=False)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    meta = {"format": fmt, "format_version": str(version), "header": text,
            "sha256": digest(text, tensors)}
    return save(tensors, metadata=meta)


def peek_format(path) -> str | None:
    """The container's format name ("snnconv-snn", "snnconv-snnq", "snnconv-rate"), or None if
    unreadable; lets one command take any of the files."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                return None
            outer = json.loads(f.read(n).decode("utf-8"))
        return (outer.get("__metadata__") or {}).get("format")
    except (OSError, struct.error, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None


_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def _check_table(p: Path, outer: dict, held: int) -> None:
    """The tensor table of a safetensors header: every declared shape and dtype must be exactly
    its byte range, inside the file; their total within the memory budget."""
    total = 0
    for k, t in outer.items():
        if k == "__metadata__":
            continue
        try:
            shape, (a, b) = [int(s) for s in t["shape"]], t["data_offsets"]
            size = _ITEMSIZE[t["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"{p}: tensor '{k}' has an unreadable entry in the header") \
                from None
        nbytes = math.prod(shape) * size if min(shape, default=0) >= 0 else -1
        if nbytes != b - a or not 0 <= a <= b <= held:
            raise ModelFileError(f"{p}: tensor '{k}' declares shape {shape} of {t['dtype']} "
                                 f"({nbytes} bytes) at bytes {a}..{b}, the file holds {held}",
                                 hint="the file is truncated, corrupt or crafted")
        total += nbytes
    budget.check(total, str(p), "its tensors", ModelFileError)


def unpack(path, fmt: str, version: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and check a container: format, version, checksum. Errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: file not found")
    # the header alone is read here; the tensors are read from a memory map below, so peak
    # memory is the tensors once, not the file's bytes and the tensors
    size = p.stat().st_size
    with p.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{p}: not a snnconv model file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise ModelFileError(f"{p}: not a snnconv model file, or truncated (bad header "
                                 "length)")
        raw = f.read(n)
    try:
        outer = json.loads(raw.decode("utf-8"))
        meta = outer.get("__metadata__") or {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise ModelFileError(f"{p}: not a snnconv model file (unreadable header)") from None
    got = meta.get("format")
    if got == fmt:
        _check_table(p, outer, size - 8 - n)
    if got != fmt:
        kind = {"snnconv-snn": "a float SNN (.snn)", "snnconv-snnq": "an integer SNN (.snnq)",
                "snnconv-rate": "a rate-coded SNN (.snn, coding rate)"}
        raise ModelFileError(f"{p}: is not {kind.get(fmt, fmt)}"
                             + (f" but {kind.get(got, got)}" if got else ""))
    try:
        ver = int(meta.get("format_version", "0"))
    except ValueError:
        raise ModelFileError(f"{p}: unreadable format version") from None
    if ver > version:
        raise ModelFileError(f"{p}: format version {ver} is newer than this snnconv reads "
                             f"({version})", hint="upgrade snnconv")
    if ver < 1:
        raise ModelFileError(f"{p}: unknown format version {ver}")
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="numpy") as sf:
            tensors = {k: sf.get_tensor(k) for k in sf.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelFileError(f"{p}: corrupt or truncated ({type(e).__name__})") from None
    text = meta.get("header", "")
    if digest(text, tensors) != meta.get("sha256"):
        raise ModelFileError(f"{p}: checksum mismatch: the file is corrupt or was edited",
                             hint="convert again, or restore the file")
    try:
        header = json.loads(text)
    except json.JSONDecodeError:
        raise ModelFileError(f"{p}: corrupt header") from None
    return header, tensors


# --- SNN <-> header -------------------------------------------------------------------------------

def _rel_to(rel: Relation | None, key: str, tensors: dict) -> dict | None:
    if rel is None:
        return None
    tensors[f"{key}.relation.scale"] = np.asarray(rel.scale, np.float64)
    tensors[f"{key}.relation.shift"] = np.asarray(rel.shift, np.float64)
    return {"tensor": rel.tensor, "note": rel.note, "fused": list(rel.fused),
            "scale": f"{key}.relation.scale", "shift": f"{key}.relation.shift"}


def chain_to_header(ops: list[Op], key: str, put: Callable[[str, np.ndarray], str]) -> list[dict]:
    """An op chain as header entries; ``put(name, array)`` stores an op's array as a tensor (in
    the file's dtype) and returns the name the header records. Shared by .snn and .snnq."""
    out = []
    for oi, op in enumerate(ops):
        arrays = {name: put(f"{key}.ops.{oi}.{name}", a) for name, a in op.arrays().items()}
        out.append({"kind": op.kind, "in_shape": list(op.in_shape), "params": op.params(),
                    "arrays": arrays})
    return out


def chain_from_header(ds: list[dict], get: Callable[[str], np.ndarray], name: str) -> list[Op]:
    """The op chain of header entries; ``get(tensor name)`` reads an array."""
    ops = []
    for o in ds:
        cls = OPS.get(o["kind"])
        if cls is None:
            raise ModelFileError(f"{name}: unknown op kind '{o['kind']}'")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in o["params"].items()}
        kw.update({k: get(v) for k, v in o["arrays"].items()})
        ops.append(cls(_tup(o["in_shape"]), **kw))
    return ops


def _groups_to(groups: list[Group], key: str, tensors: dict) -> list[dict]:
    def put(k, a):
        tensors[k] = np.asarray(a, np.float64)
        return k

    return [{"source": g.source, "delay": g.delay,
             "ops": chain_to_header(g.ops, f"{key}.groups.{gi}", put)}
            for gi, g in enumerate(groups)]


def to_header(snn: SNN) -> tuple[dict, dict[str, np.ndarray]]:
    tensors: dict[str, np.ndarray] = {}
    layers = []
    for i, la in enumerate(snn.layers):
        key = f"layers.{i}"
        d = {"name": la.name, "kind": la.kind, "shape": list(la.shape), "stage": la.stage,
             "t_min": la.t_min, "t_max": la.t_max, "relation": _rel_to(la.relation, key, tensors)}
        if isinstance(la, InputLayer):
            tensors[f"{key}.lo"] = np.asarray(la.lo, np.float64)
            tensors[f"{key}.hi"] = np.asarray(la.hi, np.float64)
            d.update(lo=f"{key}.lo", hi=f"{key}.hi")
        elif isinstance(la, NeuronLayer):
            tensors[f"{key}.theta_rel"] = np.asarray(la.theta_rel, np.float64)
            d.update(theta_rel=f"{key}.theta_rel", saturating=la.saturating, cap=la.cap,
                     groups=_groups_to(la.groups, key, tensors))
        elif isinstance(la, PoolLayer):
            tensors[f"{key}.minimum"] = np.asarray(la.minimum, np.uint8)
            d.update(source=la.source, kernel=list(la.kernel), stride=list(la.stride),
                     pads_begin=list(la.pads_begin), pads_end=list(la.pads_end),
                     dilation=list(la.dilation), minimum=f"{key}.minimum")
        elif isinstance(la, ReadoutLayer):
            tensors[f"{key}.bias"] = np.asarray(la.bias, np.float64)
            d.update(bias=f"{key}.bias", groups=_groups_to(la.groups, key, tensors))
        layers.append(d)
    header = {"tau_c": snn.tau_c, "head": snn.head, "layers": layers, "meta": snn.meta,
              "latency": snn.latency}
    return header, tensors


def _tup(v):
    return tuple(int(a) for a in v)


def from_header(header: dict, tensors: dict[str, np.ndarray], name: str = "") -> SNN:
    def T(k):
        if k not in tensors:
            raise ModelFileError(f"{name}: tensor '{k}' missing")
        return tensors[k]

    def groups(ds):
        return [Group(g["source"], chain_from_header(g["ops"], T, name), float(g["delay"]))
                for g in ds]

    layers: list[Layer] = []
    try:
        for d in header["layers"]:
            common = dict(name=d["name"], shape=_tup(d["shape"]), stage=int(d["stage"]),
                          t_min=float(d["t_min"]), t_max=float(d["t_max"]))
            if min(common["shape"], default=1) < 0:
                raise ModelFileError(f"{name}: layer '{d['name']}' has negative dims")
            budget.check(math.prod(common["shape"]) * 8, name,
                         f"layer '{d['name']}' of shape {common['shape']} (one sample)",
                         ModelFileError)
            r = d.get("relation")
            if r:
                common["relation"] = Relation(r["tensor"], T(r["scale"]), T(r["shift"]),
                                              r.get("note", ""),
                                              tuple(str(f) for f in r.get("fused", ())))
            k = d["kind"]
            if k == "input":
                la = InputLayer(**common, lo=T(d["lo"]), hi=T(d["hi"]))
            elif k == "neuron":
                la = NeuronLayer(**common, groups=groups(d["groups"]), theta_rel=T(d["theta_rel"]),
                                 saturating=bool(d["saturating"]), cap=d.get("cap"))
            elif k == "pool":
                la = PoolLayer(**common, source=d["source"], kernel=_tup(d["kernel"]),
                               stride=_tup(d["stride"]), pads_begin=_tup(d["pads_begin"]),
                               pads_end=_tup(d["pads_end"]), dilation=_tup(d["dilation"]),
                               minimum=T(d["minimum"]).astype(bool))
            elif k == "readout":
                la = ReadoutLayer(**common, groups=groups(d["groups"]), bias=T(d["bias"]))
            else:
                raise ModelFileError(f"{name}: unknown layer kind '{k}'")
            layers.append(la)
        snn = SNN(layers, tau_c=float(header["tau_c"]), head=header.get("head"),
                  meta=header.get("meta") or {})
        snn.check()
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ModelFileError(f"{name}: inconsistent model file ({type(e).__name__}: {e})") \
            from None
    return snn


def save(snn: SNN, path) -> Path:
    header, tensors = to_header(snn)
    atomic_write(path, pack(FORMAT, FORMAT_VERSION, header, tensors))
    return Path(path)


def load(path) -> SNN:
    header, tensors = unpack(path, FORMAT, FORMAT_VERSION)
    return from_header(header, tensors, str(path))
