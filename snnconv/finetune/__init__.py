"""Hardware-aware fine-tuning: train the integer network's real-valued latents with fake
quantisation and straight-through gradients, then export the integers (spec section 5).

The stages, each in its module: ``config`` (options, YAML), ``inputs`` (which samples),
``posttrain`` (post-training quantisation, the starting point), ``fakequant`` (the training
forward, bit-exact with the integer golden model), ``evaluate`` (accuracy, spikes, sensitivity,
jitter), ``trainer`` (epochs, resume, DDP, best epoch), ``report`` (the report dict, what the
file records) and ``tables`` (rendering it); ``pipeline`` runs them in order.
"""

from .config import ConfigFiles, FinetuneConfig
from .evaluate import (evaluate_float, evaluate_int, evaluate_q, float_jitter, float_weight_bytes,
                       sensitivity, teacher_logits)
from .fakequant import FakeQuantNet, exact_dtype
from .pipeline import FinetuneResult, finetune, finetune_file
from .report import accuracy_warnings, layer_rows
from .tables import report_tables

__all__ = ["ConfigFiles", "FakeQuantNet", "FinetuneConfig", "FinetuneResult", "accuracy_warnings",
           "evaluate_float", "evaluate_int", "evaluate_q", "exact_dtype", "finetune",
           "finetune_file", "float_jitter", "float_weight_bytes", "layer_rows", "report_tables",
           "sensitivity", "teacher_logits"]
