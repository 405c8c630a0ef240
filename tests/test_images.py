"""Image folders as data: the digits test set as PNG and JPEG files in class folders, with odd
files among them, converts and verifies exactly as the equivalent .npz does; odd images are
skipped and counted, or refused with the file named; nothing crashes."""

import json
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import snnconv
from snnconv import data, images
from snnconv.api import convert_file
from snnconv.cli import app
from snnconv.errors import DataError, UsageError
from snnconv.verify import verify

from .conftest import SAMPLES

runner = CliRunner()
N = 120  # samples in the folder: enough for every class, fast to convert and verify


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """digits_test as class folders: 8-bit grey pixels = x * 240 (exact), every 7th a JPEG;
    plus a text file, an empty .png, a float TIFF and an image of the wrong size."""
    d = tmp_path_factory.mktemp("images")
    z = np.load(SAMPLES / "digits_test.npz")
    x, y = z["x"][:N], z["y"][:N]
    root = d / "digits"
    for i in range(N):
        cls = root / f"c{y[i]}"
        cls.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(np.round(x[i, 0] * 240).astype(np.uint8))
        if i % 7 == 3:
            im.save(cls / f"{i:04d}.jpg", quality=95)
        else:
            im.save(cls / f"{i:04d}.png")
    (root / "c0" / "notes.txt").write_text("not an image")
    (root / "c1" / "empty.png").write_bytes(b"")
    Image.fromarray(np.ones((8, 8), np.float32)).save(root / "c2" / "float.tif")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(root / "c3" / "big.png")
    shutil.copy(SAMPLES / "cnn.onnx", d / "cnn.onnx")
    return d


def _decoded(root, fn):
    """The equivalent arrays, decoded here file by file with Pillow (JPEG is lossy, so the
    reference is what the files hold, not digits_test.npz)."""
    xs, ys = [], []
    for ci, cls in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        for f in sorted(cls.iterdir()):
            if f.suffix in (".png", ".jpg") and f.stat().st_size and f.name != "big.png":
                a = np.asarray(Image.open(f).convert("L"), np.float64)
                xs.append(fn(a)[None].astype(np.float32))
                ys.append(ci)
    return np.stack(xs), np.asarray(ys)


def _figures(rep: dict) -> dict:
    """Every figure of a verify report (not the names of its files, nor its warnings)."""
    return {k: v for k, v in rep.items() if k not in ("model", "data", "warnings")}


@pytest.mark.parametrize("pre, fn", [
    (["color=gray", "scale=1/240"], lambda a: a * (1 / 240)),
    (["mnist"], lambda a: (a * (1 / 255) - 0.1307) / 0.3081),
])
def test_folder_converts_and_verifies_as_the_npz(folder, pre, fn):
    root = folder / "digits"
    x, y = _decoded(root, fn)
    npz = folder / f"equiv_{pre[0][:5]}.npz"
    np.savez(npz, x=x, y=y)
    opts = [a for p in pre for a in ("--preprocess", p)]
    out = {}
    # the folder's input range comes from the preprocessing (pixels 0..255, exact for any
    # image); the equivalent .npz conversion is told the same range
    sc, m, sd = (1 / 255, 0.1307, 0.3081) if pre == ["mnist"] else (1 / 240, 0.0, 1.0)
    lo, hi = (np.nextafter(np.float32(v), np.float32(d)).item() for v, d in
              (((0 - m) / sd, -np.inf), ((255 * sc - m) / sd, np.inf)))
    assert lo <= x.min() and x.max() <= hi
    rng = ["--input-range", repr(lo), repr(hi)]
    for name, src, extra in (("folder", root, opts), ("npz", npz, rng)):
        snn = folder / f"{name}_{pre[0][:5]}.snn"
        r = runner.invoke(app, ["convert", str(folder / "cnn.onnx"), "--calib", str(src),
                                "-o", str(snn), "--json", *extra])
        assert r.exit_code == 0, r.output
        conv = json.loads(r.stdout)["summary"]
        r = runner.invoke(app, ["verify", str(snn), "--data", str(src), "--json"])
        assert r.exit_code == 0, r.output
        out[name] = conv, json.loads(r.stdout)
    (cf, vf), (cn, vn) = out["folder"], out["npz"]
    assert cf["layers"] == cn["layers"] and cf["latency"] == cn["latency"]
    assert _figures(vf) == _figures(vn) and vf["samples"] == len(y) == N
    skipped = [w for w in cf["warnings"] if "skipped 4 of" in w]
    assert skipped and "not an image" in skipped[0] and "wrong size" in skipped[0]
    assert any("skipped 4 of" in w for w in vf["warnings"])
    meta = snnconv.load(folder / f"folder_{pre[0][:5]}.snn").meta
    assert meta["preprocess"]["color"] == "gray" and meta["calibration"]["data"]["path"]
    if pre == ["mnist"]:
        assert meta["preprocess"]["mean"] == [0.1307]
    else:  # exact pixels: the folder is the digits test set itself
        assert np.array_equal(np.concatenate([xb for xb, _ in data.load(
            root, (1, 8, 8), preprocess=pre).batches(50)]).ravel()[:64 * 6],
            np.asarray(x, np.float64).ravel()[:64 * 6])
        rep = verify(folder / f"folder_{pre[0][:5]}.snn", n=40)  # recorded folder, reused
        assert rep.ok and rep.to_dict()["samples"] == 40


