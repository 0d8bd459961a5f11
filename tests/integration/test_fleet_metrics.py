"""Batched metrics against a real Prometheus: one query per signal for all services, fanned out.

A small threaded HTTP server on 127.0.0.1 serves Triton-format /metrics (the shape of
gpufleet.emulator's) for pods of several services in two namespaces, including `chat` and
`chat-spot` whose pod names the former per-service prefix mixed up; Debian's Prometheus scrapes them
every second through file_sd. Counters grow linearly with time, so every rate is steady and each
service's truth is known. Each test compares ServiceMetrics (batched) with PrometheusMetrics (the
per-service queries) on the same Prometheus.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gpufleet.adapters.fleet_metrics import FleetQueries, ServiceMetrics, fleet_metrics_port
from gpufleet.adapters.metrics import PrometheusMetrics, metrics_port
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.types import Observation
from gpufleet.devenv import prometheus as devprom
from tests.support import ROOT, wait_for

pytestmark = pytest.mark.prometheus

SCRAPE_S = 1.0
BUCKETS = (10.0, 50.0, 100.0, 500.0)  # first-response histogram bounds, ms


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    model: str
    pending: int  # queue gauge
    rps: float  # successes per second
    queue_ms: float  # mean queue wait per request
    request_ms: float  # mean request duration
    ttft_split: tuple[float, ...] = (0.5, 0.4, 0.1, 0.0)  # share of first responses per bucket (+Inf: rest)
    trtllm: bool = False
    active: int = 0
    waiting: int = 0
    kv_fraction: float = 0.0
    executions: bool = True  # False: no model execution finishes on it (nv_inference_exec_count stays)


PODS = [
    Pod("fm-a", "chat-ondemand-5d9f7c8b6-x2k4q", "chat", pending=2, rps=10, queue_ms=4, request_ms=40),
    Pod("fm-a", "chat-spot-7b4c9d8f5-q9z8w", "chat", pending=3, rps=30, queue_ms=8, request_ms=60,
        ttft_split=(0.3, 0.5, 0.2, 0.0), executions=False),
    # Service `chat-spot`: the old `chat-(ondemand|spot)-.*` of `chat` took this pod too.
    Pod("fm-a", "chat-spot-ondemand-6c8d9f7b5-k2x9p", "chat", pending=7, rps=5, queue_ms=100, request_ms=300,
        ttft_split=(0.0, 0.0, 0.5, 0.4)),
    # Same service name and model in another namespace.
    Pod("fm-b", "chat-ondemand-8d7c6b5f4-z9x8w", "chat", pending=1, rps=2, queue_ms=1, request_ms=20),
    # TensorRT-LLM service.
    Pod("fm-b", "llm-ondemand-6c8d9f7b5-k2x9p", "llama", pending=0, rps=4, queue_ms=20, request_ms=900,
        trtllm=True, active=6, waiting=2, kv_fraction=0.5),
    Pod("fm-b", "llm-spot-7b4c9d8f5-m4n5b", "llama", pending=1, rps=6, queue_ms=30, request_ms=1100,
        trtllm=True, active=8, waiting=3, kv_fraction=0.7),
    # Not an operator-owned pod: never counted for any service.
    Pod("fm-a", "other-0", "chat", pending=100, rps=100, queue_ms=1000, request_ms=1000),
]


def render(pod: Pod, elapsed: float) -> str:
    """Triton-format text (as gpufleet.emulator renders it), counters linear in elapsed seconds."""
    labels = f'model="{pod.model}",version="1"'
    success = pod.rps * elapsed
    lines = [
        "# TYPE nv_inference_request_success counter",
        f"nv_inference_request_success{{{labels}}} {success:.6f}",
        "# TYPE nv_inference_exec_count counter",
        f"nv_inference_exec_count{{{labels}}} {success if pod.executions else 0:.6f}",
        "# TYPE nv_inference_pending_request_count gauge",
        f"nv_inference_pending_request_count{{{labels}}} {pod.pending}",
        "# TYPE nv_inference_queue_duration_us counter",
        f"nv_inference_queue_duration_us{{{labels}}} {success * pod.queue_ms * 1000:.6f}",
        "# TYPE nv_inference_request_duration_us counter",
        f"nv_inference_request_duration_us{{{labels}}} {success * pod.request_ms * 1000:.6f}",
        # Triton's request summary (summary_latencies=true): this pod's p95 at 1.5x its mean.
        "# TYPE nv_inference_request_summary_us summary",
        f'nv_inference_request_summary_us{{{labels},quantile="0.5"}} {pod.request_ms * 900:.3f}',
        f'nv_inference_request_summary_us{{{labels},quantile="0.95"}} {pod.request_ms * 1500:.3f}',
        f"nv_inference_request_summary_us_count{{{labels}}} {success:.6f}",
        f"nv_inference_request_summary_us_sum{{{labels}}} {success * pod.request_ms * 1000:.6f}",
        "# TYPE nv_inference_first_response_histogram_ms histogram",
    ]
    cumulative = 0.0
    for le, share in zip(BUCKETS, pod.ttft_split, strict=True):
        cumulative += share
        lines.append(f'nv_inference_first_response_histogram_ms_bucket{{{labels},le="{le}"}} {success * cumulative:.6f}')
    lines += [
        f'nv_inference_first_response_histogram_ms_bucket{{{labels},le="+Inf"}} {success:.6f}',
        f"nv_inference_first_response_histogram_ms_count{{{labels}}} {success:.6f}",
        f"nv_inference_first_response_histogram_ms_sum{{{labels}}} {success * 50:.6f}",
    ]
    if pod.trtllm:
        lines += [
            "# TYPE nv_trt_llm_request_metrics gauge",
            f'nv_trt_llm_request_metrics{{{labels},request_type="active"}} {pod.active}',
            f'nv_trt_llm_request_metrics{{{labels},request_type="waiting"}} {pod.waiting}',
            f'nv_trt_llm_request_metrics{{{labels},request_type="max"}} 64',
            "# TYPE nv_trt_llm_kv_cache_block_metrics gauge",
            f'nv_trt_llm_kv_cache_block_metrics{{{labels},kv_cache_block_type="fraction"}} {pod.kv_fraction}',
            f'nv_trt_llm_kv_cache_block_metrics{{{labels},kv_cache_block_type="max"}} 4096',
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def pod_metrics() -> Iterator[str]:
    """Serves /metrics/<namespace>/<pod> for PODS; yields host:port."""
    by_path = {f"/metrics/{p.namespace}/{p.name}": p for p in PODS}
    started = time.time()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            pod = by_path.get(self.path)
            if pod is None:
                self.send_error(404)
                return
            data = render(pod, time.time() - started).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def prometheus_binary() -> None:
    if not devprom.is_available():
        proc = subprocess.run([str(ROOT / "hack/deps.sh")], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not devprom.is_available():
            pytest.fail(f"prometheus not installed and hack/deps.sh failed ({proc.returncode}): {proc.stderr[-2000:]}")


@pytest.fixture(scope="module")
def file_sd(pod_metrics: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fleet_sd")
    devprom.write_file_sd(directory, "pods", [
        devprom.Target(pod_metrics, {"namespace": p.namespace, "pod": p.name}, f"/metrics/{p.namespace}/{p.name}")
        for p in PODS])
    return directory


def start_prometheus(file_sd: Path) -> devprom.PrometheusServer:
    prom = devprom.PrometheusServer(scrape_interval_s=SCRAPE_S, file_sd_dir=file_sd).start()
    try:
        prom.wait_for_targets(len(PODS), timeout_s=40)
    except BaseException:
        prom.stop()
        raise
    return prom


@pytest.fixture(scope="module")
def prometheus(prometheus_binary: None, file_sd: Path) -> Iterator[devprom.PrometheusServer]:
    prom = start_prometheus(file_sd)
    try:
        yield prom
    finally:
        prom.stop()


def spec(model: str = "chat", backend: str = "triton") -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": model, "backend": backend},
        # Every built-in signal is read (not DCGM's: these pods have no GPU series).
        "slo": {"latencyP95Ms": 1000, "latencyMeanMs": 1000, "ttftP95Ms": 500},
        "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}})


SERVICES: dict[tuple[str, str], InferenceServiceSpec] = {
    ("fm-a", "chat"): spec(),
    ("fm-a", "chat-spot"): spec(),
    ("fm-b", "chat"): spec(),
    ("fm-b", "llm"): spec("llama", "tensorrtllm"),
    ("fm-a", "empty"): spec(),  # no pods at all
}


def single(key: tuple[str, str], url: str) -> PrometheusMetrics:
    port = metrics_port(SERVICES[key], namespace=key[0], name=key[1], default_url=url)
    assert isinstance(port, PrometheusMetrics)
    port.timeout_s = 2.0
    return port


def batched(fleet: FleetQueries, key: tuple[str, str]) -> ServiceMetrics:
    return ServiceMetrics(fleet, namespace=key[0], name=key[1], spec=SERVICES[key], timeout_s=2.0)


FIELDS = ("sampled_at", "queue_depth", "queue_time_ms", "ttft_p95_ms", "latency_p95_ms", "request_rate",
          "latency_mean_ms", "kv_cache_utilization")


def same(a: Observation, b: Observation) -> bool:
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if (x is None) != (y is None) or (x is not None and x != pytest.approx(y, rel=1e-9, abs=1e-6)):
            return False
    return True


def promql(url: str, query: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}",
                                timeout=5) as resp:
        result: list[dict[str, Any]] = json.load(resp)["data"]["result"]
        return result


def counter(kind: str) -> float:
    return REGISTRY.get_sample_value("gpufleet_promql_queries_total", {"kind": kind}) or 0.0


# --- tests ---------------------------------------------------------------------------------------


def test_queries_per_refresh_do_not_grow_with_services(prometheus: devprom.PrometheusServer) -> None:
    fleet = FleetQueries(prometheus.url, max_age_s=2.0, timeout_s=2.0)
    few = [batched(fleet, key) for key in [("fm-a", "chat"), ("fm-a", "chat-spot"), ("fm-b", "chat")]]
    t0 = time.time()
    sent, batched_before = fleet.queries_sent, counter("batched")
    for port in few:
        assert port.observe(now=t0).queue_depth is not None, port.summary()
    per_refresh_3 = fleet.queries_sent - sent
    # sampled_at, queue depth and time, request rate, both percentiles and the mean (the SLO),
    # in_flight, reporting, window_coverage.
    assert per_refresh_3 == len(fleet.needed()) == counter("batched") - batched_before == 10

    many = few + [ServiceMetrics(fleet, namespace="fm-a", name=f"svc-{i}", spec=spec(), timeout_s=2.0)
                  for i in range(27)]
    assert len(fleet.registered()) == 30
    sent = fleet.queries_sent
    for port in many:
        port.observe(now=t0 + 2.0)  # one max age later: one refresh for all thirty
    assert fleet.queries_sent - sent == per_refresh_3
    assert [p.available for p in many[:3]] == [True] * 3 and not any(p.available for p in many[3:])

    # For contrast, the per-service ports: 7 queries per service with pods (sampled_at, then the six
    # others), 1 per service without (sampled_at missing ends the read) -- linear in the services.
    service_before = counter("service")
    for key in [("fm-a", "chat"), ("fm-a", "chat-spot"), ("fm-b", "chat")]:
        assert single(key, prometheus.url).observe(now=time.time()).queue_depth is not None
    for i in range(27):
        metrics_port(spec(), namespace="fm-a", name=f"svc-{i}", default_url=prometheus.url).observe(now=time.time())
    assert counter("service") - service_before == 3 * 7 + 27


def test_factory_shares_one_fleet_per_url(prometheus: devprom.PrometheusServer) -> None:
    shared: dict[str, FleetQueries] = {}
    ports = [fleet_metrics_port(SERVICES[key], namespace=key[0], name=key[1], default_url=prometheus.url,
                                shared=shared) for key in SERVICES]
    assert all(isinstance(p, ServiceMetrics) for p in ports) and len(shared) == 1
    fleet = shared[prometheus.url]
    now = time.time()
    for port in ports:
        port.observe(now=now)
    assert fleet.queries_sent == len(fleet.needed())


def test_each_service_reads_what_its_own_queries_read(prometheus: devprom.PrometheusServer) -> None:
    # Until rate()'s 1m window is full its extrapolation depends on the evaluation time (ms apart for
    # the two reads) and underestimates the rate: wait for 65 s of samples of every pod.
    wait_for(lambda: len(PODS) == len(promql(prometheus.url, "count_over_time(nv_inference_pending_request_count"
                                                             "{namespace=~'fm-.*'}[75s]) >= 65")),
             timeout=120, interval=1.0, what="a full 1m window of samples of every pod")
    fleet = FleetQueries(prometheus.url, max_age_s=0.0, timeout_s=2.0)  # every observe refreshes
    ports = {key: (batched(fleet, key), single(key, prometheus.url)) for key in SERVICES}

    def all_equal() -> bool:
        # Both reads see the same samples unless a scrape or the window's edge falls between them.
        now = time.time()
        pairs = {key: (b.observe(now=now), s.observe(now=now)) for key, (b, s) in ports.items()}
        return all(same(x, y) for x, y in pairs.values())

    wait_for(all_equal, timeout=20, interval=0.2, what="batched == per-service observations")
    now = time.time()
    obs = {key: b.observe(now=now) for key, (b, _) in ports.items()}
    for key, (b, s) in ports.items():
        assert b.available == (key[1] != "empty"), (key, b.summary())
        assert b.per_pod() == s.per_pod(), key

    # Truth: chat's two pods only (2 + 3 pending, 10 + 30 req/s), never chat-spot's or other-0's.
    chat, chat_spot = obs[("fm-a", "chat")], obs[("fm-a", "chat-spot")]
    assert chat.queue_depth == 5.0 and chat_spot.queue_depth == 7.0 and obs[("fm-b", "chat")].queue_depth == 1.0
    assert chat.request_rate == pytest.approx(40, rel=0.02) and chat_spot.request_rate == pytest.approx(5, rel=0.02)
    assert chat.queue_time_ms == pytest.approx((10 * 4 + 30 * 8) / 40, rel=0.01)
    assert chat_spot.latency_mean_ms == pytest.approx(300, rel=0.01)
    # The p95 is Triton's summary quantile: per pod, the slowest of the service's pods (1.5 x 60 ms).
    assert chat_spot.latency_p95_ms == pytest.approx(450) and chat.latency_p95_ms == pytest.approx(90)
    assert chat.ttft_p95_ms is not None and chat_spot.ttft_p95_ms is not None
    assert chat_spot.ttft_p95_ms > 100 > chat.ttft_p95_ms  # chat-spot's slow first responses stay its own
    assert chat.sampled_at is not None and now - chat.sampled_at < 3 * SCRAPE_S + 1
    # In flight: pending, plus 1 where an execution finished within the last 30 s (not on q9z8w).
    assert ports[("fm-a", "chat")][0].per_pod() == {"chat-ondemand-5d9f7c8b6-x2k4q": 3.0, "chat-spot-7b4c9d8f5-q9z8w": 3.0}
    assert ports[("fm-a", "chat-spot")][0].per_pod() == {"chat-spot-ondemand-6c8d9f7b5-k2x9p": 8.0}

    # TensorRT-LLM: queue = pending + waiting; in flight per pod = pending + active + waiting.
    llm = ports[("fm-b", "llm")][0]
    assert obs[("fm-b", "llm")].queue_depth == 0 + 2 + 1 + 3
    assert llm.per_pod() == {"llm-ondemand-6c8d9f7b5-k2x9p": 8.0, "llm-spot-7b4c9d8f5-m4n5b": 12.0}
    assert llm.value("kv_cache_utilization") == pytest.approx(0.6)
    assert obs[("fm-b", "llm")].kv_cache_utilization == pytest.approx(0.6)

    # No pods: missing, never zero.
    empty = ports[("fm-a", "empty")][0]
    assert obs[("fm-a", "empty")] == Observation() and not empty.available and empty.per_pod() == {}
    assert "sampled_at" in empty.summary()


def test_stopped_prometheus_makes_every_service_missing(prometheus_binary: None, file_sd: Path) -> None:
    prom = start_prometheus(file_sd)
    try:
        fleet = FleetQueries(prom.url, max_age_s=0.0, timeout_s=2.0)
        ports = [batched(fleet, key) for key in SERVICES if key[1] != "empty"]
        wait_for(lambda: all(p.observe(now=time.time()).queue_depth is not None for p in ports),
                 timeout=20, what="every service observed")
        assert all(p.available for p in ports)
    finally:
        prom.stop()
    for port in ports:
        assert port.observe(now=time.time()) == Observation(), port.summary()
        assert not port.available and "sampled_at" in port.summary()
        assert port.per_pod() == {}
    assert set(fleet.errors) == set(fleet.needed())
