"""DistributedDataParallel under torchrun: 2 CPU processes with gloo (opt-in: SNNCONV_DDP=1)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from snnconv import intmodel

from .conftest import ROOT, SAMPLES

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.environ.get("SNNCONV_DDP") != "1", reason="opt-in: set SNNCONV_DDP=1 (runs torchrun)")]

SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import snnconv
    from snnconv import finetune as ft
    torch.set_num_threads(1)
    snn = snnconv.convert(sys.argv[1] + "/mlp.onnx", sys.argv[1] + "/digits_train.npz")
    res = ft.finetune(snn, sys.argv[1] + "/digits_train.npz", quantize=4, time_bits=4,
                      epochs=2, output=sys.argv[2], seed=5)
    import torch.distributed as dist
    print("rank", dist.get_rank(), "world", res.report["world_size"], flush=True)
""")


def _run(tmp_path, name):
    script = tmp_path / "ddp_job.py"
    script.write_text(SCRIPT)
    out = tmp_path / name
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", str(29500 + os.getpid() % 1000), str(script),
                        str(SAMPLES), str(out)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world 2" in r.stdout
    return intmodel.load(out)


def test_ddp_two_processes_gloo_deterministic(tmp_path):
    a = _run(tmp_path, "a.snnq")
    b = _run(tmp_path, "b.snnq")
    assert a.meta["report"]["world_size"] == 2
    assert len(a.meta["report"]["history"]) == 2
    for la, lb in zip(a.layers, b.layers):
        for ga, gb in zip(la.groups, lb.groups):
            assert np.array_equal(ga.weighted.weight, gb.weighted.weight)
    acc = intmodel.run_file(tmp_path / "a.snnq", SAMPLES / "digits_test.npz")["accuracy"]
    assert acc > 0.85
