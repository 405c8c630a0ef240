"""Many processes, one report: shards cover the data in whole batches, merged accumulator states
equal one process's, and 2 CPU processes under torchrun (gloo) give the single-process report
of verify (float and integer), run and the calibration of convert."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import snnconv
from snnconv import api, distributed, intmodel, modelfile
from snnconv.errors import UsageError
from snnconv.verify import accumulate, runners
from snnconv.verify.bound import Tolerance
from snnconv.verify.inputs import prepare

from .conftest import ROOT, SAMPLES
from .test_intmodel import build

TRAIN, TEST = SAMPLES / "digits_train.npz", SAMPLES / "digits_test.npz"
BS = 64  # digits_test: 360 samples = 5 full batches and one of 40


@pytest.mark.parametrize("total,bs,size", [(360, 64, 2), (360, 64, 3), (10, 4, 5), (1, 8, 2),
                                           (1000, 100, 4)])
def test_shards_are_contiguous_whole_batches(total, bs, size):
    parts = [distributed.shard(total, bs, distributed.World(r, size)) for r in range(size)]
    assert parts[0][0] == 0 and parts[-1][1] == total
    for (a, b), (c, _) in zip(parts, parts[1:]):
        assert b == c and a % bs == 0 and b >= a
    counts = [b - a for a, b in parts if b > a]
    assert max(counts) - min(counts) <= bs  # balanced to a batch


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    snn = snnconv.convert(SAMPLES / "cnn.onnx", TRAIN)
    snn.save(d / "cnn.snn")
    net, _ = build("cnn", 4, 4)
    intmodel.save(net, d / "cnn.snnq")
    return d


def test_merged_states_equal_one_pass(work):
    """The accumulators of two halves, merged, report what one pass over all batches does."""
    snn = modelfile.load(work / "cnn.snn")
    inputs = prepare(snn, None, TEST, None)
    runs = runners.Runs(snn, inputs, Tolerance(None, None, 1e-9), runners.simulator("closed"),
                        False)
    whole = accumulate(snn, inputs, runs, BS, 0, inputs.total)
    cut = distributed.shard(inputs.total, BS, distributed.World(0, 2))[1]
    first = accumulate(snn, inputs, runs, BS, 0, cut)
    second = accumulate(snn, inputs, runs, BS, cut, inputs.total)
    for a, b in zip(first, second):
        a.merge(json.loads(json.dumps(b.state())))  # plain data, as all_gather_object sends it
    assert [a.result() for a in first] == [a.result() for a in whole]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args, tmp):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
                        *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=300, cwd=tmp)
    return r


def test_torchrun_verify_equals_one_process(work):
    """``torchrun --nproc-per-node 2 -m snnconv verify``: rank 0 prints and writes the report of
    one process, field for field (JSON, JUnit); the noise curve (one random stream) is rank 0's
    run over all samples, so it too is one process's."""
    one = api.verify_file(work / "cnn.snn", data=TEST, batch_size=BS, noise=[0.1],
                          report_json=work / "one.json", junit=work / "one.xml")
    r = _torchrun("-m", "snnconv", "verify", work / "cnn.snn", "--data", TEST, "--batch-size",
                  BS, "--noise", "0.1", "--report-json", work / "two.json", "--junit",
                  work / "two.xml", "--json", tmp=work)
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads(r.stdout)  # one JSON document: only rank 0 printed
    assert two["warnings"].pop() == "the noise curve is one random stream over all samples: " \
        "rank 0 ran it alone"
    assert two == json.loads(json.dumps(one))
    two["warnings"].append(json.loads((work / "two.json").read_text())["warnings"][-1])
    assert json.loads((work / "two.json").read_text()) == two
    assert (work / "two.xml").read_bytes() == (work / "one.xml").read_bytes()
    assert two["samples"] == 360 and two["ok"]


SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from snnconv import api, distributed, modelfile
    from snnconv.intmodel import run_file
    torch.set_num_threads(1)
    d, train, test = sys.argv[1:4]
    conv = api.convert_file(d + "/cnn.onnx", d + "/two.snn", calib=train, batch_size=100)
    run = run_file(d + "/cnn.snnq", test, d + "/two_pred.npz", batch_size=64)
    integer = api.verify_file(d + "/cnn.snnq", data=test, batch_size=64)
    world = distributed.from_env()
    json.dump({"run": run, "integer": integer, "summary": conv["summary"]},
              open(d + f"/rank{world.rank}.json", "w"))
""")


def test_torchrun_run_integer_verify_and_calibration_equal_one_process(work):
    (work / "job.py").write_text(SCRIPT)
    (work / "cnn.onnx").write_bytes((SAMPLES / "cnn.onnx").read_bytes())
    r = _torchrun(work / "job.py", work, TRAIN, TEST, tmp=work)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((work / f"rank{i}.json").read_text()) for i in range(2)]
    assert ranks[0] == ranks[1]  # every process returns the merged result
    got = ranks[0]
    run = intmodel.run_file(work / "cnn.snnq", TEST, work / "one_pred.npz", batch_size=64)
    run["output"] = got["run"]["output"]
    assert got["run"] == run
    for k in ("pred", "logits", "real_logits"):
        assert np.array_equal(np.load(work / "two_pred.npz")[k], np.load(work / "one_pred.npz")[k])
    one = api.verify_file(work / "cnn.snnq", data=TEST, batch_size=64)
    assert got["integer"] == json.loads(json.dumps(one))
    # calibration: maxima, activity, input range and windows of the written .snn
    ref = snnconv.convert(work / "cnn.onnx", TRAIN, batch_size=100)
    two = modelfile.load(work / "two.snn")
    for key in ("maxima", "active", "samples"):
        assert two.meta["calibration"][key] == ref.meta["calibration"][key], key
    assert two.meta["input_range"] == ref.meta["input_range"]
    assert [la.window for la in two.layers] == [la.window for la in ref.layers]
    assert got["summary"]["latency"] == ref.latency


def test_world_from_the_environment(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.from_env() == distributed.SINGLE and distributed.join() is distributed.SINGLE
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.from_env() == distributed.World(1, 2, 1)
    with pytest.raises(UsageError, match="cannot join") as e:
        distributed.join()  # WORLD_SIZE without torchrun (no MASTER_ADDR): exit 2, not a hang
    assert "torchrun" in e.value.hint
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(UsageError, match="outside"):
        distributed.from_env()
