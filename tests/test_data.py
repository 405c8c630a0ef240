"""Data files: clear errors for bad data, streaming for large files, no pickles."""

import numpy as np
import pytest

from snnconv import data, npyfile
from snnconv.errors import DataError


def test_npz_npy_and_arrays(tmp_path):
    x = np.random.default_rng(0).random((10, 1, 4, 4), dtype=np.float32)
    y = np.arange(10) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.save(tmp_path / "d.npy", x)
    for src in (tmp_path / "d.npz", tmp_path / "d.npy", x, (x, y)):
        ds = data.load(src, (1, 4, 4), n_classes=3)
        got = np.concatenate([b for b, _ in ds.batches(3)])
        assert np.array_equal(got, x.astype(np.float64))


@pytest.mark.parametrize("case,match", [
    ("shape", "per-sample shape"), ("dtype", "dtype"), ("nan", "NaN or Inf.*sample 3"),
    ("labels", "labels range"), ("empty", "empty"), ("nox", "no array named 'x'"),
    ("pickle", "pickled|Python objects"), ("garbage", "cannot read"), ("ylen", "y has shape"),
])
def test_bad_data_is_named(tmp_path, case, match):
    x = np.zeros((5, 1, 4, 4), np.float32)
    p = tmp_path / "bad.npz"
    if case == "shape":
        np.savez(p, x=np.zeros((5, 16), np.float32))
    elif case == "dtype":
        np.savez(p, x=np.array(["a"] * 5))
    elif case == "nan":
        x[3, 0, 1, 1] = np.nan
        np.savez(p, x=x)
    elif case == "labels":
        np.savez(p, x=x, y=np.array([0, 1, 2, 3, 10]))
    elif case == "empty":
        np.savez(p, x=np.zeros((0, 1, 4, 4), np.float32))
    elif case == "nox":
        np.savez(p, inputs=x)
    elif case == "pickle":
        np.savez(p, x=np.array([{"a": 1}] * 5, dtype=object))
    elif case == "garbage":
        p.write_bytes(b"PK\x03\x04 not really a zip")
    elif case == "ylen":
        np.savez(p, x=x, y=np.zeros(4, np.int64))
    with pytest.raises(DataError, match=match) as e:
        data.load(p, (1, 4, 4), n_classes=10)
        list(data.load(p, (1, 4, 4), n_classes=10).batches(2))
    assert str(p) in str(e.value)


def test_large_npz_member_streams(tmp_path, monkeypatch):
    monkeypatch.setattr(npyfile, "STREAM_ABOVE", 1000)  # force streaming on a small file
    x = np.random.default_rng(1).random((257, 3, 5, 5)).astype(np.float32)
    x[200, 1, 2, 2] = np.inf
    np.savez_compressed(tmp_path / "big.npz", x=x, y=np.zeros(257, np.int64))
    ds = data.load(tmp_path / "big.npz", (3, 5, 5))
    assert isinstance(ds.x, data.NpzArray) and len(ds) == 257
    it = ds.batches(64)
    first = [next(it)[0] for _ in range(3)]
    assert np.array_equal(np.concatenate(first), x[:192].astype(np.float64))
    with pytest.raises(DataError, match="sample 200"):
        next(it)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    """A full disk (ENOSPC at flush) leaves neither a half file nor a temp file; the old
    output stays intact."""
    import errno
    import os

    from snnconv import fileio
    from snnconv.errors import OutputError

    target = tmp_path / "out.snn"
    target.write_bytes(b"previous complete file")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match="No space left"):
        fileio.atomic_write(target, b"x" * 1000)
    assert target.read_bytes() == b"previous complete file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.snn"]
