"""The fine-tuning options: dataclass defaults, a YAML ``--config`` file, then keywords."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import quant
from ..errors import UsageError
from ..yamlfile import load_mapping

#: Keys a YAML config may hold besides the options: files, which explicit arguments override.
FILE_KEYS = ("target", "data", "val")


@dataclass(frozen=True)
class ConfigFiles:
    """The hardware profile and data files a YAML config names (None: not named)."""

    target: object = None
    data: object = None
    val: object = None


@dataclass
class FinetuneConfig:
    quantize: int = 4
    time_bits: int | None = None
    latency: int | None = None
    noise: float = 0.0
    sparsity: float = 0.0
    epochs: int = 10
    lr: float = 0.01  # Adam step, in weight levels (biases: in ticks)
    batch_size: int = 64
    seed: int = 0
    per_channel: bool | None = None
    first_last_bits: int | None = None
    equalize: float = 0.0  # equalisation strength: 0 off, 1 every channel to the layer's max
    act_range: str | float = "mse"  # clip range per layer: mse, max or a percentile
    val_fraction: float = 0.1  # held out from the training data when no --val is given
    calib_samples: int = 2048
    jitter_eval: float | None = None  # report accuracy under this jitter (ticks); default noise
    #                                   or 1 tick
    lr_decay: str = "cosine"  # or none
    distill: float = 1.0  # weight of the KL term towards the float network's outputs
    keep: str = "best"  # best (validation accuracy, then loss) or last epoch
    ptq: str = "gptq"  # post-training refinement: gptq (GPTQ rounding + bias correction),
    #                    bias (bias correction only) or none (round to nearest)
    ptq_samples: int = 512  # calibration samples for the refinement (fewer for huge layers)
    warn_loss: float = 0.02  # warn when PTQ or the result loses more accuracy than this

    @classmethod
    def from_sources(cls, config=None, **over) -> tuple[FinetuneConfig, ConfigFiles]:
        """The checked options (``over`` wins over the YAML file ``config``, None values are
        not given) and the files the YAML names."""
        d: dict = {}
        if config is not None:
            d = load_mapping(config, "config file", set(cls.__dataclass_fields__),
                             set(FILE_KEYS))
        d.update({k: v for k, v in over.items() if v is not None})
        files = ConfigFiles(**{k: d.pop(k) for k in FILE_KEYS if k in d})
        return cls(**d).check(), files

    def check(self) -> FinetuneConfig:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise UsageError("epochs >= 0, batch size >= 1 and lr > 0 are required")
        if self.noise < 0 or self.sparsity < 0:
            raise UsageError("--noise and --sparsity must be >= 0")
        if self.keep not in ("best", "last"):
            raise UsageError("keep must be best or last")
        if not 0 <= self.val_fraction < 1:
            raise UsageError("val_fraction must be in [0, 1)")
        if self.ptq not in ("gptq", "bias", "none"):
            raise UsageError(f"--ptq {self.ptq}: must be gptq, bias or none")
        if self.ptq_samples < 1 or self.warn_loss < 0:
            raise UsageError("ptq_samples >= 1 and warn_loss >= 0 are required")
        return self

    def quant_config(self) -> quant.QuantConfig:
        return quant.QuantConfig(bits=self.quantize, time_bits=self.time_bits,
                                 latency=self.latency, per_channel=self.per_channel,
                                 first_last_bits=self.first_last_bits, equalize=self.equalize,
                                 act_range=self.act_range)

    def as_dict(self) -> dict:
        return asdict(self)
