"""Selection: Slice, Split, Gather, and nearest-neighbour Resize/Upsample.

Each output value copies one input value, so every one of these becomes IR Select nodes (one
per axis, identities skipped). Slice moved its bounds from attributes to inputs at opset 10,
Split its sizes at opset 13: one handler per layout.
"""

from __future__ import annotations

import numpy as np

from ... import ir
from ..context import Ctx
from ..evaluate import evaluate_node
from ..registry import register
from .common import emit_steps


def _select_steps(ctx: Ctx, node, shape, picks: dict[int, list[int]]):
    """Select nodes for {per-sample axis: indices}, skipping identities."""
    return [(ir.Select, dict(axis=a, index=tuple(int(i) for i in idx)))
            for a, idx in sorted(picks.items()) if list(idx) != list(range(shape[a]))]


def _batch_untouched(ctx: Ctx, node, idx) -> None:
    if list(idx) != list(range(ctx.probe_batch)):
        raise ctx.fail(node, "selects along the batch axis",
                       hint="slice only the feature axes (channels or space)")


def _slice(ctx: Ctx, node, starts, ends, axes, steps) -> None:
    x = node.input[0]
    s = ctx.shape(x)
    rank = len(s) + 1
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in axes]
    steps = [1] * len(starts) if steps is None else [int(v) for v in steps]
    picks: dict[int, list[int]] = {}
    for a, b, e, st in zip(axes, starts, ends, steps):
        if st == 0:
            raise ctx.fail(node, "slice step 0")
        n = ctx.probe_batch if a == 0 else s[a - 1]
        prev = picks.get(a - 1, list(range(n))) if a > 0 else list(range(n))
        idx = [prev[i] for i in range(*slice(int(b), int(e), st).indices(len(prev)))]
        if a == 0:
            _batch_untouched(ctx, node, idx)
        else:
            picks[a - 1] = idx
    emit_steps(ctx, node, x, _select_steps(ctx, node, s, picks), node.output[0])


@register("Slice")
def slice_v1(ctx: Ctx, node):
    """Starts, ends and axes as attributes (no steps)."""
    _slice(ctx, node, ctx.attr(node, "starts"), ctx.attr(node, "ends"),
           ctx.attr(node, "axes", None), None)


@register("Slice", since=10)
def slice_v10(ctx: Ctx, node):
    """Starts, ends, axes and steps as inputs 1 to 4."""
    starts, ends = (ctx.const(node, node.input[i], nm).reshape(-1).tolist()
                    for i, nm in ((1, "starts"), (2, "ends")))
    ax, st = ctx.opt_const(node, 3), ctx.opt_const(node, 4)
    _slice(ctx, node, starts, ends, None if ax is None else ax.reshape(-1).tolist(),
           None if st is None else st.reshape(-1).tolist())


