"""Batched metrics: one PromQL query per signal per interval for ALL InferenceServices.

PrometheusMetrics sends 6-8 queries per service per tick; with hundreds of services that is thousands
of queries a minute for the same few series. Here every built-in signal is one query over every
operator-owned pod, grouped by service, and the answer is fanned out to the services:

    label_replace(<metric>{pod=~POD_PATTERN}, "gpufleet_service", "$1", "pod", POD_PATTERN)
    sum by (namespace, gpufleet_service, model) (...)

Pods are `<service>-ondemand-<rs-hash>-<pod-hash>` / `<service>-spot-…` (the Deployments the operator
owns). Prometheus anchors label_replace and `=~` regexes, and the generated segments contain no `-` and
no vowel (Kubernetes' safe alphabet), so they are never `ondemand` or `spot` and `(.+)` captures exactly
the service name: `chat-spot-ondemand-5d9f7c8b6-x2k4q` belongs to `chat-spot`, never to `chat`. No name
is ever written into these queries: the answer is keyed by labels and matched exactly in Python.

FleetQueries (one per Prometheus URL, shared by all services, thread-safe) runs the queries the
registered services need, each at most once per max age; ServiceMetrics is one service's view with the
interface of PrometheusMetrics (observe, per_pod, history, summary, available, errors) and the same
semantics: stale or unreachable means every signal missing, a service absent from an answer is missing
(never zero), NaN/Inf is missing, and a serving pod missing from the scrape makes the sums missing
(metrics.partial_scrape). fleet_metrics_port picks it, or PrometheusMetrics for services with their own
queries or (allowed) Prometheus URL.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field

from prometheus_api_client import PrometheusConnect

from gpufleet.adapters.metrics import (
    IDLE_WINDOW,
    POD_SUFFIX,
    PROMQL_QUERIES,
    RATE_HALF,
    RATE_WINDOW,
    REQUEST_COUNTERS,
    FirstSeen,
    NoMetrics,
    PerPod,
    PrometheusMetrics,
    ServingPods,
    UrlPolicy,
    _Logged,
    client,
    describe,
    metrics_port,
    complete,
    no_data,
    queries_for,
    query_timeout,
    read_observation,
    read_signals,
    summarise,
)
from gpufleet.api.models import Backend, InferenceServiceSpec
from gpufleet.core.types import Observation

log = logging.getLogger(__name__)

SERVICE_LABEL = "gpufleet_service"
# The service is everything before `-ondemand-` / `-spot-` and the generated tail (metrics.POD_SUFFIX:
# hash and suffix, or one segment when the 63-character limit truncated the ReplicaSet name, or for
# hand-named pods such as `chat-ondemand-0`): the same pods metrics.pod_regex selects per service.
POD_PATTERN = f"(.+){POD_SUFFIX}"
GROUP_LABELS = ("namespace", SERVICE_LABEL, "model")
POD_LABELS = (*GROUP_LABELS, "pod")

Group = tuple[str, str, str]  # (namespace, service, model)

_BY = ", ".join(GROUP_LABELS)
_BY_POD = ", ".join(POD_LABELS)


def _sel(metric: str, extra: str = "") -> str:
    return f'{metric}{{pod=~"{POD_PATTERN}"{extra}}}'


def _svc(expr: str) -> str:
    return f'label_replace({expr}, "{SERVICE_LABEL}", "$1", "pod", "{POD_PATTERN}")'


def _sum(expr: str, by: str = _BY) -> str:
    return f"sum by ({by}) ({_svc(expr)})"


def _per_request_ms(duration_us: str) -> str:
    """Per-request mean in ms: rate(duration) / rate(successes), matched on the group labels."""
    success = _sum(f"rate({_sel('nv_inference_request_success')}[{RATE_WINDOW}])")
    return (f"{_sum(f'rate({_sel(duration_us)}[{RATE_WINDOW}])')}"
            f" / on ({_BY}) clamp_min({success}, 1e-9) / 1000")


def _quantile_ms(metric: str, *, model_label: str = "model", scale: float = 1000.0) -> str:
    """A histogram's p95 per group in ms (metrics.quantile_ms, batched). TensorRT-LLM's own series
    name the model `model_name`: copied into `model` so every answer is keyed alike."""
    rate = f"rate({_sel(metric + '_bucket')}[1m])"
    if model_label != "model":
        rate = f'label_replace({rate}, "model", "$1", "{model_label}", "(.*)")'
    q = f"histogram_quantile(0.95, {_sum(rate, f'{_BY}, le')})"
    return q if scale == 1.0 else f"{scale:g} * {q}"


_PENDING = _sel("nv_inference_pending_request_count")
_REQUESTS = _sel("", f',__name__=~"{REQUEST_COUNTERS}"')  # successes and failures: every request
_EXEC = _sel("nv_inference_exec_count")
_TRT_WAITING = _sel("nv_trt_llm_request_metrics", ',request_type="waiting"')
_TRT_HELD = _sel("nv_trt_llm_request_metrics", ',request_type=~"active|waiting"')
_KV_FRACTION = _sel("nv_trt_llm_kv_cache_block_metrics", ',kv_cache_block_type="fraction"')
# Triton's request summary: the slowest pod's p95 per group (metrics.TRITON_P95).
_SUMMARY_P95 = _sel("nv_inference_request_summary_us", ',quantile="0.95"')
_TRITON_P95 = f"max by ({_BY}) ({_svc(_SUMMARY_P95)}) / 1000"
_TRITON_TTFT = _quantile_ms("nv_inference_first_response_histogram_ms", scale=1.0)
_COVERAGE = (f"(count_over_time({_PENDING}[{RATE_HALF}] offset {RATE_HALF}) + 1)"
             f" / count_over_time({_PENDING}[{RATE_HALF}])")

# The batched form of every built-in query of metrics.TRITON_QUERIES / TRTLLM_QUERIES. Keys prefixed
# `trtllm:` are the TensorRT-LLM variants (queried only when a registered service uses that backend).
BATCHED_QUERIES: dict[str, str] = {
    "queue_depth": _sum(_PENDING),
    "queue_time_ms": _per_request_ms("nv_inference_queue_duration_us"),
    "latency_mean_ms": _per_request_ms("nv_inference_request_duration_us"),
    "latency_p95_ms": _TRITON_P95,
    "ttft_p95_ms": _TRITON_TTFT,
    # DCGM's series carry no model: grouped by (namespace, service), answered with model "".
    "gpu_utilization": f"avg by (namespace, {SERVICE_LABEL}) ({_svc(_sel('DCGM_FI_DEV_GPU_UTIL'))})",
    "request_rate": _sum(f"rate({_REQUESTS}[{RATE_WINDOW}])"),
    # timestamp() directly on the selector (sample times, not evaluation time); label_replace after it.
    "sampled_at": f"max by ({_BY}) ({_svc(f'timestamp({_PENDING})')})",
    # Queued requests, plus 1 while an execution finished within IDLE_WINDOW (metrics.TRITON_QUERIES).
    "in_flight": (f"{_sum(_PENDING, _BY_POD)}"
                  f" + on ({_BY_POD}) ({_sum(f'increase({_EXEC}[{IDLE_WINDOW}])', _BY_POD)} > bool 0)"),
    # Per pod: its newest queue-gauge sample (metrics.TRITON_QUERIES["reporting"]).
    "reporting": f"max by ({_BY_POD}) ({_svc(f'timestamp({_PENDING})')})",
    # Per pod: its samples in the rate window's first half over its last half's (metrics.TRITON_QUERIES).
    "window_coverage": f"max by ({_BY_POD}) ({_svc(_COVERAGE)})",
    "trtllm:queue_depth": f"{_sum(_PENDING)} + on ({_BY}) {_sum(_TRT_WAITING)}",
    "trtllm:in_flight": f"{_sum(_PENDING, _BY_POD)} + on ({_BY_POD}) {_sum(_TRT_HELD, _BY_POD)}",
    "trtllm:kv_cache_utilization": f"avg by ({_BY}) ({_svc(_KV_FRACTION)})",
    # `or` per group: TensorRT-LLM's histogram where a service's pods export it, else Triton's.
    "trtllm:latency_p95_ms": (f"{_quantile_ms('trtllm_e2e_request_latency_seconds', model_label='model_name')}"
                              f" or {_TRITON_P95}"),
    "trtllm:ttft_p95_ms": (f"{_TRITON_TTFT}"
                           f" or {_quantile_ms('trtllm_time_to_first_token_seconds', model_label='model_name')}"),
    "trtllm:itl_p95_ms": _quantile_ms("trtllm_time_per_output_token_seconds", model_label="model_name"),
}
PER_POD_KEYS = frozenset({"in_flight", "trtllm:in_flight", "reporting", "window_coverage"})
MODEL_LESS_KEYS = frozenset({"gpu_utilization"})  # answered per (namespace, service), model ""


def has_overrides(spec: InferenceServiceSpec) -> bool:
    return any(v for v in spec.metrics.queries.model_dump().values())


def signal_keys(spec: InferenceServiceSpec) -> dict[str, str]:
    """{signal: batched query key} a service reads: the keys of metrics.queries_for (percentiles only
    when an SLO uses them), the TensorRT-LLM forms for that backend. Built-in queries only."""
    trtllm = spec.model.backend == Backend.tensorrtllm
    keys = {
        "sampled_at": "sampled_at",
        "queue_depth": "trtllm:queue_depth" if trtllm else "queue_depth",
        "queue_time_ms": "queue_time_ms",
        "request_rate": "request_rate",
        "in_flight": "trtllm:in_flight" if trtllm else "in_flight",
        "reporting": "reporting",
        "window_coverage": "window_coverage",
    }
    for signal in sorted(read_signals(spec)):  # what the SLO asks for; the KV cache on TensorRT-LLM
        keys[signal] = f"trtllm:{signal}" if trtllm and f"trtllm:{signal}" in BATCHED_QUERIES else signal
    return keys


def _number(series: Mapping[str, object]) -> float | None:
    value = series.get("value")
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    try:
        number = float(value[1])
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fan_out(result: list[dict[str, object]]) -> dict[Group, float | None]:
    """{(namespace, service, model): value} of a grouped instant vector; NaN/Inf -> None."""
    out: dict[Group, float | None] = {}
    for series in result:
        metric = series.get("metric")
        if not isinstance(metric, dict):
            continue
        group = (str(metric.get("namespace", "")), str(metric.get(SERVICE_LABEL, "")), str(metric.get("model", "")))
        if not group[1]:
            continue  # a pod the pattern did not name (cannot happen with the selector, but never guess)
        out[group] = _number(series)
    return out


def fan_out_pods(result: list[dict[str, object]]) -> dict[Group, dict[str, float]]:
    """{(namespace, service, model): {pod: value}} of a per-pod vector; non-finite values left out."""
    out: dict[Group, dict[str, float]] = {}
    for series in result:
        metric = series.get("metric")
        if not isinstance(metric, dict):
            continue
        group = (str(metric.get("namespace", "")), str(metric.get(SERVICE_LABEL, "")), str(metric.get("model", "")))
        pod, value = metric.get("pod"), _number(series)
        if group[1] and pod:
            pods = out.setdefault(group, {})
            if value is not None:
                pods[str(pod)] = value
    return out


@dataclass(frozen=True)
class Answer:
    """One batched query's latest answer: values per group, or why there is none."""

    at: float  # the `now` of the refresh that asked
    values: Mapping[Group, float | None] = field(default_factory=dict)
    pods: Mapping[Group, Mapping[str, float]] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class _Registration:
    keys: frozenset[str]
    interval_s: float
    owner: object | None = None


