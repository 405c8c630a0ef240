"""Output heads: Softmax, LogSoftmax, Sigmoid, Tanh, Log (after Softmax) and ArgMax.

They preserve the argmax of the logits, so as the last ops of a network they are stripped (the
graph records them in ``head``) and verify compares the tensor before them; anywhere else they
have no exact TTFS mapping. Softmax/LogSoftmax changed their default axis at opset 13.
"""

from __future__ import annotations

from ..context import Ctx
from ..hints import REWRITE_HINT, unsupported
from ..registry import register


def _feeds_only_output(ctx: Ctx, t: str, allowed_after: tuple[str, ...] = ()) -> bool:
    if t == ctx.graph_output:
        return True
    cons = ctx.consumers.get(t, [])
    return len(cons) == 1 and cons[0].op_type in allowed_after and \
        _feeds_only_output(ctx, cons[0].output[0])


def _strip(ctx: Ctx, node) -> None:
    ctx.head = node.op_type if ctx.head is None else f"{ctx.head}+{node.op_type}"
    ctx.set_alias(node.output[0], node.input[0])


def _at_output(ctx: Ctx, node) -> None:
    """Refuse the head op unless only the allowed ops follow it to the graph output."""
    after = ("Log", "ArgMax") if node.op_type == "Softmax" else ("ArgMax",)
    if node.op_type == "Log":
        if ctx.head != "Softmax" or not _feeds_only_output(ctx, node.output[0], ("ArgMax",)):
            raise unsupported(ctx, node)
    elif not _feeds_only_output(ctx, node.output[0], after):
        raise unsupported(ctx, node)


@register("Sigmoid", "Tanh", "Log")
def head(ctx: Ctx, node):
    """Argmax-preserving output ops: stripped; verify compares the tensor before them."""
    _at_output(ctx, node)
    _strip(ctx, node)


def _softmax(ctx: Ctx, node, default_axis: int) -> None:
    _at_output(ctx, node)
    rank = len(ctx.shape(node.input[0])) + 1
    axis = int(ctx.attr(node, "axis", default_axis)) % rank
    if rank != 2 or axis != 1:
        raise ctx.fail(node, f"{node.op_type} over axis {axis} of a rank-{rank} tensor; "
                       "snnconv strips it only over the class axis of (N, classes)")
    _strip(ctx, node)


@register("Softmax", "LogSoftmax")
def softmax_v1(ctx: Ctx, node):
    """Over the flattened axes from ``axis`` on (default 1)."""
    _softmax(ctx, node, 1)


@register("Softmax", "LogSoftmax", since=13)
def softmax_v13(ctx: Ctx, node):
    """Over the single axis ``axis`` (default -1)."""
    _softmax(ctx, node, -1)


@register("ArgMax")
def argmax(ctx: Ctx, node):
    """ArgMax over the classes at the end: the head; the logits before it are compared."""
    if not _feeds_only_output(ctx, node.output[0]):
        raise ctx.fail(node, "ArgMax inside the network produces indices, not activations",
                       hint=REWRITE_HINT["ArgMax"])
    rank = len(ctx.shape(node.input[0])) + 1
    axis = int(ctx.attr(node, "axis", 0)) % rank
    if rank != 2 or axis != 1:
        raise ctx.fail(node, f"ArgMax over axis {axis} of a rank-{rank} tensor; snnconv strips "
                       "it only over the class axis of (N, classes)",
                       hint="flatten the logits to (N, classes) before the ArgMax")
    ctx.untrusted.add(node.output[0])  # indices, not the logits' shape
    _strip(ctx, node)
