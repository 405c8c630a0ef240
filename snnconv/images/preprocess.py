"""How an image becomes a model input: resize the shorter side, centre crop, scale, per-channel
mean/std, layout and colour. Set by a preset, a YAML file or ``key=value`` items, applied in
order on top of a base (the one recorded in the model, or the defaults)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .presets import PRESETS

LAYOUTS = ("NCHW", "NHWC", "flat")
COLORS = ("rgb", "gray")
KEYS = ("resize", "crop", "scale", "mean", "std", "layout", "color", "bad_images", "labels")


@dataclass(frozen=True)
class Preprocess:
    """``resize``: shorter side in pixels (None: as is); ``crop``: centre (H, W); ``scale``:
    pixel (0..255 units; 16-bit images are brought to that range) times this; ``mean``/``std``:
    per channel after scaling; ``layout``: NCHW, NHWC or flat (CHW flattened); ``color``: rgb,
    gray or None (from the model's channels); ``bad_images``: skip (counted) or error;
    ``labels``: CSV of a flat folder (default FOLDER/labels.csv)."""

    resize: int | None = None
    crop: tuple[int, int] | None = None
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NCHW"
    color: str | None = None
    bad_images: str = "skip"
    labels: str | None = None

    def as_dict(self) -> dict:
        """What the .snn records (JSON)."""
        d = asdict(self)
        d["crop"] = list(self.crop) if self.crop else None
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def channels(self, shape: tuple) -> int:
        """Colour channels the model's per-sample input ``shape`` has."""
        if self.layout == "flat" or len(shape) != 3:
            return 3 if self.color == "rgb" else 1
        return shape[0] if self.layout == "NCHW" else shape[-1]

    def for_model(self, shape: tuple) -> Preprocess:
        """The colour chosen from the model's channels when none is set."""
        if self.color is not None:
            return self
        return replace(self, color="rgb" if self.channels(shape) == 3 else "gray")

    def out_hw(self, w: int, h: int) -> tuple[int, int]:
        """(H, W) of an image of ``w`` x ``h`` pixels after resize and crop."""
        if self.resize:
            w, h = resized(w, h, self.resize)
        return self.crop if self.crop else (h, w)

    def sample_shape(self, hw: tuple[int, int]) -> tuple[int, ...]:
        c = 3 if self.color == "rgb" else 1
        if self.layout == "NCHW":
            return (c, *hw)
        if self.layout == "NHWC":
            return (*hw, c)
        return (c * hw[0] * hw[1],)

    def value_range(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) of every input this preprocessing can give (pixels 0..255), rounded out to
        float32: per channel (C, 1, 1) for NCHW, one range otherwise. Exact for any image, so
        no input is clipped at encoding, whatever the calibration images held."""
        c = 3 if self.color == "rgb" else 1
        mean, std = _per_channel(self.mean, c), _per_channel(self.std, c)
        ends = (np.array([0.0, 255.0 * self.scale])[:, None] - mean) / std  # (2, C)
        lo, hi = ends.min(0), ends.max(0)
        lo = np.nextafter(lo.astype(np.float32), np.float32(-np.inf)).astype(np.float64)
        hi = np.nextafter(hi.astype(np.float32), np.float32(np.inf)).astype(np.float64)
        if self.layout == "NCHW":
            return lo.reshape(-1, 1, 1), hi.reshape(-1, 1, 1)
        return np.array(lo.min()), np.array(hi.max())

    def normalise(self, a: np.ndarray) -> np.ndarray:
        """(H, W[, C]) pixels -> the model's sample (float32)."""
        if a.ndim == 2:
            a = a[:, :, None]
        x = a.astype(np.float64) * self.scale
        c = x.shape[2]
        x = (x - _per_channel(self.mean, c)) / _per_channel(self.std, c)
        if self.layout != "NHWC":
            x = x.transpose(2, 0, 1)
        if self.layout == "flat":
            x = x.reshape(-1)
        return np.ascontiguousarray(x, dtype=np.float32)


def resized(w: int, h: int, short: int) -> tuple[int, int]:
    """(W, H) with the shorter side ``short``, the other scaled (rounded down, as torchvision)."""
    if w <= h:
        return short, max(1, int(short * h / w))
    return max(1, int(short * w / h)), short


def _per_channel(v: tuple[float, ...], c: int) -> np.ndarray:
    if len(v) not in (1, c):
        raise UsageError(f"preprocessing gives {len(v)} mean/std values for {c} channels")
    return np.asarray(v, np.float64)


# --- building one from presets, files and items -----------------------------------------------

def build(items=None, base: dict | None = None) -> Preprocess:
    """A ``Preprocess`` from ``items`` (a Preprocess, a dict, a preset name, a YAML path,
    ``key=value`` text, or a list of these, applied in order) on top of ``base`` (a recorded
    dict) or the defaults. A preset replaces everything before it."""
    if isinstance(items, Preprocess):
        return items
    d = Preprocess().as_dict()
    if base:
        d.update({k: v for k, v in base.items() if k in KEYS})
    if items is None:
        items = []
    elif isinstance(items, (str, dict, Path)):
        items = [items]
    for it in items:
        d.update(_item(it, d))
    return from_dict(d)


def _item(it, current: dict) -> dict:
    if isinstance(it, dict):
        return {str(k).replace("-", "_"): v for k, v in it.items()}
    text = str(it).strip()
    if text.lower() in PRESETS:
        return {**Preprocess().as_dict(), **PRESETS[text.lower()]}
    if "=" in text:
        out = {}
        for part in _split_items(text):
            k, _, v = part.partition("=")
            out[k.strip().replace("-", "_")] = _value(v.strip())
        return out
    if text.endswith((".yaml", ".yml")):
        from ..yamlfile import load_mapping

        d = load_mapping(text, "preprocessing file", set(KEYS), {"preset"})
        preset = d.pop("preset", None)
        return {**(_item(preset, current) if preset else {}), **d}
    raise UsageError(f"--preprocess '{text}': not a preset ({', '.join(PRESETS)}), a YAML file "
                     "or key=value", hint="e.g. --preprocess imagenet, --preprocess pre.yaml, "
                     "--preprocess resize=256,crop=224")


def _split_items(text: str) -> list[str]:
    """'a=1,b=2,3' -> ['a=1', 'b=2,3']: a comma starts a new item only before 'key='."""
    parts: list[str] = []
    for tok in text.split(","):
        if "=" in tok or not parts:
            parts.append(tok)
        else:
            parts[-1] += "," + tok
    return parts


def _value(v: str):
    if v.lower() in ("", "none", "null"):
        return None
    vals = [s for s in re.split(r"[x,]", v) if s]
    if len(vals) > 1 and all(re.fullmatch(r"[-+0-9.e/]+", s) for s in vals):
        return vals
    return v


def _num(v, key: str) -> float:
    try:
        if isinstance(v, str) and "/" in v:
            a, b = v.split("/")
            return float(a) / float(b)
        f = float(v)
    except (TypeError, ValueError, ZeroDivisionError):
        raise UsageError(f"preprocessing {key}={v!r}: expected a number") from None
    if not math.isfinite(f):
        raise UsageError(f"preprocessing {key}={v!r}: must be finite")
    return f


def _nums(v, key: str) -> tuple[float, ...]:
    vs = v if isinstance(v, (list, tuple)) else [v]
    return tuple(_num(x, key) for x in vs)


def from_dict(d: dict) -> Preprocess:
    """Checked values: errors name the key."""
    bad = sorted(set(d) - set(KEYS))
    if bad:
        raise UsageError(f"unknown preprocessing keys: {', '.join(bad)}",
                         hint="known: " + ", ".join(KEYS) + "; presets: " + ", ".join(PRESETS))
    resize = None if d.get("resize") is None else int(_num(d["resize"], "resize"))
    crop = d.get("crop")
    if crop is not None:
        c = [int(_num(v, "crop")) for v in (crop if isinstance(crop, (list, tuple)) else [crop])]
        crop = (c[0], c[-1]) if len(c) in (1, 2) else None
        if crop is None:
            raise UsageError(f"preprocessing crop={d['crop']!r}: expected S or H,W")
    if (resize is not None and resize <= 0) or (crop and min(crop) <= 0):
        raise UsageError("preprocessing resize and crop must be positive")
    std = _nums(d.get("std", (1.0,)), "std")
    if min(std) <= 0:
        raise UsageError(f"preprocessing std={list(std)}: must be positive")
    layout = {"nchw": "NCHW", "nhwc": "NHWC", "flat": "flat"}.get(str(d.get("layout")).lower())
    color = d.get("color")
    color = {"grey": "gray", "l": "gray"}.get(str(color).lower(), str(color).lower()) \
        if color is not None else None
    bad_images = str(d.get("bad_images", "skip")).lower()
    if layout is None or (color is not None and color not in COLORS) or \
            bad_images not in ("skip", "error"):
        raise UsageError(f"preprocessing layout={d.get('layout')!r}, color={d.get('color')!r}, "
                         f"bad_images={d.get('bad_images')!r}: expected layout "
                         f"{'/'.join(LAYOUTS)}, color {'/'.join(COLORS)}, bad_images skip/error")
    return Preprocess(resize, crop, _num(d.get("scale", 1 / 255), "scale"),
                      _nums(d.get("mean", (0.0,)), "mean"), std, layout, color, bad_images,
                      None if d.get("labels") is None else str(d["labels"]))
