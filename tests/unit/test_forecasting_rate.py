"""RateForecaster: the control loop's interface (observe samples, forecast the horizon's peak)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from types import FunctionType, MethodType, ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpufleet.forecasting import RateForecast, RateForecaster
from gpufleet.forecasting import _models, api

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


# ------------------------------------------- what a fitted forecaster keeps (one per service, for days)

DAY_S, WEEK_S = 86400.0, 604800.0


def operator_like() -> RateForecaster:
    """As operator/gpufleet/control/forecast.py's ForecastAdapter builds it for a default spec."""
    return RateForecaster(step_s=60, method="auto", seasonalities_s=(DAY_S, WEEK_S))


def minute_rates(minutes: int, seed: int = 7) -> np.ndarray:
    """Daily and weekly shape (quieter weekends), noise, a few bursts and missing scrapes (NaN),
    one value a minute."""
    rng = np.random.default_rng(seed)
    t = np.arange(minutes) * 60.0
    day, week = 2 * np.pi * t / DAY_S, 2 * np.pi * t / WEEK_S
    weekend = np.where((t // DAY_S) % 7 >= 5, 0.7, 1.0)
    r = (40.0 + 25.0 * np.sin(day - 1.3) + 8.0 * np.sin(2 * day) + 6.0 * np.sin(week)) * weekend * (
        1.0 + 0.08 * rng.standard_normal(minutes)
    )
    for s in rng.integers(0, minutes - 30, size=8):
        r[s : s + 20] *= 1.6
    r[rng.random(minutes) < 0.004] = np.nan
    out: np.ndarray = np.maximum(r, 0.0)
    return out


def serve(rf: RateForecaster, rates: np.ndarray, n_history: int) -> Iterator[RateForecast | None]:
    """Observe `n_history` minutes, then the rest one minute at a time, asking as the control loop
    does (every 15 s, plus other horizons and quantiles); yields every answer."""
    for i in range(n_history):
        if math.isfinite(rates[i]):
            rf.observe(i * 60.0 + 30.0, float(rates[i]))
    yield rf.forecast(n_history * 60.0 + 1.0, 600.0, 0.9)
    for i in range(n_history, len(rates)):
        if math.isfinite(rates[i]):
            rf.observe(i * 60.0 + 30.0, float(rates[i]))
        for dt in (61.0, 76.0, 91.0, 106.0):
            yield rf.forecast(i * 60.0 + dt, 600.0, 0.9)
        yield rf.forecast(i * 60.0 + 62.0, 3600.0, 0.5)
        yield rf.forecast(i * 60.0 + 63.0, 300.0, 0.99)


def reachable_arrays(root: object) -> list[tuple[str, np.ndarray]]:
    """Every numpy array reachable from `root` (through attributes, dicts, lists, tuples and sets),
    each with the arrays behind it (`.base`): a short view of a long array holds the long one."""
    out: list[tuple[str, np.ndarray]] = []
    seen: set[int] = set()
    skip = (type, ModuleType, FunctionType, MethodType, str, bytes, int, float, bool, type(None))
    stack: list[tuple[str, Any]] = [("rf", root)]
    while stack:
        path, obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            out.append((path, obj))
            if obj.base is not None:
                stack.append((path + ".base", obj.base))
        elif isinstance(obj, dict):
            stack.extend((f"{path}[{k!r}]", v) for k, v in obj.items())
            stack.extend((f"{path}.key", k) for k in obj)
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(obj))
        else:
            attrs = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
            for cls in type(obj).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if hasattr(obj, name):
                        attrs[name] = getattr(obj, name)
            stack.extend((f"{path}.{k}", v) for k, v in attrs.items())
    return out


def test_a_fitted_forecaster_keeps_a_season_not_the_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a forecast at 15 days of 1-minute history, and after minutes of cheap updates and a
    refit, only the history ring holds a full-history array: every model keeps at most its
    longest season (a week: 10080 values), and the residuals one column per horizon, exactly the
    finite errors of the model chosen there."""
    scored: list[dict[str, np.ndarray]] = []
    score = api._score

    def capture(*args: Any, **kwargs: Any) -> Any:
        residuals, backtest = score(*args, **kwargs)
        scored.append(residuals)
        return residuals, backtest

    monkeypatch.setattr(api, "_score", capture)
    rf = operator_like()
    n_history = 15 * 1440 - 20  # the daily refit falls within the served minutes
    answers = serve(rf, minute_rates(n_history + 30), n_history)
    ring = {id(rf._sums), id(rf._counts)}
    longest = int(WEEK_S // 60)

    def check() -> None:
        fitted = rf._fitted
        assert fitted is not None and fitted.models and fitted.nobs > 14 * 1440
        arrays = reachable_arrays(rf)
        assert {id(a) for _, a in arrays} >= ring
        too_long = [(p, a.size) for p, a in arrays if id(a) not in ring and a.size > longest + 16]
        assert not too_long, too_long
        # The residuals: a column of finite errors per horizon, the chosen model's, nothing else.
        kept = {(name, h): col for name, cols in fitted.residuals.items() for h, col in cols.items()}
        assert set(kept) == {(name, h) for h, name in enumerate(fitted.chosen, start=1)}
        for (name, h), col in kept.items():
            full = scored[-1][name][:, h - 1]
            np.testing.assert_array_equal(col, full[np.isfinite(full)])
            assert col.base is None

    assert next(answers) is not None
    check()
    for _ in answers:
        pass
    assert rf.fits == 2 and rf.appends >= 25
    check()


def test_compact_state_forecasts_exactly_as_the_untrimmed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same answers, bit for bit, as forecasters whose models keep the whole history (here:
    several models chosen by horizon, missing minutes among the updates, a refit)."""
    n_history = 15 * 1440 - 20
    rates = minute_rates(n_history + 30)
    rates[[n_history + 4, n_history + 25]] = np.nan
    compact = list(serve(operator_like(), rates, n_history))
    keep_all: Callable[[Any], Any] = lambda self: self  # noqa: E731
    for cls in (_models.LastValue, _models.SeasonalNaive, _models.Ets):
        monkeypatch.setattr(cls, "compact", keep_all)
    reference_rf = operator_like()
    answers = serve(reference_rf, rates, n_history)
    reference = [next(answers)]
    fitted = reference_rf._fitted
    assert fitted is not None
    assert max(a.size for _, a in reachable_arrays(fitted)) > 14 * 1440  # it did keep it all
    assert len(fitted.models) >= 2  # several models, each chosen at some horizons
    reference.extend(answers)
    assert reference_rf.fits == 2 and all(r is not None for r in compact)
    assert compact == reference


def test_a_shared_fit_memo_answers_identical_histories_without_refitting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two forecasters fed the same samples share their full fits through `fit_memo` (the
    simulator's runs of one trace): same answers, the second one fits nothing itself."""
    import gpufleet.forecasting.rate as rate_mod

    rng = np.random.default_rng(3)
    rates = [100 + 20 * math.sin(2 * math.pi * i / 144) + rng.standard_normal() for i in range(3 * 144)]
    memo: dict[bytes, api.FittedForecaster] = {}
    first = RateForecaster(step_s=600, fit_memo=memo)
    now = feed(first, rates, 600)
    a = [first.forecast(now + dt, 1800.0) for dt in (0.0, 601.0)]
    assert memo and first.fits >= 1
    calls: list[int] = []
    real_fit = rate_mod.fit
    monkeypatch.setattr(rate_mod, "fit", lambda *args, **kw: calls.append(1) or real_fit(*args, **kw))
    second = RateForecaster(step_s=600, fit_memo=memo)
    feed(second, rates, 600)
    b = [second.forecast(now + dt, 1800.0) for dt in (0.0, 601.0)]
    assert a == b and not calls and second.fits == first.fits
    third = RateForecaster(step_s=600, fit_memo=memo)  # a different history misses the memo
    feed(third, [r + 1.0 for r in rates], 600)
    third.forecast(now, 1800.0)
    assert calls
