"""Test vectors for RTL verification: stimulus spike ticks and the expected spike ticks of every
layer and the output logits, as $readmemh hex and CSV (format in docs/finetune.md).

The samples are chosen to exercise corner cases, not only the first N: samples with the most
saturated neurons (firing at t_min), the most near-threshold neurons (V0 + b within one ramp step
of the firing boundary, where an off-by-one in the event order shows), register overflow if any,
then the first remaining samples.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from .. import data as data_mod, images
from ..errors import OutputError, UsageError
from .common import Compiled, fire_ticks
from .golden import golden
from .layers import QInput, QNet, QReadout
from .regsim import regsim
from .snnq import load


def _recorded(net: QNet) -> set[str]:
    """The layers whose spike ticks the vectors hold: all but the readout."""
    return {la.name for la in net.layers if not isinstance(la, QReadout)}


def _near_and_saturated(net: QNet, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: number of saturated neurons, number of near-threshold neurons."""
    sat = np.zeros(len(x), np.int64)
    near = np.zeros(len(x), np.int64)
    rec = _recorded(net)
    g = golden(net, x, record=rec)
    comp = Compiled(net, torch.float64)
    for la in net.hidden():
        t = g.ticks[la.name].reshape(len(x), -1)
        sat += (t == la.ticks).sum(1).numpy()
        z = None
        for gi, gr in enumerate(la.groups):
            y = comp.group(la, gi, g.ticks[gr.source].to(torch.float64))
            z = y if z is None else z + y
        v = z.to(torch.int64) + torch.as_tensor(np.asarray(la.bias, np.int64))
        r = torch.as_tensor(np.asarray(la.ramp, np.int64))
        # boundary between silent and the last tick: 0 <= v < R (fires at t_max - 1 exactly
        # when v >= R); also one step either side of it
        close = (v > -r) & (v < 2 * r)
        near += close.reshape(len(x), -1).sum(1).numpy()
    return sat, near


