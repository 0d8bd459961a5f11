"""Metrics adapter: Triton / TensorRT-LLM signals from Prometheus, as an Observation.

Built-in PromQL (overridable per service in spec.metrics.queries) selects the service's pods by
namespace and pod name (`<service>-ondemand-<rs-hash>-<pod-hash>`, `<service>-spot-…`, the Deployments
the operator owns) and the Triton `model` label. Every value that goes into a query is written as a
PromQL string literal (`promql_string`), and into a regex only after RE2 quoting (`re2_quote`): a name
with quotes, backslashes, `}` or regex metacharacters selects exactly its own series.

Every failure mode (Prometheus down, HTTP error, empty result, NaN, stale samples, a serving pod
missing from the scrape) becomes a *missing* value, never an exception, never a zero and never a
smaller sum, so the core's safe mode can hold capacity instead of scaling down blindly. What went
wrong is kept as a short cause (`describe`) for status and Events; the URL, the query and the
answer's body go to the operator's log only.

A service with spec.capacity.classes also gets the request rate per class (the pods of class C are
those of Deployment `<service>-<C>`), for the capacity each class learns: its request rate is read
per pod (`request_rate_by_pod`, in place of the scalar `request_rate`, so no query is added per
tick), summed over all pods for `request_rate` and over each class's serving pods for
`Observation.class_request_rate`. A class with a serving pod missing from that answer is missing.
"""

from __future__ import annotations

import logging
import math
import re
import ssl
from collections.abc import Callable, Collection, Container, Mapping, MutableSet, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from string import Template
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_client import Counter
from urllib3.util.retry import Retry

from gpufleet.adapters.manifests import deployment_name
from gpufleet.api.models import Backend, InferenceServiceSpec
from gpufleet.api.timefmt import iso
from gpufleet.core.types import Observation

log = logging.getLogger(__name__)

# --- PromQL literals -------------------------------------------------------------------------------

_STRING_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def promql_string(value: str) -> str:
    """`value` as a double-quoted PromQL string literal that reads back as exactly `value`.

    PromQL unquotes string literals as Go does (strconv.Unquote): backslash and double quote must be
    escaped, a raw newline ends the literal with an error; other control characters are written as
    \\xNN escapes so that nothing invisible travels in the query. Everything else (UTF-8 included)
    stands for itself."""
    out = ['"']
    for ch in value:
        escaped = _STRING_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# The characters RE2 (Prometheus' regex engine, Go's regexp) gives a meaning outside a character
# class: Go's regexp.QuoteMeta escapes exactly these, and so does re2_quote. (Python's re.escape
# escapes more, `-`, `#`, space, which Go happens to read back as literals; re2_quote writes nothing
# Go's parser has to be lenient about.) A regex still has to become a PromQL string: promql_string
# doubles its backslashes (`\\.` alone is no PromQL escape and the query would not parse).
_RE2_META = frozenset("\\.+*?()|[]{}^$")


def re2_quote(value: str) -> str:
    """A regex (RE2 syntax, as in Prometheus' `=~`) that matches exactly the text `value`."""
    return "".join("\\" + ch if ch in _RE2_META else ch for ch in value)


# --- which series are the service's ---------------------------------------------------------------

# A pod-name segment the Deployment/ReplicaSet controllers generate (pod-template hash, random pod
# suffix): Kubernetes' "safe" alphabet has no vowels, so a segment is never "ondemand" or "spot". That
# keeps service `chat` from matching pods of a service `chat-spot` (`chat-spot-ondemand-<h>-<p>`), as
# the former `chat-(ondemand|spot)-.*` did.
POD_SEGMENT = "[b-df-hj-np-tv-z0-9]+"
_SEG = "[b-df-hj-np-tv-z0-9]"
# What follows `<service>-<class>-` in a pod name: the pod-template hash (1-10 characters: a uint32
# in the safe alphabet), `-`, the 5-character random suffix; or one segment of at most 15 characters
# when the 58-character cut of generateName fell inside the hash (`<hash prefix><suffix>`), or for
# hand-named pods like `chat-ondemand-0` (tests, static targets). The lengths are what keep a pod of
# a longer service `chat-spot-<...>`, cut inside its own name, from reading as one of `chat`'s
# (docs/metrics.md: exact for service names up to 36 characters).
POD_TAIL = f"(?:{_SEG}{{1,10}}-{_SEG}{{5}}|{_SEG}{{1,15}})"
POD_SUFFIX = f"-(?:ondemand|spot)-{POD_TAIL}"


def pod_regex(service: str) -> str:
    """RE2 regex (anchored by Prometheus) of the names of the service's pods."""
    return re2_quote(service) + POD_SUFFIX


def classes_pod_regex(service: str, classes: Sequence[str]) -> str:
    """RE2 regex of the pods of a service with spec.capacity.classes: `<service>-<class>-<tail>`
    (a class's Deployment suffix, adapters.manifests.deployment_name), and the two-class form's
    `-ondemand-`/`-spot-` pods (a service moved onto a list: they serve until drained, and a
    serving pod missing from the sums would blind it)."""
    names = dict.fromkeys([*(deployment_name("", c)[1:] for c in classes), "ondemand", "spot"])
    suffixes = "|".join(re2_quote(n) for n in names)
    return f"{re2_quote(service)}-(?:{suffixes})-{POD_TAIL}"


