"""The host's input counts: comparisons of x with thresholds equal the coding's own float steps
(u = (x - lo) / (hi - lo), spike u > 0 or min(u, 1) tau_c > 0, clipped u < 0 or u > 1) on
every float, including the neighbours of lo and hi, signed zeros, subnormals and infinities."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from snnconv.backends.input_counts import InputCounts, first_true


def _direct(lo, hi, dt, tau, x):
    """The counts by the coding's own steps (what the graph computes), per element."""
    lo = np.asarray(lo, np.float64).astype(dt)
    span = np.asarray(hi, np.float64).astype(dt) - lo
    u = (x - lo) / span
    on = u > 0 if tau >= 1 else np.minimum(u, 1) * dt(tau) > 0
    return on, (u < 0) | (u > 1)


def _edges(lo, hi, dt, shape):
    """x of ``shape`` holding random values around [lo, hi] and, per channel, the floats next
    to lo and hi and the special values."""
    rng = np.random.default_rng(0)
    lo_, hi_ = (np.broadcast_to(np.asarray(v, np.float64).astype(dt), shape[1:]) for v in (lo, hi))
    x = (rng.uniform(-0.3, 1.3, size=shape) * (hi_ - lo_) + lo_).astype(dt)
    up, down = dt(np.inf), dt(-np.inf)
    specials = [np.nextafter(lo_, down), lo_, np.nextafter(lo_, up), np.nextafter(hi_, down),
                hi_, np.nextafter(hi_, up)]
    for i, v in enumerate(specials):
        x[i] = v
    x[len(specials), :, 0, :5] = [0.0, -0.0, np.finfo(dt).smallest_subnormal, np.inf, -np.inf]
    return x


@settings(max_examples=60, deadline=timedelta(seconds=5), derandomize=True)
@given(dt=st.sampled_from([np.float32, np.float64]),
       lo=st.lists(st.floats(-1e3, 1e3, allow_subnormal=False), min_size=3, max_size=3),
       span=st.lists(st.floats(1e-6, 1e4), min_size=3, max_size=3),
       tau=st.sampled_from([1.0, 2.0, 0.3, 1e-30]),
       per_channel=st.booleans())
def test_thresholds_equal_the_coding_on_every_float(dt, lo, span, tau, per_channel):
    lo_a = np.asarray(lo).reshape(3, 1, 1) if per_channel else np.float64(lo[0])
    hi_a = lo_a + (np.asarray(span).reshape(3, 1, 1) if per_channel else span[0])
    counts = InputCounts(SimpleNamespace(lo=lo_a, hi=hi_a), dt, tau)
    assume(counts.monotone)  # else hi rounds onto lo: counted directly (test below)
    x = _edges(lo_a, hi_a, dt, (8, 3, 4, 6))
    on, clipped = _direct(lo_a, hi_a, dt, tau, x)
    assert counts(x) == (int(on.sum()), int(clipped.sum()))
    for i in range(len(x)):  # per sample too: a count may not hide two compensating errors
        assert counts(x[i:i + 1]) == (int(on[i].sum()), int(clipped[i].sum()))


def test_an_input_range_that_is_not_increasing_is_counted_directly():
    """A hand-made model file with hi <= lo breaks monotonicity: no thresholds, the coding's
    steps themselves."""
    layer = SimpleNamespace(lo=np.array([0.0, 1.0, 0.0]).reshape(3, 1, 1),
                            hi=np.array([1.0, 0.0, 1.0]).reshape(3, 1, 1))
    counts = InputCounts(layer, np.float32, 1.0)
    assert not counts.monotone
    x = np.linspace(-0.5, 1.5, 3 * 16, dtype=np.float32).reshape(1, 3, 4, 4)
    on, clipped = _direct(layer.lo, layer.hi, np.float32, 1.0, x)
    assert counts(x) == (int(on.sum()), int(clipped.sum()))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_first_true_finds_the_first_float(dt):
    t = first_true(lambda x: x > dt(0.5), (2,), dt)
    assert np.all(t == np.nextafter(dt(0.5), dt(1)))
    assert np.all(first_true(lambda x: x == x, (1,), dt) == -np.inf)  # always true
    assert np.all(np.isnan(first_true(lambda x: x != x, (1,), dt)))  # never true
