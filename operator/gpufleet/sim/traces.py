"""Workload traces as per-second arrival series, loaded from the real formats in ../shared/traces.

Every loader returns a `Trace`: per-second request counts and token sums, a dispersion value for
arrivals *inside* a second, a mask of seconds whose data is missing, and a sample of per-request
token lengths (the simulator's service-time distribution). Per-second resolution is what the fluid
simulator (gpufleet.sim.engine) consumes; it keeps second-scale burstiness of per-request traces and
the daily/weekly cycles of the ServeGen rate traces while letting a 14-day run finish in seconds.

Formats (see ../shared/traces/README.md):
- Azure LLM 2023 (Patel et al., Splitwise, CC-BY-4.0): CSV `TIMESTAMP,ContextTokens,GeneratedTokens`.
- Mooncake FAST'25 (Apache-2.0): JSONL `{timestamp (ms), input_length, output_length, hash_ids}`.
- ServeGen (Apache-2.0) per-client CSV, headerless:
  `window_start_s, rate_req_per_s, cv, dist_name, param1, param2` (600 s windows; the fitted
  distribution is that of inter-arrival times); aggregated CSV
  `window_start_s,total_rate_rps,requests_in_window,active_clients`.
- Generic CSV for users' own logs: a header with `timestamp` (seconds as a number, or an ISO
  date-time) and optional `input_tokens`, `output_tokens`; one row per request.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Trace:
    name: str
    counts: np.ndarray  # requests arriving in each second (float: scaled traces may be fractional)
    in_tokens: np.ndarray  # sum of prompt tokens of those requests
    out_tokens: np.ndarray  # sum of generated tokens
    # Squared coefficient of variation of inter-arrival times inside a second (1 = Poisson).
    ca2: np.ndarray
    missing: np.ndarray  # bool per second: source data missing (filled, excluded from nothing)
    in_sample: np.ndarray  # per-request prompt lengths (service-time distribution)
    out_sample: np.ndarray
    notes: tuple[str, ...] = field(default=())

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


def from_requests(name: str, t_s: np.ndarray, ins: np.ndarray, outs: np.ndarray, notes: tuple[str, ...] = ()) -> Trace:
    """Bin per-request arrivals (seconds from trace start) into a per-second trace."""
    t = np.asarray(t_s, dtype=float)
    t = t - t.min()
    sec = np.floor(t).astype(np.int64)
    n = int(sec.max()) + 1
    counts = np.bincount(sec, minlength=n).astype(float)
    return Trace(
        name=name,
        counts=counts,
        in_tokens=np.bincount(sec, weights=ins, minlength=n),
        out_tokens=np.bincount(sec, weights=outs, minlength=n),
        ca2=np.ones(n),
        missing=np.zeros(n, dtype=bool),
        in_sample=np.asarray(ins, dtype=float),
        out_sample=np.asarray(outs, dtype=float),
        notes=notes,
    )


def load_azure(path: str | None = None) -> Trace:
    path = path or os.path.join(SHARED_TRACES, "azure_llm_2023", "AzureLLMInferenceTrace_code.csv")
    df = pd.read_csv(path)
    ts = pd.to_datetime(df["TIMESTAMP"], format="mixed")
    t = (ts - ts.min()).dt.total_seconds().to_numpy()
    return from_requests(
        "azure-code", t, df["ContextTokens"].to_numpy(float), df["GeneratedTokens"].to_numpy(float),
        ("Azure LLM inference trace 2023, code (Patel et al., ISCA'24), CC-BY-4.0",),
    )


def load_mooncake(path: str | None = None) -> Trace:
    path = path or os.path.join(SHARED_TRACES, "mooncake_fast25", "conversation_trace.jsonl")
    df = pd.read_json(path, lines=True)
    return from_requests(
        "mooncake", df["timestamp"].to_numpy(float) / 1000.0, df["input_length"].to_numpy(float),
        df["output_length"].to_numpy(float), ("Mooncake conversation trace (Qin et al., FAST'25), Apache-2.0",),
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
    return from_requests(name or os.path.basename(path), t, ins, outs)


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


def _counts_from_rates(rate_s: np.ndarray, disp_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-second counts of a renewal process with the given rate and dispersion index (c_a^2).

    For a renewal process the count in a window of length T has mean rate*T and variance about
    c_a^2*rate*T, so over-dispersed seconds (c_a^2 > 1) are drawn from a gamma-Poisson mixture
    (negative binomial) and under-dispersed ones from a normal with that variance, rounded.
    Drawing 10^8-10^9 individual inter-arrival times for 14 days would add nothing at 1 s resolution.
    """
    lam = np.maximum(rate_s, 0.0)
    counts = np.zeros_like(lam)
    over = (disp_s > 1.0) & (lam > 0)
    if over.any():
        shape = lam[over] / (disp_s[over] - 1.0)
        counts[over] = rng.poisson(rng.gamma(shape, (disp_s[over] - 1.0)))
    under = (~over) & (lam > 0)
    if under.any():
        sd = np.sqrt(np.maximum(disp_s[under], 0.05) * lam[under])
        counts[under] = np.maximum(0.0, np.round(rng.normal(lam[under], sd)))
    return np.asarray(counts, dtype=float)


