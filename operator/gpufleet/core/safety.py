"""Missing and stale metrics are values, not exceptions: they put the decision in safe mode.

In safe mode the fleet never shrinks (a scrape outage looks exactly like zero load, and scaling
down on it is how autoscalers cause outages); it may still grow on the signals that do exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.types import Observation

# Observation field -> (SLO field, label used in messages). Only targets the user set count.
# The labels say what each value is: a p95 is a quantile (histogram or summary), a mean a mean.
LATENCY_SIGNALS: tuple[tuple[str, str, str], ...] = (
    ("ttft_p95_ms", "ttft_p95_ms", "ttft p95"),
    ("latency_p95_ms", "latency_p95_ms", "latency p95"),
    ("latency_mean_ms", "latency_mean_ms", "latency mean"),
    ("itl_p95_ms", "itl_p95_ms", "inter-token p95"),
    ("queue_time_ms", "queue_time_ms", "queue time"),
)

_LATENCY_FIELDS = frozenset(obs_f for obs_f, _, _ in LATENCY_SIGNALS)
_VALUE_FIELDS = ("queue_depth", "queue_time_ms", "ttft_p95_ms", "latency_p95_ms", "request_rate",
                 "latency_mean_ms", "itl_p95_ms", "kv_cache_utilization", "gpu_utilization")


@dataclass(frozen=True, slots=True)
class Health:
    observation: Observation  # cleaned: NaN/inf/negative values and stale samples are None
    missing: tuple[str, ...]  # what is missing, for the message; empty when healthy

    @property
    def safe_mode(self) -> bool:
        return bool(self.missing)


def _clean(value: float | None) -> float | None:
    """Prometheus hands back NaN for 0/0 and +Inf for empty histograms: both mean 'unknown'."""
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def clean(observation: Observation) -> Observation:
    dirty: dict[str, Any] = {f: _clean(v) for f in _VALUE_FIELDS if (v := getattr(observation, f)) != _clean(v)}
    return replace(observation, **dirty) if dirty else observation


def key_signals(spec: InferenceServiceSpec) -> tuple[str, ...]:
    """Signals without which a scale-down cannot be justified.

    Queue depth is the primary signal; the request rate is what shows that capacity is unused
    (the queue reads ~0 both at 10 % and at 90 % utilisation); each latency target the user set
    must be observable, or we cannot tell whether it is met.
    """
    targets = tuple(obs_f for obs_f, slo_f, _ in LATENCY_SIGNALS if getattr(spec.slo, slo_f) is not None)
    # GPU utilisation is read only when a target is set, and then it must be seen like a latency
    # target. The KV cache is not key: it only adds replicas (capacity.kv_cache_need), and without
    # it the queue and the rate still judge a scale-down.
    gpu = ("gpu_utilization",) if spec.slo.gpu_utilization_percent is not None else ()
    return ("queue_depth", "request_rate", *targets, *gpu)


def assess(spec: InferenceServiceSpec, observation: Observation, now: float) -> Health:
    obs = clean(observation)
    if obs.sampled_at is None:
        return Health(Observation(), ("no metrics sample",))
    age = now - obs.sampled_at
    stale_after = spec.metrics.stale_after_seconds
    if age > stale_after:
        # Every value of a stale sample is stale: none of them may drive a decision.
        return Health(Observation(sampled_at=obs.sampled_at), (f"metrics stale ({age:.0f}s old > {stale_after}s)",))
    idle = obs.request_rate == 0.0
    missing = tuple(
        name
        for name in key_signals(spec)
        # With no requests in the window a latency percentile is undefined (Prometheus: NaN),
        # not missing: an idle service is not a blind one.
        if getattr(obs, name) is None and not (idle and name in _LATENCY_FIELDS)
    )
    return Health(obs, tuple(f"{name} missing" for name in missing))
