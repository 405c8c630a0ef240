"""Regenerate the sample data and the three small trained ONNX models.

The snnconv tests and examples need real trained ReLU networks with
realistic structure (BatchNorm, pooling, residual skips, input normalisation)
that can be checked against real data.  This script builds them from
scikit-learn's digits data so that everything can be reproduced from source.

scikit-learn and torch are needed only here, at generation time; snnconv
itself only reads the .npz and .onnx files this script writes.

Run:  python sample_models/make_samples.py   (writes next to this file)
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
SPLIT_SEED = 0
TEST_SIZE = 0.2
LEGACY_OPSET = 13
DYNAMO_OPSET = 18  # the torch.export-based exporter's native opset (no conversion)
MAX_ABS_DIFF = 1e-4


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split digits once, stratified, with a fixed seed so the test set is stable."""
    digits = load_digits()
    x = (digits.images[:, None, :, :] / 16.0).astype(np.float32)  # exact: k/16
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y
    )
    return x_tr, y_tr, x_te, y_te


class MLP(nn.Module):
    """Plain fully connected ReLU net; flattens inside so input stays (N,1,8,8)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 64),
            nn.ReLU(),
            nn.Linear(64, 32),
            nn.ReLU(),
            nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """Conv-BN-ReLU-MaxPool twice, to exercise BatchNormalization and pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    """Bias-free conv followed by BatchNorm, the usual ResNet building block."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
    )


class Block(nn.Module):
    """Basic residual block; a strided 1x1 conv+BN projection when shapes change."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.a = conv_bn(cin, cout, 3, stride)
        self.b = conv_bn(cout, cout, 3)
        self.proj = (
            conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.proj is None else self.proj(x)
        return torch.relu(self.b(torch.relu(self.a(x))) + skip)


class ResNet(nn.Module):
    """Small ResNet that normalises its own input, so the graph sees negative values."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.stem = nn.Sequential(conv_bn(1, 16, 3), nn.ReLU())
        self.block1 = Block(16, 16, 1)
        self.block2 = Block(16, 32, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    lr: float,
    seed: int,
) -> nn.Module:
    """Minibatch Adam with a seeded shuffle so training is reproducible."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    return model.eval()


def export_legacy(model: nn.Module, path: Path, *, keep_bn: bool = False) -> None:
    """TorchScript-based exporter, opset 13, dynamic batch.

    In eval mode this exporter folds BatchNorm into the preceding Conv (the
    "eval peephole" pass).  With training=PRESERVE on a model that is in eval
    mode that pass is skipped, while BatchNorm is still exported with inference
    semantics (running statistics, a single output).
    """
    kwargs = {}
    if keep_bn:
        kwargs = {
            "training": torch.onnx.TrainingMode.PRESERVE,
            "do_constant_folding": False,
        }
    torch.onnx.export(
        model,
        (torch.zeros(2, 1, 8, 8),),
        str(path),
        dynamo=False,
        opset_version=LEGACY_OPSET,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        **kwargs,
    )


def export_dynamo(model: nn.Module, path: Path) -> None:
    """torch.export-based exporter with a dynamic batch dimension."""
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(2, 1, 8, 8),),
        str(path),
        dynamo=True,
        opset_version=DYNAMO_OPSET,
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        verbose=False,
    )
    strip_provenance(path)


#: An absolute file path inside a string (stack traces, source locations).
ABS_PATH = re.compile(r"(?<![\w.])/(?:[^/\s\"']+/)+[^/\s\"']*")


def _scrub(container) -> None:
    """Drop metadata entries that are stack traces or name absolute paths; clear such docs."""
    keep = [(p.key, p.value) for p in container.metadata_props
            if not p.key.endswith("stack_trace") and not ABS_PATH.search(p.value)]
    del container.metadata_props[:]
    for k, v in keep:
        container.metadata_props.add(key=k, value=v)
    if hasattr(container, "doc_string") and ABS_PATH.search(container.doc_string):
        container.doc_string = ""


def strip_provenance(path: Path) -> None:
    """The torch.export-based exporter records each node's Python stack trace, with absolute
    paths of this machine, in node metadata: remove them so the file does not leak the build
    machine's layout and is reproducible across checkouts."""
    model = onnx.load(str(path), load_external_data=False)  # external data stays as it is
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        _scrub(g)
        for part in (g.node, g.value_info, g.input, g.output, g.initializer):
            for item in part:
                _scrub(item)
        for node in g.node:
            for a in node.attribute:
                graphs.extend([a.g] if a.HasField("g") else [])
                graphs.extend(a.graphs)
    _scrub(model)
    for f in model.functions:
        _scrub(f)
        for node in f.node:
            _scrub(node)
    onnx.save(model, str(path))
    text = path.read_bytes()
    for leak in (str(HERE), str(Path(torch.__file__).parent), 'File "'):
        assert leak.encode() not in text, f"{path.name} still contains {leak!r}"