def class_pod_regex(service: str, capacity_class: str) -> str:
    """RE2 (and Python) regex of the pods of one class's Deployment `<service>-<class>`."""
    return f"{re2_quote(deployment_name(service, capacity_class))}-{POD_TAIL}"


def deployment_pod_regex(deployment: str) -> str:
    """RE2 regex of the pods of a Deployment gpufleet does not own (shadow mode, spec.targetRef):
    `<deployment>-<rs-hash>-<pod-suffix>`, the same generated tail as pod_regex."""
    return re2_quote(deployment) + "-" + POD_TAIL


def pod_selector(namespace: str, service: str, pod_re: str | None = None) -> str:
    """The label matchers of one service's pods (`pod_re`: another regex of pod names, e.g.
    deployment_pod_regex); alone, for series without a model label (DCGM's)."""
    pods = pod_re if pod_re is not None else pod_regex(service)
    return f"namespace={promql_string(namespace)},pod=~{promql_string(pods)}"


def selector(namespace: str, service: str, model: str, pod_re: str | None = None) -> str:
    """The label matchers of one service's Triton series: exact namespace and model, its pods."""
    return f"{pod_selector(namespace, service, pod_re)},model={promql_string(model)}"


def llm_selector(namespace: str, service: str, model: str, pod_re: str | None = None) -> str:
    """TensorRT-LLM's own metrics (tensorrt_llm.metrics.MetricsCollector) name the model `model_name`."""
    return f"{pod_selector(namespace, service, pod_re)},model_name={promql_string(model)}"


# Built-in queries are templates over `$sel` (selector()), `$lsel` (llm_selector()) and `$psel`
# (pod_selector()), the service's label matchers.
_SEL = "$sel"
_LSEL = "$lsel"
_PSEL = "$psel"


def quantile_ms(metric: str, sel: str, *, scale: float = 1.0, q: float = 0.95) -> str:
    """A true quantile over the last minute from a histogram's buckets, summed over the service's
    pods (histograms aggregate; summaries and means of means do not), in milliseconds."""
    inner = f"histogram_quantile({q:g}, sum by (le) (rate({metric}_bucket{{{sel}}}[1m])))"
    return inner if scale == 1.0 else f"{scale:g} * {inner}"

# Every PromQL request the operator sends: kind="service" (one service's query, PrometheusMetrics) or
# kind="batched" (one query for all services, gpufleet.adapters.fleet_metrics).
PROMQL_QUERIES = Counter("gpufleet_promql_queries", "PromQL queries sent to Prometheus", ["kind"])

# Triton's per-model request counters: successes, and failures by reason (REJECTED, CANCELED, ...).
REQUEST_COUNTERS = "nv_inference_request_(success|failure)"

# The range of every rate() here. Prometheus extrapolates a rate from the samples inside it: a
# counter with samples for only the last 10 s of the minute (Prometheus restarted, or the pod was
# out of the scrape) reads about a sixth of its rate, so such a window is missing, not low.
RATE_WINDOW = "1m"
RATE_WINDOW_S = 60.0
RATE_HALF = "30s"
# A pod's window is covered when the first half of it holds at least this share of the samples of
# the last half (one sample of scrape jitter allowed): its first sample is near the window's start,
# at any scrape interval, while a failed scrape in the middle (harmless to a counter's rate) changes
# little. (A sample's time cannot tell: a lookup at the window's start answers with the newest
# sample up to five minutes before it.)
WINDOW_COVERED = 0.75

# A plain-Triton pod is idle only after no model execution finished on it for this long (see in_flight).
IDLE_WINDOW = "30s"

# Triton's own end-to-end quantile: its request-latency summary (--metrics-config
# summary_latencies=true), a p95 per pod over Triton's sliding window. Summaries cannot be
# aggregated across pods: the slowest pod's p95 is what is read (an upper bound of the service's).
TRITON_P95 = f'max(nv_inference_request_summary_us{{{_SEL},quantile="0.95"}}) / 1000'

# Built-in queries. Triton's nv_inference_*_duration_us are cumulative counters: per-request means
# are rate(duration) / rate(request_success) (`latency_mean_ms`, never read as a percentile).
# nv_inference_pending_request_count is the honest instantaneous queue gauge.
TRITON_QUERIES: dict[str, str] = {
    "queue_depth": f"sum(nv_inference_pending_request_count{{{_SEL}}})",
    "queue_time_ms": (
        f"sum(rate(nv_inference_queue_duration_us{{{_SEL}}}[{RATE_WINDOW}]))"
        f" / clamp_min(sum(rate(nv_inference_request_success{{{_SEL}}}[{RATE_WINDOW}])), 1e-9) / 1000"
    ),
    "latency_mean_ms": (
        # Mean end-to-end latency per request, from the counters Triton always exports.
        f"sum(rate(nv_inference_request_duration_us{{{_SEL}}}[{RATE_WINDOW}]))"
        f" / clamp_min(sum(rate(nv_inference_request_success{{{_SEL}}}[{RATE_WINDOW}])), 1e-9) / 1000"
    ),
    "latency_p95_ms": TRITON_P95,
    # Decoupled models with --metrics-config histogram_latencies=true.
    "ttft_p95_ms": quantile_ms("nv_inference_first_response_histogram_ms", _SEL),
    # DCGM exporter, per GPU, labelled with the pod it is assigned to (read only with a target).
    "gpu_utilization": f"avg(DCGM_FI_DEV_GPU_UTIL{{{_PSEL}}})",
    # Every request that reached the server, rejected and failed ones included (a gateway's view:
    # a server that rejects under load must not read as less load).
    "request_rate": f'sum(rate({{__name__=~"{REQUEST_COUNTERS}",{_SEL}}}[{RATE_WINDOW}]))',
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
    # Per pod: the time of its newest queue-gauge sample. The sums above cover only the pods listed
    # here; a serving pod missing from it (or with old samples) makes them partial (SUM_SIGNALS).
    "reporting": f"max by (pod) (timestamp(nv_inference_pending_request_count{{{_SEL}}}))",
    # Per pod: its queue-gauge samples in the first half of the rate window (plus one, for scrape
    # jitter) over those in the last half. Below WINDOW_COVERED, or no value, and the window's
    # start is in a gap: its rate() reads low (uncovered).
    "window_coverage": (f"max by (pod) ((count_over_time(nv_inference_pending_request_count{{{_SEL}}}[{RATE_HALF}] "
                        f"offset {RATE_HALF}) + 1) / count_over_time(nv_inference_pending_request_count{{{_SEL}}}[{RATE_HALF}]))"),
}