def select(net: QNet, x: np.ndarray, n: int, pool: int = 4096) -> list[tuple[int, str]]:
    m = min(len(x), pool)
    sat, near = _near_and_saturated(net, np.asarray(x[:m], np.float64))
    ovf = np.zeros(m, bool)
    for i in range(0, m, 256):
        r = regsim(net, np.asarray(x[i:i + 256], np.float64))
        if sum(r.overflow.values()):
            ovf[i:i + 256] = True  # coarse: the batch holds an overflow
    chosen: list[tuple[int, str]] = []
    used: set[int] = set()

    def take(order, k, why):
        for i in order:
            if len([c for c in chosen if c[1] == why]) >= k or len(chosen) >= n:
                return
            if int(i) not in used:
                used.add(int(i))
                chosen.append((int(i), why))

    q = max(1, n // 4)
    take(np.argsort(-sat, kind="stable"), q, "most saturated neurons")
    take(np.argsort(-near, kind="stable"), q, "most near-threshold neurons")
    take(np.flatnonzero(ovf), q, "register overflow")
    take(range(m), n, "first samples")
    return chosen


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "layer"


def _hex_words(a: np.ndarray, digits: int) -> str:
    mask = (1 << (4 * digits)) - 1
    return "\n".join(format(int(v) & mask, f"0{digits}x") for v in a.reshape(-1)) + "\n"


def export_vectors(path, data, n: int, out_dir, batch_size: int = 256,
                   preprocess=None) -> dict:
    net = load(path)
    ds = data_mod.load(data, tuple(net.input.shape),
                       preprocess=images.resolve(preprocess, net.meta))
    if n < 1:
        raise UsageError("--n must be at least 1")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    x_all = np.asarray(ds.x, np.float64)
    picks = select(net, x_all, min(n, len(x_all)))
    idx = np.array([i for i, _ in picks])
    x = x_all[idx]
    rec = _recorded(net)
    g = golden(net, x, record=rec)
    r = regsim(net, x, record=rec)
    if not torch.equal(g.logits, r.logits) or any(
            not torch.equal(g.ticks[k], r.ticks[k]) for k in rec):
        raise RuntimeError("golden model and register-level simulator disagree; not writing "
                           "vectors")
    max_tick = max(la.t_max for la in net.layers)
    tdig = max(1, int(np.ceil(np.log2(max_tick + 2) / 4)))
    silent = (1 << (4 * tdig)) - 1
    files = _write_layers(out, net, g, rec, tdig, silent)
    vbits = net.output.widths["V"]
    logits = g.logits.numpy()
    np.savetxt(out / "output_logits.csv", logits, fmt="%d", delimiter=",")
    (out / "output_logits.hex").write_text(_hex_words(logits, int(np.ceil(vbits / 4))))
    _write_samples(out / "samples.csv", picks, ds.y, logits)
    manifest = {
        "model": str(path), "data": str(data) if not hasattr(data, "shape") else "<array>",
        "samples": len(idx), "tick_hex_digits": tdig, "silent_code": silent,
        "logit_bits": vbits, "logit_hex_digits": int(np.ceil(vbits / 4)),
        "layout": "one row per sample (CSV) / one word per line, sample-major then C-order "
                  "neuron index (hex)",
        "layers": files, "output": {"csv": "output_logits.csv", "hex": "output_logits.hex",
                                    "classes": int(np.prod(net.output.shape))},
        "overflow_mode": net.overflow, "latency_ticks": net.latency,
        "reasons": {why: sum(1 for _, w in picks if w == why) for _, why in picks},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (out / "README.txt").write_text(README.format(tdig=tdig, silent=silent, vbits=vbits))
    return {"output": str(out), "samples": len(idx), "reasons": manifest["reasons"],
            "files": 2 * len(files) + 5}


def _write_layers(out: Path, net: QNet, g, rec: set[str], tdig: int, silent: int) -> list[dict]:
    """Per recorded layer, its firing ticks as CSV and hex; the manifest's rows."""
    files = []
    for li, la in enumerate(net.layers):
        if la.name not in rec:
            continue
        ticks = fire_ticks(la, g.ticks[la.name]).reshape(g.samples, -1).numpy()
        stem = f"{li:02d}_{_safe(la.name)}"
        np.savetxt(out / f"{stem}.csv", ticks, fmt="%d", delimiter=",")
        (out / f"{stem}.hex").write_text(_hex_words(np.where(ticks < 0, silent, ticks), tdig))
        files.append({"layer": la.name, "kind": la.kind, "shape": list(la.shape),
                      "t_min": la.t_min, "t_max": la.t_max, "csv": f"{stem}.csv",
                      "hex": f"{stem}.hex", "role": "stimulus" if isinstance(la, QInput)
                      else "expected"})
    return files


def _write_samples(path: Path, picks: list[tuple[int, str]], y, logits: np.ndarray) -> None:
    with open(path, "w") as f:
        f.write("row,data_index,reason,label,predicted\n")
        for k, (i, why) in enumerate(picks):
            lab = "" if y is None else int(y[i])
            f.write(f"{k},{i},{why},{lab},{int(logits[k].argmax())}\n")


README = """Test vectors exported by snnconv export-vectors.

samples.csv       which data samples were used and why (corner cases first).
NN_<layer>.csv    spike ticks, one row per sample, one column per neuron (C order);
                  -1 = the neuron never fires.  The input layer's file is the stimulus,
                  every other layer's file is the expected response.
NN_<layer>.hex    the same for $readmemh: one {tdig}-digit hex word per line, sample-major,
                  silent = {silent:#x}.
output_logits.*   the readout's integer logits V(t_min) + b, two's complement, {vbits} bits.
manifest.json     shapes, windows [t_min, t_max] in ticks, file names, widths.

Ticks are absolute: tick 0 is the start of the input window. A spike at tick t of layer n
carries x_ticks = t_max(n) - t. See docs/finetune.md for the event order inside a tick.
"""
