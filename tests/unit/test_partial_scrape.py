"""A partial scrape is *missing*, never a smaller number (issue 17, safety item 3).

When one of four serving pods drops out of the scrape, Prometheus' sums cover the three that report
(checked here in Prometheus' own engine with `promtool test rules`), which reads as less load. The
metrics ports compare the pods that report against the serving pods the operator's watch knows and
then report the sums as missing, so the core's safe mode holds capacity instead of scaling down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpufleet.adapters.fleet_metrics import BATCHED_QUERIES, FleetQueries, ServiceMetrics
from gpufleet.adapters.metrics import PrometheusMetrics, queries_for, uncovered, unreported
from gpufleet.adapters.wiring import ClusterWiring
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.api.timefmt import iso_seconds
from gpufleet.control.service import ServiceLoop, Settings
from gpufleet.core.types import Observation
from tests.builders import make_spec
from tests.fakes import RecordingKube, pod
from tests.unit.test_metrics_security import labels, needs_promtool, promtool

PODS = ["chat-ondemand-5d9f7c8b6-x2k4q", "chat-ondemand-5d9f7c8b6-q9z8w", "chat-spot-7b4c9d8f5-k2x9p",
        "chat-spot-7b4c9d8f5-m4n5b"]
DROPPED = PODS[3]


def spec(**extra: Any) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": "m"}, "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}, **extra})


# --- what Prometheus answers when a pod drops out ---------------------------------------------------


@needs_promtool
@pytest.mark.parametrize("gone", ["stale", "_x4"])
def test_prometheus_sums_only_the_pods_that_report(tmp_path: Path, gone: str) -> None:
    """Four pods, 2 queued and 10 requests/s each; the last drops out of the scrape at 4 min, either
    cleanly (a staleness marker: target gone or its scrape failing) or silently (no more samples).
    At 5 min the sums cover three pods: 6 queued, 30/s, the undercount that looked like less load.
    The per-pod `reporting` query tells which pods are in: without the dropped pod, or with it at
    its last sample's time (240 s: older than staleAfterSeconds of 30 s)."""
    series = []
    for name in PODS:
        dropped = name == DROPPED
        pod_labels = labels(namespace="ns", pod=name, model="m")
        series += [
            {"series": f"nv_inference_pending_request_count{pod_labels}",
             "values": f"2x16 {gone}" if dropped else "2x20"},
            {"series": f"nv_inference_request_success{pod_labels}",
             "values": f"0+150x16 {gone}" if dropped else "0+150x20"},
        ]
    spec_queries = queries_for(spec(), namespace="ns", name="chat")
    present = [p for p in PODS if p != DROPPED]
    at = {p: 300 for p in present}
    if gone != "stale":
        at[DROPPED] = 240
    group = {"namespace": "ns", "gpufleet_service": "chat", "model": "m"}
    tests = [
        {"expr": BATCHED_QUERIES["queue_depth"], "eval_time": "5m",
         "exp_samples": [{"labels": labels(**group), "value": 6 + (2 if gone != "stale" else 0)}]},
        {"expr": BATCHED_QUERIES["request_rate"], "eval_time": "5m",
         "exp_samples": [{"labels": labels(**group), "value": 30}]},
        {"expr": BATCHED_QUERIES["reporting"], "eval_time": "5m",
         "exp_samples": [{"labels": labels(**group, pod=p), "value": t} for p, t in at.items()]},
        {"expr": spec_queries["request_rate"], "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": 30}]},
        {"expr": spec_queries["reporting"], "eval_time": "5m",
         "exp_samples": [{"labels": labels(pod=p), "value": t} for p, t in at.items()]},
        # The three that report cover the rate window: 3 samples (and the jitter's one) in its first
        # half, 3 in its last; the dropped pod has none in its last half, so no value.
        {"expr": BATCHED_QUERIES["window_coverage"], "eval_time": "5m",
         "exp_samples": [{"labels": labels(**group, pod=p), "value": 4 / 3} for p in present]},
    ]
    proc = promtool(tmp_path, series, tests)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # Those answers, as the ports read them: the sums are missing, not 6 and 30.
    now = 10_000.0
    answers = {
        "sampled_at": [(group, now)], "queue_depth": [(group, 6.0)], "queue_time_ms": [(group, 4.0)],
        "request_rate": [(group, 30.0)], "in_flight": [({**group, "pod": p}, 2.0) for p in present],
        "reporting": [({**group, "pod": p}, now - 300 + t) for p, t in at.items()],
        "window_coverage": [({**group, "pod": p}, 1.0) for p in PODS],
    }
    serving = dict.fromkeys(PODS, now - 600)  # Ready (and serving) for ten minutes
    for port in ports(answers, serving=lambda: serving):
        observation = port.observe(now=now)
        assert observation == Observation(sampled_at=now, queue_time_ms=4.0), type(port)
        assert not port.available
        assert port.summary() == (f"queue_depth, request_rate: partial scrape: 1 of 4 serving pods not in Prometheus "
                                  f"({DROPPED}) (since 1970-01-01T02:46:40Z)")


