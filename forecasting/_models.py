"""Point-forecast models behind `fit`: each one is fitted once, then moved forward cheaply.

Every model answers two questions from the same state: `paths(origins, horizon)`, the forecasts it
would have made from each past origin (the rolling-origin backtest reads these), and `forecast(steps)`
from the end of the history. `append(values)` advances the state with the parameters kept, which is
what bounds the refit cost: estimating Holt-Winters parameters is the expensive part, filtering new
points with known parameters costs about a millisecond. `compact()` then drops what only the backtest
read: a fitted forecaster keeps the last value, the last season, or the last smoothing state.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class Model(Protocol):
    """What the backtest and the forecaster need from a fitted model."""

    @property
    def name(self) -> str: ...

    def paths(self, origins: npt.NDArray[np.int64], horizon: int) -> FloatArray:
        """(len(origins), horizon) forecasts made after observing index `origin` (NaN if unknown)."""
        ...

    def forecast(self, steps: int) -> FloatArray: ...

    def append(self, values: FloatArray) -> Model:
        """A model advanced over `values` (NaN = missing: replaced by the model's own forecast)."""
        ...

    def compact(self) -> Model:
        """The same model holding only what `forecast` and `append` read (own arrays, no views
        of the history): equal forecasts and appends, but `paths` no longer reaches the backtest's
        origins. `fit` calls it once the backtest is scored."""
        ...


def _own(a: FloatArray) -> FloatArray:
    """`a` itself if it owns its memory, else a copy: a slice must not keep a longer array alive."""
    return a if a.base is None else a.copy()


def _season_offsets(horizon: int, period: int) -> npt.NDArray[np.int64]:
    """Index of the seasonal slot for step h relative to the origin: h - period*ceil(h/period).

    Always in (-period, 0], i.e. the latest already-observed index of the same slot.
    """
    h = np.arange(1, horizon + 1, dtype=np.int64)
    return h - period * ((h + period - 1) // period)


@dataclass(frozen=True, slots=True)
class LastValue:
    """Naive: the last observation, flat."""

    y: FloatArray  # imputed history (only the last value matters for the forecast); compacted: that value

    @property
    def name(self) -> str:
        return "last-value"

    def paths(self, origins: npt.NDArray[np.int64], horizon: int) -> FloatArray:
        return np.repeat(self.y[origins][:, None], horizon, axis=1)

    def forecast(self, steps: int) -> FloatArray:
        return np.full(steps, self.y[-1], dtype=np.float64)

    def append(self, values: FloatArray) -> LastValue:
        finite = values[np.isfinite(values)]
        return LastValue(_own(finite[-1:] if len(finite) else self.y[-1:]))

    def compact(self) -> LastValue:
        return LastValue(_own(self.y[-1:]))


@dataclass(frozen=True, slots=True)
class SeasonalNaive:
    """The value one season earlier (e.g. the same 10-minute window a day ago)."""

    y: FloatArray  # imputed history, at least `period` long; compact: the last `period` values
    period: int
    label: str  # e.g. "1d", for names and notes

    @property
    def name(self) -> str:
        return f"seasonal-naive@{self.label}"

    def paths(self, origins: npt.NDArray[np.int64], horizon: int) -> FloatArray:
        idx = origins[:, None] + _season_offsets(horizon, self.period)[None, :]
        out = np.full(idx.shape, np.nan)
        ok = idx >= 0
        out[ok] = self.y[idx[ok]]
        return out

    def forecast(self, steps: int) -> FloatArray:
        idx = len(self.y) - 1 + _season_offsets(steps, self.period)
        return np.asarray(self.y[idx], dtype=np.float64)

    def append(self, values: FloatArray) -> SeasonalNaive:
        y = self.y
        for v in values:
            y = np.append(y, v if np.isfinite(v) else y[len(y) - self.period])
        return SeasonalNaive(_own(y[-self.period :]), self.period, self.label)

    def compact(self) -> SeasonalNaive:
        return SeasonalNaive(_own(self.y[-self.period :]), self.period, self.label)


@dataclass(frozen=True, slots=True)
class EtsParams:
    """Smoothing parameters estimated by statsmodels; reused between refits."""

    alpha: float
    beta: float | None  # None: no trend
    gamma: float | None  # None: no season
    phi: float


@dataclass(frozen=True, slots=True)
class Ets:
    """Simple exponential smoothing or additive damped-trend Holt-Winters (statsmodels).

    The state arrays are the filtered level/trend/season at each index of the kept tail, so the
    backtest can read the h-step forecast from every origin without refitting; `compact()` keeps
    a tail of one: the final state and the `period` seasonal states before it.
    """

    params: EtsParams
    period: int | None
    label: str
    level: FloatArray  # l_t over the kept tail
    trend: FloatArray  # b_t (zeros without trend)
    season: FloatArray  # s_t, with `period` earlier states before the tail (empty without season)
    n_total: int  # length of the whole history the state ends at

    @property
    def name(self) -> str:
        if self.period is None:
            return "exp-smoothing"
        return f"holt-winters@{self.label}"

    def _damp(self, horizon: int) -> FloatArray:
        h = np.arange(1, horizon + 1, dtype=np.float64)
        # phi + phi^2 + ... + phi^h; equals h for an undamped trend.
        return np.cumsum(self.params.phi**h)

    def paths(self, origins: npt.NDArray[np.int64], horizon: int) -> FloatArray:
        # `origins` index the full history; the state arrays hold its last len(level) indices.
        n_tail = len(self.level)
        pos = origins - (self.n_total - n_tail)
        out = np.full((len(origins), horizon), np.nan)
        ok = pos >= 0
        p = pos[ok]
        f = self.level[p][:, None] + self.trend[p][:, None] * self._damp(horizon)[None, :]
        if self.period is not None:
            # season[k + period] is s at tail position k; slot for step h lies at pos+h-period*ceil.
            sidx = p[:, None] + _season_offsets(horizon, self.period)[None, :] + self.period
            good = sidx >= 0
            s = np.full(sidx.shape, np.nan)
            s[good] = self.season[sidx[good]]
            f = f + s
        out[ok] = f
        return out

    def forecast(self, steps: int) -> FloatArray:
        f = self.level[-1] + self.trend[-1] * self._damp(steps)
        if self.period is not None:
            idx = len(self.season) - 1 + _season_offsets(steps, self.period)
            f = f + self.season[idx]
        return np.asarray(f, dtype=np.float64)

    def append(self, values: FloatArray) -> Ets:
        """Filter new points with the fitted parameters: statsmodels' additive damped-trend
        recursions, written out because statsmodels cannot start a filter from a given state
        without rebuilding a model (milliseconds per point; this loop is microseconds).
        Missing points take the model's own one-step forecast, so the state just propagates.
        `test_holt_winters_append_equals_a_statsmodels_refilter` pins it to statsmodels."""
        if len(values) == 0 or len(self.level) == 0:
            return self
        p = self.params
        per = self.period
        alpha, phi = p.alpha, p.phi
        beta = p.beta if p.beta is not None else 0.0
        gamma = p.gamma if p.gamma is not None else 0.0
        has_trend = p.beta is not None
        lvl, tr = float(self.level[-1]), float(self.trend[-1])
        # The season a period before each new point: the stored ones, then the new ones (only
        # the few needed are converted: a daily season at 1-min steps holds 1440).
        vals = np.asarray(values, dtype=np.float64).tolist()
        prior: list[float] = self.season[-per:][: len(vals)].tolist() if per is not None else []
        seas: list[float] = []
        new_l: list[float] = []
        new_b: list[float] = []
        for i, y in enumerate(vals):
            damped = phi * tr if has_trend else 0.0
            s_old = 0.0 if per is None else (prior[i] if i < per else seas[i - per])
            if not math.isfinite(y):
                y = lvl + damped + s_old
            l_new = alpha * (y - s_old) + (1 - alpha) * (lvl + damped)
            if has_trend:
                tr = beta * (l_new - lvl) + (1 - beta) * damped
            if per is not None:
                seas.append(gamma * (y - lvl - damped) + (1 - gamma) * s_old)
            lvl = l_new
            new_l.append(lvl)
            new_b.append(tr)
        keep = len(self.level)
        season = self.season
        if per is not None:
            season = _own(np.concatenate([self.season, seas])[-(keep + per) :])
        return Ets(
            params=p,
            period=per,
            label=self.label,
            level=_own(np.concatenate([self.level, new_l])[-keep:]),
            trend=_own(np.concatenate([self.trend, new_b])[-keep:]),
            season=season,
            n_total=self.n_total + len(new_l),
        )

    def compact(self) -> Ets:
        n_season = 1 + self.period if self.period is not None else 0
        return replace(
            self,
            level=_own(self.level[-1:]),
            trend=_own(self.trend[-1:]),
            season=_own(self.season[len(self.season) - n_season :]),
        )


def fit_ets(y: FloatArray, period: int | None, label: str, keep: int) -> Ets:
    """Estimate parameters with statsmodels, keep the last `keep` filtered states.

    Holt-Winters uses the heuristic initialisation: estimating `period` initial seasonal states by
    optimisation would cost seconds per fit at 144 or 1008 slots per season.
    """
    # Imported at the first fit: statsmodels (with scipy and pandas) takes ~1.5 s to import, which
    # a process that never fits (the CLI, the baselines' benchmark runs) should not pay.
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if period is None:
            model = ExponentialSmoothing(y, initialization_method="estimated")
        else:
            model = ExponentialSmoothing(
                y,
                trend="add",
                damped_trend=True,
                seasonal="add",
                seasonal_periods=period,
                initialization_method="heuristic",
            )
        # No brute-force start-value grid: it re-filters the whole series per grid point (4 s of
        # the fit at 14 days of 1-min buckets) and, on our rate series, moved only the damping of
        # a zero trend (SSE within 0.01 %; reports/forecast unchanged). Fitting fewer, recent
        # points instead was tried: Holt-Winters lost 1-4 points of sMAPE there.
        res = model.fit(use_brute=False)
    p = res.params
    params = EtsParams(
        alpha=float(p["smoothing_level"]),
        beta=float(p["smoothing_trend"]) if period is not None else None,
        gamma=float(p["smoothing_seasonal"]) if period is not None else None,
        phi=float(p["damping_trend"]) if period is not None else 1.0,
    )
    n = len(y)
    keep = max(2, min(keep, n))
    level = np.asarray(res.level, dtype=np.float64)
    trend = np.asarray(res.trend, dtype=np.float64) if period is not None else np.zeros(n)
    if period is not None:
        init_seasons = np.asarray(p["initial_seasons"], dtype=np.float64)
        all_season = np.concatenate([init_seasons, np.asarray(res.season, dtype=np.float64)])
        season = all_season[-(keep + period) :]
    else:
        season = np.zeros(0)
    if not (np.all(np.isfinite(level)) and np.all(np.isfinite(season))):
        raise FloatingPointError("non-finite smoothing state")
    return Ets(
        params=params,
        period=period,
        label=label,
        level=level[-keep:],
        trend=trend[-keep:],
        season=season,
        n_total=n,
    )

