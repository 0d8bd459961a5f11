"""RateForecaster: the control loop's interface (observe samples, forecast the horizon's peak)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpufleet.forecasting import RateForecaster

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def feed(rf: RateForecaster, rates: list[float], step: float, start: float = 0.0) -> float:
    """One sample in the middle of each bucket; returns the time just after the last bucket."""
    for i, r in enumerate(rates):
        rf.observe(start + i * step + step / 2, r)
    return start + len(rates) * step


def test_no_history_gives_none() -> None:
    rf = RateForecaster(step_s=60)
    assert rf.forecast(1000.0, 120.0) is None
    rf.observe(1000.0, 5.0)  # only the current, incomplete bucket: still no history
    assert rf.forecast(1010.0, 120.0) is None


def test_constant_rate_forecasts_that_rate() -> None:
    rf = RateForecaster(step_s=60)
    now = feed(rf, [10.0] * 30, 60)
    fc = rf.forecast(now + 5, 300, 0.9)
    assert fc is not None
    assert math.isclose(fc.mean_rps, 10.0) and fc.upper_rps >= fc.mean_rps
    assert fc.horizon_s == 300 and fc.steps == 6 and fc.history_points == 30


def test_horizon_takes_the_peak_of_a_daily_shape() -> None:
    step = 3600.0
    shape = [100.0 + 50.0 * math.sin(2 * math.pi * i / 24) for i in range(24)]
    rf = RateForecaster(step_s=step, method="seasonal-naive", seasonalities_s=(86400.0,))
    now = feed(rf, shape * 3, step)
    short = rf.forecast(now, 3600.0)
    day = rf.forecast(now, 86400.0)
    assert short is not None and day is not None
    assert math.isclose(day.mean_rps, max(shape))
    assert short.mean_rps <= day.mean_rps


def test_refits_are_bounded_and_cheap_updates_fill_the_gaps() -> None:
    rf = RateForecaster(step_s=600, refit_every_s=86400)
    rng = np.random.default_rng(0)
    for i in range(5 * 144):
        rf.observe(i * 600 + 1, 100 + 10 * rng.standard_normal())
        rf.forecast(i * 600 + 2, 600)
        rf.forecast(i * 600 + 3, 600)  # same bucket: served from the cache
    # Geometric refits while young, then about one per day; every other bucket is an append.
    assert rf.fits <= 40
    assert rf.fits + rf.appends <= 5 * 144


def test_stale_samples_are_reported() -> None:
    rf = RateForecaster(step_s=60)
    now = feed(rf, [10.0] * 20, 60)
    fc = rf.forecast(now + 600, 60)
    assert fc is not None and "no samples in the last 10 buckets" in fc.note
    assert math.isclose(fc.mean_rps, 10.0)


def test_a_bucket_completes_only_when_now_passes_its_end() -> None:
    rf = RateForecaster(step_s=60, method="last-value")
    now = feed(rf, [10.0] * 5, 60)
    rf.observe(now + 10, 50.0)  # current bucket: not history yet
    fc = rf.forecast(now + 20, 30)
    assert fc is not None and math.isclose(fc.mean_rps, 10.0)
    fc = rf.forecast(now + 61, 30)
    assert fc is not None and math.isclose(fc.mean_rps, 50.0)


def test_refit_offsets_spread_a_fleet_over_the_day() -> None:
    a = RateForecaster(step_s=600, refit_offset_s=0)
    b = RateForecaster(step_s=600, refit_offset_s=43200)
    assert a.refit_offset != b.refit_offset


samples = st.lists(
    st.tuples(
        st.one_of(st.floats(-1e4, 1e6), st.just(float("nan")), st.just(float("inf"))),
        st.one_of(st.floats(-10, 1e5), st.just(float("nan"))),
    ),
    max_size=60,
)


@PROPS
@given(
    obs=samples,
    now=st.one_of(st.floats(-1e4, 2e6), st.just(float("nan"))),
    horizon=st.one_of(st.floats(-100, 1e5), st.just(float("nan"))),
    q=st.floats(0.0, 1.0),
    step=st.sampled_from([60.0, 300.0, 3600.0]),
    method=st.sampled_from(["auto", "holt-winters", "seasonal-naive", "last-value", "x"]),
)
def test_never_raises_and_gives_a_sane_peak(
    obs: list[tuple[float, float]], now: float, horizon: float, q: float, step: float, method: str
) -> None:
    rf = RateForecaster(step_s=step, method=method)
    for t, r in obs:
        rf.observe(t, r)
    fc = rf.forecast(now, horizon, q)
    if fc is not None:
        assert math.isfinite(fc.mean_rps) and fc.mean_rps >= 0
        assert fc.upper_rps >= fc.mean_rps
        assert fc.steps >= 1


def test_a_deferred_fit_serves_the_last_rate_then_fits_when_allowed() -> None:
    rf = RateForecaster(step_s=60, method="last-value")
    now = feed(rf, [10.0] * 9 + [20.0], 60)
    assert rf.needs_fit(now + 1)
    fc = rf.forecast(now + 1, 60, allow_fit=False)
    assert fc is not None and "fit deferred" in fc.note and fc.mean_rps == 20.0
    assert rf.fits == 0
    fc = rf.forecast(now + 1, 60)
    assert fc is not None and "deferred" not in fc.note and rf.fits == 1
    assert not rf.needs_fit(now + 1)


def test_a_deferred_refit_keeps_the_old_parameters_and_moves_on() -> None:
    rf = RateForecaster(step_s=60, method="last-value", refit_every_s=600)
    now = feed(rf, [10.0] * 40, 60)
    rf.forecast(now + 1, 60)
    fits = rf.fits
    later = feed(rf, [30.0] * 20, 60, start=now)
    fc = rf.forecast(later + 1, 60, allow_fit=False)
    assert fc is not None and "refit deferred" in fc.note and fc.mean_rps == 30.0
    assert rf.fits == fits
