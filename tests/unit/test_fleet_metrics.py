"""Batched metrics (gpufleet.adapters.fleet_metrics): the pod-name grouping, the query text, and the
fan-out of one Prometheus answer to many services, without a Prometheus (a canned client). The real
PromQL engine checks the grouping through `promtool test rules` when promtool is installed."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_client import REGISTRY

from gpufleet.adapters import fleet_metrics as fm
from gpufleet.adapters.fleet_metrics import (
    BATCHED_QUERIES,
    POD_PATTERN,
    MODEL_LESS_KEYS,
    FleetQueries,
    ServiceMetrics,
    fan_out,
    fan_out_pods,
    fleet_metrics_port,
    signal_keys,
)
from gpufleet.adapters.metrics import NOT_A_NUMBER, TRITON_QUERIES, TRTLLM_QUERIES, NoMetrics, PrometheusMetrics, UrlPolicy, queries_for
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.types import Observation


def spec(model: str = "chat", backend: str = "triton", **extra: Any) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": model, "backend": backend},
        "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}, **extra})


def service_of(pod: str) -> str | None:
    """What label_replace writes into gpufleet_service (Prometheus anchors the regex: fullmatch)."""
    m = re.fullmatch(POD_PATTERN, pod)
    return m.group(1) if m else None


def k8s_pod_name(deployment: str, rs_hash: str = "5d9f7c8b6", suffix: str = "x2k4q") -> str:
    """The name the ReplicaSet controller gives a pod: generateName `<rs>-`, cut to 58 characters."""
    base = f"{deployment}-{rs_hash}-"
    return base[:58] + suffix


LONG = "recommendation-ranking-llama-70b-eu-west-one"  # 44 characters: its pod names get truncated

# --- grouping ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pod,service", [
    ("chat-ondemand-5d9f7c8b6-x2k4q", "chat"),
    ("chat-spot-7b4c9d8f5-q9z8w", "chat"),
    ("chat-spot-ondemand-5d9f7c8b6-x2k4q", "chat-spot"),
    ("chat-spot-spot-7b4c9d8f5-q9z8w", "chat-spot"),
    ("chat-ondemand-spot-7b4c9d8f5-q9z8w", "chat-ondemand"),
    ("chat-ondemand-ondemand-7b4c9d8f5-q9z8w", "chat-ondemand"),
    ("my-svc-spot-6c8d9f7b5-k2x9p", "my-svc"),
    ("my-svc-ondemand-6c8d9f7b5-k2x9p", "my-svc"),
    ("spot-ondemand-6c8d9f7b5-k2x9p", "spot"),
    ("chat-ondemand-0", "chat"),  # hand-named (tests, static targets)
    (k8s_pod_name(f"{LONG}-ondemand"), LONG),  # truncated by the 63-character limit
    (k8s_pod_name(f"{LONG}-spot"), LONG),
    ("chat-7d9f-x2k4q", None),  # not an operator-owned Deployment
    ("prometheus-0", None),
    ("chat-ondemand", None),
    ("chat-ondemand-abc-x2k4q", None),  # a vowel: no generated segment has one
])
def test_pod_name_groups_to_its_service(pod: str, service: str | None) -> None:
    assert service_of(pod) == service


def test_truncated_names_really_are_truncated() -> None:
    for cls in ("ondemand", "spot"):
        name = k8s_pod_name(f"{LONG}-{cls}")
        assert len(name) == 63 and "-x2k4q" not in name and name.startswith(f"{LONG}-{cls}-"), name


PODS = {
    "chat": ["chat-ondemand-5d9f7c8b6-x2k4q", "chat-spot-7b4c9d8f5-q9z8w"],
    "chat-spot": ["chat-spot-ondemand-6c8d9f7b5-k2x9p", "chat-spot-spot-7b4c9d8f5-m4n5b"],
    "chat-ondemand": ["chat-ondemand-ondemand-6c8d9f7b5-k2x9p", "chat-ondemand-spot-8d7c6b5f4-z9x8w"],
    "my-svc": ["my-svc-spot-6c8d9f7b5-k2x9p"],
}


def per_service_regex(service: str, selector: str | None = None) -> str:
    """The pod regex of a per-service selector: the old template's, or (None) the built-in queries'."""
    text = Template(selector).safe_substitute(service=service) if selector else \
        queries_for(spec(), namespace="a", name=service)["queue_depth"]
    pod = re.search(r'pod=~"([^"]+)"', text)
    assert pod is not None
    return pod.group(1).replace("\\\\", "\\")  # the PromQL string's value


def test_old_per_service_prefix_collided_and_the_new_selectors_do_not() -> None:
    old = 'pod=~"$service-(ondemand|spot)-.*"'
    for service, pods in PODS.items():
        for owner, owned in PODS.items():
            for pod in owned:
                assert service_of(pod) == owner
                new_match = re.fullmatch(per_service_regex(service), pod) is not None
                assert new_match == (owner == service), (service, pod)
    # Which names collided: service X's old prefix took the pods of services X-ondemand and X-spot.
    collisions = {(service, owner) for service in PODS for owner, owned in PODS.items() if owner != service
                  for pod in owned if re.fullmatch(per_service_regex(service, old), pod)}
    assert collisions == {("chat", "chat-spot"), ("chat", "chat-ondemand")}
    # Hand-named and truncated pods still match their service's own selector.
    assert re.fullmatch(per_service_regex("chat"), "chat-ondemand-0")
    assert re.fullmatch(per_service_regex(LONG), k8s_pod_name(f"{LONG}-spot"))


# --- query text ----------------------------------------------------------------------------------


def metric_names(query: str) -> set[str]:
    return set(re.findall(r"\b(?:nv_|trtllm_|DCGM_)[A-Za-z_]+", query))


def test_every_built_in_query_has_a_batched_form_on_the_same_series() -> None:
    for key, query in TRITON_QUERIES.items():
        assert metric_names(BATCHED_QUERIES[key]) == metric_names(query), key
    for key, query in TRTLLM_QUERIES.items():
        batched = BATCHED_QUERIES.get(f"trtllm:{key}") or BATCHED_QUERIES[key]
        assert metric_names(batched) == metric_names(query), key
    for key, query in BATCHED_QUERIES.items():
        assert "$namespace" not in query and "$service" not in query and "$model" not in query
        assert f'"gpufleet_service", "$1", "pod", "{POD_PATTERN}"' in query, key
        by = "namespace, gpufleet_service, model, pod" if "in_flight" in key else "namespace, gpufleet_service, model"
        if key in MODEL_LESS_KEYS:  # DCGM's series have no model label
            by = "namespace, gpufleet_service"
        assert f"by ({by}" in query, key
        if "trtllm_" in query:  # TensorRT-LLM's own series: model_name copied into model
            assert '"model", "$1", "model_name", "(.*)"' in query, key


def test_batched_query_shapes() -> None:
    q = BATCHED_QUERIES
    assert q["queue_time_ms"].count("/ on (namespace, gpufleet_service, model) clamp_min(") == 1
    assert q["ttft_p95_ms"].startswith("histogram_quantile(0.95, sum by (namespace, gpufleet_service, model, le) (")
    assert q["sampled_at"].startswith("max by (namespace, gpufleet_service, model) (label_replace(timestamp(")
    assert 'request_type="waiting"' in q["trtllm:queue_depth"] and 'request_type=~"active|waiting"' in q["trtllm:in_flight"]


def test_signal_keys_follow_backend_and_slo() -> None:
    plain = signal_keys(spec())
    assert set(plain) == {"sampled_at", "queue_depth", "queue_time_ms", "request_rate", "in_flight", "reporting",
                          "window_coverage"}
    llm = signal_keys(spec(backend="tensorrtllm", slo={"ttftP95Ms": 500, "latencyP95Ms": 900}))
    assert llm["queue_depth"] == "trtllm:queue_depth" and llm["in_flight"] == "trtllm:in_flight"
    assert llm["ttft_p95_ms"] == "trtllm:ttft_p95_ms" and llm["latency_p95_ms"] == "trtllm:latency_p95_ms"
    assert llm["kv_cache_utilization"] == "trtllm:kv_cache_utilization"
    assert "itl_p95_ms" not in llm and "gpu_utilization" not in llm  # no target: not read
    every = signal_keys(spec(slo={"latencyMeanMs": 900, "latencyP95Ms": 900, "gpuUtilizationPercent": 70}))
    assert {"latency_mean_ms", "latency_p95_ms", "gpu_utilization"} <= set(every) and "kv_cache_utilization" not in every
    off = signal_keys(spec(backend="tensorrtllm", slo={"kvCacheUtilization": 1.0, "itlP95Ms": 40}))
    assert "kv_cache_utilization" not in off and off["itl_p95_ms"] == "trtllm:itl_p95_ms"


def test_needed_queries_are_the_union_of_registered_services() -> None:
    fleet = FleetQueries("http://prom:9090")
    assert fleet.needed() == {}
    fleet.register("a", "chat", spec())
    assert set(fleet.needed()) == {"sampled_at", "queue_depth", "queue_time_ms", "request_rate", "in_flight",
                                   "reporting", "window_coverage"}
    fleet.register("b", "llm", spec(backend="tensorrtllm", slo={"ttftP95Ms": 500}))
    assert {"trtllm:queue_depth", "trtllm:in_flight", "trtllm:kv_cache_utilization", "trtllm:ttft_p95_ms"} \
        <= set(fleet.needed())
    assert "latency_p95_ms" not in fleet.needed()
    fleet.unregister("b", "llm")
    assert not any(k.startswith("trtllm:") or "ttft_p95_ms" in k for k in fleet.needed())
    with pytest.raises(ValueError):
        fleet.register("a", "custom", spec(metrics={"queries": {"requestRate": "sum(x)"}}))


def test_max_age_defaults_to_the_shortest_interval() -> None:
    fleet = FleetQueries("http://prom:9090")
    assert fleet.max_age() == 1.0
    fleet.register("a", "x", spec(scaling={"intervalSeconds": 10}))
    fleet.register("a", "y", spec(scaling={"intervalSeconds": 5}))
    assert fleet.max_age() == 5.0
    assert FleetQueries("http://prom:9090", max_age_s=2.5).max_age() == 2.5


# --- fan-out -------------------------------------------------------------------------------------


def series(ns: str, svc: str, model: str, value: str, pod: str | None = None) -> dict[str, Any]:
    metric = {"namespace": ns, "gpufleet_service": svc, "model": model}
    if pod:
        metric["pod"] = pod
    return {"metric": metric, "value": [1000.0, value]}


def test_fan_out_keys_by_group_and_drops_non_finite() -> None:
    result = [series("a", "chat", "m", "3"), series("a", "chat-spot", "m", "NaN"),
              series("b", "chat", "m", "+Inf"), series("b", "", "m", "7")]
    assert fan_out(result) == {("a", "chat", "m"): 3.0, ("a", "chat-spot", "m"): None, ("b", "chat", "m"): None}
    pods = fan_out_pods([series("a", "chat", "m", "2", "chat-ondemand-5d9f7c8b6-x2k4q"),
                         series("a", "chat", "m", "NaN", "chat-spot-7b4c9d8f5-q9z8w")])
    assert pods == {("a", "chat", "m"): {"chat-ondemand-5d9f7c8b6-x2k4q": 2.0}}


NOW = 10_000.0


class CannedProm:
    """custom_query() answering each batched query from a table; counts calls; optional delay/failure."""

    def __init__(self, answers: dict[str, list[dict[str, Any]]], delay_s: float = 0.0) -> None:
        self.by_query = {BATCHED_QUERIES[k]: v for k, v in answers.items()}
        self.delay_s = delay_s
        self.calls: list[str] = []
        self.fail: Exception | None = None
        self.lock = threading.Lock()

    def custom_query(self, query: str, timeout: float | None = None) -> list[dict[str, Any]]:
        with self.lock:
            self.calls.append(query)
        time.sleep(self.delay_s)
        if self.fail:
            raise self.fail
        return self.by_query.get(query, [])


def canned_fleet(prom: CannedProm, **kw: Any) -> FleetQueries:
    fleet = FleetQueries("http://prom:9090", **kw)
    fleet._client = prom  # a duck-typed PrometheusConnect (PrometheusConnect is untyped here)
    return fleet


ANSWERS: dict[str, list[dict[str, Any]]] = {
    "sampled_at": [series("a", "chat", "chat", str(NOW - 2)), series("a", "chat-spot", "chat", str(NOW - 1)),
                   series("b", "old", "chat", str(NOW - 500)), series("b", "llm", "llama", str(NOW - 1))],
    "queue_depth": [series("a", "chat", "chat", "4"), series("a", "chat-spot", "chat", "0"),
                    series("b", "old", "chat", "9")],
    "queue_time_ms": [series("a", "chat", "chat", "12.5"), series("a", "chat-spot", "chat", "NaN")],
    "request_rate": [series("a", "chat", "chat", "30"), series("a", "chat-spot", "chat", "0")],
    "latency_p95_ms": [series("a", "chat", "chat", "250")],
    "latency_mean_ms": [series("a", "chat", "chat", "120")],
    "in_flight": [series("a", "chat", "chat", "3", "chat-ondemand-5d9f7c8b6-x2k4q"),
                  series("a", "chat", "chat", "1", "chat-spot-7b4c9d8f5-q9z8w"),
                  series("a", "chat-spot", "chat", "0", "chat-spot-ondemand-6c8d9f7b5-k2x9p")],
    "trtllm:queue_depth": [series("b", "llm", "llama", "6")],
    "trtllm:in_flight": [series("b", "llm", "llama", "5", "llm-spot-7b4c9d8f5-q9z8w")],
    "trtllm:kv_cache_utilization": [series("b", "llm", "llama", "0.75")],
}


def test_one_answer_fans_out_to_every_service() -> None:
    prom = CannedProm(ANSWERS)
    fleet = canned_fleet(prom)
    chat = ServiceMetrics(fleet, namespace="a", name="chat", spec=spec(slo={"latencyP95Ms": 500}))
    chat_spot = ServiceMetrics(fleet, namespace="a", name="chat-spot", spec=spec())
    llm = ServiceMetrics(fleet, namespace="b", name="llm", spec=spec("llama", "tensorrtllm"))
    absent = ServiceMetrics(fleet, namespace="a", name="nopods", spec=spec())
    other_model = ServiceMetrics(fleet, namespace="a", name="chat-spot", spec=spec("other"))  # re-registers
    stale = ServiceMetrics(fleet, namespace="b", name="old", spec=spec())

    assert chat.observe(now=NOW) == Observation(sampled_at=NOW - 2, queue_depth=4.0, queue_time_ms=12.5,
                                                latency_p95_ms=250.0, request_rate=30.0)
    assert chat.available and chat.summary() == "all signals read"
    sent = len(prom.calls)
    assert sent == len(fleet.needed())  # one query per signal, for all six services

    # Zero stays zero; NaN is missing; nothing is read twice within the max age.
    assert chat_spot.observe(now=NOW) == Observation(sampled_at=NOW - 1, queue_depth=0.0, request_rate=0.0)
    assert chat_spot.available and chat_spot.errors == {"queue_time_ms": NOT_A_NUMBER}
    # TensorRT-LLM: the KV cache is read by default (slo.kvCacheUtilization 0.85).
    assert llm.observe(now=NOW + 0.5) == Observation(sampled_at=NOW - 1, queue_depth=6.0, kv_cache_utilization=0.75)
    assert llm.value("kv_cache_utilization") == 0.75
    assert len(prom.calls) == sent

    # A service absent from the answers is missing, never zero; so is another model's group.
    assert absent.observe(now=NOW) == Observation() and not absent.available
    assert "sampled_at" in absent.summary()
    assert other_model.observe(now=NOW) == Observation()
    # Stale: every signal missing although queue_depth has a value.
    assert stale.observe(now=NOW) == Observation(sampled_at=NOW - 500) and not stale.available
    # The cause without the age: the same text tick after tick (Events compare it).
    assert stale.errors["sampled_at"] == "metrics stale: newest sample older than staleAfterSeconds (60s)"

    # Per pod: each service sees only its own pods.
    fleet.clock = lambda: NOW + 0.5
    assert chat.per_pod() == {"chat-ondemand-5d9f7c8b6-x2k4q": 3.0, "chat-spot-7b4c9d8f5-q9z8w": 1.0}
    assert llm.per_pod("in_flight") == {"llm-spot-7b4c9d8f5-q9z8w": 5.0}
    assert absent.per_pod() == {}
    assert len(prom.calls) == sent

    # After the max age (the shortest interval, 10 s by default), one refresh again.
    assert fleet.refresh(NOW + 10) == len(fleet.needed()) and len(prom.calls) == 2 * sent


def test_failed_queries_make_every_service_missing_and_are_recorded_per_key() -> None:
    prom = CannedProm(ANSWERS)
    fleet = canned_fleet(prom)
    chat = ServiceMetrics(fleet, namespace="a", name="chat", spec=spec())
    assert chat.observe(now=NOW).queue_depth == 4.0
    # Unreachable (an OSError, as requests' ConnectionError and Timeout are): the first failure
    # stops this refresh, the other keys fail with it unsent.
    prom.fail = ConnectionRefusedError(111, "Connection refused")
    sent = len(prom.calls)
    assert chat.observe(now=NOW + 10) == Observation() and not chat.available
    assert len(prom.calls) == sent + 1 and fleet.queries_sent == sent + 1
    refused = "Prometheus unreachable (connection refused)"
    assert set(fleet.errors) == set(fleet.needed()) and set(fleet.errors.values()) == {refused}
    # Since when: the first tick that saw the cause (NOW + 10), the same on every tick it lasts.
    assert chat.summary() == f"sampled_at: {refused} (since 1970-01-01T02:46:50Z) (details in the operator log)"
    assert chat.per_pod() == {}
    # An error answer (bad PromQL, HTTP 503) does not stop the other queries.
    prom.fail = PrometheusApiClientException("HTTP Status Code 503 (b'service unavailable')")
    sent = len(prom.calls)
    assert chat.observe(now=NOW + 20) == Observation()
    assert len(prom.calls) == sent + len(fleet.needed()) and set(fleet.errors) == set(fleet.needed())
    prom.fail = None
    assert chat.observe(now=NOW + 30).queue_depth == 4.0 and fleet.errors == {}


def test_concurrent_callers_wait_for_one_refresh() -> None:
    prom = CannedProm(ANSWERS, delay_s=0.05)
    fleet = canned_fleet(prom)
    services = [ServiceMetrics(fleet, namespace="a", name=f"s{i}", spec=spec()) for i in range(16)]
    results: list[Observation] = []
    barrier = threading.Barrier(len(services))

    def tick(s: ServiceMetrics) -> None:
        barrier.wait()
        results.append(s.observe(now=NOW))

    threads = [threading.Thread(target=tick, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 16 and len(prom.calls) == len(fleet.needed()) == fleet.queries_sent


class HeldProm(CannedProm):
    """custom_query() held until `release` is set, once `held` is."""

    def __init__(self, answers: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(answers)
        self.held, self.entered, self.release = threading.Event(), threading.Event(), threading.Event()

    def custom_query(self, query: str, timeout: float | None = None) -> list[dict[str, Any]]:
        if self.held.is_set():
            self.entered.set()
            assert self.release.wait(timeout=30)
        return super().custom_query(query, timeout)


class WatchedLock:
    """FleetQueries' refresh lock, telling when a caller blocks on it (it waits for the refresh)."""

    def __init__(self) -> None:
        self.lock, self.blocked = threading.Lock(), threading.Event()

    def acquire(self, blocking: bool = True) -> bool:
        if self.lock.acquire(blocking=False):
            return True
        if not blocking:
            return False
        self.blocked.set()
        return self.lock.acquire()

    def release(self) -> None:
        self.lock.release()