# spec.capacity.classes: the request rate per pod, read instead of `request_rate` (the same series
# and window), from which the service's total and each class's sum are taken (PrometheusMetrics).
RATE_BY_POD = f'sum by (pod) (rate({{__name__=~"{REQUEST_COUNTERS}",{_SEL}}}[{RATE_WINDOW}]))'

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
    "kv_cache_utilization": f'avg(nv_trt_llm_kv_cache_block_metrics{{{_SEL},kv_cache_block_type="fraction"}})',
    # TensorRT-LLM's own histograms (seconds) where it exports them; `or`: the first that answers.
    "latency_p95_ms": f"{quantile_ms('trtllm_e2e_request_latency_seconds', _LSEL, scale=1000)} or {TRITON_P95}",
    "ttft_p95_ms": (f"{quantile_ms('nv_inference_first_response_histogram_ms', _SEL)}"
                    f" or {quantile_ms('trtllm_time_to_first_token_seconds', _LSEL, scale=1000)}"),
    "itl_p95_ms": quantile_ms("trtllm_time_per_output_token_seconds", _LSEL, scale=1000),
}

# Signals read only when the spec sets their target (the SLO field): a p95 nobody asked for, or a
# DCGM series a cluster may not have, is neither queried nor reported missing.
TARGETED = {"ttft_p95_ms": "ttft_p95_ms", "latency_p95_ms": "latency_p95_ms", "latency_mean_ms": "latency_mean_ms",
            "itl_p95_ms": "itl_p95_ms", "gpu_utilization": "gpu_utilization_percent"}

# Signals that are sums over the service's pods: a pod missing from the scrape makes them smaller,
# which reads as less load. With a pod missing they are missing (partial_scrape).
SUM_SIGNALS = ("queue_depth", "request_rate")
# The sums of rates: whole only when every pod that served through the window has samples from its
# start to its end (uncovered). The queue gauge is an instant reading, whole once every pod reports.
RATE_SIGNALS = ("request_rate",)


def overridden(spec: InferenceServiceSpec) -> set[str]:
    """The signals whose query the spec replaces (spec.metrics.queries)."""
    return {k for k, v in spec.metrics.queries.model_dump().items() if v}


def template_values(namespace: str, service: str, model: str, pod_re: str | None = None) -> dict[str, str]:
    """What `$name` placeholders in spec.metrics.queries become: each value escaped for a place
    inside a double-quoted PromQL string; the `_re` forms also quoted for a regex (`=~`)."""
    def inner(text: str) -> str:
        return promql_string(text)[1:-1]

    return {"namespace": inner(namespace), "service": inner(service), "model": inner(model),
            "namespace_re": inner(re2_quote(namespace)), "service_re": inner(re2_quote(service)),
            "model_re": inner(re2_quote(model)),
            "pod_re": inner(pod_re if pod_re is not None else pod_regex(service))}


def read_signals(spec: InferenceServiceSpec) -> set[str]:
    """The optional signals this spec reads: those whose target it sets, the KV cache on TensorRT-LLM
    unless its threshold is 1.0 (off)."""
    out = {k for k, slo in TARGETED.items() if getattr(spec.slo, slo) is not None}
    if spec.model.backend == Backend.tensorrtllm and spec.slo.kv_cache_utilization < 1.0:
        out.add("kv_cache_utilization")
    return out


OPTIONAL = frozenset({*TARGETED, "kv_cache_utilization"})


def queries_for(spec: InferenceServiceSpec, *, namespace: str, name: str,
                pod_re: str | None = None, rate_by_pod: bool = False) -> dict[str, str]:
    """The service's queries; `rate_by_pod` adds `request_rate_by_pod` (RATE_BY_POD) unless the
    spec overrides request_rate."""
    base = TRTLLM_QUERIES if spec.model.backend == Backend.tensorrtllm else TRITON_QUERIES
    if rate_by_pod:
        base = {**base, "request_rate_by_pod": RATE_BY_POD}
    overrides = {k: v for k, v in spec.metrics.queries.model_dump().items() if v}
    # Optional signals are read only when the spec uses them (or the user supplied a query).
    wanted = read_signals(spec)
    base = {k: q for k, q in base.items() if k not in OPTIONAL or k in wanted or k in overrides}
    if "request_rate" in overrides:
        base.pop("request_rate_by_pod", None)
    sel = {"sel": selector(namespace, name, spec.model.name, pod_re),
           "lsel": llm_selector(namespace, name, spec.model.name, pod_re),
           "psel": pod_selector(namespace, name, pod_re)}
    values = template_values(namespace, name, spec.model.name, pod_re)
    built_in = {k: Template(q).substitute(sel) for k, q in base.items() if k not in overrides}
    return {**built_in, **{k: Template(q).safe_substitute(values) for k, q in overrides.items()}}


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


