import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
MNIST = Path(os.environ.get("SNNCONV_MNIST", ROOT.parent / "shared" / "data" / "mnist"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per worker: with as many workers as cores, more threads only wait
    # on each other (a run of tiny ops, such as GPTQ's column loop, slowed 40x)
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    tr = np.load(SAMPLES / "digits_train.npz", allow_pickle=False)
    te = np.load(SAMPLES / "digits_test.npz", allow_pickle=False)
    return {"train_x": tr["x"], "train_y": tr["y"], "test_x": te["x"], "test_y": te["y"]}