def test_callers_read_recent_answers_while_another_refreshes() -> None:
    prom = HeldProm(ANSWERS)
    fleet = canned_fleet(prom)  # max age: the services' 10 s interval
    lock = fleet._refreshing = WatchedLock()  # type: ignore[assignment]
    chat = ServiceMetrics(fleet, namespace="a", name="chat", spec=spec())
    spot = ServiceMetrics(fleet, namespace="a", name="chat-spot", spec=spec())
    assert chat.observe(now=NOW).queue_depth == 4.0
    before = spot.observe(now=NOW)
    assert spot.available and before.sampled_at == NOW - 1
    # The next interval's refresh hangs on Prometheus; a tick meanwhile reads the answers it is
    # replacing (10 s old) at once instead of waiting for the batch.
    prom.held.set()
    refresher = threading.Thread(target=chat.observe, kwargs={"now": NOW + 10})
    waited: list[Observation] = []
    waiter = threading.Thread(target=lambda: waited.append(spot.observe(now=NOW + 20)))
    try:
        refresher.start()
        assert prom.entered.wait(timeout=30)
        sent = len(prom.calls)
        assert spot.observe(now=NOW + 11) == before and spot.available and len(prom.calls) == sent
        assert not lock.blocked.is_set()
        # Answers two max ages old are too old to stand in: the caller waits for the refresh and
        # reads what it brings (a newer sample).
        waiter.start()
        assert lock.blocked.wait(timeout=30)
        prom.by_query[BATCHED_QUERIES["sampled_at"]] = [series("a", "chat-spot", "chat", str(NOW + 9))]
    finally:
        prom.release.set()
    refresher.join(timeout=30)
    waiter.join(timeout=30)
    assert [o.sampled_at for o in waited] == [NOW + 9]