class FleetQueries:
    """The batched queries of one Prometheus, shared by every service that reads it (thread-safe).

    `refresh(now)` sends each needed query at most once per `max_age_s` (default: the shortest
    scaling interval among the registered services, so one query per signal per interval, whatever
    the number of services). The first caller refreshes under a lock. Callers arriving meanwhile
    read the answers it is replacing when every one of them is younger than two max ages (stale
    while revalidate: the batch takes a second or more at N=500, and every tick worker waiting for
    it held every service's tick); without such answers they wait for it, and then send nothing.
    """

    def __init__(self, url: str, *, max_age_s: float | None = None, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.time, ca_bundle: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self.ca_bundle = ca_bundle  # --prometheus-ca-bundle (TLS is always verified)
        self.clock = clock  # for per_pod(), which has no `now`
        self.queries_sent = 0  # batched queries sent, ever (also gpufleet_promql_queries_total{kind="batched"})
        self.errors: dict[str, str] = {}  # per batched key: why its latest answer is missing (short cause)
        self._registrations: dict[tuple[str, str], _Registration] = {}
        self._answers: dict[str, Answer] = {}
        # Derived from the registrations when they change, not per call: every tick reads both.
        self._needed_queries: dict[str, str] = {}
        self._min_interval = 1.0
        self._state = threading.Lock()  # registrations, answers, errors, counter
        self._refreshing = threading.Lock()  # one refresher at a time
        self._client: PrometheusConnect | None = None
        self._log = _Logged()

    # --- registrations ---------------------------------------------------------------------------

    def register(self, namespace: str, name: str, spec: InferenceServiceSpec, *,
                 owner: object | None = None) -> dict[str, str]:
        """Add (or replace) a service; returns its {signal: batched key}. Built-in queries only:
        a spec with query overrides belongs on PrometheusMetrics (fleet_metrics_port sends it there)."""
        if has_overrides(spec):
            raise ValueError(f"{namespace}/{name} overrides spec.metrics.queries: use PrometheusMetrics")
        keys = signal_keys(spec)
        with self._state:
            self._registrations[(namespace, name)] = _Registration(
                frozenset(keys.values()), float(spec.scaling.interval_seconds), owner)
            self._derive()
        return keys

    def unregister(self, namespace: str, name: str, *, owner: object | None = None) -> None:
        """Remove a service (with `owner`: only if that owner's registration is still the current one)."""
        with self._state:
            current = self._registrations.get((namespace, name))
            if current is None or (owner is not None and current.owner is not owner):
                return
            del self._registrations[(namespace, name)]
            self._derive()
            for key in [k for k in self._answers if k not in self._needed_queries]:
                del self._answers[key]
                self.errors.pop(key, None)

    def registered(self) -> set[tuple[str, str]]:
        with self._state:
            return set(self._registrations)

    def _derive(self) -> None:
        """The needed queries and the shortest interval, after a registration changed (under _state)."""
        needed = {k for r in self._registrations.values() for k in r.keys}
        self._needed_queries = {k: q for k, q in BATCHED_QUERIES.items() if k in needed}
        self._min_interval = min((r.interval_s for r in self._registrations.values()), default=1.0)

    def needed(self) -> dict[str, str]:
        """{batched key: PromQL} the registered services need, in a stable order."""
        with self._state:
            return dict(self._needed_queries)

    def max_age(self) -> float:
        if self.max_age_s is not None:
            return self.max_age_s
        with self._state:
            return self._min_interval

    # --- queries ---------------------------------------------------------------------------------

    def _prom(self) -> PrometheusConnect:
        if self._client is None:
            self._client = client(self.url, timeout_s=self.timeout_s, ca_bundle=self.ca_bundle)
        return self._client

    def _due(self, key: str, now: float, max_age: float) -> bool:
        answer = self._answers.get(key)
        # abs(): a clock that jumped back by more than max_age refreshes too.
        return answer is None or abs(now - answer.at) >= max_age

    def refresh(self, now: float) -> int:
        """Send each needed query whose answer is older than the max age; returns how many were sent.
        Never raises: a failed query's answer is empty with its error (every service missing). When
        Prometheus cannot be reached (connection refused, timeout) the remaining queries of this
        refresh are not sent: they fail with the same error, so a dead Prometheus holds the callers
        for one timeout (and one retry), not one per query. While another caller refreshes, returns
        0 at once if the answers it replaces are recent enough (the class docstring)."""
        if not self._refreshing.acquire(blocking=False):
            if self._recent(now):
                return 0
            self._refreshing.acquire()
        try:
            return self._refresh(now)
        finally:
            self._refreshing.release()

    def _recent(self, now: float) -> bool:
        """Every needed query has an answer (a failed one too) younger than two max ages."""
        limit = 2 * self.max_age()
        with self._state:
            return all((a := self._answers.get(k)) is not None and abs(now - a.at) < limit
                       for k in self._needed_queries)

    def _refresh(self, now: float) -> int:
        """refresh's work, under the refresh lock."""
        max_age = self.max_age()
        queries = self.needed()
        with self._state:
            due = {k: q for k, q in queries.items() if self._due(k, now, max_age)}
        unreachable: str | None = None
        sent = 0
        # No longer than the shortest interval: a later answer misses every tick's deadline.
        timeout = min(self.timeout_s, max_age) if max_age >= 1.0 else self.timeout_s
        for key, query in due.items():
            if unreachable:
                answer = Answer(at=now, error=unreachable)  # not sent: the same cause
            else:
                answer, unreachable = self._ask(key, query, now, timeout)
                sent += 1
                with self._state:
                    self.queries_sent += 1
            with self._state:
                self._answers[key] = answer
                if answer.error:
                    self.errors[key] = answer.error
                else:
                    self.errors.pop(key, None)
        return sent

    def _ask(self, key: str, query: str, now: float, timeout: float) -> tuple[Answer, str | None]:
        """One query's answer, and the error if Prometheus could not be reached at all."""
        PROMQL_QUERIES.labels(kind="batched").inc()
        try:
            result = self._prom().custom_query(query, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - connection errors, HTTP errors, bad PromQL
            error = describe(exc, timeout_s=timeout)
            self._log.failed(self.url, f"batched {key}", query, exc, error)
            # requests' ConnectionError and Timeout are OSErrors; an HTTP error answer (bad PromQL,
            # 503) is not, and the other queries may still be answered.
            return Answer(at=now, error=error), error if isinstance(exc, OSError) else None
        self._log.ok(f"batched {key}")
        if key in PER_POD_KEYS:
            return Answer(at=now, pods=fan_out_pods(result)), None
        return Answer(at=now, values=fan_out(result)), None

    def answer(self, key: str) -> Answer | None:
        with self._state:
            return self._answers.get(key)


class ServiceMetrics:
    """One InferenceService's view of a FleetQueries, with PrometheusMetrics' interface and semantics."""

    def __init__(self, fleet: FleetQueries, *, namespace: str, name: str, spec: InferenceServiceSpec,
                 timeout_s: float = 5.0, serving: ServingPods | None = None) -> None:
        self.fleet = fleet
        self.serving = serving  # the pods that must be in the scrape (metrics.partial_scrape)
        self._seen: set[str] = set()
        self.namespace, self.name = namespace, name
        self.group: Group = (namespace, name, spec.model.name)
        self.stale_after_s = float(spec.metrics.stale_after_seconds)
        self.keys = fleet.register(namespace, name, spec, owner=self)
        self.available = False  # did the last observe() reach Prometheus and find the service?
        self.errors: dict[str, str] = {}  # per signal: why it is missing
        self._first = FirstSeen()  # since when each cause lasts (status, Events)
        self._since: dict[str, float] = {}
        # history() and per-pod reads of other keys: one-off per-service queries.
        self.single = PrometheusMetrics(url=fleet.url, queries=queries_for(spec, namespace=namespace, name=name),
                                        stale_after_s=self.stale_after_s,
                                        timeout_s=min(timeout_s, query_timeout(spec)),
                                        ca_bundle=fleet.ca_bundle)

    def close(self) -> None:
        """The service is gone: its signals are no longer queried. A no-op once a newer ServiceMetrics
        of the same service (a spec change) has registered, so closing the old port is always safe."""
        self.fleet.unregister(self.namespace, self.name, owner=self)

    def value(self, signal: str) -> float | None:
        """The latest refreshed value of one service-level signal (no refresh); errors[signal] says why not."""
        key = self.keys.get(signal)
        if key is None or key in PER_POD_KEYS:
            self.errors[signal] = "not a built-in service-level signal of this service"
            return None
        answer = self.fleet.answer(key)
        if answer is None:
            self.errors[signal] = "not queried yet"
            return None
        if answer.error:
            self.errors[signal] = answer.error
            return None
        group = (self.namespace, self.name, "") if key in MODEL_LESS_KEYS else self.group
        value = answer.values.get(group)
        if value is None:
            # In the answer with NaN (a quantile over no requests), or not in it at all.
            self.errors[signal] = no_data(signal, nan=group in answer.values)
        return value

    def observe(self, *, now: float) -> Observation:
        self.errors = {}
        self.fleet.refresh(now)
        observation, fresh = read_observation(self.value, self.keys, self.errors,
                                              now=now, stale_after_s=self.stale_after_s)
        if fresh and self.serving is not None:
            observation, fresh = complete(observation, self.serving, self._per_pod_answer("reporting"),
                                          self._per_pod_answer("window_coverage"), self._seen, self.errors,
                                          now=now, stale_after_s=self.stale_after_s)
        self.available = fresh
        self._since = self._first.update(self.errors, now)
        return observation

    def _per_pod_answer(self, key: str) -> PerPod:
        answer = self.fleet.answer(key)
        if answer is None or answer.error:
            return PerPod(None, (answer.error if answer else None) or "not queried yet")
        return PerPod(dict(answer.pods.get(self.group, {})))

    def per_pod(self, key: str = "in_flight") -> dict[str, float]:
        """{pod: value} of a per-pod signal; pods without a finite value are left out."""
        batched = self.keys.get(key)
        if batched not in PER_POD_KEYS:
            return self.single.per_pod(key)  # no batched per-pod form: the per-service query
        assert batched is not None
        self.fleet.refresh(self.fleet.clock())
        answer = self.fleet.answer(batched)
        if answer is None or answer.error:
            self.errors[key] = answer.error if answer and answer.error else "not queried yet"
            return {}
        return dict(answer.pods.get(self.group, {}))

    def history(self, key: str, *, start: float, end: float, step: float) -> list[tuple[float, float]]:
        """A range query of this service's own built-in query (a one-off at start)."""
        return self.single.history(key, start=start, end=end, step=step)

    @property
    def history_error(self) -> str | None:
        return self.single.history_error

    def summary(self) -> str:
        return summarise(self.errors, self._since)


def fleet_metrics_port(spec: InferenceServiceSpec, *, namespace: str, name: str, default_url: str | None,
                       shared: MutableMapping[str, FleetQueries], policy: UrlPolicy | None = None,
                       ca_bundle: str | None = None,
                       serving: ServingPods | None = None) -> ServiceMetrics | PrometheusMetrics | NoMetrics:
    """The metrics port of one service: a ServiceMetrics on the shared FleetQueries of the default
    URL, or (own spec.metrics.prometheusUrl that `policy` allows, query overrides) the per-service
    PrometheusMetrics, or NoMetrics without any URL or with a URL the policy refuses. Moving a
    service off the shared queries unregisters it there."""
    if spec.metrics.prometheus_url or has_overrides(spec) or not default_url:
        for other in list(shared.values()):
            other.unregister(namespace, name)
        return metrics_port(spec, namespace=namespace, name=name, default_url=default_url, policy=policy,
                            ca_bundle=ca_bundle, serving=serving)
    url = default_url.rstrip("/")
    # dict.setdefault is atomic: threads configuring services at once share one FleetQueries.
    fleet = shared.get(url) or shared.setdefault(url, FleetQueries(url, ca_bundle=ca_bundle))
    return ServiceMetrics(fleet, namespace=namespace, name=name, spec=spec, serving=serving)
