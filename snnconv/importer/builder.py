"""Walks the ONNX graph once, folding constants and dispatching each node to its op handler."""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import ir
from ..errors import ModelImportError, UnsupportedOpError

SHAPE_DATA = object()  # marks tensors computed from shapes only (not constant, not activation)
PROBE_BATCH = 7919  # a prime no real dimension product is likely to equal


class Ctx:
    """What a handler sees: constants, per-sample shapes, and where to put IR nodes."""

    def __init__(self, file: str, model: onnx.ModelProto, batch, input_name: str):
        self.file = file
        self.model = model
        self.opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")),
                          1)
        self.batch = batch
        self.consts: dict[str, np.ndarray] = {}
        self.shape_data: set[str] = set()
        #: Shape-derived tensors evaluated with the batch size set to PROBE_BATCH (dynamic batch):
        #: a reshape target taken from them shows where the batch axis went.
        self.probes: dict[str, np.ndarray] = {}
        #: Tensors whose ONNX-inferred shape is known to be wrong (see _old_ceil_rule).
        self.untrusted: set[str] = set()
        self.alias: dict[str, str] = {}
        self.nodes: list[ir.Node] = []
        self.shapes: dict[str, tuple] = {}  # per-sample shapes of activations
        self.onnx_shapes: dict[str, tuple] = {}  # full inferred shapes (None for unknown dims)
        self.head: str | None = None
        self.graph_output: str | None = None
        self.input_name = input_name
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self._n = 0

    # --- tensors -------------------------------------------------------------------------------
    def name(self, t: str) -> str:
        while t in self.alias:
            t = self.alias[t]
        return t

    def is_const(self, t: str) -> bool:
        return t in self.consts

    def const(self, node, t: str, what: str = "this input") -> np.ndarray:
        if t not in self.consts:
            raise self.fail(node, f"{what} ('{t}') must be a constant, but it depends on the "
                            "network input")
        return self.consts[t]

    def opt_const(self, node, idx: int) -> np.ndarray | None:
        if len(node.input) <= idx or not node.input[idx]:
            return None
        return self.const(node, node.input[idx], f"input {idx}")

    def is_act(self, t: str) -> bool:
        return bool(t) and self.name(t) in self.shapes

    def shape(self, t: str) -> tuple:
        return self.shapes[self.name(t)]

    def inferred(self, t: str) -> tuple | None:
        """Per-sample shape ONNX inferred for tensor t, if static."""
        if t in self.untrusted:
            return None
        full = self.onnx_shapes.get(t)
        if full is None or len(full) < 1 or any(d is None for d in full[1:]):
            return None
        return tuple(full[1:])

    @property
    def probe_batch(self) -> int:
        return self.batch if isinstance(self.batch, int) and self.batch > 0 else PROBE_BATCH

    def shape_value(self, t: str) -> np.ndarray | None:
        """A constant or probe-evaluated shape tensor, else None."""
        if t in self.consts:
            return self.consts[t]
        return self.probes.get(t)

    # --- emitting ------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}::{self._n}"

    def emit(self, node: ir.Node) -> str:
        shapes = [self.shapes[i] for i in node.inputs]
        self.shapes[node.output] = tuple(node.infer(shapes))
        self.nodes.append(node)
        return node.output

    def set_alias(self, out: str, src: str) -> None:
        self.alias[out] = self.name(src)

    def fail(self, node, msg: str, hint: str | None = None, cls=UnsupportedOpError):
        if hint is None and issubclass(cls, UnsupportedOpError):  # every refusal names a rewrite
            from .handlers import GENERIC_HINT, REWRITE_HINT

            hint = REWRITE_HINT.get(node.op_type, GENERIC_HINT)
        return cls(msg, file=self.file, node=node.name or "(unnamed)", op=node.op_type,
                   hint=hint)

    def attr(self, node, key: str, default=None):
        for a in node.attribute:
            if a.name == key:
                v = helper.get_attribute_value(a)
                return v.decode() if isinstance(v, bytes) else v
        return default


