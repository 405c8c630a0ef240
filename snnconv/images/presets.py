"""Preprocessing presets for the common data sets: the normalisation their models are usually
trained with. A preset is a starting point; later options change single keys."""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # torchvision's ImageNet evaluation transform: shorter side 256, centre 224, mean/std
    "imagenet": {"resize": 256, "crop": [224, 224], "scale": 1 / 255,
                 "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                 "layout": "NCHW", "color": "rgb"},
    # CIFAR-10 images at their size (32x32), per-channel mean/std of the training set
    "cifar10": {"resize": None, "crop": None, "scale": 1 / 255,
                "mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616],
                "layout": "NCHW", "color": "rgb"},
    # MNIST digits at their size (28x28), grey, mean/std of the training set
    "mnist": {"resize": None, "crop": None, "scale": 1 / 255, "mean": [0.1307],
              "std": [0.3081], "layout": "NCHW", "color": "gray"},
}
