"""Tensor kernels shared by the IR's reference evaluator and the simulators.

They take explicit begin/end pads and the output size, so ONNX's asymmetric padding, auto_pad and
ceil_mode reduce to one code path instead of per-op special cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def pad_spatial(x: torch.Tensor, begin: Sequence[int], end: Sequence[int], value: float = 0.0):
    """Pad (or crop, for negative pads) the trailing spatial axes of an (N, C, *spatial) tensor."""
    if not any(begin) and not any(end):
        return x
    spec: list[int] = []
    for b, e in zip(reversed(list(begin)), reversed(list(end))):
        spec += [int(b), int(e)]
    return F.pad(x, spec, value=value)


# float64 2-D convolutions with a fan-in (C k k) of at least GEMM_MIN_FAN_IN run as GEMMs over
# chunks of samples whose unfolded input stays near GEMM_CHUNK_BYTES (below)
GEMM_MIN_FAN_IN = 64
GEMM_CHUNK_BYTES = 4 * 2 ** 20


def conv(x, weight, bias, stride, pads_begin, pads_end, dilation, groups):
    nd = weight.dim() - 2
    x = pad_spatial(x, pads_begin, pads_end)
    if x.dtype == torch.float64 and nd == 2 and groups == 1 and x.device.type == "cpu" and \
            weight[0].numel() >= GEMM_MIN_FAN_IN:  # a CPU remedy: a GPU has float64 conv2d
        out = [(n - d * (k - 1) - 1) // s + 1 for n, k, s, d in
               zip(x.shape[2:], weight.shape[2:], stride, dilation)]
        if min(out) > 0 and x.shape[0] > 0:
            return _conv2d_gemm(x, weight, bias, stride, dilation, out)
    return _CONV[nd](x, weight, bias, stride=tuple(stride), dilation=tuple(dilation), groups=groups)


def _conv2d_gemm(x, weight, bias, stride, dilation, out):
    """A float64 convolution as (n L, C k k) x (C k k, Cout) GEMMs over chunks of n samples.

    torch has no float64 oneDNN kernel: its float64 conv2d runs one GEMM per sample, small on
    deep layers (a few output positions), where it reaches a fifth of the BLAS's float64 rate.
    Chunks whose unfolded input fits in cache (~4 MiB) were fastest on every VGG-11 layer
    measured (benchmarks/README.md); the first layer's small fan-in stays with conv2d.
    """
    n, cout = x.shape[0], weight.shape[0]
    positions = out[0] * out[1]
    fan_in = weight[0].numel()
    chunk = max(1, min(n, GEMM_CHUNK_BYTES // (positions * fan_in * x.element_size())))
    wt = weight.reshape(cout, -1).t()
    y = torch.empty((n, cout, *out), dtype=x.dtype, device=x.device)
    for i in range(0, n, chunk):
        cols = F.unfold(x[i:i + chunk], tuple(weight.shape[2:]), dilation=tuple(dilation),
                        stride=tuple(stride))
        part = cols.transpose(1, 2).reshape(-1, fan_in) @ wt
        y[i:i + chunk] = part.reshape(-1, positions, cout).transpose(1, 2).reshape(
            -1, cout, *out)
    return y if bias is None else y.add_(bias.reshape(1, -1, 1, 1))


def extend_for_output(in_size, begin, end, kernel, stride, dilation, out_size):
    """End padding needed so that exactly out_size windows fit (ceil_mode adds windows)."""
    extra = []
    for n, b, e, k, s, d, o in zip(in_size, begin, end, kernel, stride, dilation, out_size):
        need = (o - 1) * s + d * (k - 1) + 1
        extra.append(max(0, need - (n + b + e)))
    return extra


def pool(x: torch.Tensor, kind: str, kernel, stride, pads_begin, pads_end, dilation, out_size):
    """max / min / sum pooling over (N, C, *spatial) with padded taps that never win.

    For max and min, explicit pads and ceil-mode extension get -inf / +inf (a padded tap never
    spikes, spec section 3); for sum they add 0.
    """
    nd = len(kernel)
    in_size = list(x.shape[2:])
    extra = extend_for_output(in_size, pads_begin, pads_end, kernel, stride, dilation, out_size)
    end = [e + a for e, a in zip(pads_end, extra)]
    if kind == "max":
        y = _MAXPOOL[nd](pad_spatial(x, pads_begin, end, float("-inf")), tuple(kernel),
                         tuple(stride), 0, tuple(dilation))
    elif kind == "min":
        y = -_MAXPOOL[nd](pad_spatial(-x, pads_begin, end, float("-inf")), tuple(kernel),
                          tuple(stride), 0, tuple(dilation))
    elif kind == "sum":
        c = x.shape[1]
        w = torch.ones((c, 1, *kernel), dtype=x.dtype, device=x.device)
        y = _CONV[nd](pad_spatial(x, pads_begin, end, 0.0), w, None, stride=tuple(stride),
                      dilation=tuple(dilation), groups=c)
    else:
        raise ValueError(kind)
    sl = (slice(None), slice(None)) + tuple(slice(0, o) for o in out_size)
    return y[sl]


def avgpool_divisor(in_size, kernel, stride, pads_begin, pads_end, dilation, out_size,
                    count_include_pad: bool, dtype=torch.float64) -> torch.Tensor:
    """Per-output-position divisor of ONNX AveragePool: real taps, plus explicit pads if counted.

    Taps in the ceil_mode extension are never counted.
    """
    ones = torch.ones((1, 1, *in_size), dtype=dtype)
    if count_include_pad:
        ones = pad_spatial(ones, pads_begin, pads_end, 1.0)
        pb = [0] * len(kernel)
        pe = [0] * len(kernel)
    else:
        pb, pe = list(pads_begin), list(pads_end)
    div = pool(ones, "sum", kernel, stride, pb, pe, dilation, out_size)
    return div[0]


_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def conv_transpose(x, weight, bias, stride, pads_begin, pads_end, dilation, groups,
                   output_padding):
    """ONNX ConvTranspose: the full transposed convolution, then ``pads_begin`` cropped at the
    start and ``pads_end - output_padding`` at the end (negative: zero rows that no input
    reaches), so asymmetric pads need no special case."""
    nd = weight.dim() - 2
    y = _CONV_T[nd](x, weight, None, stride=tuple(stride), dilation=tuple(dilation),
                    groups=groups)
    y = pad_spatial(y, [-int(b) for b in pads_begin],
                    [int(o) - int(e) for e, o in zip(pads_end, output_padding)])
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * nd)
    return y


def select(x: torch.Tensor, axis: int, index) -> torch.Tensor:
    """Entries ``index`` along per-sample ``axis`` of a batch (slices, splits, nearest-neighbour
    resizing: every output is a copy of one input)."""
    idx = torch.as_tensor(index, dtype=torch.long, device=x.device)
    return torch.index_select(x, axis + 1, idx)


# --- output sizes (shared with the IR's shape inference) ----------------------------------------

def pool_out_size(n, k, s, pb, pe, d, ceil_mode) -> int:
    """ONNX/torch output length; in ceil_mode the last window starts inside input or left pad."""
    span = n + pb + pe - d * (k - 1) - 1
    if span < 0:
        return 0
    out = (math.ceil if ceil_mode else math.floor)(span / s) + 1
    if ceil_mode and (out - 1) * s >= n + pb:
        out -= 1
    return out


def convtranspose_out(spatial, kernel, stride, pb, pe, dilation, output_padding):
    return tuple(s * (n - 1) + op + d * (k - 1) + 1 - b - e for n, k, s, b, e, d, op in zip(
        spatial, kernel, stride, pb, pe, dilation, output_padding))
