"""Why an op is refused, and what to rewrite it to: the text of every UnsupportedOpError.

Kept apart from the handlers so that the messages can be read (and tested) as one table, and so
that the import context can attach a rewrite hint to any refusal without importing the handlers.
"""

from __future__ import annotations

from ..errors import UnsupportedOpError

#: Ops with no exact TTFS mapping, and why (the refusal message names them).
NOT_PIECEWISE_LINEAR = {
    "Sigmoid": "Sigmoid is not piecewise linear (allowed only as the last op)",
    "Tanh": "Tanh is not piecewise linear (allowed only as the last op)",
    "Gelu": "GELU is not piecewise linear", "Erf": "Erf is not piecewise linear",
    "Softplus": "Softplus is not piecewise linear", "Elu": "ELU is not piecewise linear",
    "Selu": "SELU is not piecewise linear", "Celu": "CELU is not piecewise linear",
    "Mish": "Mish is not piecewise linear", "HardSwish": "HardSwish is quadratic in places",
    "Exp": "Exp is not piecewise linear", "Log": "Log is not piecewise linear",
    "Sqrt": "Sqrt is not piecewise linear", "Pow": "Pow is not piecewise linear",
    "Reciprocal": "1/x is not piecewise linear",
    "Softmax": "Softmax is allowed only at the output", "LogSoftmax":
    "LogSoftmax is allowed only at the output", "LSTM": "recurrent layers are not feed-forward",
    "GRU": "recurrent layers are not feed-forward", "RNN": "recurrent layers are not feed-forward",
    "LRN": "local response normalisation is not piecewise linear",
    "InstanceNormalization": "instance normalisation depends on the input's statistics",
    "LayerNormalization": "layer normalisation depends on the input's statistics",
    "GroupNormalization": "group normalisation depends on the input's statistics",
    "Attention": "attention multiplies activations", "Einsum": "Einsum of activations",
    "ThresholdedRelu": "ThresholdedRelu jumps at its threshold (not continuous)",
    "Sign": "Sign is a step function", "Round": "Round is a step function",
    "Floor": "Floor is a step function", "Ceil": "Ceil is a step function",
    "MaxUnpool": "unpooling places values at run-time indices",
}

_SMOOTH = "replace it by ReLU (or LeakyReLU / ReLU6) and fine-tune the ANN before converting"
_BATCH_FIRST = "keep the batch axis first and untouched, e.g. torch.flatten(x, 1) / x.view(N, -1)"
_EVAL = "export the model in eval mode (model.eval())"

