"""The hardware profile as data: every listed limit is enforced, files load through the one YAML
loader, and the quant package keeps every name the rest of snnconv imports."""

import pytest

from snnconv import quant
from snnconv.errors import UsageError
from snnconv.quant import profile


@pytest.mark.parametrize("key", sorted(profile.CHOICES))
def test_every_choice_is_enforced(key):
    for ok in profile.CHOICES[key]:
        quant.Profile(**{key: ok}).check()
    with pytest.raises(UsageError, match=f"{key} must be"):
        quant.Profile(**{key: "sometimes"}).check()


@pytest.mark.parametrize("key,lo,hi,what", profile.RANGES)
def test_every_range_is_enforced(key, lo, hi, what):
    quant.Profile(**{key: lo}).check()
    with pytest.raises(UsageError, match=what.replace("^", r"\^")):
        quant.Profile(**{key: lo - 1}).check()
    if hi != float("inf"):
        quant.Profile(**{key: hi}).check()
        with pytest.raises(UsageError, match=what.replace("^", r"\^")):
            quant.Profile(**{key: hi + 1}).check()


def test_load_profile_names_the_file_and_defaults(tmp_path):
    assert quant.load_profile() == quant.Profile()
    with pytest.raises(UsageError, match="hardware profile not found"):
        quant.load_profile(tmp_path / "none.yaml")
    p = tmp_path / "chip.yaml"
    p.write_text("max_ticks: 16\n")
    prof = quant.load_profile(p)
    assert prof.name == "chip" and prof.max_ticks == 16
    p.write_text("- a\n")
    with pytest.raises(UsageError, match="mapping"):
        quant.load_profile(p)
    p.write_text("max_ticks: 0\n")
    with pytest.raises(UsageError, match="max_ticks must be >= 1"):
        quant.load_profile(p)


def test_package_keeps_the_names_others_import():
    for name in ("Profile", "load_profile", "QuantConfig", "Latent", "build", "act_stats",
                 "equalize", "with_latent", "fit_report", "fan_in", "check_supported",
                 "INTEGER_OPS", "fold_chain", "channel_full", "channel_max", "allocate_ticks",
                 "best_range", "row_steps", "qmax"):
        assert hasattr(quant, name), name
    from snnconv.quant import ptq
    assert callable(ptq.refine) and callable(ptq.sample_budget)
