"""snnconv benchmarks: SNN simulation, verify and convert against the ANN in onnxruntime.

    python -m benchmarks.run [--quick] [--reps N] [--out build/bench.json]

Timing rows of one (model, batch) run in this process, interleaved, each reported as the median
of its repetitions; a row's ratio is the median over repetitions of its time over its
reference's (onnxruntime float32, or a torch float64 ANN forward) timed just before it, so
load that drifts between the rows' turns stays out of the ratio on a busy machine. Peak RSS is
measured per row in a fresh subprocess (peak RSS only grows). End-to-end rows (convert, verify,
fine-tune) run in their own subprocesses. Results: a table on stdout and JSON (see
benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: import the worktree's snnconv, not another
    sys.path.insert(0, str(ROOT))

from benchmarks import e2e, models as M, rows as R  # noqa: E402

TARGETS = {
    "convert_s": 10.0,  # VGG-style net, 512 calibration samples
    "verify_s": 30.0,  # 1,000 CIFAR-sized samples of a VGG-11-size net
    "memory_ratio": 2.0,  # float32 inference paths vs onnxruntime's
    "finetune_ratio": 1.5,
}


def machine() -> dict:
    import numpy
    import onnxruntime
    import torch

    cpu = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        keep = ("Model name", "CPU(s)", "Thread(s) per core", "L2 cache", "L3 cache")
        cpu = "; ".join(line.split(":", 1)[0].strip() + ": " + line.split(":", 1)[1].strip()
                        for line in out.splitlines() if line.split(":", 1)[0].strip() in keep)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__,
            "load_avg_start": os.getloadavg()}


# --- timing ---------------------------------------------------------------------------------

def time_rows(model: str, batch: int, reps: int, log, budget_s: float = 60.0) -> list[dict]:
    """Build every row of (model, batch), warm each up, then time them interleaved: ``reps``
    repetitions, fewer (at least 3) when one round of all rows would overrun ``budget_s``."""
    ctx = R.Ctx(M.SPECS[model], batch)
    out, fns = [], {}
    for r in R.rows_for(ctx):
        rec = {"model": model, "batch": batch, "row": r.name, "ref": r.ref, "target": r.target,
               "note": r.note, "float32_path": r.float32_path}
        out.append(rec)
        if r.skip:
            rec["skip"] = r.skip
            continue
        try:
            fn = r.build()
            t = time.perf_counter()
            fn()  # warm-up (and a first estimate)
            first = time.perf_counter() - t
        except Exception as e:  # noqa: BLE001 - a row failing must not stop the benchmark
            rec["skip"] = f"error: {type(e).__name__}: {e}"[:200]
            log(f"  {model} b{batch} {r.name}: {rec['skip']}")
            continue
        if first * reps > r.budget_s * 2:
            rec["skip"] = f"over budget: one run took {first:.1f} s"
            continue
        # sub-millisecond calls are repeated inside one timed repetition (timer noise)
        inner = max(1, min(200, int(0.02 / max(first, 1e-7))))
        fns[r.name] = (fn, max(1, min(reps, int(r.budget_s / max(first, 1e-9)))), inner)
        rec["times"] = []
        rec["first_s"] = first
    round_s = 2 * sum(rec.get("first_s", 0.0) for rec in out)  # with the untimed calls
    cap = max(3, int(budget_s / max(round_s, 1e-9)))
    fns = {k: (f, min(n, cap), inner) for k, (f, n, inner) in fns.items()}
    # interleave: rep k of every row, then rep k+1, so drifting load hits all rows alike;
    # a row with a reference times the reference again just before itself (paired ratios)
    for k in range(max((f[1] for f in fns.values()), default=0)):
        for rec in out:
            f = fns.get(rec["row"])
            if f is None or k >= f[1]:
                continue
            ref = fns.get(rec["ref"]) if rec["ref"] else None
            before = _block(ref[0], ref[2]) if ref is not None else None
            rec["times"].append(_block(f[0], f[2]))
            if before is not None:
                rec.setdefault("paired", []).append(rec["times"][-1] / before)
    for rec in out:
        if "times" in rec:
            rec["median_s"] = statistics.median(rec["times"])
            rec["reps"] = len(rec["times"])
        if rec.get("paired"):
            rec["ratio"] = statistics.median(rec["paired"])
            if rec["target"] is not None:
                rec["met"] = rec["ratio"] <= rec["target"]
    return out


#: untimed calls before each timed block, at least one and at least this long: each
#: onnxruntime session has its own threads, and the previous row's keep spinning into the next
#: session's first run (twice as slow at batch 100), as torch's do after a torch row
SETTLE_S = 0.2


def _block(fn, calls: int) -> float:
    """Seconds per call over ``calls`` calls (fewer if they take more than 0.1 s), after
    settling (SETTLE_S)."""
    t = time.perf_counter()
    fn()
    while time.perf_counter() - t < SETTLE_S:
        fn()
    done, t = 0, time.perf_counter()
    while done < calls:
        fn()
        done += 1
        if time.perf_counter() - t > 0.1:
            break
    return (time.perf_counter() - t) / done


# --- memory (subprocesses) ------------------------------------------------------------------

def _sub(args: list[str], timeout: float = 600) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.run", *args]
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skip": f"timed out after {timeout:.0f} s"}
    line = next((ln for ln in reversed(p.stdout.splitlines()) if ln.startswith("{")), None)
    if p.returncode != 0 or line is None:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"skip": f"subprocess failed: {tail[0][:200]}"}
    return json.loads(line)


def memory_rows(timed: list[dict], jobs: int, log) -> None:
    # the sample models' footprints are a few MB over the imports: generated nets only
    todo = [rec for rec in timed if "median_s" in rec and rec["batch"] == max(
        M.SPECS[rec["model"]].batches) and M.SPECS[rec["model"]].kind == "generated"]
    log(f"memory: {len(todo)} rows, one subprocess each")

    def one(rec):
        return rec, _sub(["--mem-row", rec["model"], str(rec["batch"]), rec["row"]])

    with ThreadPoolExecutor(jobs) as ex:
        for rec, res in ex.map(one, todo):
            if "skip" in res:
                rec["mem_skip"] = res["skip"]
            else:
                rec["peak_mb"], rec["baseline_mb"] = res["peak_mb"], res["baseline_mb"]
                rec["delta_mb"] = res["peak_mb"] - res["baseline_mb"]
    by = {(r["model"], r["batch"], r["row"]): r for r in timed}
    for rec in todo:
        ref = by.get((rec["model"], rec["batch"], "onnxruntime ANN f32"))
        if rec.get("float32_path") and ref and "delta_mb" in rec and "delta_mb" in ref:
            rec["mem_ratio"] = rec["delta_mb"] / max(ref["delta_mb"], 1.0)
            rec["mem_met"] = rec["mem_ratio"] <= TARGETS["memory_ratio"]


# --- output ---------------------------------------------------------------------------------

def _fmt_t(s):
    if s is None:
        return ""
    return f"{s * 1e3:.3f} ms" if s < 0.01 else (f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s")


def print_tables(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=160)
    t = Table(title="Inference (median per batch; ratio: median of the paired ratios to the "
              "reference timed just before, same run)")
    for c in ("model", "batch", "row", "time", "ratio", "target", "peak MB (+delta)",
              "mem ratio", "note"):
        t.add_column(c, overflow="fold")
    prev = None
    for r in res["inference"]:
        key = (r["model"], r["batch"])
        if prev is not None and key != prev:
            t.add_section()
        prev = key
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ("ref" if not r["ref"] else "")
        tgt = f"<= {r['target']:g}x " + ("ok" if r.get("met") else "MISSED") \
            if r.get("target") is not None and "ratio" in r else ""
        mem = f"{r['peak_mb']:.0f} (+{r['delta_mb']:.0f})" if "peak_mb" in r else \
            r.get("mem_skip", "")
        mr = f"{r['mem_ratio']:.2f}x" + ("" if r.get("mem_met") else " MISSED") \
            if "mem_ratio" in r else ""
        note = r.get("skip") or r.get("note", "")
        t.add_row(r["model"], str(r["batch"]), r["row"], _fmt_t(r.get("median_s")), ratio, tgt,
                  mem, mr, note)
    con.print(t)
    e = Table(title="End to end (one subprocess each)")
    for c in ("task", "time", "target", "peak MB (+delta)", "reference", "note"):
        e.add_column(c, overflow="fold")
    for name, r in res["end_to_end"].items():
        if "skip" in r:
            e.add_row(name, "", "", "", "", r["skip"])
            continue
        tgt = r.get("target")
        tg = ""
        if tgt is not None:
            tg = f"<= {tgt:g} s " + ("ok" if r["seconds"] <= tgt else "MISSED")
        if r.get("target_ratio") is not None:
            ratio = r["seconds"] / r["ref_seconds"]
            tg = f"<= {r['target_ratio']:g}x ref: {ratio:.2f}x " + \
                ("ok" if ratio <= r["target_ratio"] else "MISSED")
        mem = f"{r['peak_mb']:.0f} (+{r['peak_mb'] - r.get('baseline_mb', 0):.0f})"
        e.add_row(name, _fmt_t(r["seconds"]), tg, mem,
                  f"{r.get('ref', '')}: {_fmt_t(r.get('ref_seconds'))}", r.get("note", ""))
    con.print(e)
    con.print(f"machine: {res['machine']['cpu']}; torch {res['machine']['torch']}, "
              f"onnxruntime {res['machine']['onnxruntime']}; load average at start "
              f"{res['machine']['load_avg_start'][0]:.1f}, at end "
              f"{res['machine']['load_avg_end'][0]:.1f}; total {res['total_s']:.0f} s")


def markdown(res: dict) -> str:
    """The tables as markdown, for benchmarks/README.md."""
    out = ["| model | batch | row | time | ratio | target | peak RSS MB (+over imports) | "
           "mem ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in res["inference"]:
        if "skip" in r and "not present" in r["skip"]:
            continue
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ("ref" if not r["ref"] else "")
        tgt = f"<= {r['target']:g}x " + ("met" if r.get("met") else "**missed**") \
            if r.get("target") is not None and "ratio" in r else ""
        mem = f"{r['peak_mb']:.0f} (+{r['delta_mb']:.0f})" if "peak_mb" in r else ""
        mr = f"{r['mem_ratio']:.2f}x" if "mem_ratio" in r else ""
        t = _fmt_t(r.get("median_s")) or r.get("skip", "")
        out.append(f"| {r['model']} | {r['batch']} | {r['row']} | {t} | {ratio} | {tgt} | "
                   f"{mem} | {mr} |")
    out += ["", "| task | time | target | peak RSS MB (+over imports) | reference |",
            "|---|---|---|---|---|"]
    for name, r in res["end_to_end"].items():
        if "skip" in r:
            out.append(f"| {name} | skipped: {r['skip']} | | | |")
            continue
        tgt = f"<= {r['target']:g} s" if r.get("target") is not None else ""
        out.append(f"| {name} | {_fmt_t(r['seconds'])} | {tgt} | {r['peak_mb']:.0f} "
                   f"(+{r['peak_mb'] - r.get('baseline_mb', 0):.0f}) | {r.get('ref', '')}: "
                   f"{_fmt_t(r.get('ref_seconds'))} |")
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sample models and the VGG net only")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per row (at most)")
    ap.add_argument("--models", nargs="*", help="subset of: " + " ".join(M.SPECS))
    ap.add_argument("--out", default=str(ROOT / "build" / "bench.json"))
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--jobs", type=int, default=2, help="parallel memory subprocesses")
    ap.add_argument("--markdown", metavar="JSON", help="print a result file as markdown tables")
    ap.add_argument("--mem-row", nargs=3, metavar=("MODEL", "BATCH", "ROW"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--e2e", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.markdown:
        print(markdown(json.loads(Path(a.markdown).read_text())))
        return 0
    if a.mem_row:
        print(json.dumps(R.mem_main(a.mem_row[0], int(a.mem_row[1]), a.mem_row[2])))
        return 0
    if a.e2e:
        fn = {"convert": lambda m, n: e2e.convert_main(m, int(n)),
              "verify": lambda m, n, k: e2e.verify_main(m, int(n), int(k)),
              "finetune": lambda m, n, b: e2e.finetune_main(m, int(n), int(b)),
              "ratecoded": lambda: e2e.ratecoded_main()}[a.e2e[0]]
        print(json.dumps(fn(*a.e2e[1:])))
        return 0

    t_all = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_all:6.1f}s] {msg}", file=sys.stderr, flush=True)

    names = a.models or (["mlp", "cnn", "resnet", "vgg11-cifar"] if a.quick else list(M.SPECS))
    res = {"machine": machine(), "targets": TARGETS, "inference": [], "end_to_end": {},
           "setup_s": {}}
    for n in names:  # cached exports and conversions (first run only)
        t = time.perf_counter()
        M.onnx_path(M.SPECS[n])
        M.snn_path(M.SPECS[n])
        res["setup_s"][n] = time.perf_counter() - t
    log("models ready")
    for n in names:
        for b in M.SPECS[n].batches:
            res["inference"] += time_rows(n, b, a.reps, log)
            log(f"timed {n} batch {b}")
    if not a.no_memory:
        memory_rows(res["inference"], a.jobs, log)
        log("memory done")
    if not a.no_e2e:
        vgg = "vgg11-cifar"
        r = _sub(["--e2e", "convert", vgg, "512"])
        r.update(target=TARGETS["convert_s"], note="import + calibration on 512 + write")
        res["end_to_end"][f"convert {vgg}"] = r
        log("convert done")
        r = _sub(["--e2e", "verify", vgg, "1000", "16"], timeout=900)
        r.update(target=TARGETS["verify_s"], note="1,000 samples, float64 reference on 16")
        res["end_to_end"][f"verify {vgg}"] = r
        log("verify done")
        r = _sub(["--e2e", "finetune", vgg, "512", "128"])
        r.update(target_ratio=TARGETS["finetune_ratio"], note="one epoch, 512 samples, batch 128")
        res["end_to_end"][f"fine-tune epoch {vgg}"] = r
        res["end_to_end"]["rate-coded contrast (SpikingJelly, cnn)"] = _sub(["--e2e",
                                                                             "ratecoded"])
        log("end to end done")
    res["machine"]["load_avg_end"] = os.getloadavg()
    res["total_s"] = time.perf_counter() - t_all
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float))
    print_tables(res)
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