def _shape_of(vi) -> tuple | None:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None
                 for d in vi.type.tensor_type.shape.dim)


def _eval_constant_node(node: onnx.NodeProto, ctx: Ctx, values=None) -> list[np.ndarray]:
    """Evaluate a node whose inputs are all constant with onnx.reference (the folding fallback)."""
    from onnx.reference import ReferenceEvaluator

    values = ctx.consts if values is None else values
    inputs = [i for i in node.input if i]
    g = helper.make_graph(
        [node], "fold",
        [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(values[i].dtype),
                                       values[i].shape) for i in inputs],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
         for o in node.output if o])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", ctx.opset)])
    m.ir_version = ctx.model.ir_version
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ReferenceEvaluator(m).run(None, {i: values[i] for i in inputs})
    return [np.asarray(r) for r in res]


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
        vals = _eval_constant_node(node, ctx, values)
    except Exception:  # noqa: BLE001 - shape inference may still resolve the consumer
        ctx.shape_data.update(outs)
        return
    for o, v in zip(outs, vals):
        ctx.probes[o] = v


NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                    "Multinomial", "Bernoulli"}


def build(model: onnx.ModelProto, file: str, input_shape: tuple | None = None) -> ir.Graph:
    from .handlers import HANDLERS, unsupported

    g = model.graph
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
    if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
        raise ModelImportError(f"input '{inp.name}' has element type "
                               f"{onnx.TensorProto.DataType.Name(elem)}; snnconv needs a float "
                               "input", file=file)
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
    batch = full[0]

    from .loader import infer_shapes

    model = infer_shapes(model)
    g = model.graph
    ctx = Ctx(file, model, batch, inp.name)
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        s = _shape_of(vi)
        if s is not None:
            ctx.onnx_shapes[vi.name] = s
    for t in g.initializer:
        ctx.consts[t.name] = numpy_helper.to_array(t)
    ctx.shapes[inp.name] = tuple(full[1:])
    ctx.graph_output = g.output[0].name
    for n in g.node:
        for i in n.input:
            ctx.consumers.setdefault(i, []).append(n)

    for node in g.node:
        acts = [i for i in node.input if i and ctx.is_act(i)]
        if not acts:
            if node.op_type in NONDETERMINISTIC:
                raise ctx.fail(node, "random op: the network is not deterministic")
            if all((not i) or i in ctx.consts for i in node.input):
                try:
                    vals = _eval_constant_node(node, ctx)
                except Exception as e:  # noqa: BLE001
                    raise ctx.fail(node, f"cannot evaluate this constant subgraph: {e}",
                                   cls=ModelImportError) from None
                for o, v in zip([o for o in node.output if o], vals):
                    ctx.consts[o] = v
            elif all((not i) or ctx.shape_value(i) is not None for i in node.input):
                _eval_probe_node(node, ctx)
            else:
                ctx.shape_data.update(o for o in node.output if o)
            continue
        handler = HANDLERS.get(node.op_type)
        if handler is None:
            raise unsupported(ctx, node)
        if any(i in ctx.untrusted for i in node.input if i):
            ctx.untrusted.update(o for o in node.output if o)
        handler(ctx, node)
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

    out = ctx.graph_output
    if out in ctx.consts or not ctx.is_act(out):
        raise ModelImportError(f"the graph output '{out}' does not depend on the input", file=file)
    cmp_name = ctx.name(out)
    if cmp_name == inp.name:
        raise ModelImportError("the graph is the identity: there is nothing to convert", file=file)
    return ir.Graph(input=inp.name, input_shape=ctx.shapes[inp.name], output=cmp_name,
                    nodes=ctx.nodes, source=file, batch=batch, head=ctx.head,
                    onnx_output=out)


def prod(s) -> int:
    return int(math.prod(s))