# --- why a signal is missing, in words a reader can act on -----------------------------------------

NO_SAMPLE = ("no sample of this service's pods in Prometheus (queue gauge nv_inference_pending_request_count: "
             "pods not scraped yet, or labels that do not match, docs/metrics.md): every signal missing")
NO_SERIES = "no series of this service's pods in Prometheus"
# The signals a default server does not export: what has to be turned on.
NO_SERIES_OF = {
    "latency_p95_ms": ("no latency quantile exported (Triton: --metrics-config summary_latencies=true; "
                       "TensorRT-LLM: trtllm_e2e_request_latency_seconds; or use slo.latencyMeanMs)"),
    "ttft_p95_ms": ("no first-token histogram exported (Triton: a decoupled model and --metrics-config "
                    "histogram_latencies=true; TensorRT-LLM: trtllm_time_to_first_token_seconds)"),
    "itl_p95_ms": "no inter-token histogram exported (TensorRT-LLM: trtllm_time_per_output_token_seconds)",
    "kv_cache_utilization": "no KV-cache series exported (nv_trt_llm_kv_cache_block_metrics, fraction)",
    "gpu_utilization": ("no DCGM_FI_DEV_GPU_UTIL series labelled with this service's pods (DCGM exporter "
                        "with pod mapping, scraped with honor_labels)"),
}
NOT_A_NUMBER = "not a number (no request finished in the window)"


def no_data(key: str, *, nan: bool = False) -> str:
    """Why `key` has no value: NaN (a quantile or mean over no requests), or no series at all."""
    if nan:
        return NOT_A_NUMBER
    if key == "sampled_at":
        return NO_SAMPLE
    return NO_SERIES_OF.get(key, NO_SERIES)


def is_nan(result: list[dict[str, object]]) -> bool:
    value = result[0].get("value") if len(result) == 1 else None
    try:
        return isinstance(value, (list, tuple)) and len(value) == 2 and math.isnan(float(value[1]))
    except (TypeError, ValueError):
        return False


@dataclass
class FirstSeen:
    """When each cause was first seen, while it lasts (under any signal): status and Events say
    since when. The time stays the same tick after tick, so the text does too (Events compare it)."""

    at: dict[str, float] = field(default_factory=dict)

    def update(self, errors: Mapping[str, str], now: float) -> dict[str, float]:
        current = set(errors.values())
        self.at = {c: t for c, t in self.at.items() if c in current}
        for cause in current:
            self.at.setdefault(cause, now)
        return dict(self.at)


def read_observation(read: Callable[[str], float | None], keys: Container[str], errors: dict[str, str], *,
                     now: float, stale_after_s: float) -> tuple[Observation, bool]:
    """The service's Observation from one reader of signals, and whether it is fresh. Nothing
    fresh: every signal is missing rather than trusting old rates. Percentile signals are read
    only when configured (`keys`)."""
    sampled_at = read("sampled_at")
    if sampled_at is None or now - sampled_at > stale_after_s:
        if sampled_at is not None:
            # No age in the text: the cause stays the same tick after tick (Events compare it).
            errors["sampled_at"] = f"metrics stale: newest sample older than staleAfterSeconds ({stale_after_s:g}s)"
        return Observation(sampled_at=sampled_at), False
    def optional(key: str) -> float | None:
        return read(key) if key in keys else None

    return Observation(
        sampled_at=sampled_at,
        queue_depth=read("queue_depth"),
        queue_time_ms=read("queue_time_ms"),
        ttft_p95_ms=optional("ttft_p95_ms"),
        latency_p95_ms=optional("latency_p95_ms"),
        request_rate=read("request_rate"),
        latency_mean_ms=optional("latency_mean_ms"),
        itl_p95_ms=optional("itl_p95_ms"),
        kv_cache_utilization=optional("kv_cache_utilization"),
        gpu_utilization=optional("gpu_utilization"),
    ), True


# --- partial scrapes --------------------------------------------------------------------------------

# The pods that must be in the scrape: serving pods -> since when they are Ready (the operator's
# watch knows them; gpufleet.adapters.wiring builds it). None: not known, nothing is checked.
ServingPods = Callable[[], Mapping[str, float]]


def unreported(serving: Mapping[str, float], reporting: Mapping[str, float] | None, seen: MutableSet[str], *,
               now: float, stale_after_s: float) -> tuple[list[str], int]:
    """(serving pods missing from the scrape, how many must report).

    A serving pod must report once it has been Ready for staleAfterSeconds (the time a first scrape
    may take) or once it has reported: then a sample older than staleAfterSeconds, or none, makes it
    missing. `seen` (the pods seen reporting while serving) is updated; `reporting` None (the
    query failed) makes every pod that must report missing."""
    fresh = {p for p, at in (reporting or {}).items() if now - at <= stale_after_s}
    seen &= set(serving)  # forget pods that no longer serve (bounded memory)
    if reporting is not None:
        seen |= fresh & set(serving)
    required = {p for p, since in serving.items() if p in seen or now - since >= stale_after_s}
    return sorted(required - fresh), len(required)


