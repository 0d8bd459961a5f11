"""Workload traces as per-second arrival series, loaded from the real formats in ../shared/traces.

Every loader returns a `Trace`: per-second request counts and token sums, the arrival variability
*inside* a second (`ca2`), a mask of seconds whose data is missing, and a sample of per-request
token lengths (the simulator's service-time distribution). Per-second resolution is what the fluid
simulator (gpufleet.sim.engine) consumes; it keeps second-scale burstiness of per-request traces and
the daily/weekly cycles of the ServeGen rate traces while letting a 14-day run finish in seconds.

Formats (see ../shared/traces/README.md):
- Azure LLM 2023 (Patel et al., Splitwise, CC-BY-4.0): CSV `TIMESTAMP,ContextTokens,GeneratedTokens`.
- Mooncake FAST'25 (Apache-2.0): JSONL `{timestamp (ms), input_length, output_length, hash_ids}`.
  Its timestamps lie on a 3 s grid (every request of a 3 s tick carries the same stamp); binned as
  is, every third second would hold three seconds of load and the two between none. Requests are
  spread uniformly over their tick (seeded): what happens inside a tick is not in the data.
- ServeGen (Apache-2.0) per-client CSV, headerless:
  `window_start_s, rate_req_per_s, cv, dist_name, param1, param2` (600 s windows; the fitted
  distribution is that of inter-arrival times); aggregated CSV
  `window_start_s,total_rate_rps,requests_in_window,active_clients`.
- Generic CSV for users' own logs: a header with `timestamp` (seconds as a number, or an ISO
  date-time) and optional `input_tokens`, `output_tokens`; one row per request.

How a rate trace (ServeGen) becomes seconds
-------------------------------------------
1. **Rate inside a window.** The expected count of each second is the increment of a monotone
   cubic (Fritsch-Carlson PCHIP) interpolant of the *cumulative* expected count through the window
   boundaries (`interpolate_rate`). Because the interpolant passes through the cumulative count at
   every boundary, each window's expected total is its mean rate x 600 s exactly (to rounding);
   because it is monotone, no second's rate is negative and it does not overshoot into an idle
   window; the rate is continuous across boundaries, so clients do not all change in the same
   second. (A piecewise-linear curve through the window midpoints is continuous too, but its
   window means differ from the data wherever the rate curves, and correcting them can push rates
   below zero next to idle windows.)
2. **Bursts from second to second.** Counts are a doubly stochastic Poisson process around that
   rate: N_t ~ Poisson(rate_t x m_t), with a multiplier m_t of mean 1 that is the mean of two
   independent gamma-distributed levels, a fast and a slow one; each level holds for a geometric
   number of seconds (it is redrawn each second with probability 1 - phi), so its autocorrelation
   is phi^k, as a log-AR(1) level's would be, but unlike exp(AR(1)) it keeps that shape at every
   variance. The variance of m_t is (D - 1) / rate_t, which makes the index of dispersion (IDC) of
   the counts the same at every rate: IDC(1 s) = D, and over T seconds
       IDC(T) = 1 + (D - 1) [w G(phi_fast, T) + (1 - w) G(phi_slow, T)],
       G(phi, T) = F(phi, T) - (T / 600) F(phi, 600),
       F(phi, T) = (1 + phi)/(1 - phi) - 2 phi (1 - phi^T) / (T (1 - phi)^2)
   (`BurstModel.idc`). A dispersion that does not depend on the rate is what superposing
   independent streams does (the clients of a service burst independently), so a ServeGen
   service at any load bursts per request as the measured service does. The second term of G:
   inside every window the multiplier is rescaled so that its rate-weighted mean is 1 (the window
   total is data: bursts move requests inside a window, they add none and remove none).
   The formula treats that rescaling as a small correction, which it is from ~10 req/s up; at a
   few req/s it is not, and the realized IDC(60 s) comes out up to ~15 % below it.
   (D, w, phi_fast, phi_slow) are fitted (`fit_burst`, least squares on log IDC at 1, 2, 3, 5, 10,
   20, 30 and 60 s around each trace's own interpolated rate) to a per-request trace:
   `reference_burst("azure")` (default for ServeGen), `reference_burst("mooncake")`, or
   "poisson" (D = 1). `burst="servegen-cv"` takes D per window from the ServeGen clients' fitted
   inter-arrival CVs (thinned to the scale) and the time structure from the Azure fit.
3. **Burstiness counted once.** `Trace.ca2` is the variability of arrivals *inside* a second given
   that second's count, the only part the engine's sub-second M/G/c term (Allen-Cunneen's
   (ca2 + cs2)/2) may add: the between-second part is already in the counts, which the fluid
   queue serves. It is measured on per-request traces as the dispersion of 100 ms counts within
   each second around a uniform spread of that second's requests (1 = Poisson inside the second;
   1 where timestamps are too coarse to tell) and a synthetic trace carries its burst model's value.
   Before, a ServeGen second's dispersion was drawn into the counts and then given again as ca2.
"""