def test_recorded_preprocessing_can_be_changed(folder):
    snn = folder / "rec.snn"
    convert_file(folder / "cnn.onnx", snn, calib=folder / "digits",
                         preprocess="color=gray,scale=1/240", calib_limit=30)
    rep = verify(snn, data=folder / "digits", n=30, preprocess="scale=1/255").to_dict()
    assert any("differs from the one recorded" in w and "scale" in w for w in rep["warnings"])
    r = runner.invoke(app, ["verify", str(snn), "--data", str(folder / "digits"), "--n", "8",
                            "--preprocess", "imagenet"])
    assert r.exit_code == 2 and "no usable images" in r.output


def test_flat_folder_with_labels_csv(tmp_path):
    for i in range(6):
        Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(
        f"im{i}.png,{'cat' if i % 2 else 'dog'}\n" for i in range(5)))
    ds = data.load(tmp_path, (1, 8, 8), preprocess="color=gray")
    assert len(ds) == 5 and list(ds.y) == [1, 0, 1, 0, 1]  # cat=0, dog=1 (sorted names)
    assert "no label in labels.csv" in ds.notes[0]
    assert np.allclose(ds.head_x(5)[:, 0, 0, 0], [20 * i / 255 for i in range(5)])
    (tmp_path / "labels.csv").unlink()
    ds = data.load(tmp_path, (64,), preprocess="color=gray,layout=flat")
    assert ds.y is None and ds.head_x(6).shape == (6, 64)


def test_odd_images_convert_or_are_named(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (10, 12, 3), np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "a_cmyk.jpg")
    Image.fromarray((np.arange(120).reshape(10, 12) * 500).astype(np.uint16)).save(
        tmp_path / "b_16bit.png")
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "d_small.png")
    ds = data.load(tmp_path, (3, 8, 8), preprocess=["crop=8", "scale=1"])
    assert len(ds) == 2 and "1 CMYK image(s) converted to RGB" in ds.notes[1]
    assert "skipped 1 of 3 files (1 smaller than the crop" in ds.notes[0]
    x16 = ds.head_x(2)[1]
    want = (np.arange(120).reshape(10, 12) * 500 / 257)[1:9, 2:10]
    assert np.allclose(x16[0], want, rtol=1e-6) and np.array_equal(x16[0], x16[2])
    # truncated: found when decoding, named
    raw = (tmp_path / "b_16bit.png").read_bytes()
    (tmp_path / "b_16bit.png").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(DataError, match="b_16bit.png: cannot decode"):
        data.load(tmp_path, (3, 8, 8), preprocess="crop=8").head_x(2)
    (tmp_path / "b_16bit.png").unlink()
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(DataError, match=r"c.txt: not an image \(2 odd file"):
        data.load(tmp_path, (3, 8, 8), preprocess=["crop=8", "bad_images=error"])


