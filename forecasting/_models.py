"""Point-forecast models behind `fit`: each one is fitted once, then moved forward cheaply.

Every model answers two questions from the same state: `paths(origins, horizon)`, the forecasts it
would have made from each past origin (the rolling-origin backtest reads these), and `forecast(steps)`
from the end of the history. `append(values)` advances the state with the parameters kept, which is
what bounds the refit cost: estimating Holt-Winters parameters is the expensive part, filtering new
points with known parameters costs about a millisecond.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from statsmodels.tsa.holtwinters import ExponentialSmoothing

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


def _season_offsets(horizon: int, period: int) -> npt.NDArray[np.int64]:
    """Index of the seasonal slot for step h relative to the origin: h - period*ceil(h/period).

    Always in (-period, 0], i.e. the latest already-observed index of the same slot.
    """
    h = np.arange(1, horizon + 1, dtype=np.int64)
    return h - period * ((h + period - 1) // period)


@dataclass(frozen=True)
class LastValue:
    """Naive: the last observation, flat."""

    y: FloatArray  # imputed history (only the last value matters for the forecast)

    @property
    def name(self) -> str:
        return "last-value"

    def paths(self, origins: npt.NDArray[np.int64], horizon: int) -> FloatArray:
        return np.repeat(self.y[origins][:, None], horizon, axis=1)

    def forecast(self, steps: int) -> FloatArray:
        return np.full(steps, self.y[-1], dtype=np.float64)

    def append(self, values: FloatArray) -> LastValue:
        finite = values[np.isfinite(values)]
        return LastValue(finite[-1:] if len(finite) else self.y[-1:])


@dataclass(frozen=True)
class SeasonalNaive:
    """The value one season earlier (e.g. the same 10-minute window a day ago)."""

    y: FloatArray  # imputed history, at least `period` long
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
        return SeasonalNaive(y[-self.period :], self.period, self.label)


@dataclass(frozen=True)
class EtsParams:
    """Smoothing parameters estimated by statsmodels; reused between refits."""

    alpha: float
    beta: float | None  # None: no trend
    gamma: float | None  # None: no season
    phi: float


@dataclass(frozen=True)
class Ets:
    """Simple exponential smoothing or additive damped-trend Holt-Winters (statsmodels).

    The state arrays are the filtered level/trend/season at each index of the kept tail, so the
    backtest can read the h-step forecast from every origin without refitting.
    """

    params: EtsParams
    period: int | None
    label: str
    level: FloatArray  # l_t over the kept tail
    trend: FloatArray  # b_t (zeros without trend)
    season: FloatArray  # s_t, with `period` earlier states before the tail (empty without season)
    last_y: float  # imputed last observation: the anchor for `append` (see there)
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
        if len(values) == 0:
            return self
        # statsmodels cannot filter a single point, so restart one step back: from the state
        # before the last observation, over [last observation, new values...].
        vals = np.asarray(values, dtype=np.float64).copy()
        # Missing points take the model's own forecast, so the state just propagates.
        for i in range(len(vals)):
            if not np.isfinite(vals[i]):
                vals[i] = self._one_step_from(vals[:i])
        return self._refilter(vals)

    def _one_step_from(self, prefix: FloatArray) -> float:
        m = self._refilter(prefix) if len(prefix) else self
        return float(m.forecast(1)[0])

    def _refilter(self, vals: FloatArray) -> Ets:
        if len(self.level) < 2:
            return self
        endog = np.concatenate([[self.last_y], vals])
        per = self.period
        seasonal_init = None
        if per is not None:
            # Seasons s_{T-period} .. s_{T-1}, oldest first (statsmodels' order).
            seasonal_init = self.season[len(self.season) - 1 - per : len(self.season) - 1]
        res = _filter(
            endog,
            self.params,
            per,
            initial_level=float(self.level[-2]),
            initial_trend=float(self.trend[-2]),
            initial_seasonal=seasonal_init,
        )
        keep = max(len(self.level), 2)
        level = np.concatenate([self.level[:-1], res.level])[-keep:]
        trend = np.concatenate([self.trend[:-1], res.trend])[-keep:]
        season = self.season
        if per is not None:
            season = np.concatenate([self.season[:-1], res.season])[-(keep + per) :]
        return Ets(
            params=self.params,
            period=per,
            label=self.label,
            level=level,
            trend=trend,
            season=season,
            last_y=float(endog[-1]),
            n_total=self.n_total + len(vals),
        )


@dataclass(frozen=True)
class _Filtered:
    level: FloatArray
    trend: FloatArray
    season: FloatArray  # s_t aligned with level (empty without season)


def _kwargs(params: EtsParams, period: int | None) -> dict[str, object]:
    return {
        "trend": "add" if params.beta is not None else None,
        "damped_trend": params.beta is not None,
        "seasonal": "add" if period is not None else None,
        "seasonal_periods": period,
    }


def _filter(
    endog: FloatArray,
    params: EtsParams,
    period: int | None,
    *,
    initial_level: float,
    initial_trend: float,
    initial_seasonal: FloatArray | None,
) -> _Filtered:
    """Run statsmodels' smoother with known parameters and initial states (no optimisation)."""
    init: dict[str, object] = {"initial_level": initial_level}
    fixed: dict[str, float] = {"smoothing_level": params.alpha}
    if params.beta is not None:
        init["initial_trend"] = initial_trend
        fixed["smoothing_trend"] = params.beta
        fixed["damping_trend"] = params.phi
    if period is not None and initial_seasonal is not None:
        init["initial_seasonal"] = initial_seasonal
        assert params.gamma is not None
        fixed["smoothing_seasonal"] = params.gamma
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ExponentialSmoothing(
            endog, initialization_method="known", **init, **_kwargs(params, period)
        )
        res = model.fit(optimized=False, **fixed)
    n = len(endog)
    trend = np.asarray(res.trend, dtype=np.float64) if params.beta is not None else np.zeros(n)
    season = np.asarray(res.season, dtype=np.float64) if period is not None else np.zeros(0)
    return _Filtered(np.asarray(res.level, dtype=np.float64), trend, season)


def fit_ets(y: FloatArray, period: int | None, label: str, keep: int) -> Ets:
    """Estimate parameters with statsmodels, keep the last `keep` filtered states.

    Holt-Winters uses the heuristic initialisation: estimating `period` initial seasonal states by
    optimisation would cost seconds per fit at 144 or 1008 slots per season.
    """
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
        res = model.fit()
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
        last_y=float(y[-1]),
        n_total=n,
    )