@needs_promtool
def test_a_rate_window_prometheus_does_not_cover_reads_low(tmp_path: Path) -> None:
    """Prometheus was down from 2 min to 4 min 30 s (15 s scrapes) while the pod served 10 requests/s.
    At 5 min its 1-minute rate has samples for the last 30 s only and reads 6.25/s, not 10: the
    undercount behind a kube-apiserver trial's decision of 1 pod for 3 (make chaos). Its window
    coverage reads the gap (2/3 < 0.75); from 5 min 30 s the window is whole again."""
    pod_labels = labels(namespace="ns", pod=PODS[0], model="m")
    series = [{"series": f"nv_inference_pending_request_count{pod_labels}", "values": "0x8 _x9 0x10"},
              {"series": f"nv_inference_request_success{pod_labels}", "values": "0+150x8 _x9 2700+150x10"}]
    group = {"namespace": "ns", "gpufleet_service": "chat", "model": "m"}
    spec_queries = queries_for(spec(), namespace="ns", name="chat")
    tests = [
        {"expr": BATCHED_QUERIES["request_rate"], "eval_time": "5m",
         "exp_samples": [{"labels": labels(**group), "value": 6.25}]},
        {"expr": spec_queries["request_rate"], "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": 6.25}]},
        # 1 sample (and the jitter's one) in the first half of the window, 3 in the last: uncovered.
        {"expr": BATCHED_QUERIES["window_coverage"], "eval_time": "5m",
         "exp_samples": [{"labels": labels(**group, pod=PODS[0]), "value": 2 / 3}]},
        {"expr": spec_queries["window_coverage"], "eval_time": "5m",
         "exp_samples": [{"labels": labels(pod=PODS[0]), "value": 2 / 3}]},
        # From a minute after the gap began to end (5m30s, the window starts at the first sample
        # since) the rate is whole, and so is the coverage.
        {"expr": BATCHED_QUERIES["request_rate"], "eval_time": "5m30s",
         "exp_samples": [{"labels": labels(**group), "value": 10}]},
        {"expr": BATCHED_QUERIES["window_coverage"], "eval_time": "5m30s",
         "exp_samples": [{"labels": labels(**group, pod=PODS[0]), "value": 4 / 3}]},
    ]
    proc = promtool(tmp_path, series, tests)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("serving,coverage,uncovered_pods,required", [
    # Ready for ten minutes, as many samples in the window's first half as in its last: covered.
    ({"a": 0.0}, {"a": 1.0}, [], 1),
    # Fewer in the first half: the window starts in a gap, uncovered.
    ({"a": 0.0}, {"a": 0.6}, ["a"], 1),
    # No value (no samples in its first half: Prometheus restarted empty, or the pod was out of
    # the scrape): uncovered.
    ({"a": 0.0, "b": 0.0}, {"a": 0.95}, ["b"], 2),
    # Ready inside the window (or too shortly before it for a first scrape): not required.
    ({"a": 0.0, "b": 950.0, "c": 915.0}, {"a": 1.2}, [], 1),
    # The query failed: every pod that must cover the window is uncovered.
    ({"a": 0.0, "b": 990.0}, None, ["a"], 1),
])
def test_which_serving_pods_must_cover_the_rate_window(serving: dict[str, float], coverage: dict[str, float] | None,
                                                       uncovered_pods: list[str], required: int) -> None:
    assert uncovered(serving, coverage, now=1000.0, stale_after_s=30.0) == (uncovered_pods, required)


# --- the ports ------------------------------------------------------------------------------------


