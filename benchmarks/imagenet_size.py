"""ImageNet-size benchmark: ResNet-18 and VGG-16 at 3x224x224 (random weights, random BatchNorm
statistics; accuracy is not the point), calibrated on JPEGs read from an image folder, verified
on N more.

    python benchmarks/imagenet_size.py [--models resnet18,vgg16] [--n 32] [--calib-n 256]
        [--batch 8] [--nproc 2] [--out build/imagenet_size.json]

The JPEGs (random smooth content, 300..500 pixels a side, quality 90, in 10 class folders) are
generated into build/imagenet_size/ and read with the ``imagenet`` preset (shorter side 256,
centre 224, mean/std). Each phase (convert, verify) of each model runs in a fresh subprocess:
wall seconds, images/s, peak RSS (VmHWM, as benchmarks/run.py), and the data pipeline's share:
the decoding + preprocessing time summed over the decoder threads, and the time the computation
waited for it. The rest of a phase is the simulation and its references. verify runs with
``--reference-n 0`` (onnx.reference in float64 takes minutes per ImageNet-size image).

Projections to 1,000 and 50,000 images are seconds per image of the measured run times the
count: labelled as projected, never as measured.

``--nproc K`` adds a verify row run under ``torchrun --nproc-per-node K -m snnconv verify ...``
(needs the torchrun support of ``snnconv verify``); without it the column says 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: import the worktree's snnconv, not another
    sys.path.insert(0, str(ROOT))

from benchmarks import models as M  # noqa: E402
from benchmarks.rows import rss_now_mb, rss_peak_mb  # noqa: E402

WORK = ROOT / "build" / "imagenet_size"
NETS = {"resnet18": (M.resnet18_imagenet, "ResNet-18, 1.8 G MACs"),
        "vgg16": (M.vgg16_imagenet, "VGG-16 (BN), 15.5 G MACs")}


# --- inputs: models and image folders ---------------------------------------------------------

def onnx_file(name: str) -> Path:
    p = WORK / f"{name}.onnx"
    if p.is_file():
        return p
    import torch

    torch.manual_seed(0)
    m = NETS[name][0]().eval()
    M._randomise_bn(m, 1)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(m, (torch.zeros(1, 3, 224, 224),), str(tmp), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    tmp.replace(p)
    return p


def image_folder(which: str, n: int, seed: int) -> Path:
    """``n`` random-content JPEGs in 10 class folders (made once, kept)."""
    from PIL import Image

    root = WORK / f"{which}-{n}"
    if root.is_dir():
        return root
    tmp = root.with_name(root.name + ".tmp")
    rng = np.random.default_rng(seed)
    for i in range(n):
        w, h = (int(v) for v in rng.integers(300, 501, 2))
        small = rng.integers(0, 256, (h // 25 + 2, w // 25 + 2, 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
        a = np.clip(np.asarray(im, np.int16) + rng.integers(-12, 13, (h, w, 3)), 0, 255)
        d = tmp / f"class{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a.astype(np.uint8)).save(d / f"{i:05d}.jpg", quality=90)
    tmp.replace(root)
    return root


# --- phases (each in a fresh subprocess) --------------------------------------------------------

def _timed(owner, attr: str, acc: dict) -> None:
    """Wrap ``owner.attr`` to add its run time to ``acc["s"]`` (the per-image part of a
    phase: what grows with the number of images)."""
    fn = getattr(owner, attr)

    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc["s"] += time.perf_counter() - t
    setattr(owner, attr, wrapper)


def _pipeline(ds) -> dict:
    x = ds.x
    return {"decode_s": getattr(x, "decode_seconds", 0.0),
            "data_wait_s": getattr(x, "wait_seconds", 0.0)}


def convert_phase(name: str, calib: Path, calib_n: int, batch: int) -> dict:
    import torch

    from snnconv import conversion, data, images
    from snnconv.conversion import convert

    torch.set_num_threads(2)
    per = {"s": 0.0}
    _timed(conversion, "calibrate", per)
    base = rss_now_mb()
    t = time.perf_counter()
    ds = data.source(calib, (3, 224, 224), preprocess=images.build("imagenet"))
    snn = convert(onnx_file(name), ds, calib_limit=calib_n, batch_size=batch)
    secs = time.perf_counter() - t
    snn.save(WORK / f"{name}.snn")
    return {"phase": "convert", "seconds": secs, "images": calib_n, "baseline_mb": base,
            "per_image_s": per["s"] / calib_n, "fixed_s": secs - per["s"],
            "peak_mb": rss_peak_mb(), **_pipeline(ds)}


def verify_phase(name: str, val: Path, n: int, batch: int) -> dict:
    import torch

    import snnconv
    from snnconv import data, images
    from snnconv.verify import checks, runners, verify

    torch.set_num_threads(2)
    per = {"s": 0.0}  # every batch's computations and the checks' updates
    _timed(runners.Runs, "compute", per)
    for cls in (checks.LayerErrors, checks.LayerCounts, checks.Events, checks.OutputErrors,
                checks.TopOne, checks.Accuracy):
        _timed(cls, "update", per)
    snn = snnconv.load(WORK / f"{name}.snn")
    base = rss_now_mb()
    t = time.perf_counter()
    ds = data.source(val, (3, 224, 224), preprocess=images.resolve(None, snn.meta))
    rep = verify(snn, onnx_file(name), ds, n=n, batch_size=batch, reference_n=0)
    secs = time.perf_counter() - t
    per_image = (per["s"] + ds.x.wait_seconds) / rep.samples
    return {"phase": "verify", "seconds": secs, "images": rep.samples, "ok": rep.ok,
            "per_image_s": per_image, "fixed_s": secs - per_image * rep.samples,
            "mapping_err_max": rep.mapping_err_max, "baseline_mb": base,
            "peak_mb": rss_peak_mb(), **_pipeline(ds)}


def torchrun_verify(name: str, val: Path, n: int, batch: int, nproc: int) -> dict:
    """The --nproc hook: the same verify under torchrun (its report is merged by snnconv)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "-m", "snnconv", "verify", str(WORK / f"{name}.snn"), "--onnx",
           str(onnx_file(name)), "--data", str(val), "--samples", str(n), "--batch-size",
           str(batch), "--reference-n", "0", "--json", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    secs = time.perf_counter() - t
    if r.returncode not in (0, 1):
        return {"phase": "verify", "nproc": nproc, "skip": r.stderr.strip()[-300:]}
    return {"phase": "verify", "nproc": nproc, "seconds": secs, "images": n}


