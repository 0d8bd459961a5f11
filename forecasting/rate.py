"""`RateForecaster`: the control loop's view: observe (time, rps), ask for the peak over a horizon.

Samples are averaged into fixed buckets of `step_s`; only complete buckets (ending at or before
`now`) are history. Refit rule that bounds the cost: parameters and the method choice are
re-estimated when the history has grown by a quarter since the last fit (fast while warming up) or
at this forecaster's own refit boundary (daily by default, shifted by `refit_offset_s`); in between, new buckets only advance
the fitted state (`FittedForecaster.append`) and repeated calls in one bucket hit a cache.
No clock: every time is an argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from gpufleet.forecasting.api import FittedForecaster, Forecast, fit


@dataclass(frozen=True)
class RateForecast:
    """Peak over (now, now + horizon]: mean and upper quantile, in requests per second."""

    mean_rps: float
    upper_rps: float
    method: str
    note: str
    steps: int  # buckets of step_s covered
    history_points: int  # complete buckets of history used (including gaps)
    horizon_s: float = 0.0  # as asked (maps onto core's ForecastSummary field for field)


class RateForecaster:
    """Rolling history of one service's request rate, with a cached, cheaply updated fit."""

    def __init__(
        self,
        *,
        step_s: float = 300.0,
        method: str = "auto",
        seasonalities_s: Sequence[float] = (86400.0, 604800.0),
        max_history_s: float = 15 * 86400.0,
        refit_every_s: float = 86400.0,
        max_horizon_s: float = 3600.0,
        refit_offset_s: float = 0.0,
    ) -> None:
        """refit_offset_s shifts this forecaster's daily refit boundary: give each service a
        different one (e.g. from a hash of its name) so a fleet does not refit all at once."""
        self.step_s = float(step_s) if math.isfinite(step_s) and step_s > 0 else 300.0
        self.method = method
        self.seasonalities_s = tuple(seasonalities_s)
        self.max_points = max(int(max_history_s // self.step_s), 2)
        self.refit_every = max(int(refit_every_s // self.step_s), 1)
        self.horizon = max(int(math.ceil(max_horizon_s / self.step_s)), 1)
        off = refit_offset_s if math.isfinite(refit_offset_s) else 0.0
        self.refit_offset = int(off // self.step_s) % self.refit_every
        self._sum: dict[int, float] = {}
        self._count: dict[int, int] = {}
        self._lo = 0  # oldest bucket kept (min of _sum's keys; a scan per call grows with history)
        self._fitted: FittedForecaster | None = None
        self._fitted_first: int = 0  # bucket index of the fitted history's first point
        self._fitted_last: int = -1  # last bucket index the fitted state has seen
        self._fit_last: int = 0  # last bucket index at the last full fit
        self._fit_n: int = 0  # history length at the last full fit
        self._cache: dict[tuple[int, int, float], RateForecast] = {}
        self._cache_last = -(2**62)
        self.fits = 0  # full fits done (for benchmarks and tests)
        self.appends = 0  # cheap state updates done

    def observe(self, t: float, rps: float) -> None:
        """Record a rate sample at time `t` (seconds); non-finite or negative samples are ignored.

        A late sample for a bucket the fitted state has already consumed is kept, and counts
        from the next full fit on (undoing a filter step would cost a refit each time)."""
        if not (math.isfinite(t) and math.isfinite(rps)) or rps < 0:
            return
        k = int(t // self.step_s)
        if self._cache and k <= self._cache_last:
            self._cache.clear()  # a late sample changed a bucket that answers were built on
        self._lo = min(self._lo, k) if self._sum else k
        self._sum[k] = self._sum.get(k, 0.0) + float(rps)
        self._count[k] = self._count.get(k, 0) + 1
        # Forget buckets older than the kept window (bounded memory, bounded fit cost).
        if len(self._sum) > self.max_points + 8:
            cutoff = max(self._sum) - self.max_points - 1
            for old in [b for b in self._sum if b < cutoff]:
                del self._sum[old]
                del self._count[old]
            self._lo = min(self._sum)

    def forecast(
        self, now: float, horizon_s: float, quantile: float = 0.9, *, allow_fit: bool = True
    ) -> RateForecast | None:
        """Peak mean and upper rate over (now, now + horizon_s]; None with no history at all.

        allow_fit=False defers a due full fit (a fleet-wide budget, e.g. at operator start when
        every service needs one): the state is moved forward with the old parameters, or, before
        the first fit, the last observed rate is returned, and `note` says so.
        Never raises: any numerical failure degrades to the last observed rate, said in `note`.
        """
        if not math.isfinite(now):
            return None
        last_complete = int(now // self.step_s) - 1
        first = self._first_bucket(last_complete)
        if first is None:
            return None
        horizon_s = horizon_s if math.isfinite(horizon_s) and horizon_s > 0 else 0.0
        # Buckets overlapping (now, now + horizon]: from the current, partial one onwards.
        steps = max(int((now + horizon_s) // self.step_s) - last_complete, 1)
        key = (last_complete, steps, float(quantile))
        cached = self._cache.get(key)
        if cached is not None:
            return replace(cached, horizon_s=horizon_s)
        deferred = not allow_fit and self._due(first, last_complete)
        try:
            if deferred and self._fitted is None:
                result = self._fallback(first, last_complete, steps, "fit deferred")
            else:
                result = self._forecast(first, last_complete, steps, quantile, deferred)
        except Exception as exc:  # noqa: BLE001 - the control loop must always get an answer
            result = self._fallback(first, last_complete, steps, f"forecast failed ({exc})")
        result = replace(result, horizon_s=horizon_s)
        if not deferred:  # a deferred answer is replaced as soon as the fit is allowed
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = result
            self._cache_last = max(self._cache_last, last_complete)
        return result

    def needs_fit(self, now: float) -> bool:
        """Whether `forecast(now, ...)` would do a full fit (for a caller spreading them out)."""
        if not math.isfinite(now):
            return False
        last_complete = int(now // self.step_s) - 1
        first = self._first_bucket(last_complete)
        return first is not None and self._due(first, last_complete)

    def _due(self, first: int, last: int) -> bool:
        r, off = self.refit_every, self.refit_offset
        return (
            self._fitted is None
            or (last + off) // r > (self._fit_last + off) // r  # crossed this service's boundary
            or last - self._fit_last >= max(self._fit_n // 4, 1)  # young history: choices widen
            or self._fitted_last < first  # a gap longer than the window: start afresh
            or last < self._fitted_last  # time went backwards
        )

    def _first_bucket(self, last_complete: int) -> int | None:
        if not self._sum:
            return None
        lo = self._lo
        if lo > last_complete:
            return None
        return max(lo, last_complete - self.max_points + 1)

    def _history(self, first: int, last: int) -> np.ndarray:
        return np.array(
            [self._sum[k] / self._count[k] if k in self._sum else np.nan
             for k in range(first, last + 1)],
            dtype=np.float64,
        )

    def _forecast(
        self, first: int, last: int, steps: int, quantile: float, deferred: bool
    ) -> RateForecast:
        n = last - first + 1
        fitted = self._fitted
        due = self._due(first, last)
        if due and deferred and fitted is not None and first <= self._fitted_last <= last:
            due = False  # keep the old parameters for now: append below
        else:
            deferred = False
        if due:
            fitted = fit(
                self._history(first, last),
                step_seconds=self.step_s,
                method=self.method,
                seasonalities_s=self.seasonalities_s,
                horizon=self.horizon,
            )
            self.fits += 1
            self._fit_last = last
            self._fit_n = n
        elif last > self._fitted_last:
            assert fitted is not None
            fitted = fitted.append(self._history(self._fitted_last + 1, last))
            self.appends += 1
        assert fitted is not None
        self._fitted = fitted
        self._fitted_first = first
        self._fitted_last = last
        result = self._summarise(fitted.forecast(steps, quantile), steps, n, last)
        if deferred:
            result = replace(result, note="; ".join(p for p in (result.note, "refit deferred") if p))
        return result

    def _summarise(self, fc: Forecast, steps: int, n: int, last: int) -> RateForecast:
        mean = fc.mean[np.isfinite(fc.mean)]
        upper = fc.upper[np.isfinite(fc.upper)]
        if len(mean) == 0:
            return self._fallback(last - n + 1, last, steps, fc.note or "no forecast")
        # Rates are non-negative; the upper bound never sits below the mean.
        m = max(float(np.max(mean)), 0.0)
        u = max(float(np.max(upper)) if len(upper) else m, m)
        note = fc.note
        gap = last - self._last_observed(last)
        if gap > 0:
            note = "; ".join(p for p in (note, f"no samples in the last {gap} buckets") if p)
        return RateForecast(m, u, fc.method, note, steps, n)

    def _last_observed(self, last: int) -> int:
        for k in range(last, last - self.max_points - 1, -1):
            if k in self._sum:
                return k
        return last

    def _fallback(self, first: int, last: int, steps: int, why: str) -> RateForecast:
        h = self._history(first, last)
        finite = h[np.isfinite(h)]
        v = float(finite[-1]) if len(finite) else 0.0
        return RateForecast(v, v, "last-value", f"{why}; using last observed rate", steps, len(h))
