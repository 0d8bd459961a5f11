"""ForecastPort over gpufleet.forecasting's RateForecaster (shared by the operator and simulator)."""

from __future__ import annotations

import math
from collections.abc import MutableMapping

from gpufleet.api.models import Forecast, ForecastMethod
from gpufleet.api.timefmt import duration_seconds, iso
from gpufleet.core.types import ForecastSummary
from gpufleet.forecasting.api import FittedForecaster
from gpufleet.forecasting.rate import RateForecaster

class ForecastAdapter:
    """Keeps one service's request-rate history and answers the control step's forecast call."""

    def __init__(self, spec: Forecast, *, step_s: float = 60.0, refit_offset_s: float = 0.0,
                 fit_memo: MutableMapping[bytes, FittedForecaster] | None = None) -> None:
        method = "auto" if spec.method in (ForecastMethod.auto, ForecastMethod.none) else spec.method.value
        self.rate = RateForecaster(
            step_s=step_s,
            method=method,
            seasonalities_s=tuple(float(duration_seconds(s)) for s in spec.seasonality),
            refit_offset_s=refit_offset_s,
            fit_memo=fit_memo,
        )
        self._basis: tuple[float, str] = (math.nan, "")  # basis(): the last bucket and its text

    def observe(self, t: float, rps: float) -> None:
        self.rate.observe(t, rps)

    def forecast(self, *, now: float, horizon_s: float, quantile: float) -> ForecastSummary | None:
        result = self.rate.forecast(now, horizon_s, quantile)
        if result is None:
            return None
        return ForecastSummary(horizon_s=horizon_s, mean_rps=result.mean_rps, upper_rps=result.upper_rps,
                               method=result.method, note="; ".join(p for p in (result.note, self.basis(now)) if p))

    def basis(self, now: float) -> str:
        """What the forecast is built from: only complete buckets count, so after a quick rise it
        trails the observed rate by up to a bucket and the rate's own window (status says so)."""
        step = self.rate.step_s
        bucket = now // step * step
        if self._basis[0] != bucket:  # formatted once per bucket, not once per decision
            self._basis = (bucket, f"from {step:g}s means of the request rate up to {iso(bucket)}")
        return self._basis[1]
