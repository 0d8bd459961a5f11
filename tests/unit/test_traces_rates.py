"""Rate traces replayed honestly: rates interpolated inside the 10-minute windows with every window's
mean kept, realized window totals within Poisson noise of the data, the loader API, day spans for
tuning and evaluation, and per-request timestamps on a coarse grid spread over their tick."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpufleet.sim import traces as T

HAVE_TRACES = os.path.isdir(T.SHARED_TRACES)
needs_traces = pytest.mark.skipif(not HAVE_TRACES, reason="../shared/traces not present")

rates = st.lists(st.one_of(st.just(0.0), st.floats(0.0, 5000.0, allow_nan=False)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rate_w=rates, window_s=st.sampled_from([60, 600]))
def test_interpolation_keeps_every_window_mean_and_is_never_negative(rate_w: list[float], window_s: int) -> None:
    r = np.asarray(rate_w)
    per_s = T.interpolate_rate(r, window_s)
    assert per_s.size == r.size * window_s
    assert np.all(per_s >= 0.0)
    sums = per_s.reshape(-1, window_s).sum(axis=1)
    np.testing.assert_allclose(sums, r * window_s, rtol=1e-9, atol=1e-6)
    # an idle window stays idle: no rate leaks into it from its neighbours
    assert np.all(per_s.reshape(-1, window_s)[r == 0.0] == 0.0)


def test_interpolation_changes_rate_gradually_not_in_one_second() -> None:
    r = np.array([100.0, 100.0, 300.0, 300.0])
    per_s = T.interpolate_rate(r, 600)
    np.testing.assert_allclose(per_s[:600], 100.0, rtol=1e-9)  # flat stays flat
    np.testing.assert_allclose(per_s[-600:], 300.0, rtol=1e-9)
    # continuous at the boundary (harmonic mean of the two rates), no step of 200 req/s
    jump = np.abs(np.diff(per_s)).max()
    assert jump < 0.05 * (r.max() - r.min())
    assert per_s[1199] == pytest.approx(per_s[1200], rel=0.01)
    # the whole change is spread over the windows on either side of the boundary
    assert per_s[1100] > 100.0 * 1.01 and per_s[1300] < 300.0 * 0.99


def test_synthetic_window_totals_are_the_data_within_poisson_noise() -> None:
    rng = np.random.default_rng(5)
    rate_w = rng.uniform(20.0, 400.0, 300)
    for burst in ("poisson", T.BurstModel(8.0, 0.7, 0.8, 0.99, 1.0, "test")):
        tr = T.from_window_rates("w", rate_w, burst=burst, seed=1)
        assert tr.expected is not None
        want = rate_w * 600
        np.testing.assert_allclose(tr.expected.reshape(-1, 600).sum(axis=1), want, rtol=1e-9)
        got = tr.counts.reshape(-1, 600).sum(axis=1)
        z = (got - want) / np.sqrt(want)  # bursts move requests inside a window, add none
        assert np.abs(z).max() < 5.0
        assert abs(float(z.mean())) < 5.0 / np.sqrt(z.size)
        assert 0.6 < float(z.var()) < 1.5


def test_days_and_tune_eval_split() -> None:
    tr = T.from_window_rates("d", np.tile(np.linspace(50, 150, 144), 14), burst="poisson", seed=2)
    assert tr.seconds == 14 * T.DAY_S
    tune, ev = T.tune_eval_split(tr)
    assert (tune.seconds, ev.seconds) == (10 * T.DAY_S, 4 * T.DAY_S)
    np.testing.assert_array_equal(np.concatenate([tune.counts, ev.counts]), tr.counts)
    d3 = T.days(tr, 3, 3)
    np.testing.assert_array_equal(d3.counts, tr.counts[2 * T.DAY_S: 3 * T.DAY_S])
    assert d3.expected is not None and d3.ca2.size == d3.missing.size == T.DAY_S
    assert T.days(tr, 11, 14).name.endswith("[d11-14]")
    with pytest.raises(ValueError):
        T.days(tr, 12, 15)
    with pytest.raises(ValueError):
        T.days(tr, 0, 2)


def test_loader_api_keeps_expected_through_transformations() -> None:
    tr = T.from_window_rates("a", np.full(3, 50.0), burst="poisson", seed=0)
    assert tr.expected is not None
    w = T.window(tr, 100, 600)
    assert w.expected is not None and w.expected.size == 600
    sp = T.splice(tr, tr)
    assert sp.expected is not None and sp.expected.sum() == pytest.approx(2 * tr.expected.sum())
    x2 = T.scale_load(tr, 2.5, seed=1)
    assert x2.expected is not None and x2.expected.sum() == pytest.approx(2.5 * tr.expected.sum())
    with pytest.raises(ValueError):
        T.load_trace("servegen:m-small@0.1~bogus")


def test_coarse_timestamps_are_spread_over_their_tick() -> None:
    rng = np.random.default_rng(0)
    ticks = np.repeat(np.arange(0, 3000, 3.0), rng.poisson(9, 1000))  # 3 s grid, ~3 req/s
    n = ticks.size
    assert T.timestamp_tick(ticks) == pytest.approx(3.0)
    tr = T.from_requests("grid", ticks, np.full(n, 100.0), np.full(n, 10.0), seed=1)
    assert tr.total_requests == n
    # binned as stamped, two seconds in three would be empty; spread, no second is a third of the load
    assert float(np.mean(tr.counts == 0)) < 0.2
    assert np.all(tr.ca2 == 1.0)  # inside a tick nothing is known: Poisson
    fine = np.sort(rng.uniform(0, 3000, n))
    assert T.timestamp_tick(fine) is None


def test_within_second_variability_is_measured_from_fine_timestamps() -> None:
    rng = np.random.default_rng(3)
    uniform = np.sort(rng.uniform(0, 2000, 8000))
    assert T.within_second_ca2(uniform) == pytest.approx(1.0, abs=0.1)
    # pairs of requests arriving together: twice the sub-second variance of independent arrivals
    pairs = np.sort(np.repeat(rng.uniform(0, 2000, 4000), 2))
    assert T.within_second_ca2(pairs) == pytest.approx(2.0, abs=0.2)


@needs_traces
def test_real_rate_traces_keep_window_means_and_load_fast() -> None:
    import time

    t0 = time.perf_counter()
    sg = T.load_trace("servegen:m-small@0.1")
    took = time.perf_counter() - t0
    assert sg.seconds == 14 * T.DAY_S and sg.expected is not None
    raw = T.load_trace("servegen:m-small@0.1~poisson")  # same windows, other bursts
    assert raw.expected is not None
    np.testing.assert_allclose(sg.expected, raw.expected)
    agg = np.loadtxt(os.path.join(T.SHARED_TRACES, "servegen", "aggregated", "language_m-small_total_rate_10min.csv"),
                     delimiter=",", skiprows=1, usecols=1)
    ok = ~sg.missing.reshape(-1, 600)[:, 0]
    np.testing.assert_allclose(sg.expected.reshape(-1, 600).sum(axis=1)[ok], 0.1 * 600 * agg[ok], rtol=1e-4)
    assert took < 15.0  # a few seconds at most (fitting the Azure bursts included)


@needs_traces
def test_mooncake_grid_is_spread() -> None:
    mc = T.load_mooncake()
    assert mc.total_requests == 12031
    assert any("3 s grid" in n for n in mc.notes)
    assert float(np.mean(mc.counts == 0)) < 0.2  # binned as stamped: ~2/3 of seconds would be empty