def _synth(name: str, rate_w: np.ndarray, disp_w: np.ndarray, missing_w: np.ndarray, window_s: int,
           scale: float, seed: int, notes: tuple[str, ...]) -> Trace:
    rng = np.random.default_rng(seed)
    rate_s = np.repeat(rate_w * scale, window_s)
    # Thinning a stream with dispersion D to a share p leaves dispersion 1 + p(D - 1): a service with a
    # tenth of the traffic sees the same clients' bursts, each a tenth as large.
    disp_w = 1.0 + min(scale, 1.0) * (disp_w - 1.0)
    disp_s = np.repeat(disp_w, window_s)
    counts = _counts_from_rates(rate_s, disp_s, rng)
    ins, outs = _token_sample(rng)
    mi, mo = float(ins.mean()), float(outs.mean())
    return Trace(
        name=name, counts=counts, in_tokens=counts * mi, out_tokens=counts * mo,
        ca2=np.minimum(disp_s, 50.0), missing=np.repeat(missing_w, window_s),
        in_sample=ins, out_sample=outs,
        notes=notes + (f"token lengths not in the trace: lognormal prompt median {DEFAULT_IN_MEDIAN:.0f}, "
                       f"answer median {DEFAULT_OUT_MEDIAN:.0f} (assumption)",),
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


def load_servegen_clients(folder: str, scale: float = 1.0, seed: int = 0, window_s: int = 600) -> Trace:
    """Sum ServeGen per-client rate files; each client's burstiness (fitted CV) sets the dispersion."""
    files = sorted(glob.glob(os.path.join(folder, "*.csv")))
    if not files:
        raise FileNotFoundError(folder)
    frames = [pd.read_csv(f, header=None, names=["t", "rate", "cv", "dist", "p1", "p2"]) for f in files]
    n = max(int(f["t"].max()) // window_s + 1 for f in frames)
    rate = np.zeros(n)
    var = np.zeros(n)  # sum of c_i^2 * rate_i: variance of the summed count per second
    for f in frames:
        idx = (f["t"].to_numpy() // window_s).astype(int)
        r = f["rate"].to_numpy(float)
        c2 = _cv2_from_fit(f["cv"].to_numpy(float), f["dist"], f["p1"].to_numpy(float), f["p2"].to_numpy(float))
        np.add.at(rate, idx, r)
        np.add.at(var, idx, c2 * r)
    missing = rate <= 0
    disp = np.where(rate > 0, var / np.maximum(rate, 1e-12), 1.0)
    per_day = 86400 // window_s
    rate = _fill_missing_windows(rate, missing, per_day)
    disp = _fill_missing_windows(disp, missing, per_day)
    name = "servegen-" + os.path.basename(os.path.normpath(folder))
    return _synth(name, rate, disp, missing, window_s, scale, seed,
                  (f"ServeGen (Alibaba Model Studio, arXiv 2505.09999), Apache-2.0; {len(files)} clients, "
                   f"{int(missing.sum())} all-zero windows treated as missing; load x{scale:g}",))


def load_servegen_aggregate(path: str, scale: float = 1.0, seed: int = 0, window_s: int = 600) -> Trace:
    """Aggregated rate CSV: Poisson arrivals at the window's total rate (no per-client burstiness)."""
    df = pd.read_csv(path)
    rate = df["total_rate_rps"].to_numpy(float)
    missing = rate <= 0
    rate = _fill_missing_windows(rate, missing, 86400 // window_s)
    name = "servegen-agg-" + os.path.basename(path).split("_total")[0]
    return _synth(name, rate, np.ones_like(rate), missing, window_s, scale, seed,
                  (f"ServeGen aggregate (derived), Poisson inside windows; load x{scale:g}",))


def servegen_folder(name: str) -> str:
    return os.path.join(SHARED_TRACES, "servegen", "language", name)


# ---------------------------------------------------------------------------------------------
# Transformations for stress cases.


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
    shifts = [0] + [int(rng.integers(1, max(n, 2))) for _ in range(max(whole - 1, 0))]
    for s in shifts[:whole]:
        counts += np.roll(trace.counts, s)
        ins += np.roll(trace.in_tokens, s)
        outs += np.roll(trace.out_tokens, s)
    if frac > 0:
        s = int(rng.integers(0, max(n, 1)))
        c = np.roll(trace.counts, s)
        keep = rng.binomial(c.astype(np.int64), frac).astype(float) if np.all(c == np.round(c)) else c * frac
        ratio = np.divide(keep, c, out=np.zeros(n), where=c > 0)
        counts += keep
        ins += np.roll(trace.in_tokens, s) * ratio
        outs += np.roll(trace.out_tokens, s) * ratio
    return replace(trace, name=f"{trace.name}-x{factor:g}", counts=counts, in_tokens=ins, out_tokens=outs,
                   notes=trace.notes + (f"load x{factor:g} by superposing shifted copies",))


def window(trace: Trace, start_s: int, length_s: int) -> Trace:
    sl = slice(start_s, start_s + length_s)
    return replace(trace, name=f"{trace.name}[{start_s}:{start_s + length_s}]", counts=trace.counts[sl],
                   in_tokens=trace.in_tokens[sl], out_tokens=trace.out_tokens[sl], ca2=trace.ca2[sl],
                   missing=trace.missing[sl])


def splice(*traces: Trace, name: str | None = None) -> Trace:
    """Concatenate traces in time (token samples pooled)."""
    cat = np.concatenate
    return Trace(
        name=name or "+".join(t.name for t in traces),
        counts=cat([t.counts for t in traces]), in_tokens=cat([t.in_tokens for t in traces]),
        out_tokens=cat([t.out_tokens for t in traces]), ca2=cat([t.ca2 for t in traces]),
        missing=cat([t.missing for t in traces]), in_sample=cat([t.in_sample for t in traces]),
        out_sample=cat([t.out_sample for t in traces]), notes=sum((t.notes for t in traces), ()),
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
        ca2=np.ones(n), missing=np.zeros(n, dtype=bool), in_sample=ins, out_sample=outs,
        notes=(f"synthetic Poisson step {base_rps:g} -> {base_rps * factor:g} req/s at t={before_s}s",),
    )


def load_trace(spec: str, seed: int = 0) -> Trace:
    """CLI trace names: azure, mooncake, servegen:m-small[@scale], servegen-agg:m-mid, csv:PATH, step:RPSxF."""
    kind, _, arg = spec.partition(":")
    if kind == "azure":
        return load_azure(arg or None)
    if kind == "mooncake":
        return load_mooncake(arg or None)
    if kind == "servegen":
        name, _, sc = arg.partition("@")
        return load_servegen_clients(servegen_folder(name), scale=float(sc or 1.0), seed=seed)
    if kind == "servegen-agg":
        name, _, sc = arg.partition("@")
        path = os.path.join(SHARED_TRACES, "servegen", "aggregated", f"language_{name}_total_rate_10min.csv")
        return load_servegen_aggregate(path, scale=float(sc or 1.0), seed=seed)
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
