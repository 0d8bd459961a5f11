"""`fit(history) -> FittedForecaster`, `.forecast(steps, quantile) -> Forecast`.

The whole public surface is those two calls (plus `append` to move a fit forward without
re-estimating). Everything degrades instead of raising: with too little or too gappy history the
forecaster falls back to simpler methods and says which and why in `note`.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from gpufleet.forecasting._models import (
    Ets,
    FloatArray,
    LastValue,
    Model,
    SeasonalNaive,
    fit_ets,
)

METHODS = ("auto", "last-value", "seasonal-naive", "exp-smoothing", "holt-winters")

# Below these sizes a method is not even tried (statsmodels' heuristic Holt-Winters start needs
# two full seasons; exponential smoothing needs a few points to estimate anything).
MIN_POINTS_EXP_SMOOTHING = 10
MIN_EXTRA_POINTS_HW = 10
# Fewer residuals than this at a horizon: the interval comes from a random-walk width instead.
MIN_RESIDUALS = 8
# Seasons longer than this many steps are skipped for Holt-Winters (fit cost grows with them).
MAX_HW_PERIOD = 2016
# Auto picks per horizon, scoring each candidate on horizons h-1..h+1: one horizon alone is
# noisy (the choice flip-flops), one method for all horizons gives up the naive model's edge
# at the shortest steps. Chosen on a validation window before the benchmark's test window.
SELECTION_BAND = 1


@dataclass(frozen=True, slots=True)
class Forecast:
    """Point forecast and upper quantile for steps 1..len(mean) after the end of the history."""

    mean: FloatArray
    upper: FloatArray
    method: str
    note: str
    quantile: float


@dataclass(frozen=True, slots=True)
class Backtest:
    """Rolling-origin backtest of the candidates on the recent history (in-sample parameters)."""

    origins: int  # origins scored (common to all candidates)
    smape: dict[str, FloatArray]  # method -> sMAPE (%) per horizon 1..H
    chosen: tuple[str, ...]  # method used at each horizon 1..H


@dataclass(frozen=True, slots=True)
class FittedForecaster:
    """A fitted forecaster: models, per-horizon choice, residuals for the intervals.

    It holds only what `forecast` and `append` read (compact models, the residuals at the chosen
    horizons), never the history: the control loop keeps one per service for days. A whole
    RateForecaster (1-min steps, history ring included) after a forecast, by tracemalloc:
    8 d 1.06 MiB -> 0.42 MiB, 15 d 1.81 MiB -> 0.50 MiB.
    """

    method: str  # what was asked for
    step_seconds: float
    nobs: int  # history length the state ends at
    note: str
    models: dict[str, Model]
    chosen: tuple[str, ...]  # model name per horizon 1..H (H = backtest horizon)
    # name -> {h: finite relative backtest errors (actual - f) / scale at horizon h}, only at the
    # horizons where `name` is chosen (the only ones an interval reads; their order is irrelevant).
    residuals: dict[str, dict[int, FloatArray]]
    scale_floor: float  # relative errors are taken against max(|forecast|, scale_floor)
    rw_sigma: float  # relative one-step change std: the interval when residuals are too few
    backtest: Backtest | None
    fitted_nobs: int = 0  # history length at the last parameter estimation
    # Error quantiles by (model, horizon, q): residuals only change at a refit, and `append`
    # hands this dict on, so the control loop's repeated asks skip np.quantile.
    _quantiles: dict[tuple[str, int, float], float] = field(default_factory=dict, compare=False, repr=False)

    def forecast(self, steps: int, quantile: float = 0.9) -> Forecast:
        """Mean and upper `quantile` for the next `steps` steps; never raises."""
        steps = max(int(steps), 0)
        q = 0.9 if not math.isfinite(quantile) else min(max(float(quantile), 0.0), 1.0)
        if not self.models or steps == 0:
            empty = np.full(steps, np.nan)
            return Forecast(empty, empty.copy(), "none", self.note, q)
        mean = np.empty(steps)
        upper = np.empty(steps)
        per_model = {name: m.forecast(steps) for name, m in self.models.items()}
        for h in range(1, steps + 1):
            # Beyond the backtest horizon the choice and errors of its last step carry on.
            hc = min(h, len(self.chosen))
            name = self.chosen[hc - 1]
            f = float(per_model[name][h - 1])
            mean[h - 1] = f
            upper[h - 1] = f + max(abs(f), self.scale_floor) * self._error_quantile(
                name, hc, h, q
            )
        # The upper bound is what capacity is sized on: never below the point forecast.
        upper = np.maximum(upper, mean)
        note = self.note
        if steps > len(self.chosen):
            note = _join(note, f"steps beyond {len(self.chosen)} reuse its choice and errors")
        return Forecast(mean, upper, self.method_label(), note, q)

    def _error_quantile(self, name: str, hc: int, h: int, q: float) -> float:
        col = self.residuals.get(name, {}).get(hc)
        if col is not None:
            key = (name, hc, q)
            if key not in self._quantiles:
                self._quantiles[key] = float(np.quantile(col, q)) if len(col) >= MIN_RESIDUALS else math.nan
            if math.isfinite(self._quantiles[key]):
                return self._quantiles[key]
        # Random-walk width: a normal quantile of relative changes, widening with sqrt(h).
        return float(NormalDist().inv_cdf(min(max(q, 1e-6), 1 - 1e-6)) * self.rw_sigma * math.sqrt(h))

    def method_label(self) -> str:
        """e.g. 'holt-winters@1d' or 'auto[h1-2:last-value,h3-12:holt-winters@1d]'."""
        if not self.chosen:
            return "none"
        runs: list[tuple[int, int, str]] = []
        for h, name in enumerate(self.chosen, start=1):
            if runs and runs[-1][2] == name:
                runs[-1] = (runs[-1][0], h, name)
            else:
                runs.append((h, h, name))
        if len(runs) == 1:
            body = runs[0][2]
        else:
            body = ",".join(f"h{a}-{b}:{n}" if a != b else f"h{a}:{n}" for a, b, n in runs)
        return f"auto[{body}]" if self.method == "auto" else body

    def append(self, values: npt.ArrayLike) -> FittedForecaster:
        """Advance the state over new observations, keeping parameters, choice and residuals.

        This is the cheap path between refits (about a millisecond per Holt-Winters model).
        """
        vals = _clean(values)
        if len(vals) == 0 or not self.models:
            return self
        try:
            models = {name: m.append(vals) for name, m in self.models.items()}
        except Exception as exc:  # noqa: BLE001 - a failed update keeps the old state
            return replace(self, note=_join(self.note, f"append failed ({exc}); state kept"))
        return replace(self, models=models, nobs=self.nobs + len(vals))


def fit(
    history: npt.ArrayLike,
    *,
    step_seconds: float,
    method: str = "auto",
    seasonalities_s: Sequence[float] = (86400.0, 604800.0),
    horizon: int = 12,
    backtest_origins: int = 432,
) -> FittedForecaster:
    """Fit a forecaster to an evenly spaced history (NaN = missing); never raises.

    method: one of METHODS. 'auto' scores every candidate that the history supports by a
    rolling-origin backtest over the last `backtest_origins` origins and, at each horizon 1..horizon,
    uses the one with the lowest sMAPE averaged over horizons h-1..h+1 (the naive ones are always
    candidates, so 'auto' is never worse than them in that backtest). Steps beyond `horizon` reuse
    the choice and errors of the last one. Intervals for every method come from the empirical quantiles
    of its relative backtest errors at each horizon.
    """
    try:
        return _fit(
            history,
            step_seconds=step_seconds,
            method=method,
            seasonalities_s=seasonalities_s,
            horizon=max(int(horizon), 1),
            backtest_origins=max(int(backtest_origins), 1),
        )
    except Exception as exc:  # noqa: BLE001 - the contract is: degrade, never raise
        y = _clean(history)
        finite = y[np.isfinite(y)]
        if len(finite) == 0:
            return _no_history(method, step_seconds, f"no history (fit failed: {exc})")
        return _single(
            LastValue(finite[-1:]).compact(), method, step_seconds, len(y),
            f"fit failed ({exc}); using last value", _rw_sigma(finite), 0.0,
        )


def _fit(
    history: npt.ArrayLike,
    *,
    step_seconds: float,
    method: str,
    seasonalities_s: Sequence[float],
    horizon: int,
    backtest_origins: int,
) -> FittedForecaster:
    notes: list[str] = []
    if method not in METHODS:
        notes.append(f"unknown method {method!r}, using auto")
        method = "auto"
    raw = _clean(history)
    # Leading gaps carry no information: start at the first observation.
    finite_idx = np.flatnonzero(np.isfinite(raw))
    if len(finite_idx) == 0:
        return _no_history(method, step_seconds, "no history")
    raw = raw[finite_idx[0] :]
    n = len(raw)
    periods = _periods(seasonalities_s, step_seconds)
    y, n_imputed = _impute(raw, periods)
    if n_imputed:
        notes.append(f"{n_imputed} of {n} points missing, imputed")
    finite = raw[np.isfinite(raw)]
    scale_floor = 0.05 * float(np.mean(np.abs(finite))) + 1e-9
    rw_sigma = _rw_sigma(y)

    candidates = _candidates(method, y, periods, horizon + backtest_origins, notes)

    origins = _backtest_origins(n, backtest_origins)
    if len(origins) < MIN_RESIDUALS or len(candidates) == 1:
        # Too little history to compare candidates: auto takes the naive one, a fixed method
        # keeps what it asked for (or its fallback); the interval uses what residuals there are.
        model = candidates[-1]
        if method == "auto" and len(candidates) > 1:
            notes.append("too little history to backtest, using last value")
            model = candidates[0]
        chosen = tuple([model.name] * horizon)
        residuals: dict[str, FloatArray] = {}
        backtest = None
        if len(origins) >= 1:
            residuals, backtest = _score([model], raw, origins, horizon, scale_floor)
        if len(origins) < MIN_RESIDUALS:
            notes.append("interval from random-walk width (too few backtest origins)")
        return FittedForecaster(
            method=method,
            step_seconds=step_seconds,
            nobs=n,
            note=_join(*notes),
            models={model.name: model.compact()},
            chosen=chosen,
            residuals=_kept_residuals(residuals, chosen),
            scale_floor=scale_floor,
            rw_sigma=rw_sigma,
            backtest=backtest,
            fitted_nobs=n,
        )

    residuals, backtest = _score(candidates, raw, origins, horizon, scale_floor)
    if method == "auto":
        chosen = backtest.chosen
    else:
        # A fixed method still falls back if its fit did not happen (see notes); the last
        # candidate is the most elaborate one that could be fitted.
        chosen = tuple([candidates[-1].name] * horizon)
    # Only the chosen models, compacted: the backtest was their last use of the history.
    used = {c.name: c.compact() for c in candidates if c.name in set(chosen)}
    return FittedForecaster(
        method=method,
        step_seconds=step_seconds,
        nobs=n,
        note=_join(*notes),
        models=used,
        chosen=chosen,
        residuals=_kept_residuals(residuals, chosen),
        scale_floor=scale_floor,
        rw_sigma=rw_sigma,
        backtest=Backtest(backtest.origins, backtest.smape, chosen),
        fitted_nobs=n,
    )


def _candidates(
    method: str, y: FloatArray, periods: list[tuple[int, str]], keep: int, notes: list[str]
) -> list[Model]:
    """Models to fit, simplest first; the requested one last (or its fallback)."""
    n = len(y)
    out: list[Model] = [LastValue(y)]
    want_sn = method in ("auto", "seasonal-naive")
    want_es = method in ("auto", "exp-smoothing", "holt-winters")
    want_hw = method in ("auto", "holt-winters")
    if want_sn:
        sn = [SeasonalNaive(y, p, lab) for p, lab in periods if n > p]
        if not sn and method == "seasonal-naive":
            notes.append("history shorter than one season: seasonal-naive fell back to last value")
        # A fixed seasonal-naive uses the longest season it can (a week covers the day).
        out.extend(sn if method == "auto" else sn[-1:])
    hw_models: list[Model] = []
    if want_hw:
        for p, lab in periods:
            if p > MAX_HW_PERIOD or n < 2 * p + MIN_EXTRA_POINTS_HW:
                continue
            try:
                hw_models.append(fit_ets(y, p, lab, keep))
            except Exception as exc:  # noqa: BLE001 - a failed fit is a skipped candidate
                notes.append(f"holt-winters@{lab} fit failed ({exc})")
        if not hw_models and method == "holt-winters":
            notes.append("history shorter than two seasons: holt-winters fell back")
        if method == "holt-winters":
            hw_models = hw_models[-1:]  # the longest season the history supports
    if want_es and (method != "holt-winters" or not hw_models):
        if n >= MIN_POINTS_EXP_SMOOTHING:
            try:
                out.append(fit_ets(y, None, "", keep))
            except Exception as exc:  # noqa: BLE001
                notes.append(f"exp-smoothing fit failed ({exc})")
        elif method != "auto":
            notes.append(f"fewer than {MIN_POINTS_EXP_SMOOTHING} points: using last value")
    out.extend(hw_models)
    return out


def _backtest_origins(n: int, backtest_origins: int) -> npt.NDArray[np.int64]:
    """The last origins with at least one scoreable step, after a warm-up of a few points.

    Paths a model cannot give (e.g. seasonal-naive before one season) are NaN and masked."""
    warmup = min(MIN_POINTS_EXP_SMOOTHING, n)
    first = max(warmup - 1, n - 1 - backtest_origins)
    return np.arange(first, n - 1, dtype=np.int64)


def _score(
    candidates: Sequence[Model],
    raw: FloatArray,
    origins: npt.NDArray[np.int64],
    horizon: int,
    scale_floor: float,
) -> tuple[dict[str, FloatArray], Backtest]:
    """sMAPE per horizon on common origins; relative errors for the intervals."""
    n = len(raw)
    target_idx = origins[:, None] + np.arange(1, horizon + 1)[None, :]
    actual = np.full(target_idx.shape, np.nan)
    inside = target_idx < n
    actual[inside] = raw[target_idx[inside]]  # imputed points are never scored
    paths = {c.name: c.paths(origins, horizon) for c in candidates}
    common = np.isfinite(actual)
    for p in paths.values():
        common &= np.isfinite(p)
    smape: dict[str, FloatArray] = {}
    residuals: dict[str, FloatArray] = {}
    for name, f in paths.items():
        smape[name] = _smape_cols(actual, f, common)
        scale = np.maximum(np.abs(f), scale_floor)
        rel = np.where(common, (actual - f) / scale, np.nan)
        residuals[name] = rel
    chosen: list[str] = []
    names = list(paths)
    for h in range(horizon):
        lo, hi = max(h - SELECTION_BAND, 0), min(h + SELECTION_BAND + 1, horizon)
        score = {name: float(np.mean(smape[name][lo:hi])) for name in names}
        # A later (more elaborate) candidate must beat the simpler one by more than rounding
        # noise: on an exactly periodic signal seasonal-naive and Holt-Winters both score ~0.
        best = names[0]
        for name in names[1:]:
            if score[name] < score[best] * (1.0 - 1e-3) - 1e-9:
                best = name
        chosen.append(best)
    n_origins = int(np.count_nonzero(common.any(axis=1)))
    return residuals, Backtest(n_origins, smape, tuple(chosen))


def _kept_residuals(
    residuals: dict[str, FloatArray], chosen: tuple[str, ...]
) -> dict[str, dict[int, FloatArray]]:
    """The finite errors of the chosen model at each horizon (own copies, not views of the
    (origins, H) matrices): what `_error_quantile` reads, a column per horizon instead of one
    matrix per model."""
    out: dict[str, dict[int, FloatArray]] = {}
    for h, name in enumerate(chosen, start=1):
        res = residuals.get(name)
        if res is not None:
            col = res[:, h - 1]
            out.setdefault(name, {})[h] = col[np.isfinite(col)]
    return out


def _smape_cols(actual: FloatArray, f: FloatArray, mask: npt.NDArray[np.bool_]) -> FloatArray:
    out = np.full(actual.shape[1], np.inf)
    for h in range(actual.shape[1]):
        m = mask[:, h]
        if m.any():
            out[h] = smape(actual[m, h], f[m, h])
    return out


def smape(actual: FloatArray, forecast: FloatArray) -> float:
    """Symmetric MAPE in percent, 0 where both are 0; NaN pairs are skipped."""
    a = np.asarray(actual, dtype=np.float64)
    f = np.asarray(forecast, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(f)
    if not ok.any():
        return float("nan")
    a, f = a[ok], f[ok]
    den = np.abs(a) + np.abs(f)
    terms = np.where(den > 0, 2.0 * np.abs(a - f) / np.where(den > 0, den, 1.0), 0.0)
    return float(100.0 * np.mean(terms))


def _periods(seasonalities_s: Sequence[float], step_seconds: float) -> list[tuple[int, str]]:
    """Seasons in steps (shortest first), with labels like '1d'; periods < 2 steps are dropped."""
    out: dict[int, str] = {}
    if not (math.isfinite(step_seconds) and step_seconds > 0):
        return []
    for s in seasonalities_s:
        if not math.isfinite(s) or s <= 0:
            continue
        p = int(round(s / step_seconds))
        if p >= 2:
            out.setdefault(p, _label(s))
    return sorted(out.items())


def _label(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _impute(raw: FloatArray, periods: list[tuple[int, str]]) -> tuple[FloatArray, int]:
    """Fill gaps: same slot one (shortest) season earlier when known, else interpolate."""
    y = raw.copy()
    missing = ~np.isfinite(y)
    n_missing = int(missing.sum())
    if n_missing == 0:
        return y, 0
    if periods:
        p = periods[0][0]
        for i in np.flatnonzero(missing):
            if i >= p and np.isfinite(y[i - p]):
                y[i] = y[i - p]
    gaps = ~np.isfinite(y)
    if gaps.any():
        known = np.flatnonzero(~gaps)  # never empty: the history starts at an observation
        y[gaps] = np.interp(np.flatnonzero(gaps), known, y[known])
    return y, n_missing


def _rw_sigma(y: FloatArray) -> float:
    """Std of relative one-step changes (a random-walk interval width)."""
    f = y[np.isfinite(y)]
    if len(f) < 3:
        return 0.0
    base = np.maximum(np.abs(f[:-1]), 0.05 * float(np.mean(np.abs(f))) + 1e-9)
    return float(np.std(np.diff(f) / base))


def _clean(values: npt.ArrayLike) -> FloatArray:
    try:
        a = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return np.zeros(0)
    return np.where(np.isfinite(a), a, np.nan)


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _no_history(method: str, step_seconds: float, note: str) -> FittedForecaster:
    return FittedForecaster(
        method=method if method in METHODS else "auto",
        step_seconds=step_seconds,
        nobs=0,
        note=note,
        models={},
        chosen=(),
        residuals={},
        scale_floor=1e-9,
        rw_sigma=0.0,
        backtest=None,
    )


def _single(
    model: Model,
    method: str,
    step_seconds: float,
    nobs: int,
    note: str,
    rw_sigma: float,
    scale_floor: float,
) -> FittedForecaster:
    return FittedForecaster(
        method=method if method in METHODS else "auto",
        step_seconds=step_seconds,
        nobs=nobs,
        note=note,
        models={model.name: model},
        chosen=(model.name,),
        residuals={},
        scale_floor=max(scale_floor, 1e-9),
        rw_sigma=rw_sigma,
        backtest=None,
        fitted_nobs=nobs,
    )
