"""How many serving replicas the load needs, signal by signal.

Each signal gives a need in replicas with its own reason and one-line explanation; the raw need
is the worst (largest) of them, clamped to the configured bounds. Every function here is
monotone in load: more queue, latency, rate or forecast never gives a smaller need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.safety import LATENCY_SIGNALS
from gpufleet.core.stabilize import max_up_step
from gpufleet.core.types import ForecastSummary, Observation

# Reason codes (short CamelCase, stable: they appear in Events, status and dashboards).
QUEUE_DEPTH = "QueueDepth"
LATENCY = "Latency"
FORECAST_LOAD = "ForecastLoad"
REQUEST_RATE = "RequestRate"
MIN_REPLICAS = "MinReplicas"
MAX_REPLICAS = "MaxReplicas"
KV_CACHE = "KVCache"
GPU_UTILIZATION = "GpuUtilization"

# Float noise (e.g. 24.000000001 / 8) must not buy a GPU.
_EPS = 1e-9

# Learning replica throughput: only from samples where replicas were actually busy (queue per
# replica near its target) and the latency SLO held; otherwise rate/replica measures idleness.
LEARN_QUEUE_BAND = (0.5, 2.0)
LEARN_ALPHA = 0.2


# Latency percentiles are computed over a window (PromQL rate/histogram_quantile over ~1 min):
# a serving count is "settled" (reflected in them) once unchanged this long.
LATENCY_SETTLE_S = 60.0


@dataclass(frozen=True, slots=True)
class Settled:
    serving_seen: int
    since: float
    settled: int  # the serving count latency percentiles describe


def settle(
    serving: int, now: float, seen: int | None, since: float | None, settled: int | None
) -> Settled:
    """Track how long the serving count has been unchanged, and the last settled count."""
    if seen != serving or since is None or since > now:
        since = now
    if settled is None or now - since >= LATENCY_SETTLE_S:
        settled = serving
    return Settled(serving, since, settled)


@dataclass(frozen=True, slots=True)
class Need:
    reason: str
    replicas: int
    message: str


# Far beyond any replicas.max (<= 10000): huge or infinite ratios are clamped before ceil.
_HUGE = 1e6

# Below this, a learned throughput is noise (a near-zero rate over a busy queue), not capacity.
MIN_LEARNED_RPS = 1e-3


def ceil_replicas(x: float) -> int:
    if math.isnan(x) or x <= 0:
        return 0
    return math.ceil(min(x, _HUGE) - _EPS)


def bounds(spec: InferenceServiceSpec) -> tuple[int, int]:
    """(min, max) serving replicas; min is capped by max should the CEL rule have been bypassed."""
    hi = spec.replicas.max
    return min(spec.replicas.min, hi), hi


def rps_per_replica(spec: InferenceServiceSpec, learned: float | None) -> float | None:
    """Requests/s to plan per replica: the set or learned figure at the utilisation target."""
    util = spec.scaling.target_utilization
    if spec.scaling.target_rps_per_replica is not None:
        return spec.scaling.target_rps_per_replica * util
    if learned is None or not math.isfinite(learned) or learned < MIN_LEARNED_RPS:
        return None
    return learned * util


# A backlog is asked to drain within this many intervals. One: a queued request already waits
# longer than a TTFT target of a second or so, and what the drain asks for beyond the arrivals is
# bounded by the old queue/queueDepthPerReplica figure (which asked for hundreds on a transient).
# Measured on ServeGen 14 d, one interval beat three on both m-small and m-mid (TUNING.md).
DRAIN_INTERVALS = 1


def drain_s(spec: InferenceServiceSpec) -> float:
    return float(DRAIN_INTERVALS * spec.scaling.interval_seconds)


def queue_growth(obs: Observation, prev: tuple[float, float] | None) -> float | None:
    """Requests/s the queue grew by since the previous sample; None without two distinct samples."""
    if prev is None or obs.queue_depth is None or obs.sampled_at is None:
        return None
    q0, t0 = prev
    dt = obs.sampled_at - t0
    return (obs.queue_depth - q0) / dt if dt > 0 else None


def arrival_estimate(obs: Observation, serving: int, rps: float, prev: tuple[float, float] | None) -> float:
    """Requests/s arriving now, with the queue above its target. The windowed rate lags a step by
    up to its window; a queue above target means saturated replicas, which serve about `rps`
    each, so unless the queue is shrinking arrivals are at least that plus its growth."""
    rate = obs.request_rate or 0.0
    growth = queue_growth(obs, prev) or 0.0
    if growth < 0:  # draining: the replicas keep up, the windowed rate is the best figure
        return rate
    return max(rate, serving * rps + growth)


# A sample is extrapolated at most this far: beyond it, the sample is stale (safety's business).
MAX_EXTRAPOLATE_S = 60.0


def backlog_now(obs: Observation, prev: tuple[float, float] | None, now: float | None) -> float:
    """The queue now, not at the last scrape: a growing queue keeps growing at its measured rate
    while the sample ages (up to a scrape interval plus a loop interval after a step)."""
    q = obs.queue_depth or 0.0
    growth = queue_growth(obs, prev)
    if growth is None or growth <= 0 or now is None or obs.sampled_at is None:
        return q
    return q + growth * min(max(now - obs.sampled_at, 0.0), MAX_EXTRAPOLATE_S)


def queue_need(
    spec: InferenceServiceSpec,
    obs: Observation,
    serving: int,
    rps: float | None = None,
    prev_queue: tuple[float, float] | None = None,
    now: float | None = None,
) -> Need | None:
    """A queue above target asks for what serves the arrivals and drains the backlog in `drain_s`:
    (arrivals + backlog / drain) / rps-per-replica, the backlog being the sampled queue plus its
    growth since the sample (`backlog_now`). Bounded by the old one-replica-per-target-queue
    figure, which it never exceeds; without a throughput figure that figure is all we have.
    """
    if obs.queue_depth is None:
        return None
    per = spec.slo.queue_depth_per_replica
    n = ceil_replicas(obs.queue_depth / per)
    cmp = ">" if obs.queue_depth > per * serving else "<="
    text = f"queue {obs.queue_depth:g} {cmp} {per:g}/replica x {serving} serving"
    # Without a request rate (safe mode) arrivals cannot be estimated: one replica per target.
    if rps is not None and obs.request_rate is not None and obs.queue_depth > per * serving:
        arrivals = arrival_estimate(obs, serving, rps, prev_queue)
        queued = backlog_now(obs, prev_queue, now)
        drain = drain_s(spec)
        # At least one more than serves now: a queue above its target still adds a replica (the
        # user's target keeps its meaning), and the need stays monotone across the target, where
        # the old figure is at most `serving` below it and at least `serving + 1` above it.
        d = max(serving + 1, ceil_replicas((arrivals + queued / drain) / rps))
        if d < n:
            grown = f", {queued:.0f} queued by now" if queued > obs.queue_depth else ""
            return Need(
                QUEUE_DEPTH, d, f"{text}: need {d} (arrivals {arrivals:.1f} rps + backlog over {drain:.0f}s{grown})"
            )
    return Need(QUEUE_DEPTH, n, f"{text}: need {n}")


def backlog(spec: InferenceServiceSpec, obs: Observation, serving: int) -> bool:
    """A queue above its target: the capacity asked for to drain it is transient."""
    return obs.queue_depth is not None and obs.queue_depth > spec.slo.queue_depth_per_replica * max(serving, 1)


def sustained_need(needs: list[Need], *, backlog_recent: bool) -> int:
    """The need without what a transient backlog adds: what the load itself asks for.

    The queue need is backlog-driven; so are latency breaches while a backlog is within one
    latency window (the percentiles cover that window, and a drained backlog still shows in
    them for a minute). The warm pool learns load steps from what remains (rate, forecast, min,
    latency without a backlog). The scale-down window still holds the full need: holding the
    backlog's drain capacity for the whole window was measured to buy attainment on ServeGen
    (reports/bench/TUNING.md), so it is not released early.
    """
    transient = {QUEUE_DEPTH, LATENCY} if backlog_recent else {QUEUE_DEPTH}
    return max((n.replicas for n in needs if n.reason not in transient), default=0)


def latency_needs(spec: InferenceServiceSpec, obs: Observation, serving: int) -> list[Need]:
    """A breached latency target asks for capacity in proportion to the breach.

    Latency is not linear in replicas, but proportional is what HPA does for any metric and the
    fast path re-evaluates every interval; the step limit keeps one bad sample from exploding.
    The base is the *settled* serving count (see `settle`): replicas added a moment ago are
    not in the percentiles yet, and scaling them by the same breach again would compound.
    """
    out: list[Need] = []
    for obs_field, slo_field, label in LATENCY_SIGNALS:
        target = getattr(spec.slo, slo_field)
        value = getattr(obs, obs_field)
        if target is None or value is None or value <= target:
            continue
        n = max(1, ceil_replicas(max(serving, 1) * value / target))
        out.append(Need(LATENCY, n, f"{label} {value:.0f}ms > {target}ms target x {serving} serving: need {n}"))
    return out


def utilization_need(reason: str, label: str, value: float | None, target: float, serving: int,
                     unit: str = "") -> Need | None:
    """A utilisation averaged over the serving replicas, held at `target` by proportional sizing
    (as an HPA does for any utilisation): ceil(serving x value / target). Spreading the load over
    more replicas lowers each one's share, so this is also the floor a scale-down may not cross.
    Missing value or nothing serving: no need (None), never a need of zero."""
    if value is None or serving <= 0:
        return None
    n = ceil_replicas(serving * value / target)
    cmp = ">" if value > target else "<="
    return Need(reason, n, f"{label} {value:.3g}{unit} {cmp} {target:g}{unit} target x {serving} serving: need {n}")


def kv_cache_need(spec: InferenceServiceSpec, obs: Observation, serving: int) -> Need | None:
    """TensorRT-LLM's KV cache is a saturation signal: at full cache new requests wait for blocks
    (or running ones are evicted and recomputed) while the queue may still read short. Replicas are
    added in proportion once the mean fraction in use passes slo.kvCacheUtilization, before it
    fills (1.0: off)."""
    target = spec.slo.kv_cache_utilization
    if target >= 1.0:
        return None
    return utilization_need(KV_CACHE, "kv cache", obs.kv_cache_utilization, target, serving)


def gpu_need(spec: InferenceServiceSpec, obs: Observation, serving: int) -> Need | None:
    """Mean GPU utilisation (DCGM) held at slo.gpuUtilizationPercent; no target: not a signal."""
    target = spec.slo.gpu_utilization_percent
    if target is None:
        return None
    return utilization_need(GPU_UTILIZATION, "gpu utilisation", obs.gpu_utilization, float(target), serving, "%")


def forecast_need(
    spec: InferenceServiceSpec, forecast: ForecastSummary | None, rps: float | None, load: int, standby: int = 0
) -> Need | None:
    """Replicas for the forecast's upper quantile over the time-to-ready horizon.

    Trusted up to one scale-up step above what the observed load needs now (`load`): over one
    cold start a calibrated forecast rarely asks for more, and a forecast fitted on a few
    minutes of bursty history can ask for 40x the load (its interval is a guess, not a
    backtest). A real ramp still pulls capacity ahead: the cap rises with the load every step.

    Ready standbys (`standby`) count toward that step: they join within a tick when the load
    shows up, so the untested part of the band is covered once, not twice. Without this, a band
    left wide by a level shift in the history (FINDINGS item 6: 245 rps upper for a flat 100)
    held a full step of serving replicas above the load on top of the pool for twenty minutes.
    """
    if forecast is None or not spec.forecast.enabled or rps is None:
        return None
    upper = forecast.upper_rps
    if not math.isfinite(upper) or upper < 0:
        return None
    n = ceil_replicas(upper / rps)
    step = max_up_step(spec, load)
    cap = load + max(step - max(standby, 0), 1)
    text = (
        f"forecast {upper:.1f} rps (upper, {forecast.method}, {forecast.horizon_s:.0f}s ahead) "
        f"/ {rps:.2f} rps/replica: need {n}"
    )
    if n > cap:
        covered = f" less {standby} standby" if standby > 0 else ""
        text += f", trusted up to {cap} (load needs {load}, plus one scale-up step{covered})"
        n = cap
    return Need(FORECAST_LOAD, n, text)


def rate_need(obs: Observation, rps: float | None) -> Need | None:
    if obs.request_rate is None or rps is None:
        return None
    n = ceil_replicas(obs.request_rate / rps)
    return Need(REQUEST_RATE, n, f"rate {obs.request_rate:.1f} rps / {rps:.2f} rps/replica: need {n}")


def all_needs(
    spec: InferenceServiceSpec,
    obs: Observation,
    forecast: ForecastSummary | None,
    rps: float | None,
    serving: int,
    latency_base: int,
    prev_queue: tuple[float, float] | None = None,
    *,
    now: float | None = None,
    backlog_recent: bool = False,
    standby: int = 0,
) -> list[Need]:
    """Every signal's need, in tie-break order (the first of equal needs names the reason).

    While a backlog is in the latency window (`backlog_recent`), a latency breach is that
    backlog's wait: the queue need sizes its drain from the backlog itself, so latency asks for
    no more than the larger of what serves now and what the queue asks for (the percentile of a
    drained backlog otherwise scales the settled count up to replicas.max for a minute)."""
    needs: list[Need] = []
    q = queue_need(spec, obs, serving, rps, prev_queue, now)
    if q is not None:
        needs.append(q)
    lat = latency_needs(spec, obs, latency_base)
    if backlog_recent and rps is not None and q is not None:
        ceiling = max(serving, q.replicas)
        lat = [
            n if n.replicas <= ceiling else Need(LATENCY, ceiling, f"{n.message}, backlog's wait: need {ceiling}")
            for n in lat
        ]
    needs.extend(lat)
    needs.extend(n for n in (kv_cache_need(spec, obs, serving), gpu_need(spec, obs, serving)) if n is not None)
    r = rate_need(obs, rps)
    load = max((n.replicas for n in (*needs, *([r] if r else []))), default=0)
    f = forecast_need(spec, forecast, rps, load, standby)
    for n in (f, r):
        if n is not None:
            needs.append(n)
    lo, _ = bounds(spec)
    needs.append(Need(MIN_REPLICAS, lo, f"min replicas {lo}"))
    return needs


def worst(spec: InferenceServiceSpec, needs: list[Need]) -> Need:
    """The largest need, clamped to [min, max]; the reason says which bound bit, if any."""
    top = needs[0]
    for n in needs[1:]:
        if n.replicas > top.replicas:
            top = n
    lo, hi = bounds(spec)
    if top.replicas > hi:
        return Need(MAX_REPLICAS, hi, f"{top.message}; capped at max replicas {hi}")
    if top.replicas < lo:  # cannot happen: the min need is always in the list; kept for safety
        return Need(MIN_REPLICAS, lo, f"min replicas {lo}")
    if top.reason == MIN_REPLICAS and len(needs) > 1:
        load = max(n.replicas for n in needs if n.reason != MIN_REPLICAS)
        return Need(MIN_REPLICAS, lo, f"load needs {load}; min replicas {lo}")
    return top


def learn_rps(
    spec: InferenceServiceSpec, obs: Observation, serving: int, learned: float | None, latency_ok: bool
) -> float | None:
    """Update the learned requests/s per replica from a sample where replicas were busy."""
    if spec.scaling.target_rps_per_replica is not None:
        return learned
    if obs.queue_depth is None or obs.request_rate is None or serving <= 0 or not latency_ok:
        return learned
    per_replica_queue = obs.queue_depth / serving / spec.slo.queue_depth_per_replica
    if not (LEARN_QUEUE_BAND[0] <= per_replica_queue <= LEARN_QUEUE_BAND[1]) or obs.request_rate <= 0:
        return learned
    sample = obs.request_rate / serving
    if sample < MIN_LEARNED_RPS:
        return learned
    if learned is None:
        return sample
    return (1 - LEARN_ALPHA) * learned + LEARN_ALPHA * sample
