"""A rate net (``snnconv.rate.model``) as a NIR graph, node for node, where NIR means the same.

NIR's IF neuron is ``dv/dt = R I``, a spike when ``v > v_threshold``, then ``v = v_reset``.
With ``r = 1`` and one time unit per step (a consumer discretising with step ``dt`` integrates
``dt * r * I``, so it must use ``dt = 1``), that is snnconv's IF with reset to zero and
``v_init = 0``. What NIR cannot say is refused, naming the node: reset by subtraction, a
nonzero initial membrane, the gating max-pool, a padded average pool (NIR does not say whether
padding counts), an input shift. Add nodes dissolve into edges (NIR sums the inputs of a node);
a Concat becomes one block-identity Linear or 1x1 Conv2d per branch into the joint node.
"""

from __future__ import annotations

import re

import numpy as np

from .. import __version__
from ..errors import UnsupportedOpError
from ..rate import model as rm

#: written into the graph's metadata: how to run it and read it out
CONVENTIONS = {
    "dt": 1.0,
    "readout": "sum over the T steps of the output node's input, divided by T; argmax",
    "input": "the analog input x is presented unchanged at every step",
    "step_order": "every node once per step in topological order, no delay along edges",
}


def _remedy_reset(name: str) -> UnsupportedOpError:
    return UnsupportedOpError(
        f"IF node '{name}' resets by subtraction: NIR's IF resets to v_reset (a constant)",
        hint="convert with --coding rate --reset zero (and fine-tune with --proxy) to export")


def _check_node(n: rm.Node) -> None:
    """Refuse what NIR cannot express, with the node and the remedy."""
    if isinstance(n, rm.IF):
        if n.reset != "zero":
            raise _remedy_reset(n.name)
        if np.any(np.asarray(n.v_init) != 0):
            raise UnsupportedOpError(
                f"IF node '{n.name}' starts at a nonzero membrane (v_init): NIR's IF has no "
                "initial state", hint="convert with --v-init 0 (the default) to export")
    elif isinstance(n, rm.MaxPool2d):
        raise UnsupportedOpError(
            f"max-pool node '{n.name}': snnconv's gating max-pool (the input with the largest "
            "spike count so far) keeps a counter per input and has no NIR primitive",
            hint="export a net whose max-pools are replaced by average pools (retrain or "
            "convert such an ONNX model), or use the exact TTFS target")
    elif isinstance(n, rm.AvgPool2d) and any(n.padding):
        raise UnsupportedOpError(
            f"average-pool node '{n.name}' is padded: NIR's AvgPool2d does not say whether "
            "padding is counted (snnconv excludes it)", hint="use an unpadded average pool")
    elif isinstance(n, rm.Scale) and n.shift is not None and np.any(np.asarray(n.shift) != 0):
        raise UnsupportedOpError(f"scale node '{n.name}' has a shift: NIR's Scale has none")
    elif isinstance(n, rm.Input) and n.shift is not None and np.any(np.asarray(n.shift) != 0):
        raise UnsupportedOpError(
            f"input node '{n.name}' shifts the input (an input normalisation): NIR has no "
            "constant-current node to carry it", hint="normalise the data before the ONNX "
            "model's input, or export a model without the normalisation")


def _full(a, shape, per_channel: bool = False) -> np.ndarray:
    """An array broadcast to the node's full shape, float32; ``per_channel``: a (C,) array
    is per channel of a (C, H, W) node, as IF arrays are (numpy's rule otherwise)."""
    a = np.asarray(a, np.float64)
    if per_channel and a.ndim == 1 and len(shape) > 1:
        a = a.reshape((-1,) + (1,) * (len(shape) - 1))
    return np.ascontiguousarray(np.broadcast_to(a, shape), dtype=np.float32)


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a), dtype=np.float32)


