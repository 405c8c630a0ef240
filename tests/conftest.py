import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
MNIST = Path(os.environ.get("SNNCONV_MNIST", ROOT.parent / "shared" / "data" / "mnist"))


@pytest.fixture(scope="session")
def digits():
    tr = np.load(SAMPLES / "digits_train.npz", allow_pickle=False)
    te = np.load(SAMPLES / "digits_test.npz", allow_pickle=False)
    return {"train_x": tr["x"], "train_y": tr["y"], "test_x": te["x"], "test_y": te["y"]}
