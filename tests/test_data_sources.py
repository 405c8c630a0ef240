"""One data abstraction: labelled samples as a Dataset or a Stream of batches, held-out splits,
files a model records; and the fine-tuning config's file keys returned explicitly."""

import numpy as np
import pytest
import torch

from snnconv import data
from snnconv.errors import DataError, UsageError
from snnconv.fileio import require_recorded_file, sha256_file
from snnconv.finetune import ConfigFiles, FinetuneConfig


def _xy(n=10):
    x = np.random.default_rng(0).random((n, 1, 4, 4), dtype=np.float32)
    return x, np.arange(n) % 3


def test_labelled_arrays_tensors_and_streams():
    x, y = _xy()
    ds = data.labelled((torch.as_tensor(x), torch.as_tensor(y)), (1, 4, 4))
    assert isinstance(ds, data.Dataset) and np.array_equal(ds.y, y)
    assert np.array_equal(ds.head_x(4), x[:4].astype(np.float64))
    batches = [{"x": torch.as_tensor(x[i:i + 4]), "y": torch.as_tensor(y[i:i + 4])}
               for i in range(0, 10, 4)]
    st = data.labelled(batches, (1, 4, 4), "training data")
    assert isinstance(st, data.Stream) and st.split(0.5, 0) == (st, None)
    got = list(st.batches(999))
    assert [len(b) for b, _ in got] == [4, 4, 2] and got[0][1].dtype == np.int64
    assert np.array_equal(st.head_x(6), x[:6].astype(np.float64))
    with pytest.raises(DataError, match="labels"):
        data.labelled(x, (1, 4, 4))
    with pytest.raises(UsageError, match="expected a path"):
        data.labelled(3, (1, 4, 4), "training data")
    with pytest.raises(DataError, match="per-sample shape"):
        list(data.labelled([(x[:, 0], y)], (1, 4, 4)).batches())
    with pytest.raises(DataError, match="no batches"):
        data.labelled([], (1, 4, 4)).head_x(3)


def test_split_holds_out_a_seeded_fraction_in_order():
    x, y = _xy(20)
    ds = data.labelled((x, y), (1, 4, 4))
    kept, held = ds.split(0.25, seed=1)
    assert len(kept) == 15 and len(held) == 5 and held.name.endswith("(held out)")
    rows = {tuple(r.ravel()) for r in np.concatenate([kept.x, held.x])}
    assert len(rows) == 20
    again = ds.split(0.25, seed=1)[1]
    assert np.array_equal(again.x, held.x)
    assert ds.split(0, seed=1) == (ds, None)


def test_recorded_file_refuses_absent_gone_and_changed(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros(3))
    msgs = ("none recorded", "{p}: gone", "{p}: changed")
    assert require_recorded_file({"path": str(p), "sha256": sha256_file(p)}, *msgs) == p
    with pytest.raises(UsageError, match="none recorded"):
        require_recorded_file(None, *msgs)
    with pytest.raises(DataError, match="gone"):
        require_recorded_file({"path": str(tmp_path / "x.npz")}, *msgs)
    with pytest.raises(DataError, match="d.npz: changed"):
        require_recorded_file({"path": str(p), "sha256": "0" * 64}, *msgs)


def test_config_returns_the_files_it_names(tmp_path):
    cfg_file = tmp_path / "ft.yaml"
    cfg_file.write_text("quantize: 3\ntarget: hw.yaml\nval: v.npz\n")
    cfg, files = FinetuneConfig.from_sources(cfg_file, epochs=2)
    assert (cfg.quantize, cfg.epochs) == (3, 2) and not hasattr(cfg, "_extra")
    assert files == ConfigFiles(target="hw.yaml", val="v.npz")
    cfg, files = FinetuneConfig.from_sources(None, quantize=5)
    assert cfg.quantize == 5 and files == ConfigFiles()
    with pytest.raises(UsageError, match="not found"):
        FinetuneConfig.from_sources(tmp_path / "missing.yaml")
