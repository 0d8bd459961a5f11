"""Pure load forecasting: `fit(history, step_seconds=...)` then `.forecast(steps, quantile)`.

Imports numpy, pandas, scipy and statsmodels only; no clock, no I/O: times are arguments.
"""

from gpufleet.forecasting.api import (
    METHODS,
    Backtest,
    FittedForecaster,
    Forecast,
    fit,
    smape,
)
from gpufleet.forecasting.rate import RateForecast, RateForecaster

__all__ = [
    "METHODS",
    "Backtest",
    "FittedForecaster",
    "Forecast",
    "RateForecast",
    "RateForecaster",
    "fit",
    "smape",
]