from __future__ import annotations

import functools
import glob
import json
import os
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

SHARED_TRACES = os.environ.get(
    "GPUFLEET_TRACES", os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "traces")
)

# Token lengths used when a trace has none (ServeGen rate traces, step loads). An assumption, not
# data: a chat-style "language" mix with median prompt 800 and median answer 200 tokens, long tails.
DEFAULT_IN_MEDIAN, DEFAULT_IN_SIGMA = 800.0, 1.0
DEFAULT_OUT_MEDIAN, DEFAULT_OUT_SIGMA = 200.0, 0.8
TOKEN_SAMPLE = 4096

WINDOW_S = 600  # ServeGen's rate windows
DAY_S = 86400
IDC_SCALES = (1, 2, 3, 5, 10, 20, 30, 60)  # aggregation (s) the burst model is fitted at
SUBSECOND_BINS = 10  # within-second variability is measured on 100 ms counts
MAX_MULTIPLIER_VAR = 25.0  # at very low rates the burst multiplier's variance is capped
BURSTS = ("azure", "mooncake", "poisson", "servegen-cv")


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    counts: np.ndarray  # requests arriving in each second (float: scaled traces may be fractional)
    in_tokens: np.ndarray  # sum of prompt tokens of those requests
    out_tokens: np.ndarray  # sum of generated tokens
    # Squared coefficient of variation of arrivals inside a second, given that second's count
    # (1 = Poisson). The between-second burstiness is in `counts` and must not be added again.
    ca2: np.ndarray
    missing: np.ndarray  # bool per second: source data missing (filled, excluded from nothing)
    in_sample: np.ndarray  # per-request prompt lengths (service-time distribution)
    out_sample: np.ndarray
    notes: tuple[str, ...] = field(default=())
    # Synthetic traces: the expected count of each second the counts were drawn around (the
    # interpolated rate); None for recorded traces.
    expected: np.ndarray | None = None

    @property
    def seconds(self) -> int:
        return int(self.counts.size)

    @property
    def total_requests(self) -> float:
        return float(self.counts.sum())

    def rate_per_window(self, window_s: int) -> np.ndarray:
        n = self.seconds // window_s
        return np.asarray(self.counts[: n * window_s].reshape(n, window_s).mean(axis=1), dtype=float)


def _token_sample(rng: np.random.Generator, n: int = TOKEN_SAMPLE) -> tuple[np.ndarray, np.ndarray]:
    ins = rng.lognormal(np.log(DEFAULT_IN_MEDIAN), DEFAULT_IN_SIGMA, n).clip(16, 32000)
    outs = rng.lognormal(np.log(DEFAULT_OUT_MEDIAN), DEFAULT_OUT_SIGMA, n).clip(1, 4096)
    return ins.round(), outs.round()


# ---------------------------------------------------------------------------------------------
# Per-request traces.


def timestamp_tick(t_s: np.ndarray) -> float | None:
    """The grid (s) timestamps were stamped on, when coarser than a second (Mooncake: 3 s); else None."""
    u = np.unique(np.asarray(t_s, dtype=float))
    gaps = np.diff(u)
    if gaps.size < 10:
        return None
    q = float(np.median(gaps))
    if q < 1.0:
        return None
    off = np.abs(gaps / q - np.round(gaps / q))
    return q if float(np.mean(off < 0.01)) > 0.95 else None


def within_second_ca2(t_s: np.ndarray, bins: int = SUBSECOND_BINS) -> float:
    """Dispersion of arrivals inside each second around a uniform spread of that second's count.

    sum over seconds and 1/bins-s sub-bins of (n_sub - n/bins)^2, divided by its value for
    requests placed independently and uniformly in their second (n (1 - 1/bins)): 1 for Poisson
    arrivals inside the second, > 1 when they cluster. 1 when there are too few requests to tell.
    """
    t = np.asarray(t_s, dtype=float)
    t = t - t.min()
    sec = np.floor(t).astype(np.int64)
    sub = np.minimum(np.floor((t - sec) * bins).astype(np.int64), bins - 1)
    cnt = np.bincount(sec * bins + sub, minlength=(int(sec.max()) + 1) * bins).reshape(-1, bins)
    n = cnt.sum(axis=1)
    busy = n >= 2
    if int(n[busy].sum()) < 200:
        return 1.0
    obs = float(((cnt[busy] - n[busy, None] / bins) ** 2).sum())
    return obs / float((n[busy] * (1.0 - 1.0 / bins)).sum())


