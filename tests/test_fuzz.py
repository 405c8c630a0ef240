"""Bounded fuzzing: mutated ONNX and model-file bytes give documented errors only.

`SNNCONV_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py` runs a longer campaign locally.
"""

import os
import signal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import snnconv
from snnconv.errors import SnnconvError
from snnconv.importer import import_onnx

from .conftest import SAMPLES

N = int(os.environ.get("SNNCONV_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=N, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutations(draw, blob: bytes):
    data = bytearray(blob)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if not data:
            break
        if kind == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[i] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[i:]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[i:i + draw(st.integers(1, 16))]
    return bytes(data)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def _bounded(fn, seconds=20):
    """Run fn; a hang is a failure, not a stuck suite."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


CNN = (SAMPLES / "cnn.onnx").read_bytes()


@FUZZ
@given(blob=mutations(CNN))
def test_mutated_onnx_gives_documented_errors(blob):
    try:
        _bounded(lambda: snnconv.convert(blob))
    except SnnconvError:
        pass
    except Hang:
        pytest.fail("convert hung on a mutated model")


@pytest.fixture(scope="module")
def snn_blob(tmp_path_factory):
    p = tmp_path_factory.mktemp("fz") / "m.snn"
    snnconv.convert(SAMPLES / "mlp.onnx").save(p)
    return p.read_bytes()


def test_mutated_model_files_give_documented_errors(snn_blob, tmp_path):
    @FUZZ
    @given(blob=mutations(snn_blob))
    def run(blob):
        p = tmp_path / "f.snn"
        p.write_bytes(blob)
        try:
            _bounded(lambda: snnconv.load(p))
        except SnnconvError:
            pass
        except Hang:
            pytest.fail("load hung on a mutated model file")

    run()


def test_random_bytes_and_empty_files(tmp_path):
    for name, blob in [("empty.onnx", b""), ("random.onnx", os.urandom(4096)),
                       ("text.onnx", b"this is not a model\n" * 10)]:
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(SnnconvError, match=name):
            import_onnx(p)