def _nir_node(nir, n: rm.Node, net: rm.RateNet):
    """The NIR node for one snnconv node (Add and Concat are handled by the caller)."""
    shp = np.array(n.shape)
    src = net.by_name[n.inputs[0]].shape if n.inputs else None
    if isinstance(n, rm.Input):
        return nir.Input(input_type={"input": shp})
    if isinstance(n, rm.Output):
        return nir.Output(output_type={"output": shp})
    if isinstance(n, rm.Linear):
        if n.bias is None:
            return nir.Linear(weight=_f32(n.weight))
        return nir.Affine(weight=_f32(n.weight), bias=_f32(n.bias))
    if isinstance(n, rm.Conv2d):
        bias = np.zeros(n.shape[0]) if n.bias is None else n.bias
        return nir.Conv2d(input_shape=tuple(src[1:]), weight=_f32(n.weight),
                          stride=tuple(n.stride), padding=tuple(n.padding),
                          dilation=tuple(n.dilation), groups=int(n.groups), bias=_f32(bias))
    if isinstance(n, rm.IF):
        return nir.IF(r=np.ones(n.shape, np.float32), v_threshold=_full(n.threshold, n.shape, True),
                      v_reset=np.zeros(n.shape, np.float32))
    if isinstance(n, rm.Scale):
        return nir.Scale(scale=_full(n.scale, n.shape))
    if isinstance(n, (rm.AvgPool2d, rm.SumPool2d)):
        cls = nir.AvgPool2d if isinstance(n, rm.AvgPool2d) else nir.SumPool2d
        return cls(kernel_size=np.array(n.kernel), stride=np.array(n.stride),
                   padding=np.array(n.padding))
    if isinstance(n, rm.Flatten):
        return nir.Flatten(input_type={"input": np.array(src)}, start_dim=0, end_dim=-1)
    raise UnsupportedOpError(f"node '{n.name}' ({n.kind}) has no NIR form")


def _placer(nir, part: tuple[int, ...], offset: int, total: int, axis: int):
    """A linear map putting a branch of shape ``part`` at ``offset`` of a concatenation of
    ``total`` along ``axis`` 0: a block-identity Linear (flat) or 1x1 Conv2d (C, H, W)."""
    if axis != 0 or len(part) not in (1, 3):
        raise UnsupportedOpError(f"concatenation along axis {axis} of {len(part)}-d tensors "
                                 "has no NIR form")
    w = np.zeros((total, part[0]), np.float32)
    w[offset:offset + part[0]] = np.eye(part[0], dtype=np.float32)
    if len(part) == 1:
        return nir.Linear(weight=w)
    return nir.Conv2d(input_shape=tuple(part[1:]), weight=w[:, :, None, None], stride=(1, 1),
                      padding=(0, 0), dilation=(1, 1), groups=1,
                      bias=np.zeros(total, np.float32))


def node_keys(net: rm.RateNet) -> dict[str, str]:
    """NIR node names for snnconv's (ONNX-derived) names: HDF5 reads '/' as a path and
    consumers turn names into Python identifiers, so only letters, digits and '_' remain."""
    out: dict[str, str] = {}
    for n in net.nodes:
        base = re.sub(r"[^0-9A-Za-z_]+", "_", n.name).strip("_") or n.kind
        base = base if base[0].isalpha() else f"n_{base}"
        key, i = base, 1
        while key in out.values():
            i += 1
            key = f"{base}_{i}"
        out[n.name] = key
    return out


def _fresh(key: str, keys: dict[str, str], nodes: dict) -> str:
    """``key``, or with a number appended if a node of the net or the graph has that name."""
    taken = set(keys.values()) | set(nodes)
    out, i = key, 1
    while out in taken:
        i += 1
        out = f"{key}_{i}"
    return out


def to_nir(net: rm.RateNet):
    """The NIR graph (``nir.NIRGraph``) of a rate net; refuses what NIR cannot express."""
    import nir

    for n in net.nodes:
        _check_node(n)
    keys = node_keys(net)
    nodes: dict = {}
    sources: dict[str, list[str]] = {}  # snnconv name -> NIR nodes whose outputs sum to it
    edges: list[tuple[str, str]] = []
    for n in net.nodes:
        if isinstance(n, rm.Add):
            sources[n.name] = [s for i in n.inputs for s in sources[i]]
            if len(set(sources[n.name])) != len(sources[n.name]):
                raise UnsupportedOpError(f"add node '{n.name}' adds a value to itself: NIR "
                                         "edges are a set")
            continue
        if isinstance(n, rm.Concat):
            off = 0
            for i in n.inputs:
                part = net.by_name[i].shape
                key = _fresh(f"{keys[n.name]}_from_{keys[i]}", keys, nodes)
                nodes[key] = _placer(nir, part, off, n.shape[n.axis], n.axis)
                edges += [(s, key) for s in sources[i]]
                sources.setdefault(n.name, []).append(key)
                off += part[n.axis]
            continue
        k = keys[n.name]
        nodes[k] = _nir_node(nir, n, net)
        edges += [(s, k) for i in n.inputs for s in sources[i]]
        sources[n.name] = [k]
        if isinstance(n, rm.Input) and n.scale is not None and np.any(np.asarray(n.scale) != 1):
            key = _fresh(f"{k}_scale", keys, nodes)  # an input normalisation without shift
            nodes[key] = nir.Scale(scale=_full(n.scale, n.shape))
            edges.append((k, key))
            sources[n.name] = [key]
    meta = dict(CONVENTIONS, producer=f"snnconv {__version__}", coding="rate",
                steps=int(net.steps), reset="zero")
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=True)