def from_requests(name: str, t_s: np.ndarray, ins: np.ndarray, outs: np.ndarray, notes: tuple[str, ...] = (),
                  seed: int = 0) -> Trace:
    """Bin per-request arrivals (seconds from trace start) into a per-second trace.

    Timestamps on a grid coarser than a second are spread uniformly over their tick (seeded), and
    the within-second variability is then unknown (ca2 = 1); otherwise it is measured.
    """
    t = np.asarray(t_s, dtype=float)
    t = t - t.min()
    tick = timestamp_tick(t)
    if tick is not None:
        t = t + np.random.default_rng(seed).random(t.size) * tick
        notes = notes + (f"timestamps on a {tick:g} s grid: each tick's requests spread uniformly over it (seeded)",)
        ca2 = 1.0
    else:
        ca2 = within_second_ca2(t)
    sec = np.floor(t).astype(np.int64)
    n = int(sec.max()) + 1
    counts = np.bincount(sec, minlength=n).astype(float)
    return Trace(
        name=name,
        counts=counts,
        in_tokens=np.bincount(sec, weights=ins, minlength=n),
        out_tokens=np.bincount(sec, weights=outs, minlength=n),
        ca2=np.full(n, ca2),
        missing=np.zeros(n, dtype=bool),
        in_sample=np.asarray(ins, dtype=float),
        out_sample=np.asarray(outs, dtype=float),
        notes=notes,
    )


def load_azure(path: str | None = None, seed: int = 0) -> Trace:
    path = path or os.path.join(SHARED_TRACES, "azure_llm_2023", "AzureLLMInferenceTrace_code.csv")
    df = pd.read_csv(path)
    ts = pd.to_datetime(df["TIMESTAMP"], format="mixed")
    t = (ts - ts.min()).dt.total_seconds().to_numpy()
    return from_requests(
        "azure-code", t, df["ContextTokens"].to_numpy(float), df["GeneratedTokens"].to_numpy(float),
        ("Azure LLM inference trace 2023, code (Patel et al., ISCA'24), CC-BY-4.0",), seed=seed,
    )


def load_mooncake(path: str | None = None, seed: int = 0) -> Trace:
    path = path or os.path.join(SHARED_TRACES, "mooncake_fast25", "conversation_trace.jsonl")
    df = pd.read_json(path, lines=True)
    return from_requests(
        "mooncake", df["timestamp"].to_numpy(float) / 1000.0, df["input_length"].to_numpy(float),
        df["output_length"].to_numpy(float), ("Mooncake conversation trace (Qin et al., FAST'25), Apache-2.0",),
        seed=seed,
    )


def load_generic_csv(path: str, name: str | None = None, seed: int = 0) -> Trace:
    """One row per request: `timestamp` (seconds or ISO time), optional `input_tokens`, `output_tokens`."""
    df = pd.read_csv(path)
    if "timestamp" not in df.columns:
        raise ValueError(f"{path}: needs a 'timestamp' column")
    col = df["timestamp"]
    if pd.api.types.is_numeric_dtype(col):
        t = col.to_numpy(float)
    else:
        ts = pd.to_datetime(col, format="mixed")
        t = (ts - ts.min()).dt.total_seconds().to_numpy()
    rng = np.random.default_rng(seed)
    d_in, d_out = _token_sample(rng, len(df))
    ins = df["input_tokens"].to_numpy(float) if "input_tokens" in df.columns else d_in
    outs = df["output_tokens"].to_numpy(float) if "output_tokens" in df.columns else d_out
    return from_requests(name or os.path.basename(path), t, ins, outs, seed=seed)


# ---------------------------------------------------------------------------------------------
# Rates inside windows.


def interpolate_rate(rate_w: np.ndarray, window_s: int = WINDOW_S) -> np.ndarray:
    """Expected requests in each second from per-window mean rates; every window's total is kept.

    The cumulative expected count C is known at the window boundaries (C_j = window_s x the sum of
    the first j rates); C is interpolated by a monotone piecewise cubic Hermite curve (PCHIP:
    slope at an inner boundary the harmonic mean of the two windows' rates, 0 next to an idle
    window; the window's own rate at the ends) and each second gets C(t + 1) - C(t). With equal
    spacing the harmonic-mean slopes satisfy Fritsch-Carlson's monotonicity condition, so no
    second is negative, and C meets every boundary exactly, so each window sums to rate x window_s.
    """
    r = np.maximum(np.asarray(rate_w, dtype=float), 0.0)
    n = r.size
    if n == 0:
        return np.zeros(0)
    d = np.empty(n + 1)  # dC/dt at the boundaries (requests/s)
    d[0], d[-1] = r[0], r[-1]
    a, b = r[:-1], r[1:]
    both = (a > 0) & (b > 0)
    d[1:-1] = np.where(both, 2.0 * a * b / np.where(both, a + b, 1.0), 0.0)
    s = np.arange(window_s + 1, dtype=float) / window_s
    h10 = s**3 - 2 * s**2 + s  # Hermite basis (h00 multiplies C_j, h01 C_j+1: C_j + h01 x window total)
    h01 = -2 * s**3 + 3 * s**2
    h11 = s**3 - s**2
    total = r * window_s
    within = (h01[None, :] * total[:, None] + window_s * (h10[None, :] * d[:-1, None] + h11[None, :] * d[1:, None]))
    per_s = np.diff(within, axis=1)  # (windows, window_s): sums to `total` per row
    return np.asarray(np.maximum(per_s, 0.0).ravel(), dtype=float)