class CannedProm:
    """custom_query() for the batched and the per-service built-in queries from one table of
    {key: [(labels, value)]}."""

    def __init__(self, answers: dict[str, list[tuple[dict[str, str], float]]]) -> None:
        self.answers = answers
        self.by_query = {q: k for k, q in BATCHED_QUERIES.items()}
        self.by_query.update({q: k for k, q in queries_for(spec(), namespace="ns", name="chat").items()})

    def custom_query(self, query: str, timeout: float | None = None) -> list[dict[str, Any]]:
        key = self.by_query[query]
        batched = query in BATCHED_QUERIES.values()
        out = []
        for metric, value in self.answers.get(key, []):
            if not batched:
                metric = {k: v for k, v in metric.items() if k == "pod"}
            out.append({"metric": metric, "value": [0.0, str(value)]})
        return out


def ports(answers: dict[str, list[tuple[dict[str, str], float]]], **kw: Any) -> list[PrometheusMetrics | ServiceMetrics]:
    prom = CannedProm(answers)
    single = PrometheusMetrics(url="http://prom:9090", queries=queries_for(spec(), namespace="ns", name="chat"),
                               stale_after_s=30.0, **kw)
    single._client = prom
    fleet = FleetQueries("http://prom:9090", max_age_s=0.0)
    fleet._client = prom
    batched = ServiceMetrics(fleet, namespace="ns", name="chat", spec=spec(metrics={"staleAfterSeconds": 30}), **kw)
    return [single, batched]