def counter(kind: str) -> float:
    return REGISTRY.get_sample_value("gpufleet_promql_queries_total", {"kind": kind}) or 0.0


def test_queries_are_counted_by_kind() -> None:
    before = counter("batched")
    fleet = canned_fleet(CannedProm(ANSWERS))
    ServiceMetrics(fleet, namespace="a", name="chat", spec=spec()).observe(now=NOW)
    assert counter("batched") - before == len(fleet.needed()) == fleet.queries_sent

    before = counter("service")
    dead = PrometheusMetrics(url=f"http://127.0.0.1:{free_port()}", queries={"sampled_at": "x"},
                             stale_after_s=60, timeout_s=0.5)
    dead.observe(now=NOW)
    assert counter("service") - before == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_unreachable_prometheus_gives_missing_never_raises() -> None:
    fleet = FleetQueries(f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
    chat = ServiceMetrics(fleet, namespace="a", name="chat", spec=spec())
    started = time.monotonic()
    assert chat.observe(now=time.time()) == Observation() and not chat.available
    assert time.monotonic() - started < 10
    assert set(fleet.errors) == set(fleet.needed()) and "sampled_at" in chat.summary()
    assert fleet.queries_sent == 1  # the others were not sent to a Prometheus that is not there


# --- the factory ---------------------------------------------------------------------------------


def test_factory_routes_services() -> None:
    shared: dict[str, FleetQueries] = {}
    url = "http://prom:9090/"
    a = fleet_metrics_port(spec(), namespace="a", name="chat", default_url=url, shared=shared)
    b = fleet_metrics_port(spec(), namespace="b", name="chat", default_url=url, shared=shared)
    assert isinstance(a, ServiceMetrics) and isinstance(b, ServiceMetrics)
    assert a.fleet is b.fleet and list(shared) == ["http://prom:9090"]
    assert a.fleet.registered() == {("a", "chat"), ("b", "chat")}

    custom = spec(metrics={"queries": {"requestRate": 'sum(rate(x{ns="$namespace"}[2m]))'}})
    moved = fleet_metrics_port(custom, namespace="a", name="chat", default_url=url, shared=shared)
    assert isinstance(moved, PrometheusMetrics) and moved.queries["request_rate"] == 'sum(rate(x{ns="a"}[2m]))'
    assert a.fleet.registered() == {("b", "chat")}  # moved off the shared queries

    own = fleet_metrics_port(spec(metrics={"prometheusUrl": "http://other:9090"}), namespace="c", name="x",
                             default_url=url, shared=shared, policy=UrlPolicy.of(["other"], url))
    assert isinstance(own, PrometheusMetrics) and own.url == "http://other:9090"
    assert isinstance(fleet_metrics_port(spec(), namespace="c", name="y", default_url=None, shared=shared),
                      NoMetrics)
    # A spec change makes a new port; closing the old one afterwards leaves the new one registered.
    b2 = fleet_metrics_port(spec(slo={"latencyP95Ms": 900}), namespace="b", name="chat", default_url=url,
                            shared=shared)
    assert isinstance(b2, ServiceMetrics) and "latency_p95_ms" in b2.fleet.needed()
    b.close()
    assert a.fleet.registered() == {("b", "chat")}
    b2.close()
    assert a.fleet.registered() == set() and a.fleet.needed() == {}


# --- the real PromQL engine, offline ---------------------------------------------------------------


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_evaluates_the_grouping(tmp_path: Path) -> None:
    """`promtool test rules` runs the batched queries on synthetic series in Prometheus's own engine
    (RE2, anchoring, label_replace, vector matching): chat and chat-spot never mix."""
    pods = {"chat": ("chat-ondemand-5d9f7c8b6-x2k4q", "chat-spot-7b4c9d8f5-q9z8w"),
            "chat-spot": ("chat-spot-ondemand-6c8d9f7b5-k2x9p",)}
    input_series = []
    for svc, names in pods.items():
        for pod in names:
            labels = f'namespace="a",pod="{pod}",model="m"'
            pending = 2 if svc == "chat" else 5
            input_series += [
                {"series": f"nv_inference_pending_request_count{{{labels}}}", "values": f"{pending}x40"},
                {"series": f"nv_inference_request_success{{{labels}}}", "values": "0+15x40"},  # 1/s
                {"series": f"nv_inference_queue_duration_us{{{labels}}}", "values": "0+150000x40"},  # 10 ms each
                # Executions finish on every pod but chat-spot-7b4…, which finished its last at 150 s.
                {"series": f"nv_inference_exec_count{{{labels}}}",
                 "values": "0+15x10 150x30" if pod.startswith("chat-spot-7b") else "0+15x40"},
            ]
    # chat-spot's server also rejects one request a second: the rate counts every request.
    input_series.append({"series": 'nv_inference_request_failure{namespace="a",pod="%s",model="m",reason="REJECTED"}'
                         % pods["chat-spot"][0], "values": "0+15x40"})
    input_series.append({"series": 'nv_inference_pending_request_count{namespace="a",pod="other-0",model="m"}',
                         "values": "100x40"})
    group = {"namespace": "a", "model": "m"}

    def sample(svc: str, value: float, **labels: str) -> dict[str, Any]:
        return {"labels": "{" + ",".join(f'{k}="{v}"' for k, v in {**group, "gpufleet_service": svc,
                                                                       **labels}.items()) + "}", "value": value}

    tests = [
        {"expr": BATCHED_QUERIES["queue_depth"], "eval_time": "5m",
         "exp_samples": [sample("chat", 4), sample("chat-spot", 5)]},
        {"expr": BATCHED_QUERIES["request_rate"], "eval_time": "5m",
         "exp_samples": [sample("chat", 2), sample("chat-spot", 2)]},
        {"expr": BATCHED_QUERIES["queue_time_ms"], "eval_time": "5m",
         "exp_samples": [sample("chat", 10), sample("chat-spot", 10)]},
        {"expr": BATCHED_QUERIES["sampled_at"], "eval_time": "5m",
         "exp_samples": [sample("chat", 300), sample("chat-spot", 300)]},
        {"expr": BATCHED_QUERIES["in_flight"], "eval_time": "5m",
         # Queued requests, plus 1 on a pod where an execution finished within the last 30 s.
         "exp_samples": [sample("chat", 3, pod=pods["chat"][0]), sample("chat", 2, pod=pods["chat"][1]),
                         sample("chat-spot", 6, pod=pods["chat-spot"][0])]},
    ]
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": []}))
    test = tmp_path / "test.yml"
    test.write_text(json.dumps({"rule_files": [str(rules)], "evaluation_interval": "15s", "tests": [
        {"interval": "15s", "input_series": input_series, "promql_expr_test": tests}]}))
    proc = subprocess.run(["promtool", "test", "rules", str(test)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_module_exports() -> None:
    assert fm.GROUP_LABELS == ("namespace", "gpufleet_service", "model")