# ---------------------------------------------------------------------------------------------
# Bursts: a doubly stochastic Poisson process around the interpolated rate.


def _f(phi: float, scale_s: np.ndarray) -> np.ndarray:
    """sum_{|k|<T} (1 - |k|/T) phi^|k|: the variance of a T-second mean of a level with autocorrelation phi^k."""
    phi = min(max(phi, 0.0), 0.99999)
    t = np.asarray(scale_s, dtype=float)
    return np.asarray((1 + phi) / (1 - phi) - 2 * phi * (1 - phi**t) / (t * (1 - phi) ** 2), dtype=float)


@dataclass(frozen=True, slots=True)
class BurstModel:
    """Second-to-second burstiness of arrivals around a slowly varying rate (module docstring, 2.)."""

    dispersion: float  # D: index of dispersion of 1 s counts around the rate (1 = Poisson)
    weight_fast: float  # w: share of the excess variance in the fast level
    phi_fast: float  # per-second persistence of the fast level (mean hold 1/(1 - phi) s)
    phi_slow: float
    ca2: float  # within-second variability (Trace.ca2) of traces drawn with this model
    source: str = ""
    measured: tuple[float, ...] = ()  # IDC at IDC_SCALES of the trace it was fitted to (around its rate)

    def idc(self, scale_s: int | np.ndarray, window_s: int = WINDOW_S) -> np.ndarray:
        """The index of dispersion of `scale_s`-second counts around the rate this model produces."""
        t = np.asarray(scale_s, dtype=float)
        w = float(window_s)

        def g(phi: float) -> np.ndarray:
            return np.asarray(_f(phi, t) - (t / w) * _f(phi, np.asarray(w)), dtype=float)

        shape = self.weight_fast * g(self.phi_fast) + (1.0 - self.weight_fast) * g(self.phi_slow)
        return np.asarray(1.0 + (self.dispersion - 1.0) * shape, dtype=float)

    def acf(self, lag: int | np.ndarray, window_s: int = WINDOW_S) -> np.ndarray:
        """Autocorrelation of 1 s counts around the rate at `lag` seconds (lag >= 1).

        Cov(N_t, N_t+k) / rate = (D - 1) (rho(k) - Fbar / W), Var(N_t) / rate = 1 + (D - 1) (1 - Fbar / W),
        rho(k) = w phi_fast^k + (1 - w) phi_slow^k, Fbar the same mix of F(phi, W): the per-window
        rescaling removes the window mean's variance from every pair.
        """
        k = np.asarray(lag, dtype=float)
        w, win = self.weight_fast, float(window_s)
        rho = w * self.phi_fast**k + (1.0 - w) * self.phi_slow**k
        fbar = float(w * _f(self.phi_fast, np.asarray(win)) + (1.0 - w) * _f(self.phi_slow, np.asarray(win))) / win
        d1 = self.dispersion - 1.0
        return np.asarray(d1 * (rho - fbar) / (1.0 + d1 * (1.0 - fbar)), dtype=float)

    def describe(self) -> str:
        def hold(phi: float) -> float:
            return 1.0 / max(1.0 - phi, 1e-9)

        return (f"bursts from {self.source or 'a fitted model'}: IDC(1 s) {self.dispersion:.3g}, "
                f"{self.weight_fast:.0%} of it in a level held ~{hold(self.phi_fast):.3g} s, the rest ~"
                f"{hold(self.phi_slow):.3g} s; IDC(10 s) {float(self.idc(10)):.3g}, IDC(60 s) "
                f"{float(self.idc(60)):.3g}; within-second ca2 {self.ca2:.3g}")


POISSON = BurstModel(dispersion=1.0, weight_fast=1.0, phi_fast=0.0, phi_slow=0.0, ca2=1.0, source="Poisson")


def idc_around(counts: np.ndarray, expected: np.ndarray, scale_s: int) -> float:
    """Index of dispersion of `scale_s`-second counts around their expected value: sum (S-E)^2 / sum E."""
    n = min(counts.size, expected.size) // scale_s
    if n == 0:
        return float("nan")
    s = np.asarray(counts[: n * scale_s], dtype=float).reshape(n, scale_s).sum(axis=1)
    e = np.asarray(expected[: n * scale_s], dtype=float).reshape(n, scale_s).sum(axis=1)
    return float(((s - e) ** 2).sum() / max(float(e.sum()), 1e-12))


def window_expected(counts: np.ndarray, window_s: int = WINDOW_S) -> np.ndarray:
    """A recorded trace's own rate, replayed as a ServeGen one is: its full windows' means, interpolated."""
    n = counts.size // window_s
    return interpolate_rate(np.asarray(counts[: n * window_s], dtype=float).reshape(n, window_s).mean(axis=1),
                            window_s)