def uncovered(serving: Mapping[str, float], coverage: Mapping[str, float] | None, *, now: float,
              stale_after_s: float, window_s: float = RATE_WINDOW_S) -> tuple[list[str], int]:
    """(serving pods whose rate window Prometheus does not cover, how many must cover it).

    A pod Ready since before the window began (and staleAfterSeconds more, for its first scrape)
    served requests all through it, so its rate is whole only when Prometheus has its samples
    from the window's start: `coverage` (its samples in the first half of the window over those in
    the last half) at least WINDOW_COVERED. A pod Ready inside the window took its share from pods
    that served before it: its short series is not an undercount. No value for a pod (no samples
    in one half), or `coverage` None (the query failed), leaves it uncovered."""
    required = {p for p, since in serving.items() if now - since >= window_s + stale_after_s}
    covered = {p for p, c in (coverage or {}).items() if c >= WINDOW_COVERED}
    return sorted(required - covered), len(required)


def _shown(names: Collection[str]) -> str:
    names = sorted(names)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _without(observation: Observation, signals: Collection[str], cause: str, errors: dict[str, str]) -> Observation:
    for signal in signals:
        errors[signal] = cause
    cleared: dict[str, Any] = dict.fromkeys(signals)
    return replace(observation, **cleared)


def partial_scrape(observation: Observation, missing: Collection[str], required: int, errors: dict[str, str],
                   signals: Collection[str] = SUM_SIGNALS) -> Observation:
    """The observation with its sums missing when serving pods are missing from the scrape."""
    if not missing:
        return observation
    cause = f"partial scrape: {len(missing)} of {required} serving pods not in Prometheus ({_shown(missing)})"
    return _without(observation, signals, cause, errors)


@dataclass(frozen=True)
class PerPod:
    """A per-pod answer ({pod: value}), or None and why the query failed."""

    values: Mapping[str, float] | None
    error: str | None = None


def complete(observation: Observation, serving: ServingPods, reporting: PerPod, coverage: PerPod | None,
             seen: MutableSet[str], errors: dict[str, str], *, now: float,
             stale_after_s: float, signals: Collection[str] = SUM_SIGNALS) -> tuple[Observation, bool]:
    """The observation with its sums kept only when every serving pod that must report does
    (`unreported`) and its rates only when Prometheus covers their window (`uncovered`), and
    whether all is whole. Whatever cannot be checked (the pods' cache or a query failed) counts as
    partial: those signals are missing. `coverage` None: the windows are not checked."""
    try:
        pods = serving()
    except Exception as exc:  # noqa: BLE001 - the watch cache did not answer in time
        log.warning("cannot tell which pods serve: %s: %s", type(exc).__name__, exc)
        return _without(observation, signals, "cannot tell which pods serve (the operator's pod cache)", errors), False
    missing, required = unreported(pods, reporting.values, seen, now=now, stale_after_s=stale_after_s)
    if missing and reporting.values is None:
        return _without(observation, signals, f"cannot tell which pods report: {reporting.error}", errors), False
    if missing:
        return partial_scrape(observation, missing, required, errors, signals), False
    rates = [s for s in signals if s in RATE_SIGNALS]
    if coverage is None or not rates:
        return observation, True
    gaps, required = uncovered(pods, coverage.values, now=now, stale_after_s=stale_after_s)
    if not gaps:
        return observation, True
    if coverage.values is None:
        cause = f"cannot tell whether Prometheus covers the rate window: {coverage.error}"
    else:
        cause = (f"rate window not covered: Prometheus lacks samples of {len(gaps)} of {required} serving pods from the "
                 f"start of the last {RATE_WINDOW}, their rates read low ({_shown(gaps)})")
    return _without(observation, rates, cause, errors), False


# --- what reaches status and Events ---------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (args, __cause__, __context__, urllib3's `reason`)."""
    out: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(out) < 12:
        e = todo.pop(0)
        if any(e is o for o in out):
            continue
        out.append(e)
        todo += [x for x in (getattr(e, "reason", None), e.__cause__, e.__context__, *e.args)
                 if isinstance(x, BaseException)]
    return out


