"""Metrics adapter: Triton / TensorRT-LLM signals from Prometheus, as an Observation.

Built-in PromQL (overridable per service in spec.metrics.queries) selects the service's pods by
namespace and pod name (`<service>-ondemand-<rs-hash>-<pod-hash>`, `<service>-spot-…`, the Deployments
the operator owns) and the Triton `model` label. Every failure mode (Prometheus down, HTTP error, empty
result, NaN, stale samples) becomes a *missing* value, never an exception and never a zero, so the
core's safe mode can hold capacity instead of scaling down blindly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from datetime import datetime, timezone
from string import Template

from prometheus_api_client import PrometheusConnect
from prometheus_client import Counter
from urllib3.util.retry import Retry

from gpufleet.api.models import Backend, InferenceServiceSpec
from gpufleet.core.types import Observation

log = logging.getLogger(__name__)

# A pod-name segment the Deployment/ReplicaSet controllers generate (pod-template hash, random pod
# suffix): Kubernetes' "safe" alphabet has no vowels, so a segment is never "ondemand" or "spot". That
# keeps service `chat` from matching pods of a service `chat-spot` (`chat-spot-ondemand-<h>-<p>`), as
# the former `chat-(ondemand|spot)-.*` did. One segment is enough for names the 63-character limit
# truncated (`<rs-name>` cut, then the suffix appended) and for hand-named pods like `chat-ondemand-0`.
POD_SEGMENT = "[b-df-hj-np-tv-z0-9]+"
_SEL = f'namespace="$namespace",pod=~"$service-(ondemand|spot)-{POD_SEGMENT}(-{POD_SEGMENT})?",model="$model"'

# Every PromQL request the operator sends: kind="service" (one service's query, PrometheusMetrics) or
# kind="batched" (one query for all services, gpufleet.adapters.fleet_metrics).
PROMQL_QUERIES = Counter("gpufleet_promql_queries", "PromQL queries sent to Prometheus", ["kind"])

# Triton's per-model request counters: successes, and failures by reason (REJECTED, CANCELED, ...).
REQUEST_COUNTERS = "nv_inference_request_(success|failure)"

# A plain-Triton pod is idle only after no model execution finished on it for this long (see in_flight).
IDLE_WINDOW = "30s"

# Built-in queries. Triton's nv_inference_*_duration_us are cumulative counters: per-request means
# are rate(duration) / rate(request_success). nv_inference_pending_request_count is the honest
# instantaneous queue gauge.
TRITON_QUERIES: dict[str, str] = {
    "queue_depth": f"sum(nv_inference_pending_request_count{{{_SEL}}})",
    "queue_time_ms": (
        f"sum(rate(nv_inference_queue_duration_us{{{_SEL}}}[1m]))"
        f" / clamp_min(sum(rate(nv_inference_request_success{{{_SEL}}}[1m])), 1e-9) / 1000"
    ),
    "latency_p95_ms": (
        # Mean end-to-end latency; Triton exposes no latency histogram by default.
        f"sum(rate(nv_inference_request_duration_us{{{_SEL}}}[1m]))"
        f" / clamp_min(sum(rate(nv_inference_request_success{{{_SEL}}}[1m])), 1e-9) / 1000"
    ),
    "ttft_p95_ms": (
        f"histogram_quantile(0.95, sum by (le) (rate(nv_inference_first_response_histogram_ms_bucket{{{_SEL}}}[1m])))"
    ),
    # Every request that reached the server, rejected and failed ones included (a gateway's view:
    # a server that rejects under load must not read as less load).
    "request_rate": f'sum(rate({{__name__=~"{REQUEST_COUNTERS}",{_SEL}}}[1m]))',
    # Per pod (one series each): > 0 while the pod may still hold a request, for draining before
    # deletion. Triton has no gauge of executing requests (the pending gauge counts queued ones only,
    # the counters move at completion), so a pod also counts busy (+1) while a model execution
    # finished on it within IDLE_WINDOW: a request that started when the one before it finished is
    # still covered. docs/draining.md says what this cannot see and what covers that.
    "in_flight": (
        f"sum by (pod) (nv_inference_pending_request_count{{{_SEL}}})"
        f" + (sum by (pod) (increase(nv_inference_exec_count{{{_SEL}}}[{IDLE_WINDOW}])) > bool 0)"
    ),
    # Time of the newest queue-gauge sample: older than staleAfterSeconds means "stale".
    "sampled_at": f"max(timestamp(nv_inference_pending_request_count{{{_SEL}}}))",
}

# TensorRT-LLM backend: requests waiting for a slot in the in-flight batcher count as queue.
TRTLLM_QUERIES: dict[str, str] = {
    **TRITON_QUERIES,
    "queue_depth": (
        f"sum(nv_inference_pending_request_count{{{_SEL}}})"
        f' + sum(nv_trt_llm_request_metrics{{{_SEL},request_type="waiting"}})'
    ),
    "in_flight": (
        f"sum by (pod) (nv_inference_pending_request_count{{{_SEL}}})"
        f' + sum by (pod) (nv_trt_llm_request_metrics{{{_SEL},request_type=~"active|waiting"}})'
    ),
    "kv_cache_fraction": f'avg(nv_trt_llm_kv_cache_block_metrics{{{_SEL},kv_cache_block_type="fraction"}})',
}


def queries_for(spec: InferenceServiceSpec, *, namespace: str, name: str) -> dict[str, str]:
    base = TRTLLM_QUERIES if spec.model.backend == Backend.tensorrtllm else TRITON_QUERIES
    overrides = {k: v for k, v in spec.metrics.queries.model_dump().items() if v}
    # Percentile signals are read only when an SLO uses them (or the user supplied a query).
    unused = {"ttft_p95_ms": spec.slo.ttft_p95_ms, "latency_p95_ms": spec.slo.latency_p95_ms}
    base = {k: q for k, q in base.items() if unused.get(k, True) is not None or k in overrides}
    values = {"namespace": namespace, "service": name, "model": spec.model.name}
    return {k: Template(q).safe_substitute(values) for k, q in {**base, **overrides}.items()}


def scalar(result: list[dict[str, object]]) -> float | None:
    """One finite number from an instant-vector result, else None (empty, NaN, Inf, many series)."""
    if len(result) != 1:
        return None
    value = result[0].get("value")
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    try:
        number = float(value[1])
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_observation(read: Callable[[str], float | None], keys: Container[str], errors: dict[str, str], *,
                     now: float, stale_after_s: float) -> tuple[Observation, bool]:
    """The service's Observation from one reader of signals, and whether it is fresh. Nothing
    fresh: every signal is missing rather than trusting old rates. Percentile signals are read
    only when configured (`keys`)."""
    sampled_at = read("sampled_at")
    if sampled_at is None or now - sampled_at > stale_after_s:
        if sampled_at is not None:
            errors["sampled_at"] = f"newest sample {now - sampled_at:.0f}s old"
        return Observation(sampled_at=sampled_at), False
    return Observation(
        sampled_at=sampled_at,
        queue_depth=read("queue_depth"),
        queue_time_ms=read("queue_time_ms"),
        ttft_p95_ms=read("ttft_p95_ms") if "ttft_p95_ms" in keys else None,
        latency_p95_ms=read("latency_p95_ms") if "latency_p95_ms" in keys else None,
        request_rate=read("request_rate"),
    ), True


@dataclass
class PrometheusMetrics:
    """MetricsPort reading one InferenceService's signals from Prometheus."""

    url: str
    queries: dict[str, str]
    stale_after_s: float
    timeout_s: float = 5.0
    available: bool = False  # did the last observe() reach Prometheus and find the service?
    errors: dict[str, str] = field(default_factory=dict)  # per query: why it is missing
    history_error: str | None = None  # why the last history() read failed (None: it answered)
    _client: PrometheusConnect | None = None

    def _prom(self) -> PrometheusConnect:
        if self._client is None:
            # One quick retry only: a slow Prometheus must not stall the control loop.
            self._client = PrometheusConnect(url=self.url, disable_ssl=True, timeout=self.timeout_s,
                                             retry=Retry(total=1, backoff_factor=0.2))
        return self._client

    def _query(self, key: str) -> float | None:
        PROMQL_QUERIES.labels(kind="service").inc()
        try:
            value = scalar(self._prom().custom_query(self.queries[key]))
        except Exception as exc:  # noqa: BLE001 - connection errors, HTTP errors, bad PromQL
            self.errors[key] = f"{type(exc).__name__}: {exc}"[:200]
            return None
        if value is None:
            self.errors[key] = "no data"
        return value

    def observe(self, *, now: float) -> Observation:
        self.errors = {}
        observation, self.available = read_observation(self._query, self.queries, self.errors,
                                                       now=now, stale_after_s=self.stale_after_s)
        return observation

    def per_pod(self, key: str = "in_flight") -> dict[str, float]:
        """{pod: value} of a per-pod query; pods without a finite value are left out."""
        PROMQL_QUERIES.labels(kind="service").inc()
        try:
            result = self._prom().custom_query(self.queries[key])
        except Exception as exc:  # noqa: BLE001
            self.errors[key] = f"{type(exc).__name__}: {exc}"[:200]
            return {}
        out = {}
        for series in result:
            pod = series.get("metric", {}).get("pod")
            value = scalar([series])
            if pod and value is not None:
                out[pod] = value
        return out

    def history(self, key: str, *, start: float, end: float, step: float) -> list[tuple[float, float]]:
        """(time, value) samples of one query over a range; [] on any failure (never raises)."""
        step = max(step, (end - start) / 10_000)  # Prometheus refuses more than 11,000 points
        PROMQL_QUERIES.labels(kind="service").inc()
        self.history_error = None
        try:
            result = self._prom().custom_query_range(
                self.queries[key], start_time=datetime.fromtimestamp(start, tz=timezone.utc),
                end_time=datetime.fromtimestamp(end, tz=timezone.utc), step=f"{max(int(step), 1)}s")
        except Exception as exc:  # noqa: BLE001
            log.info("no %s history from %s: %s", key, self.url, exc)
            self.history_error = f"{type(exc).__name__}: {exc}"[:200]
            return []
        if len(result) != 1:
            return []
        out = []
        for ts, raw in result[0].get("values", []):
            try:
                value = float(raw)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                out.append((float(ts), value))
        return out

    def summary(self) -> str:
        if not self.errors:
            return "all signals read"
        return "; ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))


@dataclass
class NoMetrics:
    """MetricsPort when no Prometheus is configured: every signal missing (safe mode)."""

    available: bool = False
    history_error: str | None = None

    def observe(self, *, now: float) -> Observation:
        return Observation()

    def history(self, key: str, *, start: float, end: float, step: float) -> list[tuple[float, float]]:
        return []

    def summary(self) -> str:
        return "no Prometheus URL configured (spec.metrics.prometheusUrl or --prometheus-url)"


def metrics_port(spec: InferenceServiceSpec, *, namespace: str, name: str,
                 default_url: str | None) -> PrometheusMetrics | NoMetrics:
    url = spec.metrics.prometheus_url or default_url
    if not url:
        return NoMetrics()
    return PrometheusMetrics(url=url.rstrip("/"), queries=queries_for(spec, namespace=namespace, name=name),
                             stale_after_s=float(spec.metrics.stale_after_seconds))