def _sub(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                       env=env)
    if r.returncode != 0:
        return {"skip": (r.stderr.strip() or r.stdout.strip())[-500:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- the table -----------------------------------------------------------------------------------

def _row(name: str, rec: dict) -> str:
    if "skip" in rec:
        return f"| {name} | {rec.get('phase', '?')} | {rec.get('nproc', 1)} | skipped: " \
               f"{rec['skip'][:80]} |" + " |" * 9
    s, k = rec["seconds"], rec["images"]
    per, fixed = rec.get("per_image_s", s / k), rec.get("fixed_s", 0.0)
    dec = rec.get("decode_s")
    share = f"{100 * dec / s:.1f}% ({dec:.1f} s)" if dec is not None else "n/a"
    wait = f"{rec['data_wait_s']:.1f} s" if "data_wait_s" in rec else "n/a"
    if rec["phase"] == "verify":  # fixed set-up once, then the measured cost per image
        proj = f"{(fixed + per * 1000) / 60:.0f} min | {(fixed + per * 50000) / 3600:.1f} h"
    else:  # calibration grows with the images; import and mapping do not
        proj = f"256 images: {(fixed + per * 256) / 60:.1f} min | " if k < 256 else "| "
    peak = f"{rec['peak_mb'] / 1024:.2f} GiB" if "peak_mb" in rec else "n/a"
    return (f"| {name} | {rec['phase']} | {rec.get('nproc', 1)} | {k} | {s:.1f} | {fixed:.1f} "
            f"| {per:.2f} | {1 / per:.2f} | {peak} | {share} | {wait} | {proj} |")


def table(results: dict) -> str:
    head = ("| model | phase | processes | images | seconds | set-up s | s/image | images/s | "
            "peak RSS | decode + preprocess (share of wall) | waited for data | projected "
            "1,000 | projected 50,000 |\n" + "|---" * 13 + "|")
    return "\n".join([head] + [_row(f"{n} ({NETS[n][1]})", r)
                               for n, recs in results.items() for r in recs])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,vgg16")
    ap.add_argument("--n", type=int, default=32, help="images to verify")
    ap.add_argument("--calib-n", type=int, default=256, help="calibration images")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--nproc", type=int, default=1, help="also verify under torchrun with K")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "imagenet_size.json")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.phase == "convert":
        print(json.dumps(convert_phase(a.model, a.folder, a.calib_n, a.batch)))
        return 0
    if a.phase == "verify":
        print(json.dumps(verify_phase(a.model, a.folder, a.n, a.batch)))
        return 0
    calib = image_folder("calib", a.calib_n, 1)
    val = image_folder("val", a.n, 2)
    results: dict[str, list[dict]] = {}
    for name in a.models.split(","):
        onnx_file(name)
        common = ["--model", name, "--batch", str(a.batch), "--calib-n", str(a.calib_n),
                  "--n", str(a.n)]
        recs = [_sub(["--phase", "convert", "--folder", str(calib), *common])]
        print(_row(name, recs[-1]), flush=True)
        recs.append(_sub(["--phase", "verify", "--folder", str(val), *common]))
        print(_row(name, recs[-1]), flush=True)
        if a.nproc > 1:
            recs.append(torchrun_verify(name, val, a.n, a.batch, a.nproc))
            print(_row(name, recs[-1]), flush=True)
        results[name] = recs
    print(table(results))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()},
                                 "cores": os.cpu_count(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
