"""gpufleet.forecasting: table cases and hypothesis properties of fit -> forecast.

Deterministic (seeded data, no clock, no sleeps). Seasons are kept short (hourly steps, a 24-step
day) so Holt-Winters fits stay in the tens of milliseconds.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from gpufleet.forecasting import METHODS, FittedForecaster, Forecast, fit, smape
from gpufleet.forecasting._models import Ets, LastValue, SeasonalNaive, fit_ets

HOUR = 3600.0
DAY = 86400.0
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def daily(days: int, *, noise: float = 0.0, trend: float = 0.0, seed: int = 0) -> np.ndarray:
    """Hourly series with a daily shape, optional trend and multiplicative noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 24)
    base = 100.0 + 40.0 * np.sin(2 * np.pi * t / 24) + trend * t
    return base * (1.0 + noise * rng.standard_normal(len(t)))


# ---------------------------------------------------------------- table cases


@pytest.mark.parametrize(
    ("history", "method", "expect_method", "note_has"),
    [
        ([], "auto", "none", "no history"),
        ([np.nan, np.nan], "auto", "none", "no history"),
        ([5.0], "auto", "auto[last-value]", "random-walk"),
        ([5.0], "holt-winters", "last-value", "fell back"),
        ([5.0, 6.0, 7.0], "seasonal-naive", "last-value", "shorter than one season"),
        (list(range(1, 6)), "exp-smoothing", "last-value", "fewer than"),
        ([1.0, np.nan, 3.0, np.inf, 5.0], "last-value", "last-value", "missing"),
        ([1.0, 2.0, 3.0], "no-such-method", "auto[last-value]", "unknown method"),
    ],
)
def test_short_or_gappy_history_falls_back_and_says_so(
    history: list[float], method: str, expect_method: str, note_has: str
) -> None:
    fc = fit(history, step_seconds=HOUR, method=method, seasonalities_s=(DAY,)).forecast(4)
    assert fc.method == expect_method
    assert note_has in fc.note
    assert len(fc.mean) == len(fc.upper) == 4
    if expect_method == "none":
        assert np.all(np.isnan(fc.mean)) and np.all(np.isnan(fc.upper))
    else:
        assert np.all(np.isfinite(fc.mean)) and np.all(fc.upper >= fc.mean)


def test_last_value_repeats_the_last_observation_skipping_gaps() -> None:
    fc = fit([3.0, 4.0, 7.0, np.nan], step_seconds=60, method="last-value").forecast(3)
    assert fc.mean.tolist() == [7.0, 7.0, 7.0]


def test_seasonal_naive_recovers_a_periodic_signal_exactly() -> None:
    y = daily(3)
    fc = fit(y, step_seconds=HOUR, method="seasonal-naive", seasonalities_s=(DAY,)).forecast(48)
    assert fc.method == "seasonal-naive@1d"
    np.testing.assert_array_equal(fc.mean, np.tile(y[-24:], 2))  # bit for bit


def test_seasonal_naive_uses_the_week_when_the_history_covers_one() -> None:
    y = daily(9)
    f = fit(y, step_seconds=HOUR, method="seasonal-naive", seasonalities_s=(DAY, 7 * DAY))
    assert f.forecast(1).method == "seasonal-naive@7d"


def test_auto_picks_seasonal_naive_on_a_pure_periodic_signal() -> None:
    y = daily(6)
    f = fit(y, step_seconds=HOUR, seasonalities_s=(DAY,), horizon=6)
    assert set(f.chosen) == {"seasonal-naive@1d"}
    np.testing.assert_array_equal(f.forecast(6).mean, y[-24:-18])


def test_holt_winters_follows_a_noisy_daily_shape_with_trend() -> None:
    y = daily(8, noise=0.02, trend=0.05, seed=1)
    truth = daily(9, trend=0.05)[len(y) : len(y) + 12]
    fc = fit(y, step_seconds=HOUR, method="holt-winters", seasonalities_s=(DAY,)).forecast(12)
    assert fc.method == "holt-winters@1d"
    assert smape(truth, fc.mean) < 5.0


