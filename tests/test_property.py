"""Property test: random supported networks convert exactly.

Hypothesis draws networks (depth, widths, kernels, strides, dilations, asymmetric pads, groups,
Conv or ConvTranspose, max/avg pooling with ceil_mode and count_include_pad (max-pools also of
signed values: offset coding), BatchNormalization before or after the activation, ReLU, ReLU6/Clip,
LeakyReLU, PRelu, Abs, Max/Min with constants, residual Add or Max, channel Concat, wiring ops
(Transpose, Slice, Split + Concat, nearest Resize), conv or dense pairs without a ReLU between them,
input normalisation, GlobalMaxPool heads), builds them with onnx.helper (and a few as torch modules
exported with the legacy exporter), converts them calibrated on random data of the drawn input
range, and checks them with ``helpers.check_model`` (float64 vs reference 1e-9, onnxruntime within
the float32 bound, top-1, and the event-driven simulator against the closed form). Derandomized
with bounded examples, so CI sees the same networks every run.
"""

from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from torch import nn

from .helpers import G, check_model, uniform

SETTINGS = dict(max_examples=45, deadline=timedelta(seconds=20), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                print_blob=True)


def _out(n, k, s, pb, pe, d, ceil=False):
    span = n + pb + pe - d * (k - 1) - 1
    if span < 0:
        return 0
    o = (-(-span // s) if ceil else span // s) + 1
    if ceil and (o - 1) * s >= n + pb:
        o -= 1
    return o


def _last_window_in_pad(n, k, s, p) -> bool:
    """ceil_mode would add a window that starts in the end padding (dropped, as in torch)."""
    o = -(-(n + 2 * p - k) // s) + 1
    return (o - 1) * s >= n + p


class Net:
    """Draws a network block by block, tracking the per-sample shape of the current tensor."""

    def __init__(self, draw, opset):
        self.draw = draw
        c = draw(st.integers(1, 3))
        h, w = draw(st.integers(4, 9)), draw(st.integers(4, 9))
        self.g = G((c, h, w), opset=opset, seed=draw(st.integers(0, 2 ** 16)))
        self.t, self.shape = self.g.input, (c, h, w)
        self.signed = True  # the current tensor may be negative (no ReLU applied last)
        self.desc: list[str] = []

    def i(self, lo, hi):
        return self.draw(st.integers(lo, hi))

    def pick(self, *options):
        return self.draw(st.sampled_from(options))

    # --- pieces -------------------------------------------------------------------------------
    def normalise(self):
        c = self.shape[0]
        mean = self.g.rng.uniform(-0.5, 0.5, (c, 1, 1))
        std = self.g.rng.uniform(0.3, 2.0, (c, 1, 1))
        self.t = self.g.op("Div", [self.g.op("Sub", [self.t, self.g.const(mean)]),
                                   self.g.const(std)])
        self.desc.append("norm")

    def bn(self, t, c):
        r = self.g.rng
        scale = r.uniform(0.5, 1.5, c) * np.where(r.random(c) < 0.3, -1, 1)
        ins = [t] + [self.g.const(a) for a in (scale, r.normal(0, 0.3, c), r.normal(0, 0.3, c),
                                               r.uniform(0.5, 2.0, c))]
        return self.g.op("BatchNormalization", ins, epsilon=1e-3)

    def act(self, t, kind, c):
        g, f32 = self.g, (lambda v: np.asarray(v, np.float32))
        if kind == "relu":
            return g.op("Relu", [t])
        if kind == "relu6":
            return g.op("Clip", [t, g.const(f32(0.0)), g.const(f32(1.5))])
        if kind == "leaky":
            return g.op("LeakyRelu", [t], alpha=float(g.rng.uniform(-0.5, 0.5)))
        if kind == "prelu":
            return g.op("PRelu", [t, g.const(g.rng.uniform(-0.5, 1.2, (c, 1, 1)))])
        if kind == "abs":
            return g.op("Abs", [t])
        if kind == "maxmin":  # Relu6 written as Min(Max(x, lo), hi), per-channel bounds
            lo = g.rng.uniform(-0.3, 0.1, (c, 1, 1))
            return g.op("Min", [g.op("Max", [t, g.const(lo)]), g.const(f32(1.0))])
        return g.op("Clip", [t, g.const(f32(-0.2)), g.const(f32(1.0))])

    def conv_params(self):
        c, h, w = self.shape
        if self.i(0, 3) == 0:  # shape-preserving: residual Add / Max with the block input
            k = self.pick(1, 3)
            return dict(k=k, s=1, d=1, pads=[k // 2] * 4, cout=c, group=1), (c, h, w)
        k = self.pick(1, 2, 3)
        s = self.i(1, 2)
        d = self.i(1, 2) if k > 1 else 1
        pads = [self.i(0, k - 1) for _ in range(4)]
        eff = d * (k - 1) + 1
        if min(h + pads[0] + pads[2], w + pads[1] + pads[3]) < eff:
            k, d, pads = 1, 1, [0, 0, 0, 0]
        cout = self.i(2, 6)
        groups = [1] + ([c] if c > 1 and cout % c == 0 else [])
        grp = self.pick(*groups)
        oh = _out(h, k, s, pads[0], pads[2], d)
        ow = _out(w, k, s, pads[1], pads[3], d)
        return dict(k=k, s=s, d=d, pads=pads, cout=cout, group=grp), (cout, oh, ow)

    def conv(self, t, p):
        return self.g.conv(t, self.shape[0], p["cout"], p["k"], group=p["group"],
                           strides=[p["s"]] * 2, dilations=[p["d"]] * 2, pads=p["pads"])

    def conv_transpose(self, t):
        """A ConvTranspose (stride, pads, output_padding); returns the tensor and its shape."""
        c, h, w = self.shape
        k, s = self.pick(1, 2, 3), self.i(1, 2)
        p = [self.i(0, k - 1) for _ in range(4)]
        op = [self.i(0, s - 1) for _ in range(2)]
        cout = self.i(2, 5)
        oh = s * (h - 1) + op[0] + k - p[0] - p[2]
        ow = s * (w - 1) + op[1] + k - p[1] - p[3]
        if min(oh, ow) < 2 or max(oh, ow) > 12:
            p, op, s = [0] * 4, [0, 0], 1
            oh, ow = h + k - 1, w + k - 1
        wt = self.g.weight(c, cout, k, k, fan_in=c * k * k)
        y = self.g.op("ConvTranspose", [t, wt, self.g.bias(cout)], strides=[s, s], pads=p,
                      output_padding=op)
        self.desc.append(f"convT(k{k},s{s},p{p},op{op})")
        return y, (cout, oh, ow)

    def wiring(self):
        """A structural op on the current tensor: transpose, slice, split+concat, resize."""
        c, h, w = self.shape
        kind = self.pick("none", "none", "transpose", "slice", "split_concat", "resize")
        g, t = self.g, self.t
        if kind == "transpose":
            self.t, self.shape = g.op("Transpose", [t], perm=[0, 1, 3, 2]), (c, w, h)
        elif kind == "slice" and c > 1:  # channels a: and every step-th column
            a, step = self.i(0, c - 2), self.i(1, 2)
            self.t = g.op("Slice", [t, g.const(np.array([a, 0], np.int64)),
                                    g.const(np.array([c, 100], np.int64)),
                                    g.const(np.array([1, 3], np.int64)),
                                    g.const(np.array([1, step], np.int64))])
            self.shape = (c - a, h, len(range(0, w, step)))
        elif kind == "split_concat" and c > 1:
            k = self.i(1, c - 1)
            a, b = g.op("Split", [t, g.const(np.array([k, c - k], np.int64))], n_out=2, axis=1)
            self.t = g.op("Concat", [b, a], axis=1)
        elif kind == "resize" and max(h, w) <= 5:
            self.t = g.op("Resize", [t, "", g.const(np.array([1, 1, 2, 1.5], np.float32))],
                          mode="nearest")
            self.shape = (c, 2 * h, int(1.5 * w))
        else:
            return
        self.desc.append(kind)

    def pool(self, t, shape, kind):
        c, h, w = shape
        k = self.pick(2, 3)
        if min(h, w) < k:
            return t, shape
        s = self.i(1, 2)
        p = self.i(0, k // 2)
        ceil = self.i(0, 1)
        if ceil and (_last_window_in_pad(h, k, s, p) or _last_window_in_pad(w, k, s, p)):
            ceil = 0  # ONNX shape inference before opset 22 disagrees with onnxruntime there
        attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=ceil)
        if kind == "avg":
            attrs["count_include_pad"] = self.i(0, 1)
        t = self.g.op("MaxPool" if kind == "max" else "AveragePool", [t], **attrs)
        self.desc.append(f"{kind}pool(k{k},s{s},p{p},ceil{ceil})")
        return t, (c, _out(h, k, s, p, p, 1, ceil), _out(w, k, s, p, p, 1, ceil))

    # --- a block --------------------------------------------------------------------------------
    def block(self):
        self.wiring()
        p, shape = self.conv_params()
        bn = self.pick("none", "before", "after")
        act = self.pick("relu", "relu", "relu6", "clip", "none", "leaky", "prelu", "abs",
                        "maxmin")
        pool = self.pick("none", "max", "avg")
        pool_pos = self.pick("after_act", "before_act")
        t_in, shape_in = self.t, self.shape
        if self.i(0, 4) == 0 and max(shape_in[1:]) <= 8:
            y, shape = self.conv_transpose(t_in)
        else:
            y = self.conv(t_in, p)
            self.desc.append(f"conv({p})")
        self.desc.append(f"bn={bn} act={act}")
        if bn == "before":
            y = self.bn(y, shape[0])
        if shape == shape_in and self.i(0, 1):  # residual add (or max) before the activation
            y = self.g.op(self.pick("Add", "Add", "Max"), [y, t_in])
            self.desc.append("residual")
        if pool != "none" and pool_pos == "before_act" and act != "none":
            y, shape = self.pool(y, shape, pool)  # Conv -> Pool -> activation (reordered)
            pool = "none"
        signed = act in ("none", "clip", "leaky", "prelu", "maxmin")
        if act != "none":
            y = self.act(y, act, shape[0])
        if bn == "after":
            y = self.bn(y, shape[0])
            signed = True
        if pool != "none":  # a max-pool of signed values: offset coding
            y, shape = self.pool(y, shape, pool)
        if shape[1:] == shape_in[1:] and self.i(0, 3) == 0:  # concat with the block input
            y = self.g.op("Concat", [y, t_in], axis=1)
            shape = (shape[0] + shape_in[0], *shape[1:])
            self.desc.append("concat")
        self.t, self.shape, self.signed = y, shape, signed

    def head(self, classes):
        c, h, w = self.shape
        kind = self.pick("flatten", "gap", "reducemean", "gmp")
        if kind in ("gap", "gmp"):
            op = "GlobalAveragePool" if kind == "gap" else "GlobalMaxPool"
            t = self.g.op("Flatten", [self.g.op(op, [self.t])])
            n = c
        elif kind == "reducemean":
            if self.g.opset >= 18:
                t = self.g.op("ReduceMean", [self.t, self.g.const(np.array([2, 3], np.int64))],
                              keepdims=0)
            else:
                t = self.g.op("ReduceMean", [self.t], axes=[2, 3], keepdims=0)
            n = c
        else:
            t = self.g.op("Flatten", [self.t])
            n = c * h * w
        for _ in range(self.i(0, 2)):
            m = self.i(3, 10)
            t = self.g.gemm(t, n, m)
            if self.i(0, 2):
                t = self.g.op("Relu", [t])
            else:
                self.desc.append("dense-no-relu")
            n = m
        self.desc.append(f"head={kind}")
        return self.g.gemm(t, n, classes)


@st.composite
def networks(draw):
    net = Net(draw, opset=draw(st.sampled_from([13, 18])))
    if draw(st.booleans()):
        net.normalise()
    for _ in range(draw(st.integers(1, 3))):
        net.block()
    out = net.head(draw(st.integers(2, 6)))
    lo = draw(st.sampled_from([-1.0, 0.0, -3.0]))
    hi = draw(st.sampled_from([1.0, 2.0]))
    return net.g, out, lo, hi, net.desc


@settings(**SETTINGS)
@given(networks())
def test_random_onnx_networks(spec):
    g, out, lo, hi, desc = spec
    note(" | ".join(desc))
    rng = np.random.default_rng(7)
    x = uniform(rng, (16, *g.in_shape), lo, hi)
    cal = uniform(rng, (64, *g.in_shape), lo, hi)
    check_model(g.model(out), x, cal, label="property-onnx", events=True)


# --- torch modules, exported with the legacy exporter -----------------------------------------

class Block(nn.Module):
    def __init__(self, cin, cout, k, stride, pad, bn, relu, pool, residual):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad)
        self.bn = nn.BatchNorm2d(cout) if bn else nn.Identity()
        self.relu = {"relu": nn.ReLU(), "leaky": nn.LeakyReLU(0.1),
                     "prelu": nn.PReLU(cout, init=0.2), "none": nn.Identity()}[relu]
        self.pool = {"max": nn.MaxPool2d(2, ceil_mode=True), "avg": nn.AvgPool2d(2),
                     "none": nn.Identity()}[pool]
        self.residual = residual

    def forward(self, x):
        y = self.bn(self.conv(x))
        if self.residual:
            y = y + x
        return self.pool(self.relu(y))


@st.composite
def torch_networks(draw):
    torch.manual_seed(draw(st.integers(0, 1000)))
    c, hw = draw(st.integers(1, 3)), draw(st.integers(6, 10))
    blocks, cin, size = [], c, hw
    for _ in range(draw(st.integers(1, 3))):
        k = draw(st.sampled_from([1, 3]))
        cout = draw(st.integers(2, 5))
        relu = draw(st.sampled_from(["relu", "leaky", "prelu", "none"]))
        pool = draw(st.sampled_from(["none", "avg", "max"]))  # max of signed: offset coding
        residual = cout == cin and draw(st.booleans())
        if size < 2:
            pool = "none"
        blocks.append(Block(cin, cout, k, 1, k // 2, draw(st.booleans()), relu, pool, residual))
        cin = cout
        size = {"none": size, "avg": size // 2, "max": -(-size // 2)}[pool]  # max: ceil_mode
    model = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(cin * size * size, 4)).eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(-1.5, 1.5)
    return model, (c, hw, hw)


@settings(**{**SETTINGS, "max_examples": 8})
@given(torch_networks())
def test_random_torch_networks(spec):
    model, shape = spec
    note(repr(model))
    rng = np.random.default_rng(3)
    x = uniform(rng, (16, *shape), -1, 1)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, (torch.as_tensor(x[:2]),), buf, dynamo=False, opset_version=13,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    import onnx

    m = onnx.load_model_from_string(buf.getvalue())
    check_model(m, x, uniform(rng, (64, *shape), -1, 1), label="property-torch")
    with torch.no_grad():  # the exported model is the module
        ref = model(torch.as_tensor(x)).numpy()
    from .helpers import run_ort
    assert np.abs(run_ort(m, x) - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