def describe(exc: BaseException, *, timeout_s: float) -> str:
    """A short, stable cause of a failed Prometheus request, for status and Events: no URL, no
    query, no response body (those go to the operator's log)."""
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain)
    if isinstance(exc, requests.exceptions.SSLError) or any(isinstance(e, ssl.SSLError) for e in chain):
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            return "Prometheus TLS certificate not trusted (see --prometheus-ca-bundle)"
        return "Prometheus TLS handshake failed"
    if isinstance(exc, requests.exceptions.Timeout) or names & {"ConnectTimeoutError", "ReadTimeoutError"} \
            or any(isinstance(e, TimeoutError) for e in chain):
        return f"Prometheus timeout after {timeout_s:g}s"
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return "Prometheus answered with a redirect (not followed)"
    if isinstance(exc, requests.exceptions.ConnectionError) or isinstance(exc, ConnectionError):
        if any(isinstance(e, ConnectionRefusedError) for e in chain) or "Connection refused" in text:
            return "Prometheus unreachable (connection refused)"
        if "NameResolutionError" in names or "Name or service not known" in text \
                or "nodename nor servname" in text or "Temporary failure in name resolution" in text:
            return "Prometheus unreachable (name not resolved)"
        if any(isinstance(e, ConnectionResetError) for e in chain) or "reset by peer" in text:
            return "Prometheus unreachable (connection reset)"
        return "Prometheus unreachable (connection failed)"
    if type(exc).__name__ == "PrometheusApiClientException":
        status = re.search(r"HTTP Status Code (\d{3})", str(exc))
        kind = re.search(r'errorType\\?"\s*:\s*\\?"([A-Za-z_]{1,40})', str(exc))
        code = f"HTTP {status.group(1)}" if status else "HTTP error"
        return f"Prometheus query error: {kind.group(1)} ({code})" if kind else f"Prometheus answered {code}"
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        return "Prometheus answer unreadable (not the Prometheus API?)"
    return f"Prometheus request failed ({type(exc).__name__})"


def summarise(errors: Mapping[str, str], since: Mapping[str, float] | None = None) -> str:
    """One line for status and Events: each cause once, with the signals it took and since when
    (`since`: cause -> first seen; sorted: the same causes give the same text tick after tick)."""
    if not errors:
        return "all signals read"
    by_cause: dict[str, list[str]] = {}
    for key in sorted(errors):
        by_cause.setdefault(errors[key], []).append(key)

    def when(cause: str) -> str:
        return f" (since {iso(since[cause])})" if since and cause in since else ""

    text = "; ".join(f"{', '.join(keys)}: {cause}{when(cause)}" for cause, keys in by_cause.items())
    if any(cause.startswith("Prometheus") for cause in by_cause):
        text += " (details in the operator log)"
    return text


