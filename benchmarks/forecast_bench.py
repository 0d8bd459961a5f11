"""Forecasting benchmark on the ServeGen 14-day aggregates (rates per 10 minutes).

Rolling-origin evaluation: at every origin of the test window (the last days of each trace) each
method forecasts 1..12 steps from the history up to that origin only. Parameters and the method
choice are re-estimated with the same rule as `RateForecaster` (daily, or when the history has grown
by a quarter) and moved forward with `append` in between, so the numbers are those of the code the
operator runs. Reported: sMAPE and one-sided upper-quantile coverage at 30 min (3 steps) and 2 h
(12 steps), plus the cost of forecasting a fleet of 500 services each minute.

    .venv/bin/python benchmarks/forecast_bench.py --out reports/forecast
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The benchmark runs from the repository root: make `gpufleet` importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from gpufleet.forecasting import FittedForecaster, RateForecaster, fit, smape  # noqa: E402
from gpufleet.sim.traces import SHARED_TRACES  # noqa: E402

TRACES = Path(SHARED_TRACES) / "servegen" / "aggregated"  # ../shared beside the checkout, or $GPUFLEET_TRACES
STEP_S = 600.0
HORIZONS = (3, 12)  # 30 minutes and 2 hours at 10-minute steps
QUANTILE = 0.9
DAY = 144  # 10-minute steps per day


@dataclass(frozen=True)
class MethodSpec:
    label: str  # row label in the report
    method: str
    seasonalities_s: tuple[float, ...]


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("naive: last value", "last-value", ()),
    MethodSpec("naive: same window 1 day earlier", "seasonal-naive", (86400.0,)),
    MethodSpec("seasonal-naive (longest season)", "seasonal-naive", (86400.0, 604800.0)),
    MethodSpec("exp-smoothing", "exp-smoothing", ()),
    MethodSpec("holt-winters", "holt-winters", (86400.0, 604800.0)),
    MethodSpec("auto", "auto", (86400.0, 604800.0)),
)


GAP_FRACTION = 0.02


def load(name: str) -> np.ndarray:
    """Rates per window, with collector gaps as missing values (NaN), not demand.

    Gaps: exact zeros (84 windows in m-mid, 37 in m-small), and windows below 2 % of the trace's
    median: in m-mid these are partial windows at the edges of zero runs (11-15 rps where the
    level is ~2000) and a stretch of 1-25 rps around the gap at window 1392. m-small and
    deepseek-r1 have none below that line (their minima are ~34 % of the median).
    """
    data = np.genfromtxt(TRACES / f"{name}_total_rate_10min.csv", delimiter=",", names=True)
    y = np.asarray(data["total_rate_rps"], dtype=np.float64)
    median = float(np.median(y[y > 0]))
    return np.where(y > GAP_FRACTION * median, y, np.nan)


def rolling_origin(
    y: np.ndarray, origins: Sequence[int], spec: MethodSpec, refit_every: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Forecasts (mean, upper) of shape (len(origins), 12) using only y[: origin + 1]."""
    h_max = max(HORIZONS)
    means = np.full((len(origins), h_max), np.nan)
    uppers = np.full_like(means, np.nan)
    labels: list[str] = []
    fitted: FittedForecaster | None = None
    fit_at = -1
    seen = -1
    for i, t in enumerate(origins):
        grown = t - fit_at
        if fitted is None or grown >= refit_every or grown >= max((fit_at + 1) // 4, 1):
            fitted = fit(
                y[: t + 1],
                step_seconds=STEP_S,
                method=spec.method,
                seasonalities_s=spec.seasonalities_s,
                horizon=h_max,
            )
            fit_at = t
        else:
            fitted = fitted.append(y[seen + 1 : t + 1])
        seen = t
        fc = fitted.forecast(h_max, QUANTILE)
        means[i], uppers[i] = fc.mean, fc.upper
        if fit_at == t:
            labels.append(fc.method)
    return means, uppers, labels


def test_origins(n: int, test_days: float, validation: bool) -> list[int]:
    """The last `test_days` of origins (at least half the trace stays warm-up); with
    `validation`, the same number of origins just before them."""
    first = max(n - 1 - int(test_days * DAY), n // 2)
    if not validation:
        return list(range(first, n - 1))
    size = n - 1 - first
    return list(range(max(first - size, 1), first))


def evaluate(
    name: str, y: np.ndarray, origins: list[int], refit_every: int
) -> tuple[dict[str, dict[int, tuple[float, float, float]]], dict[str, np.ndarray], list[int]]:
    n = len(y)
    table: dict[str, dict[int, tuple[float, float, float]]] = {}
    paths: dict[str, np.ndarray] = {}
    for spec in METHODS:
        t0 = time.perf_counter()
        mean, upper, labels = rolling_origin(y, origins, spec, refit_every)
        cols: dict[int, tuple[float, float, float]] = {}
        for h in HORIZONS:
            idx = np.array(origins) + h
            ok = idx < n
            actual = np.full(len(origins), np.nan)
            actual[ok] = y[idx[ok]]
            m, u = mean[:, h - 1], upper[:, h - 1]
            scored = np.isfinite(actual) & np.isfinite(m)
            if not scored.any() or _unsupported(spec, labels):
                cols[h] = (np.nan, np.nan, np.nan)
                continue
            cover = float(np.mean(actual[scored] <= u[scored]))
            width = float(np.median(u[scored] / np.maximum(m[scored], 1e-9) - 1.0))
            cols[h] = (smape(actual[scored], m[scored]), cover, width)
        table[spec.label] = cols
        paths[spec.label] = mean
        paths[spec.label + ":upper"] = upper
        print(
            f"  {name:20s} {spec.label:34s} "
            + "  ".join(f"h{h}: {cols[h][0]:5.1f}% cov {cols[h][1]:.2f}" for h in HORIZONS)
            + f"  ({time.perf_counter() - t0:.1f}s; {', '.join(sorted(set(labels)))[:90]})",
            flush=True,
        )
    return table, paths, origins


def _unsupported(spec: MethodSpec, labels: list[str]) -> bool:
    """A seasonal baseline that never had one season of history is not that baseline."""
    return spec.method == "seasonal-naive" and all(lab == "last-value" for lab in labels)


def fleet_cost(y_small: np.ndarray, y_mid: np.ndarray, services: int, sample: int) -> dict[str, float]:
    """CPU cost of forecasting `services` services each minute, measured on `sample` of them.

    Each simulated service is one of the real traces, scaled and shifted in phase, with 14 days
    of history at the RateForecaster default step (5 min: each 10-minute rate fills two buckets).
    Measured: a cold fit (operator start), then one simulated day of minute ticks in which each
    service does what the control loop does: observe, then forecast the peak over 5 minutes.
    """
    rng = np.random.default_rng(7)
    step = 300.0
    cold: list[float] = []
    profiles: list[np.ndarray] = []  # CPU s per minute of the simulated day, per service
    fits = appends = 0
    for s in range(sample):
        base = y_small if s % 2 == 0 else y_mid
        shift = int(rng.integers(0, DAY))
        scale = float(rng.uniform(0.01, 2.0))
        series = np.roll(base, shift) * scale
        rf = RateForecaster(step_s=step, refit_offset_s=float(rng.uniform(0, 86400)))
        # 13 days of history, then 1 day of minute ticks (the last day of the same series).
        hist_end = 13 * 86400.0
        for i, v in enumerate(series):
            t = i * STEP_S
            if t >= hist_end:
                break
            if np.isfinite(v):
                rf.observe(t + 1.0, float(v))
                rf.observe(t + 301.0, float(v))
        c0 = time.process_time()
        rf.forecast(hist_end, 300.0, QUANTILE)
        cold.append(time.process_time() - c0)
        profile = np.zeros(1440)
        for minute in range(1440):
            now = hist_end + 60.0 * minute
            v = series[min(int(now // STEP_S), len(series) - 1)]
            c0 = time.process_time()
            if np.isfinite(v):
                rf.observe(now, float(v))
            rf.forecast(now + 30.0, 300.0, QUANTILE)
            profile[minute] = time.process_time() - c0
        profiles.append(profile)
        fits += rf.fits
        appends += rf.appends
    per_service_minute = float(np.mean([p.sum() for p in profiles]) / 1440)
    # A fleet-day resampled from the measured profiles: each of `services` services is one
    # measured profile, rotated by a random refit phase (as refit_offset_s spreads them).
    fleet = np.zeros(1440)
    for _ in range(services):
        p = profiles[int(rng.integers(0, len(profiles)))]
        fleet += np.roll(p, int(rng.integers(0, 1440)))
    return {
        "services": float(services),
        "sample": float(sample),
        "cold_fit_mean_s": float(np.mean(cold)),
        "cold_fit_p95_s": float(np.percentile(cold, 95)),
        "cold_start_fleet_cpu_s": float(np.mean(cold) * services),
        "steady_cpu_s_per_minute": per_service_minute * services,
        "steady_worst_minute_cpu_s": float(fleet.max()),
        "fits_per_service_day": fits / sample,
        "appends_per_service_day": appends / sample,
    }


def plot(out: Path, results: dict[str, tuple[np.ndarray, dict[str, np.ndarray], list[int]]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(13, 3.4 * len(results)), squeeze=False)
    h = 3
    for ax, (name, (y, paths, origins)) in zip(axes[:, 0], results.items()):
        t = (np.array(origins) + h) * STEP_S / 86400.0
        ok = np.array(origins) + h < len(y)
        actual = np.full(len(origins), np.nan)
        actual[ok] = y[np.array(origins)[ok] + h]
        ax.plot(t, actual, color="black", lw=1.0, label="actual")
        ax.plot(t, paths["naive: last value"][:, h - 1], color="tab:gray", lw=0.8, alpha=0.7,
                label="last value (30 min earlier)")
        ax.plot(t, paths["auto"][:, h - 1], color="tab:blue", lw=1.2, label="auto, 30 min ahead")
        upper = paths["auto:upper"][:, h - 1]
        ax.fill_between(t, paths["auto"][:, h - 1], upper, color="tab:blue", alpha=0.15,
                        label=f"auto, upper q{QUANTILE:g}")
        ax.set_title(f"{name}: 30-minute-ahead forecast vs actual (test window)")
        ax.set_xlabel("day of trace")
        ax.set_ylabel("requests / s")
        ax.legend(loc="upper left", fontsize=8, ncol=4)
    fig.tight_layout()
    path = out / "forecast_vs_actual.png"
    fig.savefig(path, dpi=110)
    return path.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="reports/forecast")
    ap.add_argument("--test-days", type=float, default=4.0)
    ap.add_argument("--refit-every", type=int, default=DAY, help="steps between full fits")
    ap.add_argument("--services", type=int, default=500)
    ap.add_argument("--sample", type=int, default=20, help="services actually simulated")
    ap.add_argument(
        "--validation",
        action="store_true",
        help="score the window just before the test window instead (used to choose settings)",
    )
    args = ap.parse_args()
    out = Path(args.out) / "validation" if args.validation else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    names = ["language_m-small", "language_m-mid", "reason_deepseek-r1"]
    tables: dict[str, dict[str, dict[int, tuple[float, float, float]]]] = {}
    plots: dict[str, tuple[np.ndarray, dict[str, np.ndarray], list[int]]] = {}
    windows: dict[str, str] = {}
    floors: dict[str, float] = {}
    for name in names:
        y = load(name)
        print(f"{name}: {len(y)} windows, {int(np.isnan(y).sum())} missing", flush=True)
        origins = test_origins(len(y), args.test_days, args.validation)
        if args.validation:
            y = y[: origins[-1] + max(HORIZONS) + 1]  # nothing of the test window is read
        table, paths, origins = evaluate(name, y, origins, args.refit_every)
        tables[name] = table
        plots[name] = (y, paths, origins)
        floors[name] = noise_floor(y, origins)
        windows[name] = (
            f"{len(origins)} origins, windows {origins[0]}..{origins[-1]} "
            f"(day {origins[0] / DAY:.1f} to {(origins[-1] + 1) / DAY:.1f}); "
            f"{len(y)} windows, {int(np.isnan(y).sum())} missing"
        )
    png = plot(out, plots)
    print("fleet cost ...", flush=True)
    cost = fleet_cost(load("language_m-small"), load("language_m-mid"), args.services, args.sample)
    print(cost, flush=True)
    write_report(out, tables, floors, windows, cost, png, args, time.time() - started)


def write_report(
    out: Path,
    tables: dict[str, dict[str, dict[int, tuple[float, float, float]]]],
    floors: dict[str, float],
    windows: dict[str, str],
    cost: dict[str, float],
    png: str,
    args: argparse.Namespace,
    elapsed: float,
) -> None:
    budget = max(int(60.0 / max(cost["cold_fit_mean_s"], 1e-6)), 1)
    minutes = int(np.ceil(cost["services"] / budget))

    def fmt(v: float, pct: bool = True) -> str:
        if not np.isfinite(v):
            return "n/a"
        return f"{v:.1f}" if pct else f"{v:.2f}"

    lines = [
        "# Forecasting benchmark (ServeGen 14-day aggregates)"
        + (" — VALIDATION window" if args.validation else ""),
        "",
        f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC in {elapsed:.0f} s "
        f"on {os.cpu_count()} CPUs by",
        "",
        "```",
        f".venv/bin/python benchmarks/forecast_bench.py --out {args.out} --test-days "
        f"{args.test_days:g} --refit-every {args.refit_every} --services {args.services} "
        f"--sample {args.sample}" + (" --validation" if args.validation else ""),
        "```",
        "",
        "Data: ServeGen production traces (Xiang et al., *ServeGen: Workload Characterization of "
        "Large Language Model Serving in Production*, arXiv:2505.09999), aggregated per 10 minutes "
        "(`../shared/traces/servegen/aggregated/*_total_rate_10min.csv`). Exact-zero windows are "
        "collector gaps (84 in m-mid, 37 in m-small), and so are windows below 2 % of a trace's "
        "median (18 in m-mid: partial windows at gap edges, ~1-25 rps where the level is ~2000; "
        "none elsewhere): missing values for the forecasters, never scored.",
        "",
        "## Methods (`gpufleet.forecasting`)",
        "",
        "- `last-value`: the last observation, flat. `seasonal-naive`: the same slot one season "
        "earlier (the longest season with one full cycle of history; the day-earlier baseline is "
        "this with the daily season only).",
        "- `exp-smoothing`: simple exponential smoothing; `holt-winters`: additive damped trend and "
        "additive daily season (weekly instead when the history covers two weeks plus a little; "
        "never in this 14-day data at 10-minute steps). Both by statsmodels `ExponentialSmoothing` "
        "(parameters by its SSE fit, heuristic initial states), then moved forward with known "
        "parameters between refits.",
        "- `auto`: fits every candidate the history supports (the two naive ones always), runs a "
        "rolling-origin backtest over the last 432 origins (3 days at 10 minutes) from the stored "
        "filter states, and at each horizon h uses the candidate with the lowest sMAPE over "
        "horizons h-1..h+1; a more elaborate candidate must beat a simpler one by more than 0.1 %.",
        "- Intervals (all methods): upper = f + max(|f|, 5 % of the mean level) × the empirical "
        "quantile of the relative backtest errors at that horizon (random-walk width when fewer "
        "than 8 errors). Gaps are imputed (same slot a season earlier, else interpolation) for the "
        "models and never scored.",
        "",
        "Settings were chosen on a validation window (the 4 days before the test window, "
        "`--validation`, report in [validation/](validation/README.md)): per-horizon choice "
        "scored on h-1..h+1 (vs one method for all horizons, or each horizon alone), no forecast "
        "combinations (mean of exp-smoothing and Holt-Winters: no better), a 3-day backtest (1, 2, "
        "3 and 6 days gave the same), and SSE-fitted smoothing parameters (tuning the level "
        "smoothing on backtest sMAPE was no better). The test window itself was scored only to "
        "report.",
        "",
        "## Protocol",
        "",
        "- Rolling origin over the test window: at each origin every method sees only the history up "
        "to that origin and forecasts 1..12 steps; scored at 3 steps (30 min) and 12 steps (2 h).",
        f"- Full fits (parameters, backtest, method choice, interval calibration) every "
        f"{args.refit_every} steps or when the history grew by a quarter; `append` (state update "
        "with kept parameters) in between: the refit rule of `RateForecaster`.",
        f"- sMAPE in %: mean of 2|a-f|/(|a|+|f|). Coverage: share of actuals at or below the upper "
        f"q{QUANTILE:g} forecast (one-sided; nominal {QUANTILE:.2f}). Width: median upper/mean - 1.",
        "- Baselines: last value; the same 10-minute window one day earlier.",
        "",
        "Test windows:",
        "",
    ]
    lines += [f"- {name}: {w}" for name, w in windows.items()]
    lines += [""]
    for name, table in tables.items():
        lines += [
            f"### {name}",
            "",
            "| method | sMAPE 30 min | coverage 30 min | width 30 min | sMAPE 2 h | coverage 2 h "
            "| width 2 h |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for label, cols in table.items():
            a, b = cols[HORIZONS[0]], cols[HORIZONS[1]]
            lines.append(
                f"| {label} | {fmt(a[0])} | {fmt(a[1], False)} | {fmt(a[2], False)} | "
                f"{fmt(b[0])} | {fmt(b[1], False)} | {fmt(b[2], False)} |"
            )
        lines.append("")
    lines += targets(tables, floors)
    lines += [
        "## Observations",
        "",
        "- Last value is a strong baseline on 10-minute rates: the series alternate between calm "
        "stretches and bursts of large window-to-window swings, and no smoother removes that "
        "noise. Holt-Winters gains most at 2 h on m-small, where the daily shape is regular.",
        "- The day-earlier baseline is weak on these traces: levels drift over days (m-mid roughly "
        "doubles over the two weeks) and the daily shape differs from day to day.",
        "- Intervals: coverage of the one-sided 0.9 bound is close to 0.90 on the language traces. "
        "deepseek-r1 has under a day of history, few residuals and a late burst: it under-covers. "
        "`auto` can be optimistic right after switching to a method whose in-sample errors were "
        "small (selection bias), so its coverage can sit below the single methods'.",
        "- Weekly seasonality is supported (Holt-Winters on the week, seasonal-naive on the week) "
        "but a 14-day trace never gives two full weeks before a test origin, so it is not "
        "exercised here.",
        "- History of this report, for honesty: the first full run treated only exact zeros as "
        "gaps; m-mid's 18 near-zero partial windows then made auto pick seasonal-naive at 2 h for "
        "a day, and m-mid scored auto 14.4 % / 25.5 % vs last value 14.8 % / 20.4 % (30 min / 2 h). "
        "The 2 %-of-median gap rule was added after looking at that run's plot of the test "
        "window; the forecasting settings above were not changed after seeing test numbers.",
        "",
    ]
    lines += [
        "## Cost: 500 services each minute",
        "",
        f"Measured with `time.process_time` on {int(cost['sample'])} simulated services "
        "(real traces, scaled and phase-shifted; 13 days of history at the default 5-minute step, "
        "then one simulated day of per-minute observe + forecast) and scaled to "
        f"{int(cost['services'])} services:",
        "",
        "| quantity | value |",
        "|---|---:|",
        f"| steady state, CPU s per minute for {int(cost['services'])} services "
        f"| {cost['steady_cpu_s_per_minute']:.2f} |",
        "| worst minute of the day, CPU s (a fleet resampled from the measured per-service "
        f"profiles with random refit phases) | {cost['steady_worst_minute_cpu_s']:.2f} |",
        "| full fits per service in the simulated day (including the cold fit) | "
        f"{cost['fits_per_service_day']:.1f} |",
        f"| state updates (`append`) per service per day | {cost['appends_per_service_day']:.0f} |",
        f"| cold fit per service (mean / p95, s) | {cost['cold_fit_mean_s']:.2f} / "
        f"{cost['cold_fit_p95_s']:.2f} |",
        f"| cold start of the whole fleet (CPU s) | {cost['cold_start_fleet_cpu_s']:.0f} |",
        "",
        "At operator start every service needs a full fit at once. `RateForecaster.forecast(..., "
        "allow_fit=False)` defers it (serving the last observed rate, or the old parameters, and "
        f"saying so); with a fleet budget of {budget} fits per minute (about "
        f"{budget * cost['cold_fit_mean_s']:.0f} CPU s, half of 2 cores) all "
        f"{int(cost['services'])} services are fitted within {minutes} minutes.",
        "",
        f"Budget on 2 cores: 120 CPU s per minute. Plot: [{png}]({png}).",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))


def noise_floor(y: np.ndarray, origins: list[int]) -> float:
    """sMAPE of each scored window against the mean of its two neighbours: a non-causal
    reference (it sees the future) for how much of the error is window-to-window noise."""
    idx = np.array(origins) + HORIZONS[0]
    idx = idx[(idx >= 1) & (idx < len(y) - 1)]
    return smape(y[idx], (y[idx - 1] + y[idx + 1]) / 2.0)


def targets(
    tables: dict[str, dict[str, dict[int, tuple[float, float, float]]]], floors: dict[str, float]
) -> list[str]:
    lines = ["## Targets", ""]
    small = tables["language_m-small"]["auto"][3][0]
    lines.append(
        f"- sMAPE 30 min ahead on m-small ≤ 8 %: auto gets {small:.1f} % — "
        + ("met." if small <= 8 else "**missed**.")
        + f" For scale: predicting each window as the mean of its two neighbours (which needs the "
        f"future) scores {floors['language_m-small']:.1f} % on the same windows; the 10-minute "
        "rates carry that much window-to-window noise."
    )
    for name, table in tables.items():
        for h in HORIZONS:
            auto = table["auto"][h][0]
            last = table["naive: last value"][h][0]
            day = table["naive: same window 1 day earlier"][h][0]
            verdicts = [auto < last] + ([auto < day] if np.isfinite(day) else [])
            lines.append(
                f"- {name}, {'30 min' if h == 3 else '2 h'}: auto {auto:.1f} % vs last value "
                f"{last:.1f} %, day earlier "
                + (f"{day:.1f} %" if np.isfinite(day) else "n/a (the trace is one day long)")
                + " — "
                + ("better than " + ("both." if len(verdicts) == 2 else "last value.")
                   if all(verdicts) else "**not better than every baseline**.")
            )
    lines.append("")
    return lines


if __name__ == "__main__":
    main()