def fit_burst(trace: Trace, window_s: int = WINDOW_S, source: str | None = None) -> BurstModel:
    """Fit (D, w, phi_fast, phi_slow) to a per-request trace's IDC around its own interpolated rate.

    Least squares on log IDC at IDC_SCALES over the trace's full windows (Nelder-Mead from two
    starts; phi_slow >= phi_fast by construction). ca2 is the trace's measured within-second value.
    """
    from scipy.optimize import minimize  # type: ignore[import-untyped]

    if trace.seconds < 2 * window_s:
        raise ValueError(f"{trace.name}: needs at least two {window_s} s windows to fit bursts")
    expected = window_expected(trace.counts, window_s)
    counts = trace.counts[: expected.size]
    measured = np.array([idc_around(counts, expected, t) for t in IDC_SCALES])
    scales = np.asarray(IDC_SCALES, dtype=float)
    ca2 = float(np.mean(trace.ca2)) if trace.seconds else 1.0

    def model(q: np.ndarray) -> BurstModel:
        sig = 1.0 / (1.0 + np.exp(-np.clip(q[1:], -40.0, 40.0)))
        phi_fast = float(sig[1])
        return BurstModel(dispersion=1.0 + float(np.exp(min(q[0], 20.0))), weight_fast=float(sig[0]), phi_fast=phi_fast,
                          phi_slow=phi_fast + (1.0 - phi_fast) * float(sig[2]), ca2=ca2)

    def loss(q: np.ndarray) -> float:
        return float(((np.log(model(q).idc(scales, window_s)) - np.log(measured)) ** 2).sum())

    d0 = np.log(max(measured[0] - 1.0, 0.01))
    best = None
    for q0 in ([d0, 1.0, 1.0, 2.0], [d0, 0.0, -1.0, 4.0]):
        res = minimize(loss, np.asarray(q0), method="Nelder-Mead",
                       options={"maxiter": 4000, "xatol": 1e-7, "fatol": 1e-12})
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    return replace(model(best.x), source=source or trace.name, measured=tuple(float(x) for x in measured))


@functools.cache
def reference_burst(name: str = "azure") -> BurstModel:
    """The burst model fitted to a per-request trace in ../shared/traces ("azure", "mooncake"), or "poisson"."""
    if name == "poisson":
        return POISSON
    if name == "azure":
        return fit_burst(load_azure(), source="Azure LLM 2023 code trace")
    if name == "mooncake":
        return fit_burst(load_mooncake(), source="Mooncake FAST'25 conversation trace")
    raise ValueError(f"unknown burst reference {name!r} (azure, mooncake, poisson)")


def _held_levels(var: np.ndarray, phi: float, rng: np.random.Generator) -> np.ndarray:
    """Gamma levels of mean 1 and variance var[t] (drawn when redrawn), redrawn with probability 1 - phi."""
    n = var.size
    fresh = rng.random(n) >= phi
    fresh[0] = True
    at = np.flatnonzero(fresh)
    v = var[at]
    shape = 1.0 / np.maximum(v, 1e-12)
    levels = np.where(v > 1e-12, rng.standard_gamma(np.minimum(shape, 1e12)) / shape, 1.0)
    return np.asarray(levels[np.cumsum(fresh) - 1], dtype=float)