#: Rewrites a user can apply before converting, per op: for ops with no exact mapping and for
#: configurations of supported ops that have none. Every refusal carries one.
REWRITE_HINT = {
    "Sigmoid": "replace hidden Sigmoid by HardSigmoid (piecewise linear) or ReLU and fine-tune",
    "Tanh": "replace hidden Tanh by Clip(-1, 1) (HardTanh) or ReLU and fine-tune",
    "Gelu": "replace GELU by ReLU and fine-tune the ANN before converting",
    "Erf": "Erf usually comes from GELU: replace GELU by ReLU and fine-tune before converting",
    "Softplus": _SMOOTH, "Elu": _SMOOTH, "Selu": _SMOOTH, "Celu": _SMOOTH, "Mish": _SMOOTH,
    "HardSwish": "replace HardSwish by ReLU6 or HardSigmoid (piecewise linear) and fine-tune",
    "Exp": "move the non-linear pre/post-processing out of the exported model",
    "Log": "move the non-linear pre/post-processing out of the exported model",
    "Sqrt": "move the non-linear pre/post-processing out of the exported model",
    "Pow": "move the non-linear pre/post-processing out of the exported model",
    "Reciprocal": "divide by constants only; move the rest out of the exported model",
    "Mul": "multiplying two activations is not linear; gate with a constant instead",
    "Div": "divide activations by constants only",
    "Add": "add constants of the tensor's shape (or broadcastable to it) or two activations",
    "Sub": "subtract constants of the tensor's shape (or broadcastable to it) or activations",
    "MatMul": "multiply activations by constant matrices only (x @ W or W @ x)",
    "Gemm": "export the layer as Gemm(x, W, b) with the activation as input A, or as x @ W",
    "Softmax": "Softmax/LogSoftmax are accepted as the last op only",
    "LogSoftmax": "Softmax/LogSoftmax are accepted as the last op only",
    "LSTM": "replace the recurrent layer by 1-d convolutions over time (a TCN) and retrain",
    "GRU": "replace the recurrent layer by 1-d convolutions over time (a TCN) and retrain",
    "RNN": "replace the recurrent layer by 1-d convolutions over time (a TCN) and retrain",
    "LRN": "remove LRN or replace it by BatchNormalization (folded exactly) and fine-tune",
    "InstanceNormalization": "use BatchNormalization (folded exactly) and fine-tune",
    "LayerNormalization": "use BatchNormalization (folded exactly) and fine-tune",
    "GroupNormalization": "use BatchNormalization (folded exactly) and fine-tune",
    "Attention": "replace attention by convolutions or constant-weight mixing and retrain",
    "Einsum": "write the contraction as MatMul/Conv with constant weights",
    "ThresholdedRelu": "replace it by Relu (or Relu(x - alpha)) and fine-tune",
    "Sign": "replace step functions by Clip or ReLU and fine-tune",
    "Round": "quantisation belongs to the hardware step (snnconv finetune), not the model",
    "Floor": "quantisation belongs to the hardware step (snnconv finetune), not the model",
    "Ceil": "quantisation belongs to the hardware step (snnconv finetune), not the model",
    "MaxUnpool": "upsample with Resize (mode 'nearest') or a ConvTranspose instead",
    "Conv": "give the convolution a constant weight (1-d, 2-d or 3-d) and the activation as X",
    "ConvTranspose": "give the transposed convolution a constant weight (1-d, 2-d or 3-d)",
    "BatchNormalization": _EVAL, "Dropout": _EVAL,
    "MaxPool": "do not use the pooling indices; upsample with Resize (mode 'nearest') instead",
    "AveragePool": "pool over the spatial axes of an (N, C, *spatial) tensor",
    "GlobalAveragePool": "pool over the spatial axes of an (N, C, *spatial) tensor",
    "GlobalMaxPool": "pool over the spatial axes of an (N, C, *spatial) tensor",
    "ReduceMean": "reduce over the spatial axes only (keep batch and channels)",
    "ReduceMax": "reduce over the spatial axes only (keep batch and channels)",
    "Reshape": _BATCH_FIRST, "Flatten": _BATCH_FIRST, "Squeeze": _BATCH_FIRST,
    "Unsqueeze": _BATCH_FIRST, "Transpose": _BATCH_FIRST, "Slice": _BATCH_FIRST,
    "Split": _BATCH_FIRST, "Gather": "gather feature axes at constant indices",
    "Concat": "concatenate activations along a feature axis (add constants with Add)",
    "Pad": "pad the spatial axes with zeros (mode 'constant', value 0)",
    "Cast": "keep activations in a float type",
    "Resize": "use mode 'nearest' (spikes are copied), or learn the upsampling as ConvTranspose",
    "Upsample": "use mode 'nearest' (spikes are copied), or learn the upsampling as "
                "ConvTranspose",
    "ArgMax": "ArgMax is accepted as the last op only, over the classes of (N, classes)",
    "PRelu": "use a constant slope broadcastable to the tensor (per channel or scalar)",
    "Max": "take the max of activations of one shape and constants",
    "Min": "take the min of activations of one shape and constants",
}

#: For ops snnconv has never heard of.
GENERIC_HINT = ("rewrite the node with supported ops (README, 'Supported ONNX ops'): every "
                "piecewise-linear function is a sum of ReLUs; otherwise replace it by a ReLU "
                "variant and fine-tune")


def unsupported(ctx, node) -> UnsupportedOpError:
    """The refusal of an op without a handler (``ctx`` is the import context, which names the
    file and node)."""
    why = NOT_PIECEWISE_LINEAR.get(node.op_type)
    msg = (f"cannot be mapped exactly to a TTFS network: {why}" if why else
           f"op {node.op_type} has no TTFS mapping in snnconv")
    hint = REWRITE_HINT.get(node.op_type) or GENERIC_HINT
    return ctx.fail(node, msg, hint=hint)