def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header declares w x h pixels and holds almost nothing."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


def test_declared_image_size_is_checked_before_decoding(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bomb.png").write_bytes(_png_header(12000, 12000))
    monkeypatch.setenv("SNNCONV_MEMORY_BUDGET", "64M")
    ds = data.load(tmp_path, (1, 8, 8), preprocess="resize=8")
    assert len(ds) == 1 and "12000x12000 pixels (144000000)" in ds.notes[0]
    with pytest.raises(DataError, match="bomb.png: declares 12000x12000"):
        data.load(tmp_path, (1, 8, 8), preprocess="resize=8,bad_images=error")


def test_preprocess_options_presets_and_yaml(tmp_path):
    assert images.build("imagenet").crop == (224, 224)
    p = images.build(["imagenet", "crop=192x160", {"mean": [0.5]}])
    assert p.crop == (192, 160) and p.resize == 256 and p.mean == (0.5,)
    y = tmp_path / "pre.yaml"
    y.write_text("preset: cifar10\nlayout: nhwc\nstd: [0.5, 0.5, 0.5]\n")
    p = images.build(str(y))
    assert p.layout == "NHWC" and p.std == (0.5,) * 3 and p.mean[0] == 0.4914
    assert images.build(None, p.as_dict()) == p  # what a model records reads back
    for bad, match in (("resize=-1", "positive"), ("nope", "not a preset"),
                       ("layout=CHWN", "layout"), ("sharpen=1", "unknown")):
        with pytest.raises(UsageError, match=match):
            images.build(bad)


def test_api_takes_torch_datasets_loaders_and_batches(folder):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    z = np.load(SAMPLES / "digits_test.npz")
    x, y = torch.as_tensor(z["x"][:64]), torch.as_tensor(z["y"][:64])
    ref = snnconv.convert(folder / "cnn.onnx", (z["x"][:64], z["y"][:64]))
    for src in (TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=20),
                [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]):
        snn = snnconv.convert(folder / "cnn.onnx", src)
        assert [la.window for la in snn.layers] == [la.window for la in ref.layers]
        rep = verify(snn, folder / "cnn.onnx", src, reference_n=4)
        assert rep.ok and rep.to_dict()["samples"] == 64 and rep.to_dict()["accuracy_snn"] > 0.8
    with pytest.raises(UsageError, match="read only once"):
        snnconv.convert(folder / "cnn.onnx", iter([(x, y)]))


def test_finetune_and_run_reuse_the_recorded_preprocessing(folder):
    from snnconv.finetune import finetune_file

    root = folder / "digits"
    snn = folder / "ft.snn"
    convert_file(folder / "cnn.onnx", snn, calib=root, preprocess=["color=gray", "scale=1/240"])
    out = folder / "ft.snnq"
    rep = finetune_file(snn, out, quantize=4, time_bits=4, epochs=0)  # data: the folder
    assert any("skipped 4 of" in w for w in rep["warnings"])
    meta = snnconv.intmodel.load(out).meta
    assert meta["preprocess"]["scale"] == 1 / 240 and meta["training_data"]["path"] == \
        str(root.resolve())
    x, y = _decoded(root, lambda a: a * (1 / 240))
    np.savez(folder / "ft.npz", x=x, y=y)
    runs = {}
    for src in (root, folder / "ft.npz"):
        r = runner.invoke(app, ["run", str(out), "--data", str(src), "--json"])
        assert r.exit_code == 0, r.output
        runs[src.suffix] = json.loads(r.stdout)
    assert runs[""]["accuracy"] == runs[".npz"]["accuracy"] > 0.8
    assert runs[""]["samples"] == N and any("skipped" in w for w in runs[""]["warnings"])
    r = runner.invoke(app, ["verify", str(out), "--json"])  # the recorded folder, integer check
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["accuracy"] == runs[".npz"]["accuracy"]
