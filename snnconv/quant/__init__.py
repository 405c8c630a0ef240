"""From a float TTFS network to integers for a given chip (docs/finetune.md).

The stages, in the order ``finetune`` runs them: ``profile`` (what the hardware supports),
``equalize`` (per-channel ranges made equal, exactly), ``stats`` (calibration sample),
``build`` (ticks, steps and ramps from ``ticks``, chains folded by ``fold``, weights rounded by
``levels``: a QNet plus its ``latent`` reals), ``ptq`` (GPTQ and bias correction of the latents),
``fit`` (the model against the profile's limits). The names below are what the rest of snnconv
uses; ``snnconv.quant.ptq`` is imported on its own.
"""

from .build import QuantConfig, build
from .equalize import channel_max, equalize
from .fit import fan_in, fit_report
from .fold import INTEGER_OPS, channel_full, check_supported, fold_chain
from .latent import Latent, with_latent
from .levels import qmax, quantize_weights, row_steps
from .profile import Profile, load_profile
from .stats import ActStats, act_stats
from .ticks import allocate_ticks, best_range, choose_ramp, stage_layers

__all__ = [
    "INTEGER_OPS", "ActStats", "Latent", "Profile", "QuantConfig", "act_stats", "allocate_ticks",
    "best_range", "build", "channel_full", "channel_max", "check_supported", "choose_ramp",
    "equalize", "fan_in", "fit_report", "fold_chain", "load_profile", "qmax",
    "quantize_weights", "row_steps", "stage_layers", "with_latent",
]