def check_external_data(path: Path) -> list[str]:
    """External weight files must sit next to the model, referenced by bare name."""
    model = onnx.load(str(path), load_external_data=False)
    locations = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            loc = {e.key: e.value for e in init.external_data}["location"]
            assert Path(loc).name == loc, f"external data path not bare: {loc}"
            assert (path.parent / loc).is_file(), f"missing external data {loc}"
            locations.add(loc)
    return sorted(locations)


def verify(
    model: nn.Module, path: Path, x: np.ndarray, y: np.ndarray
) -> tuple[float, int, dict]:
    """Check the ONNX file and that onnxruntime matches torch on the test set."""
    onnx.checker.check_model(str(path), full_check=True)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "x" and out.name == "logits", (inp.name, out.name)
    got = sess.run(None, {"x": x})[0]
    diff = float(np.abs(got - ref).max())
    assert diff < MAX_ABS_DIFF, f"{path.name}: onnxruntime vs torch diff {diff}"
    one = sess.run(None, {"x": x[:1]})[0]  # batch size other than the example's
    assert np.abs(one - ref[:1]).max() < MAX_ABS_DIFF
    proto = onnx.load(str(path), load_external_data=False)
    info = {
        "diff": diff,
        "ir": proto.ir_version,
        "opset": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
        "ops": sorted({n.op_type for n in proto.graph.node}),
        "in": (inp.name, inp.shape),
        "out": (out.name, out.shape),
        "external": check_external_data(path),
    }
    correct = int((got.argmax(1) == y).sum())
    return correct / len(y), correct, info


def n_params(model: nn.Module) -> int:
    """Trainable parameters only (BatchNorm running statistics are not counted)."""
    return sum(p.numel() for p in model.parameters())


README = """\
# Sample models

Small trained ReLU networks and the data they were trained on, for testing
snnconv.  Everything here is generated by `make_samples.py`; do not edit by hand.

## Data

`digits_train.npz` and `digits_test.npz` hold scikit-learn's `load_digits`
data: {n_total} 8x8 grey-scale handwritten digits (classes 0-9).  This is
scikit-learn's copy of the test set of the UCI "Optical Recognition of
Handwritten Digits" data set (E. Alpaydin and C. Kaynak, 1998,
<https://archive.ics.uci.edu/dataset/80>).  UCI distributes that data set
under CC BY 4.0; scikit-learn is BSD-3-Clause licensed.

Each file has exactly two arrays (load with `np.load(path, allow_pickle=False)`):

- `x`: float32, shape (N, 1, 8, 8), the original pixel counts 0..16 divided
  by 16, so values are in [0, 1];
- `y`: int64, shape (N,), the digit label.

The split was made once with
`sklearn.model_selection.train_test_split(test_size={test_size},
random_state={seed}, stratify=y)`: {n_train} training and {n_test} test images.

## Models

Every model takes input `x` of shape (batch, 1, 8, 8), float32 in [0, 1], with
a dynamic batch dimension, and returns `logits` of shape (batch, 10).
Accuracy is measured with onnxruntime on the {n_test} test images; the script also
checks that onnxruntime agrees with torch to within {tol:g} (max abs diff).

| File | Architecture | Exporter, opset, IR | Trainable parameters | Test accuracy |
|---|---|---|---|---|
{rows}

{notes}

Training: Adam with cosine learning-rate decay, batch 64, cross-entropy,
fixed torch seeds, deterministic algorithms, CPU, torch {torch_v}.

## Regenerating

    pip install torch onnx onnxruntime onnxscript scikit-learn numpy
    python sample_models/make_samples.py

The script overwrites the files in this folder, re-checks every model
(`onnx.checker`, onnxruntime vs torch) and rewrites this README.  Reruns with
the same library versions give the same weights and accuracies (the `.npz` zip
containers embed a timestamp, so their bytes differ but not their arrays).
"""

NOTES = """\
Notes:

- `cnn.onnx` keeps its `BatchNormalization` nodes (inference form: running
  mean/variance, one output).  The legacy exporter would normally fold them into
  the convolutions; exporting with `training=TrainingMode.PRESERVE` on a model
  in eval mode (and `do_constant_folding=False`) keeps them.
- `resnet.onnx` normalises its own input, `(x - {mean:.6f}) / {std:.6f}` (the
  training set's pixel mean and std), as `Sub` and `Div` nodes, so the first
  convolution sees negative values.{resnet_bn}{external}
- Op types:
{op_lines}"""


