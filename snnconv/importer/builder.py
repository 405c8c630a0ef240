"""Walks the ONNX graph once, folding constants and dispatching each node to its op handler.

The graph's interface is checked first (one float input with a static per-sample shape, one
output). Then every node either computes constants or shapes only (evaluated on the spot, with
probe values when the batch is dynamic) or touches the activation, in which case the handler the
registry picks for its op type and opset emits IR nodes, and the result is checked against ONNX
shape inference.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from .. import ir
from ..errors import ModelImportError
from . import ops  # noqa: F401 - fills the registry
from .context import Ctx
from .evaluate import evaluate_node
from .hints import unsupported
from .loader import infer_shapes
from .sizes import check_declared_shapes
from .registry import lookup

NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                    "Multinomial", "Bernoulli"}
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)


def _shape_of(vi) -> tuple | None:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None
                 for d in vi.type.tensor_type.shape.dim)


def _old_ceil_rule(ctx: Ctx, node) -> bool:
    """ONNX shape inference before opset 22 keeps a ceil_mode pooling window that starts in the
    end padding; onnxruntime, onnx.reference and torch drop it (as the IR does). Downstream
    inferred shapes are then wrong too, so they are not trusted."""
    return node.op_type in ("MaxPool", "AveragePool") and ctx.opset < 22 and \
        bool(ctx.attr(node, "ceil_mode", 0))


def _eval_probe_node(node: onnx.NodeProto, ctx: Ctx) -> None:
    """Evaluate shape arithmetic on probe values (dynamic batch); failures leave it unknown."""
    values = {i: ctx.shape_value(i) for i in node.input if i}
    outs = [o for o in node.output if o]
    try:
        vals = evaluate_node(node, ctx, values)
    except Exception:  # noqa: BLE001 - shape inference may still resolve the consumer
        ctx.shape_data.update(outs)
        return
    for o, v in zip(outs, vals):
        ctx.probes[o] = v


def _the_input(g: onnx.GraphProto, file: str) -> onnx.ValueInfoProto:
    """The graph's one real input, after checking names, inputs, outputs and element type."""
    for node in g.node:  # a corrupted file can carry names that are not valid UTF-8
        if not all(isinstance(v, str) for v in (node.name, node.op_type, *node.input,
                                                 *node.output)):
            raise ModelImportError("a node has a name that is not valid UTF-8: the file is "
                                   "corrupt", file=file)
    inits = {t.name for t in g.initializer}
    real_inputs = [i for i in g.input if i.name not in inits]  # IR <= 3 lists weights as inputs
    if len(real_inputs) != 1:
        names = ", ".join(i.name for i in real_inputs) or "none"
        raise ModelImportError(f"the graph has {len(real_inputs)} inputs ({names}); snnconv "
                               "converts networks with exactly one input", file=file)
    if len(g.output) != 1:
        names = ", ".join(o.name for o in g.output)
        raise ModelImportError(f"the graph has {len(g.output)} outputs ({names}); snnconv "
                               "converts networks with exactly one output", file=file,
                               hint="remove the extra outputs (e.g. with onnx.utils.extract_model)")
    inp = real_inputs[0]
    elem = inp.type.tensor_type.elem_type
    if elem not in FLOAT_TYPES:
        raise ModelImportError(f"input '{inp.name}' has element type "
                               f"{onnx.TensorProto.DataType.Name(elem)}; snnconv needs a float "
                               "input", file=file)
    return inp


def _input_shape(inp: onnx.ValueInfoProto, input_shape: tuple | None, file: str) -> tuple:
    """The full (batch-first) input shape; --input-shape overrides the per-sample dimensions
    (written into the model, so shape inference sees them too)."""
    full = _shape_of(inp)
    if full is None or len(full) < 2:
        raise ModelImportError(f"input '{inp.name}' has no static shape (rank >= 2, batch "
                               "first)", file=file, hint="pass --input-shape C,H,W")
    if input_shape is not None:
        if len(input_shape) != len(full) - 1:
            raise ModelImportError(f"--input-shape {input_shape} has rank {len(input_shape)}, the "
                                   f"model's input has per-sample rank {len(full) - 1}", file=file)
        full = (full[0], *input_shape)
        dims = inp.type.tensor_type.shape.dim
        for d, v in zip(list(dims)[1:], input_shape):
            d.Clear()
            d.dim_value = int(v)
    if any(d is None for d in full[1:]):
        raise ModelImportError(f"input '{inp.name}' has dynamic dimensions beyond the batch: "
                               f"{full}", file=file,
                               hint="fix them with --input-shape, e.g. --input-shape 3,32,32")
    return full