def test_holt_winters_append_equals_a_statsmodels_refilter() -> None:
    """The cheap path (known parameters, state moved forward) is statsmodels' own filter."""
    y = daily(6, noise=0.05, seed=2)
    n, k = 120, 7
    model = fit_ets(y[:n], 24, "1d", keep=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ExponentialSmoothing(
            y[:n], trend="add", damped_trend=True, seasonal="add", seasonal_periods=24,
            initialization_method="heuristic",
        ).fit(use_brute=False)
        p = ref.params
        full = ExponentialSmoothing(
            y[: n + k], trend="add", damped_trend=True, seasonal="add", seasonal_periods=24,
            initialization_method="known", initial_level=p["initial_level"],
            initial_trend=p["initial_trend"], initial_seasonal=p["initial_seasons"],
        ).fit(
            smoothing_level=p["smoothing_level"], smoothing_trend=p["smoothing_trend"],
            smoothing_seasonal=p["smoothing_seasonal"], damping_trend=p["damping_trend"],
            optimized=False,
        )
    np.testing.assert_allclose(model.forecast(5), ref.forecast(5), rtol=1e-9)
    batch = model.append(y[n : n + k])
    one_by_one = model
    for v in y[n : n + k]:
        one_by_one = one_by_one.append(np.array([v]))
    for moved in (batch, one_by_one):
        # The filtered states equal statsmodels' own filter over the longer series...
        np.testing.assert_allclose(moved.level[-k:], full.level[-k:], rtol=1e-9)
        np.testing.assert_allclose(moved.trend[-k:], full.trend[-k:], rtol=1e-9)
        np.testing.assert_allclose(moved.season[-24:], np.asarray(full.season)[-24:], rtol=1e-9, atol=1e-12)
        # ...and so do forecasts within one season. (At h = 24, 48, ... statsmodels' forecast
        # reads the season of one period earlier; ours reads the latest one, s_T, as in the
        # textbook recursion.)
        np.testing.assert_allclose(moved.forecast(23), full.forecast(23), rtol=1e-9)


def test_backtest_paths_match_the_forecast_from_each_origin() -> None:
    """The backtest reads h-step forecasts from stored states; they must equal a forecast made
    from that origin with the same parameters."""
    y = daily(6, noise=0.05, seed=3)
    model = fit_ets(y[:130], 24, "1d", keep=60)
    path = model.paths(np.array([129]), 30)[0]
    np.testing.assert_allclose(path, model.forecast(30), rtol=1e-12)


def test_fitted_forecaster_append_moves_the_forecast_forward() -> None:
    y = daily(5, noise=0.03, seed=4)
    f = fit(y[:100], step_seconds=HOUR, seasonalities_s=(DAY,))
    g = f.append(y[100:110])
    assert g.nobs == f.nobs + 10 and g.chosen == f.chosen
    h = g.append([np.nan, np.nan])  # missing points propagate the state, never raise
    assert np.all(np.isfinite(h.forecast(5).mean))


@pytest.mark.parametrize("method", METHODS)
def test_compacted_models_forecast_and_append_exactly_as_the_full_ones(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fit keeps only the last value / season / smoothing state (`compact`); forecasts and
    appends (missing points included) equal, bit for bit, those of models keeping the history."""
    y = daily(8, noise=0.05, seed=6)
    later = y[150:170].copy()
    later[[3, 11]] = np.nan

    def run() -> tuple[FittedForecaster, list[Forecast]]:
        f = fit(y[:150], step_seconds=HOUR, method=method, seasonalities_s=(DAY,))
        out = [f.forecast(30, 0.9)]
        for i in range(0, len(later), 5):
            f = f.append(later[i : i + 5])
            out.append(f.forecast(30, 0.8))
        return f, out

    compact, got = run()
    for cls in (LastValue, SeasonalNaive, Ets):
        monkeypatch.setattr(cls, "compact", lambda self: self)
    full, want = run()
    assert list(compact.models) == list(full.models)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.upper, b.upper)
        assert (a.method, a.note) == (b.method, b.note)
    held = [a.size for m in compact.models.values() for a in (getattr(m, f.name) for f in dataclasses.fields(m))
            if isinstance(a, np.ndarray)]
    assert held and max(held) <= 24 + 1  # a day of hourly steps, plus Holt-Winters' final state


def test_steps_beyond_the_backtest_horizon_reuse_its_last_choice() -> None:
    f = fit(daily(4, noise=0.05), step_seconds=HOUR, seasonalities_s=(DAY,), horizon=3)
    fc = f.forecast(10)
    assert len(fc.mean) == 10 and "beyond 3" in fc.note


def test_upper_quantile_covers_about_its_share_of_iid_noise() -> None:
    rng = np.random.default_rng(5)
    level = 200.0 * (1 + 0.1 * rng.standard_normal(900))
    f = fit(level[:600], step_seconds=60, method="last-value", horizon=3, backtest_origins=500)
    # One-step-ahead upper from a fitted state applied to each later point: calibrated errors
    # of a last-value model on iid noise make the 0.9 bound cover ~90 % (wide tolerance).
    hits = []
    for t in range(600, 899):
        g = f.append(level[600:t]) if t > 600 else f
        hits.append(level[t] <= g.forecast(1, 0.9).upper[0])
    assert 0.8 <= float(np.mean(hits)) <= 0.97


def test_smape_edge_cases() -> None:
    assert smape(np.array([0.0]), np.array([0.0])) == 0.0
    assert smape(np.array([1.0]), np.array([np.nan])) != smape(np.array([1.0]), np.array([1.0]))
    assert smape(np.array([100.0]), np.array([0.0])) == 200.0


def test_forecasting_imports_only_numeric_libraries() -> None:
    """Layer rule: forecasting stays pure (no client libraries, no clock, no other gpufleet)."""
    allowed = {"numpy", "pandas", "statsmodels", "scipy", "math", "statistics", "warnings",
               "dataclasses", "typing", "collections", "__future__"}
    root = Path(__file__).resolve().parents[2] / "forecasting"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                ok = top in allowed or name.startswith("gpufleet.forecasting")
                assert ok, f"{path.name} imports {name}"


# ---------------------------------------------------------------- properties

values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.just(float("nan")),
    st.just(float("inf")),
    st.floats(min_value=0, max_value=1e3),
)
histories = st.lists(values, min_size=0, max_size=80)


@PROPS
@given(
    history=histories,
    method=st.sampled_from([*METHODS, "bogus"]),
    step=st.sampled_from([HOUR, 600.0, 0.0, -5.0, float("nan")]),
    steps=st.integers(min_value=0, max_value=30),
    quantile=st.one_of(st.floats(0, 1), st.just(float("nan")), st.just(1.5)),
)
def test_never_raises_and_upper_never_below_mean(
    history: list[float], method: str, step: float, steps: int, quantile: float
) -> None:
    f = fit(history, step_seconds=step, method=method, seasonalities_s=(DAY, 7 * DAY))
    fc = f.forecast(steps, quantile)
    assert len(fc.mean) == len(fc.upper) == steps
    has_data = any(math.isfinite(v) for v in history)
    if has_data and steps:
        assert np.all(np.isfinite(fc.mean)), fc.note
        assert np.all(fc.upper >= fc.mean)
    assert isinstance(f.append([1.0, float("nan")]), FittedForecaster)


@PROPS
@given(
    noise=st.floats(0.0, 0.3),
    days=st.integers(1, 5),
    gaps=st.lists(st.integers(0, 119), max_size=15),
    q=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=4),
    seed=st.integers(0, 1000),
)
def test_upper_is_monotone_in_the_quantile(
    noise: float, days: int, gaps: list[int], q: list[float], seed: int
) -> None:
    y = daily(days, noise=noise, seed=seed)
    y[[g for g in gaps if g < len(y)]] = np.nan
    f = fit(y, step_seconds=HOUR, seasonalities_s=(DAY,))
    uppers = [f.forecast(12, qq).upper for qq in sorted(q)]
    for lo, hi in zip(uppers, uppers[1:]):
        assert np.all(lo <= hi + 1e-9)


@PROPS
@given(
    pattern=st.lists(st.floats(0.0, 1e4), min_size=2, max_size=12),
    repeats=st.integers(1, 4),
    extra=st.integers(0, 11),
    steps=st.integers(1, 30),
)
def test_seasonal_naive_continues_any_periodic_signal(
    pattern: list[float], repeats: int, extra: int, steps: int
) -> None:
    p = len(pattern)
    extra %= p
    y = np.array(pattern * (repeats + 3 + 30 // p))
    hist = y[: p * repeats + extra]
    if len(hist) <= p:
        hist = y[: p + 1 + extra]
    f = fit(hist, step_seconds=HOUR, method="seasonal-naive", seasonalities_s=(p * HOUR,))
    np.testing.assert_array_equal(f.forecast(steps).mean, y[len(hist) : len(hist) + steps])


@PROPS
@given(
    days=st.integers(2, 5),
    noise=st.floats(0.0, 0.5),
    trend=st.floats(-0.5, 0.5),
    seed=st.integers(0, 1000),
)
def test_auto_is_never_worse_in_its_backtest_than_the_naive_models(
    days: int, noise: float, trend: float, seed: int
) -> None:
    y = daily(days, noise=noise, trend=trend, seed=seed)
    f = fit(y, step_seconds=HOUR, seasonalities_s=(DAY,), horizon=6)
    bt = f.backtest
    assert bt is not None
    horizon = len(bt.chosen)
    for h, name in enumerate(bt.chosen):
        lo, hi = max(h - 1, 0), min(h + 2, horizon)  # the band the choice is scored on
        score = float(np.mean(bt.smape[name][lo:hi]))
        for naive in ("last-value", "seasonal-naive@1d"):
            if naive in bt.smape:
                assert score <= float(np.mean(bt.smape[naive][lo:hi])) + 1e-12


def test_a_missing_point_is_filtered_as_the_models_own_forecast() -> None:
    y = daily(6, noise=0.05, seed=5)
    model = fit_ets(y[:130], 24, "1d", keep=60)
    assert model.n_total == 130
    guessed = model.append(np.array([np.nan]))
    filled = model.append(model.forecast(1))
    np.testing.assert_allclose(guessed.forecast(30), filled.forecast(30), rtol=1e-12)
    assert guessed.forecast(1)[0] != model.append(np.array([y[130] + 5.0])).forecast(1)[0]
    # A batch longer than a season reads the seasons it has just filtered.
    batch = model.append(y[130:170])
    stepwise = model
    for v in y[130:170]:
        stepwise = stepwise.append(np.array([v]))
    np.testing.assert_allclose(batch.season, stepwise.season, rtol=1e-12)
    np.testing.assert_allclose(batch.forecast(30), stepwise.forecast(30), rtol=1e-12)