def burst_counts(expected: np.ndarray, burst: BurstModel, rng: np.random.Generator, window_s: int = WINDOW_S,
                 dispersion: np.ndarray | None = None) -> np.ndarray:
    """Per-second counts N_t ~ Poisson(expected_t x m_t) with the burst model's multiplier m_t.

    m_t = (fast_t + slow_t) / 2 with held gamma levels whose variances make Var(m_t) = (D - 1) /
    expected_t (capped at MAX_MULTIPLIER_VAR) and w of it fast; then rescaled per window (windows
    of window_s seconds from the start) so that sum expected x m = sum expected in every window.
    `dispersion` (per second) replaces the model's D where given.
    """
    lam = np.maximum(np.asarray(expected, dtype=float), 0.0)
    n = lam.size
    d = np.full(n, burst.dispersion) if dispersion is None else np.asarray(dispersion, dtype=float)
    excess = np.where(lam > 0, np.maximum(d - 1.0, 0.0) / np.maximum(lam, 1e-12), 0.0)
    excess = np.minimum(excess, MAX_MULTIPLIER_VAR)
    if not np.any(excess > 0):
        return np.asarray(rng.poisson(lam), dtype=float)
    w = min(max(burst.weight_fast, 0.0), 1.0)
    m = 0.5 * (_held_levels(4.0 * w * excess, burst.phi_fast, rng)
               + _held_levels(4.0 * (1.0 - w) * excess, burst.phi_slow, rng))
    nw = -(-n // window_s)
    pad = nw * window_s - n
    lam_w = np.pad(lam, (0, pad)).reshape(nw, window_s).sum(axis=1)
    got_w = np.pad(lam * m, (0, pad)).reshape(nw, window_s).sum(axis=1)
    ok = got_w > 1e-12
    factor = np.where(ok, lam_w / np.where(ok, got_w, 1.0), 1.0)
    m = np.where(np.repeat(ok, window_s)[:n], m * np.repeat(factor, window_s)[:n], 1.0)
    return np.asarray(rng.poisson(lam * m), dtype=float)


# ---------------------------------------------------------------------------------------------
# ServeGen: rates per 600 s window -> per-second counts.


def _fill_missing_windows(rate: np.ndarray, missing: np.ndarray, per_day: int) -> np.ndarray:
    """Fill gap windows from the same window a day earlier (or later), else by interpolation.

    Missing data is not zero load: replaying a gap as silence would let every policy scale in and
    then get hit by a fake step when data resumes.
    """
    out = rate.copy()
    for i in np.flatnonzero(missing):
        for j in (i - per_day, i + per_day, i - 2 * per_day, i + 2 * per_day):
            if 0 <= j < rate.size and not missing[j]:
                out[i] = rate[j]
                break
        else:
            good = np.flatnonzero(~missing)
            out[i] = np.interp(i, good, rate[good])
    return out


def _burst_model(burst: str | BurstModel) -> BurstModel:
    if isinstance(burst, BurstModel):
        return burst
    return reference_burst("azure" if burst == "servegen-cv" else burst)


def from_window_rates(name: str, rate_w: np.ndarray, *, window_s: int = WINDOW_S, scale: float = 1.0, seed: int = 0,
                      burst: str | BurstModel = "azure", missing_w: np.ndarray | None = None,
                      notes: tuple[str, ...] = ()) -> Trace:
    """Seconds from mean rates per window (req/s), as a ServeGen trace is replayed (module docstring)."""
    rate = np.asarray(rate_w, dtype=float)
    miss = np.zeros(rate.size, dtype=bool) if missing_w is None else np.asarray(missing_w, dtype=bool)
    return _synth(name, rate, miss, window_s, scale, seed, notes, burst)


def _synth(name: str, rate_w: np.ndarray, missing_w: np.ndarray, window_s: int, scale: float, seed: int,
           notes: tuple[str, ...], burst: str | BurstModel, disp_w: np.ndarray | None = None) -> Trace:
    rng = np.random.default_rng(seed)
    model = _burst_model(burst)
    expected = interpolate_rate(rate_w * scale, window_s)
    dispersion = None
    if burst == "servegen-cv":
        if disp_w is None:
            raise ValueError("burst='servegen-cv' needs the per-client ServeGen files")
        # Thinning a stream with dispersion D to a share p leaves dispersion 1 + p(D - 1).
        dispersion = np.repeat(1.0 + min(scale, 1.0) * (disp_w - 1.0), window_s)
        how = f"IDC(1 s) per window from the clients' fitted CVs (thinned x{min(scale, 1.0):g}); " + model.describe()
    else:
        how = model.describe()
    counts = burst_counts(expected, model, rng, window_s, dispersion)
    ins, outs = _token_sample(rng)
    mi, mo = float(ins.mean()), float(outs.mean())
    n = counts.size
    return Trace(
        name=name, counts=counts, in_tokens=counts * mi, out_tokens=counts * mo,
        ca2=np.full(n, model.ca2), missing=np.repeat(missing_w, window_s),
        in_sample=ins, out_sample=outs, expected=expected,
        notes=notes + ("rate inside each 600 s window: monotone cubic of the cumulative count (window totals kept)",
                       how,
                       (f"token lengths not in the trace: lognormal prompt median {DEFAULT_IN_MEDIAN:.0f}, "
                        f"answer median {DEFAULT_OUT_MEDIAN:.0f} (assumption)")),
    )


def _cv2_from_fit(cv: np.ndarray, dist: pd.Series, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """Squared CV of inter-arrival times from the fitted distribution (Gamma: 1/k; Weibull: from k)."""
    from math import lgamma

    out = np.where(np.isfinite(cv) & (cv > 0), cv**2, 1.0)
    g = (dist == "Gamma").to_numpy() & (p1 > 0)
    out[g] = 1.0 / p1[g]
    w = np.flatnonzero((dist == "Weibull").to_numpy() & (p1 > 0.05))
    for i in w:
        k = p1[i]
        m1 = np.exp(lgamma(1 + 1 / k))
        m2 = np.exp(lgamma(1 + 2 / k))
        out[i] = m2 / m1**2 - 1.0
    return np.clip(out, 0.05, 1e4)


def load_servegen_clients(folder: str, scale: float = 1.0, seed: int = 0, window_s: int = WINDOW_S,
                          burst: str | BurstModel = "azure") -> Trace:
    """Sum ServeGen per-client rate files; seconds drawn around the interpolated sum with `burst`.

    burst: "azure" (default), "mooncake", "poisson", a BurstModel, or "servegen-cv" (IDC(1 s) per
    window from the clients' fitted inter-arrival CVs, rate-weighted, time structure from Azure).
    """
    files = sorted(glob.glob(os.path.join(folder, "*.csv")))
    if not files:
        raise FileNotFoundError(folder)
    frames = [pd.read_csv(f, header=None, names=["t", "rate", "cv", "dist", "p1", "p2"]) for f in files]
    n = max(int(f["t"].max()) // window_s + 1 for f in frames)
    rate = np.zeros(n)
    var = np.zeros(n)  # sum of c_i^2 * rate_i
    for f in frames:
        idx = (f["t"].to_numpy() // window_s).astype(int)
        r = f["rate"].to_numpy(float)
        np.add.at(rate, idx, r)
        if burst == "servegen-cv":
            c2 = _cv2_from_fit(f["cv"].to_numpy(float), f["dist"], f["p1"].to_numpy(float), f["p2"].to_numpy(float))
            np.add.at(var, idx, c2 * r)
    missing = rate <= 0
    per_day = DAY_S // window_s
    disp = None
    if burst == "servegen-cv":
        disp = _fill_missing_windows(np.where(rate > 0, var / np.maximum(rate, 1e-12), 1.0), missing, per_day)
    rate = _fill_missing_windows(rate, missing, per_day)
    name = "servegen-" + os.path.basename(os.path.normpath(folder))
    return _synth(name, rate, missing, window_s, scale, seed,
                  ((f"ServeGen (Alibaba Model Studio, arXiv 2505.09999), Apache-2.0; {len(files)} clients, "
                    f"{int(missing.sum())} all-zero windows treated as missing; load x{scale:g}"),), burst, disp)


def load_servegen_aggregate(path: str, scale: float = 1.0, seed: int = 0, window_s: int = WINDOW_S,
                            burst: str | BurstModel = "azure") -> Trace:
    """Aggregated rate CSV (no per-client data): seconds drawn around the interpolated rate with `burst`."""
    if burst == "servegen-cv":
        raise ValueError("burst='servegen-cv' needs the per-client files (load_servegen_clients)")
    df = pd.read_csv(path)
    rate = df["total_rate_rps"].to_numpy(float)
    missing = rate <= 0
    rate = _fill_missing_windows(rate, missing, DAY_S // window_s)
    name = "servegen-agg-" + os.path.basename(path).split("_total")[0]
    return _synth(name, rate, missing, window_s, scale, seed,
                  (f"ServeGen aggregate (derived); load x{scale:g}",), burst)


def servegen_folder(name: str) -> str:
    return os.path.join(SHARED_TRACES, "servegen", "language", name)


# ---------------------------------------------------------------------------------------------
# Transformations for stress cases, and spans for tuning and evaluation.


def scale_load(trace: Trace, factor: float, seed: int = 0) -> Trace:
    """Replay the same span at `factor` x the load.

    The integer part superposes copies of the trace shifted by random offsets (so bursts stay
    bursts but do not all line up), the fraction is a binomial thinning of one more shifted copy.
    """
    if factor <= 0:
        raise ValueError("factor must be > 0")
    rng = np.random.default_rng(seed)
    n = trace.seconds
    whole, frac = int(factor), factor - int(factor)
    counts = np.zeros(n)
    ins = np.zeros(n)
    outs = np.zeros(n)
    exp = np.zeros(n) if trace.expected is not None else None
    shifts = [0] + [int(rng.integers(1, max(n, 2))) for _ in range(max(whole - 1, 0))]
    for s in shifts[:whole]:
        counts += np.roll(trace.counts, s)
        ins += np.roll(trace.in_tokens, s)
        outs += np.roll(trace.out_tokens, s)
        if exp is not None and trace.expected is not None:
            exp += np.roll(trace.expected, s)
    if frac > 0:
        s = int(rng.integers(0, max(n, 1)))
        c = np.roll(trace.counts, s)
        keep = rng.binomial(c.astype(np.int64), frac).astype(float) if np.all(c == np.round(c)) else c * frac
        ratio = np.divide(keep, c, out=np.zeros(n), where=c > 0)
        counts += keep
        ins += np.roll(trace.in_tokens, s) * ratio
        outs += np.roll(trace.out_tokens, s) * ratio
        if exp is not None and trace.expected is not None:
            exp += np.roll(trace.expected, s) * frac
    return replace(trace, name=f"{trace.name}-x{factor:g}", counts=counts, in_tokens=ins, out_tokens=outs,
                   expected=exp, notes=trace.notes + (f"load x{factor:g} by superposing shifted copies",))


def window(trace: Trace, start_s: int, length_s: int) -> Trace:
    sl = slice(start_s, start_s + length_s)
    return replace(trace, name=f"{trace.name}[{start_s}:{start_s + length_s}]", counts=trace.counts[sl],
                   in_tokens=trace.in_tokens[sl], out_tokens=trace.out_tokens[sl], ca2=trace.ca2[sl],
                   missing=trace.missing[sl], expected=None if trace.expected is None else trace.expected[sl])


def days(trace: Trace, first: int, last: int) -> Trace:
    """Days first..last (1-based, inclusive) of a trace that starts at midnight (ServeGen's t = 0).

    The seconds are those of the whole trace (same seed, same bursts): days 1-10 for tuning and
    11-14 for evaluation are two disjoint spans of one replay.
    """
    if not 1 <= first <= last:
        raise ValueError(f"days {first}..{last}: need 1 <= first <= last")
    start, length = (first - 1) * DAY_S, (last - first + 1) * DAY_S
    if start + length > trace.seconds:
        raise ValueError(f"{trace.name} has {trace.seconds / DAY_S:g} days, asked for {first}..{last}")
    return replace(window(trace, start, length), name=f"{trace.name}[d{first}-{last}]")


def tune_eval_split(trace: Trace, tune_days: int = 10) -> tuple[Trace, Trace]:
    """(days 1..tune_days, the remaining whole days): 10 + 4 of a 14-day ServeGen trace."""
    total = trace.seconds // DAY_S
    if not 1 <= tune_days < total:
        raise ValueError(f"{trace.name} has {total} whole days: cannot tune on {tune_days}")
    return days(trace, 1, tune_days), days(trace, tune_days + 1, total)


def splice(*traces: Trace, name: str | None = None) -> Trace:
    """Concatenate traces in time (token samples pooled)."""
    cat = np.concatenate
    expected = (cat([t.expected for t in traces if t.expected is not None])
                if all(t.expected is not None for t in traces) else None)
    return Trace(
        name=name or "+".join(t.name for t in traces),
        counts=cat([t.counts for t in traces]), in_tokens=cat([t.in_tokens for t in traces]),
        out_tokens=cat([t.out_tokens for t in traces]), ca2=cat([t.ca2 for t in traces]),
        missing=cat([t.missing for t in traces]), in_sample=cat([t.in_sample for t in traces]),
        out_sample=cat([t.out_sample for t in traces]), notes=sum((t.notes for t in traces), ()),
        expected=expected,
    )


def step_load(base_rps: float, factor: float, before_s: int, after_s: int, seed: int = 0) -> Trace:
    """Poisson load at base_rps, then factor x base_rps (issue 6: 1x -> 5x)."""
    rng = np.random.default_rng(seed)
    rate = np.concatenate([np.full(before_s, base_rps), np.full(after_s, base_rps * factor)])
    counts = rng.poisson(rate).astype(float)
    ins, outs = _token_sample(rng)
    n = rate.size
    return Trace(
        name=f"step-{factor:g}x", counts=counts, in_tokens=counts * ins.mean(), out_tokens=counts * outs.mean(),
        ca2=np.ones(n), missing=np.zeros(n, dtype=bool), in_sample=ins, out_sample=outs, expected=rate,
        notes=(f"synthetic Poisson step {base_rps:g} -> {base_rps * factor:g} req/s at t={before_s}s",),
    )


def load_trace(spec: str, seed: int = 0, burst: str | BurstModel | None = None) -> Trace:
    """CLI trace names: azure, mooncake, servegen:m-small[@scale][~burst], servegen-agg:m-mid[@scale][~burst],
    csv:PATH, step:RPSxF. burst (ServeGen only): azure (default), mooncake, poisson, servegen-cv."""
    kind, _, arg = spec.partition(":")
    if kind == "azure":
        return load_azure(arg or None, seed=seed)
    if kind == "mooncake":
        return load_mooncake(arg or None, seed=seed)
    if kind in ("servegen", "servegen-agg"):
        arg, _, b = arg.partition("~")
        name, _, sc = arg.partition("@")
        how: str | BurstModel = burst if burst is not None else (b or "azure")
        if isinstance(how, str) and how not in BURSTS:
            raise ValueError(f"unknown burst {how!r} in {spec!r} (one of {', '.join(BURSTS)})")
        if kind == "servegen":
            return load_servegen_clients(servegen_folder(name), scale=float(sc or 1.0), seed=seed, burst=how)
        path = os.path.join(SHARED_TRACES, "servegen", "aggregated", f"language_{name}_total_rate_10min.csv")
        return load_servegen_aggregate(path, scale=float(sc or 1.0), seed=seed, burst=how)
    if kind == "csv":
        return load_generic_csv(arg, seed=seed)
    if kind == "step":
        rps, _, f = arg.partition("x")
        return step_load(float(rps), float(f or 5), 1800, 1800, seed=seed)
    raise ValueError(f"unknown trace {spec!r}")


def read_json(path: str) -> dict[str, object]:
    with open(path) as fh:
        data: dict[str, object] = json.load(fh)
    return data