def _split(ctx: Ctx, node, sizes_of) -> None:
    """Split into the sizes ``sizes_of(ctx, node)`` reads from its opset's layout, or (None)
    into num_outputs / len(outputs) equal chunks. The axis is checked before the sizes are read."""
    x = node.input[0]
    s = ctx.shape(x)
    rank = len(s) + 1
    axis = int(ctx.attr(node, "axis", 0)) % rank
    if axis == 0:
        raise ctx.fail(node, "splits the batch axis", hint="split only the feature axes")
    n = s[axis - 1]
    sizes = sizes_of(ctx, node)
    outs = list(node.output)
    if sizes is None:
        k = int(ctx.attr(node, "num_outputs", len(outs)))
        chunk = -(-n // k)
        sizes = [chunk] * (k - 1) + [n - chunk * (k - 1)]
    sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
    if sum(sizes) != n or len(sizes) != len(outs) or min(sizes) < 0:
        raise ctx.fail(node, f"split sizes {sizes} do not cover the axis of size {n}")
    off = 0
    for out, k in zip(outs, sizes):
        if out:
            idx = list(range(off, off + k))
            emit_steps(ctx, node, x, _select_steps(ctx, node, s, {axis - 1: idx}), out)
        off += k


@register("Split")
def split_v1(ctx: Ctx, node):
    """Sizes as the split attribute."""
    _split(ctx, node, lambda ctx, node: ctx.attr(node, "split", None))


@register("Split", since=13)
def split_v13(ctx: Ctx, node):
    """Sizes as the optional constant input 1."""
    _split(ctx, node, lambda ctx, node: ctx.opt_const(node, 1))


@register("Gather")
def gather(ctx: Ctx, node):
    x, ind = node.input[0], node.input[1]
    if ctx.is_act(ind):
        raise ctx.fail(node, "gathers at indices computed from the input",
                       hint="use constant indices")
    s = ctx.shape(x)
    rank = len(s) + 1
    axis = int(ctx.attr(node, "axis", 0)) % rank
    if axis == 0:
        raise ctx.fail(node, "gathers along the batch axis", hint="gather feature axes only")
    i = np.asarray(ctx.const(node, ind, "the indices")).astype(np.int64)
    n = s[axis - 1]
    if np.any(i < -n) or np.any(i >= n):
        raise ctx.fail(node, f"indices out of range for an axis of size {n}")
    i = i % n
    steps = [(ir.Select, dict(axis=axis - 1, index=tuple(int(v) for v in i.reshape(-1))))]
    out_shape = (*s[:axis - 1], *i.shape, *s[axis:])
    if out_shape != (*s[:axis - 1], i.size, *s[axis:]):
        steps.append((ir.Reshape, dict(shape=out_shape)))
    emit_steps(ctx, node, x, steps, node.output[0])


def _resize_values(ctx: Ctx, node, s) -> dict:
    """The constant parameters of a Resize node, its sizes set to probe one sample."""
    values = {i: ctx.const(node, i, "the resize parameters") for i in node.input[1:] if i}
    sizes_name = node.input[3] if len(node.input) > 3 and node.input[3] else None
    if sizes_name is not None and ctx.attr(node, "axes", None) is None:
        sz = np.asarray(values[sizes_name]).copy()
        if len(sz) == len(s) + 1:
            sz[0] = 1  # probe with one sample
            values[sizes_name] = sz
    return values


def _resize_axis(ctx: Ctx, node, s, a: int, values: dict) -> tuple[list[int], tuple]:
    """The input indices axis a copies from, and the per-sample output shape: the node run on
    a probe holding 1..n along that axis."""
    x = node.input[0]
    along = [1] * len(s)
    along[a] = s[a]
    probe = np.broadcast_to(np.arange(1, s[a] + 1, dtype=np.float32).reshape(along),
                            s)[None].copy()
    try:
        y = evaluate_node(node, ctx, {x: probe, **values})[0]
    except Exception as e:  # noqa: BLE001 - reported with the node
        raise ctx.fail(node, f"cannot evaluate the resize pattern: {e}") from None
    if y.shape[0] != 1:
        raise ctx.fail(node, "resizes the batch axis", hint="resize only the spatial axes")
    out = y.shape[1:]
    line = y[(0,) + tuple(slice(None) if i == a else 0 for i in range(len(s)))]
    if not np.all((line == np.round(line)) & (line >= 1) & (line <= s[a])) or \
            not np.array_equal(y[0], np.broadcast_to(line.reshape(
                (1,) * a + (-1,) + (1,) * (len(s) - a - 1)), out)):
        raise ctx.fail(node, "this resize does not copy inputs (extrapolated values)",
                       hint="use a coordinate mode without extrapolation")
    return (line.astype(np.int64) - 1).tolist(), out


@register("Resize", "Upsample")
def resize(ctx: Ctx, node):
    """Nearest-neighbour resizing copies spikes: a selection per axis. The indices come from
    running the node itself (onnx.reference) on index-valued probes, so every coordinate
    transformation and rounding mode is ONNX's own."""
    x = node.input[0]
    mode = ctx.attr(node, "mode", "nearest")
    if mode != "nearest":
        raise ctx.fail(node, f"{node.op_type} mode '{mode}' interpolates between neighbours; "
                       "snnconv maps mode 'nearest' (spikes are copied)",
                       hint="export with mode='nearest', or learn the upsampling as a "
                       "ConvTranspose (exact, a weighted layer)")
    s = ctx.shape(x)
    values = _resize_values(ctx, node, s)
    picks: dict[int, list[int]] = {}
    out = None
    for a in range(len(s)):
        picks[a], out = _resize_axis(ctx, node, s, a, values)
    steps = _select_steps(ctx, node, s, picks)
    emit_steps(ctx, node, x, steps, node.output[0])
    if tuple(ctx.shape(node.output[0])) != tuple(out):  # pragma: no cover - consistency guard
        raise ctx.fail(node, f"resize to {out} imported as {ctx.shape(node.output[0])}")
