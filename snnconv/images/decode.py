"""One image file -> one model input, with Pillow (torchvision is not used: its registry wheel
is a CUDA build that does not import beside the CPU torch). Headers are read without decoding,
so odd files are found before any pixel is allocated."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, UsageError
from .preprocess import Preprocess, resized

#: modes decoded as 8-bit grey or colour (CMYK and palettes are converted by Pillow)
EIGHT_BIT = {"1", "L", "P", "RGB", "RGBA", "LA", "PA", "La", "RGBa", "RGBX", "CMYK", "YCbCr",
             "LAB", "HSV"}
#: 16-bit grey: brought to the 0..255 range by /257, kept in float (no rounding)
SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


def pillow():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - a dependency of snnconv
        raise UsageError("reading image folders needs Pillow",
                         hint="pip install pillow") from None
    return Image


@dataclass(frozen=True)
class Header:
    w: int
    h: int
    mode: str
    bands: int


def header(path: Path) -> Header | str:
    """Width, height and mode from the file's header, or why it cannot be used."""
    Image = pillow()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                mode, bands = im.mode, len(im.getbands())
    except Image.DecompressionBombError as e:
        return f"decompression bomb ({e})"
    except Image.UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        return f"unreadable ({e})"
    if mode not in EIGHT_BIT and mode not in SIXTEEN_BIT:
        return f"unsupported pixel mode {mode} (32-bit or float pixels)"
    return Header(w, h, mode, bands)


def decode(path: Path, pre: Preprocess) -> np.ndarray:
    """The preprocessed sample; a file that fails to decode (truncated, corrupt) is a DataError
    naming it."""
    Image = pillow()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                im = _pixels(Image, im, pre.color)
                if pre.resize:
                    size = resized(*im.size, pre.resize)
                    if size != im.size:
                        im = im.resize(size, Image.Resampling.BILINEAR)
                if pre.crop:
                    im = _centre_crop(im, pre.crop, path)
                a = np.asarray(im)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot decode the image ({e})",
                        hint="remove or re-encode the file") from None
    if pre.color == "rgb" and a.ndim == 2:  # 16-bit grey to RGB
        a = np.repeat(a[:, :, None], 3, axis=2)
    return pre.normalise(a)


def _pixels(Image, im, color: str):
    """8-bit L/RGB, or 16-bit grey as float pixels in 0..255 units (mode F)."""
    if im.mode in SIXTEEN_BIT:
        a = np.asarray(im, dtype=np.float32) / np.float32(257.0)
        return Image.fromarray(a)  # float32 -> mode F
    return im.convert("RGB" if color == "rgb" else "L")


def _centre_crop(im, crop: tuple[int, int], path: Path):
    ch, cw = crop
    w, h = im.size
    if ch > h or cw > w:
        raise DataError(f"{path}: {w}x{h} pixels after resizing, smaller than the crop "
                        f"{cw}x{ch}", hint="resize to at least the crop size")
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return im.crop((left, top, left + cw, top + ch))