def main() -> None:
    """Generate data, train, export, verify and document."""
    t0 = time.time()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # fixed reduction order, so reruns give identical weights
    x_tr, y_tr, x_te, y_te = load_split()
    for name, xs, ys in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        np.savez_compressed(HERE / f"digits_{name}.npz", x=xs, y=ys)

    mean, std = float(x_tr.mean()), float(x_tr.std())
    specs = [
        (
            "mlp.onnx",
            MLP,
            {"epochs": 100, "lr": 2e-3},
            "Flatten, Linear(64,64), ReLU, Linear(64,32), ReLU, Linear(32,10)",
            "legacy (TorchScript), opset {opset}, IR {ir}",
            export_legacy,
        ),
        (
            "cnn.onnx",
            CNN,
            {"epochs": 40, "lr": 5e-3},
            (
                "Conv(1,8,3,p1), BN, ReLU, MaxPool(2), Conv(8,16,3,p1), BN, ReLU, "
                "MaxPool(2), Flatten, Linear(64,10)"
            ),
            "legacy (TorchScript), opset {opset}, IR {ir}",
            lambda m, p: export_legacy(m, p, keep_bn=True),
        ),
        (
            "resnet.onnx",
            lambda: ResNet(mean, std),
            {"epochs": 30, "lr": 5e-3},
            (
                "(x-mean)/std, Conv(1,16,3)-BN-ReLU stem, residual block 16 ch "
                "(identity skip), residual block 16->32 ch stride 2 (1x1 conv+BN "
                "projection skip), global average pool, Flatten, Linear(32,10)"
            ),
            "torch.export-based (dynamo=True), opset {opset}, IR {ir}",
            export_dynamo,
        ),
    ]
    rows, ops, externals = [], [], []
    for seed, (fname, build, hp, arch, exporter, export) in enumerate(specs):
        t = time.time()
        torch.manual_seed(seed)
        model = train(build(), x_tr, y_tr, seed=seed, **hp)
        path = HERE / fname
        export(model, path)
        acc, correct, info = verify(model, path, x_te, y_te)
        if fname == "cnn.onnx":
            assert "BatchNormalization" in info["ops"], "BatchNorm was folded away"
        opset = info["opset"]["ai.onnx"]
        print(
            f"{fname}: test acc {acc:.4f} ({correct}/{len(y_te)}), "
            f"max|ort-torch| {info['diff']:.2e}, opset {opset}, IR {info['ir']}, "
            f"in {info['in']}, out {info['out']}, external {info['external']}, "
            f"{time.time() - t:.1f}s\n  ops: {', '.join(info['ops'])}"
        )
        files = ", ".join(f"`{f}`" for f in [fname, *info["external"]])
        rows.append(
            f"| {files} | {arch} | {exporter.format(opset=opset, ir=info['ir'])} | "
            f"{n_params(model):,} | {acc:.2%} ({correct}/{len(y_te)}) |"
        )
        ops.append(f"  `{fname}`: {', '.join(info['ops'])}")
        externals += info["external"]

    external = (
        "\n- The torch.export-based exporter stores the larger weight tensors of\n"
        f"  `resnet.onnx` in {', '.join(f'`{e}`' for e in externals)} (referenced by"
        "\n  bare file name); keep the two files together."
        if externals
        else ""
    )
    resnet_bn = (
        ""
        if "BatchNormalization" in ops[-1]
        else "\n  Its exporter's optimiser folded every BatchNorm into the preceding"
        "\n  Conv, so the file has no `BatchNormalization` nodes."
    )
    if "ReduceMean" in ops[-1]:
        resnet_bn += (
            "\n  Global average pooling was exported as `ReduceMean` (axes given as"
            "\n  an input, keepdims=1) and the flatten as `Reshape`."
        )
    notes = NOTES.format(
        mean=mean,
        std=std,
        resnet_bn=resnet_bn,
        external=external,
        op_lines=";\n".join(ops) + ".",
    )
    (HERE / "README.md").write_text(
        README.format(
            n_total=len(y_tr) + len(y_te),
            n_train=len(y_tr),
            n_test=len(y_te),
            test_size=TEST_SIZE,
            seed=SPLIT_SEED,
            tol=MAX_ABS_DIFF,
            rows="\n".join(rows),
            notes=notes,
            torch_v=torch.__version__,
        )
    )
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