def answers_for(now: float, pods: dict[str, tuple[float, float]]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """What Prometheus answers when `pods` ({pod: (queued, requests/s)}) report, sampled at `now`."""
    group = {"namespace": "ns", "gpufleet_service": "chat", "model": "m"}
    if not pods:
        return {}
    return {
        "sampled_at": [(group, now)],
        "queue_depth": [(group, sum(q for q, _ in pods.values()))],
        "queue_time_ms": [(group, 5.0)],
        "request_rate": [(group, sum(r for _, r in pods.values()))],
        "in_flight": [({**group, "pod": p}, q) for p, (q, _) in pods.items()],
        "reporting": [({**group, "pod": p}, now) for p in pods],
        "window_coverage": [({**group, "pod": p}, 1.0) for p in pods],
    }


def test_a_complete_scrape_keeps_its_sums() -> None:
    now = 10_000.0
    answers = answers_for(now, {p: (1.0, 10.0) for p in PODS})
    for port in ports(answers, serving=lambda: dict.fromkeys(PODS, now - 600)):
        assert port.observe(now=now) == Observation(sampled_at=now, queue_depth=4.0, queue_time_ms=5.0,
                                                    request_rate=40.0)
        assert port.available and port.summary() == "all signals read"


def test_without_the_serving_pods_nothing_is_checked() -> None:
    """Ports nobody told which pods serve (the report CLI, tests) keep the old behaviour."""
    now = 10_000.0
    answers = answers_for(now, {p: (1.0, 10.0) for p in PODS[:3]})
    for port in ports(answers):
        assert port.observe(now=now).request_rate == 30.0


def test_an_uncovered_rate_window_leaves_the_rate_missing_and_the_queue() -> None:
    """Every pod reports (the queue gauge is whole), but Prometheus has no sample of one at the
    rate window's start (half the samples of its last half): the rate sum is missing, the queue depth stays."""
    now = 10_000.0
    answers = answers_for(now, {p: (1.0, 10.0) for p in PODS})
    answers["window_coverage"] = [*answers["window_coverage"][:3], (answers["window_coverage"][3][0], 0.5)]
    for port in ports(answers, serving=lambda: dict.fromkeys(PODS, now - 600)):
        assert port.observe(now=now) == Observation(sampled_at=now, queue_depth=4.0, queue_time_ms=5.0), type(port)
        assert not port.available
        assert port.summary() == (f"request_rate: rate window not covered: Prometheus lacks samples of 1 of 4 serving "
                                  f"pods from the start of the last 1m, their rates read low ({PODS[3]}) "
                                  f"(since 1970-01-01T02:46:40Z)")
    del answers["window_coverage"]  # the query answers nothing (or fails): not covered either
    for port in ports(answers, serving=lambda: dict.fromkeys(PODS, now - 600)):
        assert port.observe(now=now).request_rate is None and not port.available


def test_a_failed_reporting_query_or_pod_cache_is_missing_too() -> None:
    now = 10_000.0
    answers = answers_for(now, {p: (1.0, 10.0) for p in PODS})
    del answers["reporting"]
    answers["reporting"] = []  # no series: nobody reports
    for port in ports(answers, serving=lambda: dict.fromkeys(PODS, now - 600)):
        obs = port.observe(now=now)
        assert obs.request_rate is None and obs.queue_depth is None and not port.available

    def broken() -> dict[str, float]:
        raise TimeoutError("watch cache")

    for port in ports(answers_for(now, {p: (1.0, 10.0) for p in PODS}), serving=broken):
        obs = port.observe(now=now)
        assert obs.request_rate is None and not port.available
        assert "cannot tell which pods serve" in port.summary()


@pytest.mark.parametrize("serving,reporting,seen,missing,required", [
    # Every serving pod reports: complete.
    ({"a": 0.0, "b": 0.0}, {"a": 1000.0, "b": 1000.0}, set(), [], 2),
    # One Ready for ten minutes but not in the scrape: missing.
    ({"a": 0.0, "b": 0.0}, {"a": 1000.0}, set(), ["b"], 2),
    # One whose newest sample is older than staleAfterSeconds: missing.
    ({"a": 0.0, "b": 0.0}, {"a": 1000.0, "b": 900.0}, set(), ["b"], 2),
    # Ready 10 s ago and not scraped yet: not required until staleAfterSeconds have passed...
    ({"a": 0.0, "b": 990.0}, {"a": 1000.0}, set(), [], 1),
    # ...unless it reported once already: then its absence counts at once.
    ({"a": 0.0, "b": 990.0}, {"a": 1000.0}, {"b"}, ["b"], 2),
    # Pods that report but do not serve (standby, draining) change nothing.
    ({"a": 0.0}, {"a": 1000.0, "standby": 1000.0}, set(), [], 1),
    # The query failed: every pod that must report is missing.
    ({"a": 0.0, "b": 990.0}, None, set(), ["a"], 1),
])
def test_which_serving_pods_must_report(serving: dict[str, float], reporting: dict[str, float] | None,
                                        seen: set[str], missing: list[str], required: int) -> None:
    assert unreported(serving, reporting, set(seen), now=1000.0, stale_after_s=60.0) == (missing, required)


def test_seen_pods_are_remembered_while_they_serve() -> None:
    seen: set[str] = set()
    serving = {"a": 990.0}
    assert unreported(serving, {"a": 1000.0}, seen, now=1000.0, stale_after_s=60.0) == ([], 1)
    assert seen == {"a"}
    assert unreported(serving, {}, seen, now=1005.0, stale_after_s=60.0) == (["a"], 1)
    assert unreported({}, {}, seen, now=1010.0, stale_after_s=60.0) == ([], 0) and seen == set()


# --- on the cluster's wiring: safe mode, no scale-down ----------------------------------------------

NOW = iso_seconds("2026-01-01T00:05:00Z")  # the fake pods turned Ready at 00:01


class LiveProm(CannedProm):
    """Answers from the pods that are in the scrape at the time the test sets."""

    def __init__(self, load: dict[str, tuple[float, float]]) -> None:
        super().__init__({})
        self.load = load
        self.scraped = set(load)
        self.now = NOW
        self.restarted_at: float | None = None  # Prometheus restarted with an empty store then

    def custom_query(self, query: str, timeout: float | None = None) -> list[dict[str, Any]]:
        self.answers = answers_for(self.now, {p: v for p, v in self.load.items() if p in self.scraped})
        if self.restarted_at is not None and self.now - self.restarted_at < 60:
            # Its rates extrapolate from the samples since: a fraction of the load.
            covered = (self.now - self.restarted_at) / 60
            self.answers["request_rate"] = [(m, v * covered) for m, v in self.answers["request_rate"]]
            self.answers["window_coverage"] = []
        return super().custom_query(query)


def run_loop(prom: LiveProm, *, own_url: bool, ticks: int = 6) -> tuple[RecordingKube, dict[str, Any]]:
    """Four serving pods at 10 requests/s each (targetRpsPerReplica 10: four are needed), scale-down
    without stabilisation; `ticks` decisions 10 s apart on ClusterWiring with `prom` as Prometheus
    (the shared batched queries, or the service's own allowed URL)."""
    kube = RecordingKube(pods={p: pod(p, serving=True) for p in PODS}, deployments={"chat-ondemand": 4})
    url = "http://prom:9090"
    shared = {url: FleetQueries(url, clock=lambda: prom.now)}
    shared[url]._client = prom
    wiring = ClusterWiring(kube=lambda: kube, namespace="ns", name="chat", snapshot=kube.snapshot,  # type: ignore[arg-type,return-value]
                           prometheus_url=url, prometheus_allow=("prom:9090",), shared=shared)
    loop = ServiceLoop(name="chat", wiring=wiring, settings=Settings())
    s = make_spec(model={"name": "m"}, replicas={"min": 1, "max": 8}, warmPool={"size": 0, "max": 0},
                  forecast={"enabled": False}, capacity={"spot": {"enabled": False}},
                  scaling={"targetRpsPerReplica": 10, "intervalSeconds": 10,
                           "scaleDown": {"stabilizationSeconds": 0, "maxStepPercent": 100}},
                  metrics={"staleAfterSeconds": 30, **({"prometheusUrl": url} if own_url else {})})
    status: dict[str, Any] = {}
    for t in range(ticks):
        prom.now = NOW + 10 * t
        loop.configure(s, prom.now)
        if own_url:
            assert isinstance(loop.metrics, PrometheusMetrics)
            loop.metrics._client = prom
        outcome = loop.tick(status, 1, now=prom.now)
        status = {**status, **(outcome.status or {})}
        loop.confirm(outcome)
    loop.close()
    return kube, status


@pytest.mark.parametrize("own_url", [False, True], ids=["batched", "per-service"])
def test_one_pod_out_of_the_scrape_scales_nothing_down(own_url: bool) -> None:
    load = {p: (0.0, 10.0) for p in PODS}
    # The check that the scenario can scale down: the same fleet at 30 requests/s drops a replica.
    lighter = LiveProm({p: (0.0, 10.0 if p != DROPPED else 0.0) for p in PODS})
    kube, status = run_loop(lighter, own_url=own_url)
    assert status["lastDecision"]["desired"] == 3, status["lastDecision"]

    # All four serve 10/s, one of them is not scraped: 30/s is what Prometheus sums.
    prom = LiveProm(load)
    prom.scraped = set(PODS) - {DROPPED}
    kube, status = run_loop(prom, own_url=own_url)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["lastDecision"]["desired"] == 4, status["lastDecision"]
    assert status["lastDecision"]["reason"] == "SafeMode"
    assert conditions["Degraded"]["reason"] == "SafeMode"
    assert conditions["MetricsAvailable"]["status"] == "False"
    assert f"partial scrape: 1 of 4 serving pods not in Prometheus ({DROPPED})" in \
        conditions["MetricsAvailable"]["message"]
    assert sum(kube.deployments.values()) == 4
    assert not [c for c in kube.calls if c[0] in ("patch", "evict", "scale")], kube.calls


@pytest.mark.parametrize("own_url", [False, True], ids=["batched", "per-service"])
def test_a_restarted_prometheus_scales_nothing_down_until_its_rate_window_fills(own_url: bool) -> None:
    """Prometheus restarts empty just before the first tick: for a minute its rates read a fraction
    of the 40 requests/s the four pods serve. The fleet holds four until the window is whole."""
    load = {p: (0.0, 10.0) for p in PODS}
    prom = LiveProm(load)
    prom.restarted_at = NOW - 5
    kube, status = run_loop(prom, own_url=own_url, ticks=3)  # at +5, +15, +25 s: 3.3, 10, 16.7 requests/s
    assert status["lastDecision"]["desired"] == 4, status["lastDecision"]
    assert status["lastDecision"]["reason"] == "SafeMode"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["MetricsAvailable"]["status"] == "False"
    assert "rate window not covered: Prometheus lacks samples of 4 of 4 serving pods" in \
        conditions["MetricsAvailable"]["message"]
    assert not [c for c in kube.calls if c[0] in ("patch", "evict", "scale")], kube.calls

    # The check that the low rate alone would scale down: the same reading with its window "covered".
    blind = LiveProm({p: (0.0, 10.0 * 25 / 60) for p in PODS})
    kube, status = run_loop(blind, own_url=own_url, ticks=3)
    assert status["lastDecision"]["desired"] < 4, status["lastDecision"]