def _context(model: onnx.ModelProto, file: str, inp_name: str, full: tuple) -> Ctx:
    """A context holding the initializers, inferred shapes and consumers of the graph."""
    g = model.graph
    ctx = Ctx(file, model, full[0], inp_name)
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        s = _shape_of(vi)
        if s is not None:
            ctx.onnx_shapes[vi.name] = s
    for t in g.initializer:
        ctx.consts[t.name] = numpy_helper.to_array(t)
    ctx.shapes[inp_name] = tuple(full[1:])
    ctx.graph_output = g.output[0].name
    for n in g.node:
        for i in n.input:
            ctx.consumers.setdefault(i, []).append(n)
    return ctx


def _fold(ctx: Ctx, node) -> None:
    """A node that does not touch the activation: a constant, a probe value, or shape data."""
    if node.op_type in NONDETERMINISTIC:
        raise ctx.fail(node, "random op: the network is not deterministic")
    if all((not i) or i in ctx.consts for i in node.input):
        try:
            vals = evaluate_node(node, ctx)
        except Exception as e:  # noqa: BLE001
            raise ctx.fail(node, f"cannot evaluate this constant subgraph: {e}",
                           cls=ModelImportError) from None
        for o, v in zip([o for o in node.output if o], vals):
            ctx.consts[o] = v
    elif all((not i) or ctx.shape_value(i) is not None for i in node.input):
        _eval_probe_node(node, ctx)
    else:
        ctx.shape_data.update(o for o in node.output if o)


def _check_output(ctx: Ctx, node) -> None:
    """The handler produced the node's first output, of the shape ONNX inferred."""
    for o in node.output[:1]:
        if o and (o in ctx.consts or o in ctx.probes):
            continue
        if o and not ctx.is_act(o):
            raise ctx.fail(node, "handler produced no output", cls=ModelImportError)
        want = ctx.inferred(o)
        if o and want is not None and ctx.shape(o) != want:
            if _old_ceil_rule(ctx, node):
                ctx.untrusted.update(x for x in node.output if x)
                continue
            raise ctx.fail(node, f"imported shape {ctx.shape(o)} differs from ONNX shape "
                           f"inference {want}", cls=ModelImportError,
                           hint="please report this model: it is an importer bug")


def _import_node(ctx: Ctx, node) -> None:
    if not any(i and ctx.is_act(i) for i in node.input):
        return _fold(ctx, node)
    handler = lookup(node.op_type, ctx.opset_for(node.domain), node.domain)
    if handler is None:
        raise unsupported(ctx, node)
    if any(i in ctx.untrusted for i in node.input if i):
        ctx.untrusted.update(o for o in node.output if o)
    handler(ctx, node)
    _check_output(ctx, node)


def build(model: onnx.ModelProto, file: str, input_shape: tuple | None = None) -> ir.Graph:
    inp = _the_input(model.graph, file)
    full = _input_shape(inp, input_shape, file)
    model = infer_shapes(model)
    check_declared_shapes(model, file)
    ctx = _context(model, file, inp.name, full)
    for node in model.graph.node:
        _import_node(ctx, node)
    out = ctx.graph_output
    if out in ctx.consts or not ctx.is_act(out):
        raise ModelImportError(f"the graph output '{out}' does not depend on the input", file=file)
    cmp_name = ctx.name(out)
    if cmp_name == inp.name:
        raise ModelImportError("the graph is the identity: there is nothing to convert", file=file)
    return ir.Graph(input=inp.name, input_shape=ctx.shapes[inp.name], output=cmp_name,
                    nodes=ctx.nodes, source=file, batch=full[0], head=ctx.head,
                    onnx_output=out, priors=ctx.priors)

