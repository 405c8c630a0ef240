"""Regenerates the figures of the documentation (needs matplotlib):

    python docs/figures.py

docs/img/membrane.png: the sample CNN converted with the digits training set as calibration data,
membrane potentials of a few neurons per layer for the first test digit, drawn by
``snnconv.plots.membrane_plot`` from the converted model itself.
"""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the snnconv of this tree, installed or not

import snnconv  # noqa: E402
from snnconv.plots import membrane_plot  # noqa: E402

SAMPLES = ROOT / "sample_models"


def main() -> None:
    snn = snnconv.convert(SAMPLES / "cnn.onnx", SAMPLES / "digits_train.npz")
    with np.load(SAMPLES / "digits_test.npz") as f:
        x = f["x"][:1]
    out = ROOT / "docs" / "img" / "membrane.png"
    out.parent.mkdir(exist_ok=True)
    membrane_plot(snn, x, out)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
