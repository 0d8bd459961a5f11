"""The forecaster's warm-up in the benchmark: the rate history the operator reads back from
Prometheus at start (control.service.ServiceLoop._backfill), fed to the same forecast port."""

import numpy as np

from gpufleet.control.service import Settings
from gpufleet.sim.engine import RateForecastPort
from gpufleet.sim.scenarios import BACKFILL_S, _history, bench_scenario


def test_history_is_the_backfill_window_of_per_minute_rates_ending_at_the_start() -> None:
    counts = np.arange(20 * 86400, dtype=float) % 600  # a sawtooth: every minute's mean differs
    start = 11 * 86400
    hist = _history(counts, start)
    assert BACKFILL_S == Settings.backfill_s
    assert len(hist) == BACKFILL_S // 60
    assert hist[-1][0] == 0.0 and hist[0][0] == -BACKFILL_S + 60
    first = start - BACKFILL_S
    assert hist[0][1] == counts[first:first + 60].mean()
    assert hist[-1][1] == counts[start - 60:start].mean()


def test_no_history_before_the_first_second_and_a_short_one_after_it() -> None:
    counts = np.ones(3 * 86400)
    assert _history(counts, 0) == ()
    assert len(_history(counts, 86400)) == 1440  # only the day there is


def test_a_servegen_slice_starts_with_a_forecast_and_a_trace_without_history_does_not() -> None:
    sc = bench_scenario("m-small/d11-13h+3h", 0, "typical")
    assert len(sc.history) == BACKFILL_S // 60
    warm = RateForecastPort(sc.spec, history=sc.history).forecast(now=0.0, horizon_s=600, quantile=0.9)
    cold = RateForecastPort(sc.spec).forecast(now=0.0, horizon_s=600, quantile=0.9)
    assert cold is None
    assert warm is not None
    # The warm-up's last hour is what the forecast starts from: within a factor of 2 of it.
    last_hour = np.mean([r for _, r in sc.history[-60:]])
    assert 0.5 * last_hour < warm.mean_rps < 2 * last_hour
    assert bench_scenario("mooncake-x4", 0, "typical").history == ()