class _Logged:
    """Logs each failure's detail (URL, query, body) when its cause changes, not every tick."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}

    def failed(self, url: str, key: str, query: str, exc: BaseException, cause: str) -> None:
        if self.last.get(key) != cause:
            log.warning("Prometheus %s: %s failed: %s: %s (query: %s)", url, key, type(exc).__name__, exc, query)
        else:
            log.debug("Prometheus %s: %s failed: %s: %s", url, key, type(exc).__name__, exc)
        self.last[key] = cause

    def ok(self, key: str) -> None:
        self.last.pop(key, None)


# --- Prometheus connections ------------------------------------------------------------------------


TIMEOUT_S = 5.0  # the longest a Prometheus request may take (shorter for a service ticking faster)


def query_timeout(spec: InferenceServiceSpec) -> float:
    """A request's timeout for this service: TIMEOUT_S, or its interval when shorter. An answer
    later than that comes after the tick's deadline (one interval): waiting for it only holds the
    loop (make chaos: a Prometheus 20 s slow held each 2 s tick 10 s, and the first decision after
    it recovered came 4.7 s late)."""
    return min(TIMEOUT_S, float(spec.scaling.interval_seconds))


def client(url: str, *, timeout_s: float, ca_bundle: str | None = None) -> PrometheusConnect:
    """A Prometheus API client that verifies TLS certificates: against `ca_bundle` when given, else
    the system's (or $REQUESTS_CA_BUNDLE's) trust store. There is no switch to turn it off. It
    follows no redirect (a permitted URL must not lead elsewhere) and retries once, quickly, what
    failed to connect; never a read that timed out, which already took its whole timeout: a slow
    Prometheus must not stall the control loops."""
    session = requests.Session()
    session.verify = ca_bundle if ca_bundle else True
    session.max_redirects = 0
    return PrometheusConnect(url=url, disable_ssl=False, timeout=timeout_s, session=session,
                             retry=Retry(total=1, read=0, backoff_factor=0.2))


@dataclass
class PrometheusMetrics:
    """MetricsPort reading one InferenceService's signals from Prometheus."""

    url: str
    queries: dict[str, str]
    stale_after_s: float
    timeout_s: float = TIMEOUT_S  # each request's (query_timeout)
    ca_bundle: str | None = None  # --prometheus-ca-bundle
    serving: ServingPods | None = None  # the pods that must be in the scrape (partial_scrape)
    # spec.capacity.classes: (class, regex of its pods' names), longest name first (class_rates)
    classes: tuple[tuple[str, str], ...] = ()
    sums: tuple[str, ...] = SUM_SIGNALS  # the sum signals that are built-in queries (overrides: not checked)
    available: bool = False  # did the last observe() reach Prometheus and read a complete service?
    errors: dict[str, str] = field(default_factory=dict)  # per query: why it is missing (short cause)
    history_error: str | None = None  # why the last history() read failed (None: it answered)
    _client: PrometheusConnect | None = None
    _seen: set[str] = field(default_factory=set)
    _log: _Logged = field(default_factory=_Logged)
    _first: FirstSeen = field(default_factory=FirstSeen)
    _since: dict[str, float] = field(default_factory=dict)
    _pod_rates: dict[str, float] | None = None  # this tick's request_rate_by_pod answer

    def _prom(self) -> PrometheusConnect:
        if self._client is None:
            self._client = client(self.url, timeout_s=self.timeout_s, ca_bundle=self.ca_bundle)
        return self._client

    def _ask(self, key: str) -> list[dict[str, object]] | None:
        """The raw answer of one query, or None (the cause in errors[key], the detail logged)."""
        PROMQL_QUERIES.labels(kind="service").inc()
        try:
            result: list[dict[str, object]] = self._prom().custom_query(self.queries[key], timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - connection errors, HTTP errors, bad PromQL
            cause = describe(exc, timeout_s=self.timeout_s)
            self._log.failed(self.url, key, self.queries[key], exc, cause)
            self.errors[key] = cause
            return None
        self._log.ok(key)
        return result

    def _query(self, key: str) -> float | None:
        result = self._ask(key)
        if result is None:
            return None
        value = scalar(result)
        if value is None:
            self.errors[key] = no_data(key, nan=is_nan(result))
        return value

    def _read(self, key: str) -> float | None:
        if key != "request_rate" or "request_rate_by_pod" not in self.queries:
            return self._query(key)
        # The total from the per-pod answer: the same sum the scalar query gives, or missing.
        self._pod_rates = None
        result = self._ask("request_rate_by_pod")
        cause = self.errors.pop("request_rate_by_pod", None)
        if result is None:
            self.errors[key] = cause or NO_SERIES
            return None
        rates = {str(m.get("pod")): scalar([r]) for r in result
                 if isinstance(m := r.get("metric"), dict) and m.get("pod")}
        if not rates or len(rates) != len(result) or any(v is None for v in rates.values()):
            self.errors[key] = no_data(key, nan=any(is_nan([r]) for r in result))
            return None
        self._pod_rates = {p: float(v) for p, v in rates.items() if v is not None}
        return sum(self._pod_rates.values())

    def class_rates(self, observation: Observation) -> tuple[tuple[str, float | None], ...]:
        """Requests/s per class: the sum over its serving pods (every pod of it when the serving
        pods are not known); None when the total is missing, when a serving pod of the class is
        not in the answer, or when it has no pod there."""
        missing = tuple((c, None) for c, _ in self.classes)
        rates = self._pod_rates
        if observation.request_rate is None or rates is None:
            return missing
        pods: Collection[str] = rates
        if self.serving is not None:
            try:
                pods = list(self.serving())
            except Exception:  # noqa: BLE001 - the watch cache did not answer: nothing to learn
                return missing
        of_class: dict[str, list[str]] = {c: [] for c, _ in self.classes}
        for pod in pods:
            cls = next((c for c, regex in self.classes if re.fullmatch(regex, pod)), None)
            if cls is not None:
                of_class[cls].append(pod)
        return tuple((c, sum(rates[p] for p in of_class[c]) if of_class[c] and all(p in rates for p in of_class[c])
                      else None) for c, _ in self.classes)

    def observe(self, *, now: float) -> Observation:
        self.errors = {}
        self._pod_rates = None
        observation, fresh = read_observation(self._read, self.queries, self.errors,
                                              now=now, stale_after_s=self.stale_after_s)
        sums = [s for s in self.sums if s in self.queries]
        if fresh and self.serving is not None and sums and "reporting" in self.queries:
            reporting = PerPod(self._pods("reporting"), self.errors.pop("reporting", None))
            window = None
            if any(s in RATE_SIGNALS for s in sums) and "window_coverage" in self.queries:
                window = PerPod(self._pods("window_coverage"), self.errors.pop("window_coverage", None))
            observation, fresh = complete(observation, self.serving, reporting, window, self._seen, self.errors,
                                          now=now, stale_after_s=self.stale_after_s, signals=sums)
        if self.classes:
            observation = replace(observation, class_request_rate=self.class_rates(observation))
        self.available = fresh
        self._since = self._first.update(self.errors, now)
        return observation

    def _pods(self, key: str) -> dict[str, float] | None:
        result = self._ask(key)
        if result is None:
            return None
        out = {}
        for series in result:
            metric = series.get("metric")
            pod = metric.get("pod") if isinstance(metric, dict) else None
            value = scalar([series])
            if pod and value is not None:
                out[str(pod)] = value
        return out

    def per_pod(self, key: str = "in_flight") -> dict[str, float]:
        """{pod: value} of a per-pod query; pods without a finite value are left out."""
        return self._pods(key) or {}

    def history(self, key: str, *, start: float, end: float, step: float) -> list[tuple[float, float]]:
        """(time, value) samples of one query over a range; [] on any failure (never raises)."""
        step = max(step, (end - start) / 10_000)  # Prometheus refuses more than 11,000 points
        PROMQL_QUERIES.labels(kind="service").inc()
        self.history_error = None
        try:
            result = self._prom().custom_query_range(
                self.queries[key], start_time=datetime.fromtimestamp(start, tz=timezone.utc),
                end_time=datetime.fromtimestamp(end, tz=timezone.utc), step=f"{max(int(step), 1)}s",
                timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001
            log.info("no %s history from %s: %s", key, self.url, exc)
            self.history_error = describe(exc, timeout_s=self.timeout_s)
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
        return summarise(self.errors, self._since)


NO_URL = "no Prometheus URL configured (spec.metrics.prometheusUrl or the operator's --prometheus-url)"
NOT_ALLOWED = ("spec.metrics.prometheusUrl is not allowed by the operator (--prometheus-url-allow): "
               "not queried, no metrics; no scale-down until it is allowed or removed")


@dataclass
class NoMetrics:
    """MetricsPort without a Prometheus to ask (none configured, or the spec's not allowed): every
    signal missing (safe mode), and `note` says why."""

    note: str = NO_URL
    available: bool = False
    history_error: str | None = None

    def observe(self, *, now: float) -> Observation:
        return Observation()

    def history(self, key: str, *, start: float, end: float, step: float) -> list[tuple[float, float]]:
        return []

    def summary(self) -> str:
        return self.note


# --- which Prometheus a service may name -------------------------------------------------------------


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)


def _host(host: str) -> str:
    return host.lower().rstrip(".")


@dataclass(frozen=True)
class UrlRule:
    """One --prometheus-url-allow entry: a URL prefix (`https://prom.example:9090/base`: same scheme,
    host and port, path under it) or a host (`prom.monitoring.svc`, `prom.monitoring.svc:9090`,
    `*.monitoring.svc`: any http(s) URL on it), or `*` (any http(s) URL)."""

    scheme: str | None = None  # None: http or https
    host: str = ""  # lower case; `*.suffix` matches subdomains; `*` any host
    port: int | None = None  # None: any (host rules) / the scheme's default (URL rules)
    path: str = ""  # URL rules: a path prefix, whole segments

    @classmethod
    def parse(cls, entry: str) -> UrlRule:
        entry = entry.strip()
        if entry == "*":
            return cls(host="*")
        if "://" in entry:
            url = _checked(entry)
            if url is None:
                raise ValueError(f"not an http(s) URL prefix: {entry!r}")
            scheme, host, port, path = url
            return cls(scheme=scheme, host=host, port=port, path=path.rstrip("/"))
        host, port_text = entry, ""
        if entry.count(":") == 1:
            host, port_text = entry.split(":")
        if not re.fullmatch(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\.?", host) \
                or (port_text and not port_text.isdigit()) or entry.count(":") > 1:
            raise ValueError(f"not a host, host:port or *.domain: {entry!r}")
        return cls(host=_host(host), port=int(port_text) if port_text else None)

    def permits(self, scheme: str, host: str, port: int, path: str) -> bool:
        if self.host == "*":
            return True
        if self.scheme is not None:
            return (scheme == self.scheme and host == self.host and port == _port(self.scheme, self.port)
                    and (not self.path or path == self.path or path.startswith(self.path + "/")))
        if self.host.startswith("*."):
            if not host.endswith(self.host[1:]):
                return False
        elif host != self.host:
            return False
        return self.port is None or port == self.port


def _checked(url: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path) of a plain http(s) URL; None for anything else: credentials,
    query or fragment, whitespace or control characters, `.`/`..` path segments, a bad port."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or parts.username is not None \
            or parts.password is not None or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    if any(unquote(seg) in (".", "..") for seg in parts.path.split("/")):
        return None
    return scheme, _host(parts.hostname), _port(scheme, port), parts.path.rstrip("/")


@dataclass(frozen=True)
class UrlPolicy:
    """Which Prometheus URL a service may name in spec.metrics.prometheusUrl: one the allow-list
    permits, or the operator's own default (--prometheus-url). Nothing else by default: a tenant
    must not make the operator call any URL it likes."""

    allow: tuple[UrlRule, ...] = ()
    default_url: str | None = None

    @classmethod
    def of(cls, entries: Collection[str], default_url: str | None) -> UrlPolicy:
        return cls(tuple(UrlRule.parse(e) for e in entries if e.strip()), default_url)

    def permits(self, url: str) -> bool:
        checked = _checked(url)
        if checked is None:
            return False
        if self.default_url and _checked(self.default_url) == checked:
            return True
        return any(rule.permits(*checked) for rule in self.allow)


def metrics_port(spec: InferenceServiceSpec, *, namespace: str, name: str, default_url: str | None,
                 policy: UrlPolicy | None = None, ca_bundle: str | None = None,
                 serving: ServingPods | None = None, pod_re: str | None = None,
                 classes: Sequence[str] = ()) -> PrometheusMetrics | NoMetrics:
    """The per-service port: the spec's own Prometheus when the operator's allow-list permits it
    (`policy`, default: only the operator's default URL), else the default; NoMetrics without any
    or when the spec's URL is not allowed (then never the default instead: the spec asked for
    another Prometheus, and reading the default as if it were that one would be a guess).
    `classes`: spec.capacity.classes' names, whose request rates are read per class."""
    policy = policy if policy is not None else UrlPolicy(default_url=default_url)
    own = spec.metrics.prometheus_url
    if own and not policy.permits(own):
        log.warning("%s/%s: spec.metrics.prometheusUrl %r is not allowed (--prometheus-url-allow): no metrics",
                    namespace, name, own)
        return NoMetrics(note=NOT_ALLOWED)
    url = own or default_url
    if not url:
        return NoMetrics()
    queries = queries_for(spec, namespace=namespace, name=name, pod_re=pod_re, rate_by_pod=bool(classes))
    by_class = tuple((c, class_pod_regex(name, c)) for c in sorted(classes, key=lambda c: -len(deployment_name("", c))))
    return PrometheusMetrics(url=url.rstrip("/"), queries=queries, timeout_s=query_timeout(spec),
                             stale_after_s=float(spec.metrics.stale_after_seconds), ca_bundle=ca_bundle,
                             serving=serving, sums=tuple(s for s in SUM_SIGNALS if s not in overridden(spec)),
                             classes=by_class if "request_rate_by_pod" in queries else ())
