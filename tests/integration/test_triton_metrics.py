"""The built-in PromQL on a real Triton's real output, scraped by a real Prometheus; and the tritonclient
adapters (model readiness, inference statistics as a second metrics source) against the same server.

Triton runs with `--metrics-config summary_latencies=true` (its request-latency summary: the p95 the
latency_p95_ms query reads) and `histogram_latencies=true` (the first-response histogram of decoupled
models, for TTFT, where the build has it: the pytriton wheel's Triton 2.51 does not export it, and
the TTFT signal then reads as missing with its cause).

One Triton server (CPU, Python-backend models that sleep a service time) and one Prometheus scraping it
every second, with the static target labelled as pod `chat-ondemand-0` of InferenceService `chat` in
namespace `default`, exactly what the built-in queries select. Tests run in file order and share the
server: request counts are taken from Triton's own statistics, so each test knows its truth.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http

from gpufleet.adapters.fallback import FallbackMetrics
from gpufleet.adapters.metrics import PrometheusMetrics, metrics_port, queries_for
from gpufleet.adapters.triton import Counters, TritonStats, model_ready
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.types import Observation
from gpufleet.devenv import prometheus as devprom
from gpufleet.devenv import triton as devtriton
from gpufleet.devenv._proc import free_port, http_ok
from tests.support import ROOT, wait_for

NAMESPACE, SERVICE, POD = "default", "chat", "chat-ondemand-0"
FAST = devtriton.ModelSpec("chat", service_time_s=0.005, max_batch_size=4)
# Batches of 2 taking 1.5 s each: 8 concurrent requests hold the queue non-empty for ~4.5 s.
SLOW = devtriton.ModelSpec("slow", service_time_s=1.5, max_batch_size=2)
# Decoupled (streaming): Triton would record its first-response histogram for it.
STREAM = devtriton.ModelSpec("stream", service_time_s=0.05, decoupled=True)
SCRAPE_S = 1.0
METRICS_CONFIG = ("summary_latencies=true", "histogram_latencies=true")


def spec_for(model: str) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": model, "backend": "triton"},
        # So the built-in latency queries are read too: Triton's summary p95 and its counters' mean.
        "slo": {"latencyP95Ms": 1000, "latencyMeanMs": 1000},
        "template": {"spec": {"containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver"}]}},
    })


def port_for(model: str, url: str) -> PrometheusMetrics:
    port = metrics_port(spec_for(model), namespace=NAMESPACE, name=SERVICE, default_url=url)
    assert isinstance(port, PrometheusMetrics)
    port.timeout_s = 2.0
    return port


# --- fixtures: install or fail loudly, never skip -----------------------------------------------------

@pytest.fixture(scope="module")
def triton_runtime() -> devtriton.TritonRuntime:
    try:
        return devtriton.ensure_runtime()
    except Exception as exc:  # noqa: BLE001 - report why, as a failure: CI must not silently skip
        pytest.fail(f"cannot install the Triton runtime venv ({devtriton.runtime_venv()}): {exc}")


@pytest.fixture(scope="module")
def prometheus_binary() -> None:
    if not devprom.is_available():
        proc = subprocess.run([str(ROOT / "hack/deps.sh")], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not devprom.is_available():
            pytest.fail(f"prometheus not installed and hack/deps.sh failed ({proc.returncode}): {proc.stderr[-2000:]}")


@pytest.fixture(scope="module")
def triton(triton_runtime: devtriton.TritonRuntime) -> Iterator[devtriton.TritonServer]:
    server = devtriton.TritonServer([FAST, SLOW, STREAM], runtime=triton_runtime, metrics_config=METRICS_CONFIG)
    server.start(timeout_s=90)
    try:
        yield server
    finally:
        server.stop()


def prometheus_for(triton: devtriton.TritonServer) -> devprom.PrometheusServer:
    target = devprom.Target(triton.metrics_address, {"namespace": NAMESPACE, "pod": POD})
    return devprom.PrometheusServer(scrape_interval_s=SCRAPE_S, static_targets=[target])


@pytest.fixture(scope="module")
def prometheus(prometheus_binary: None, triton: devtriton.TritonServer) -> Iterator[devprom.PrometheusServer]:
    with prometheus_for(triton) as prom:
        prom.wait_for_targets(1, timeout_s=30)
        yield prom


# --- helpers ------------------------------------------------------------------------------------------

def promql(url: str, query: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}",
                                timeout=5) as resp:
        result: list[dict[str, Any]] = json.load(resp)["data"]["result"]
        return result


def target_pods(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/api/v1/targets?state=active", timeout=5) as resp:
        return [t["labels"].get("pod", "") for t in json.load(resp)["data"]["activeTargets"]]


def prom_value(url: str, query: str) -> float | None:
    result = promql(url, query)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def client(triton: devtriton.TritonServer, concurrency: int = 1) -> Any:
    return triton_http.InferenceServerClient(triton.http_address, concurrency=concurrency,
                                             connection_timeout=30, network_timeout=30)


def one_input(value: float) -> Any:
    inp = triton_http.InferInput("INPUT0", [1, 1], "FP32")
    inp.set_data_from_numpy(np.array([[value]], dtype=np.float32))
    return inp


def send(triton: devtriton.TritonServer, model: str, count: int, *, concurrency: int) -> None:
    """`count` requests, `concurrency` in flight at a time; checks every answer (echo of the input)."""
    c = client(triton, concurrency)
    try:
        for start in range(0, count, concurrency):
            batch = range(start, min(count, start + concurrency))
            pending = [(i, c.async_infer(model, [one_input(float(i))])) for i in batch]
            for i, req in pending:
                assert float(req.get_result(timeout=30).as_numpy("OUTPUT0")[0, 0]) == float(i)
    finally:
        c.close()


def stats(triton: devtriton.TritonServer, model: str) -> Counters:
    c = client(triton)
    try:
        counters = Counters.from_statistics(c.get_inference_statistics(model), model)
    finally:
        c.close()
    assert counters is not None
    return counters


def observe_until(port: PrometheusMetrics, ok: Callable[[Observation], bool], *, what: str,
                  timeout: float = 20, interval: float = 0.5) -> Observation:
    """Observe until `ok(observation)`; the last observation is returned."""
    seen: list[Observation] = []

    def attempt() -> bool:
        seen.append(port.observe(now=time.time()))
        return ok(seen[-1])

    wait_for(attempt, timeout=timeout, interval=interval, what=f"{what} ({port.summary()})")
    return seen[-1]


def scraped_success(prom: devprom.PrometheusServer, model: str) -> float | None:
    return prom_value(prom.url, f'nv_inference_request_success{{pod="{POD}",model="{model}"}}')


# --- tests --------------------------------------------------------------------------------------------

@pytest.mark.triton
def test_model_ready_true_false_none(triton: devtriton.TritonServer) -> None:
    assert model_ready(triton.http_address, FAST.name) is True
    assert model_ready(f"http://{triton.http_address}/", SLOW.name) is True  # scheme and slash tolerated
    assert model_ready(triton.http_address, "no-such-model") is False
    assert model_ready(f"127.0.0.1:{free_port()}", FAST.name, timeout_s=1) is None  # nobody listens


@pytest.mark.triton
@pytest.mark.prometheus
def test_idle_service_reads_zero_queue_and_fresh_sample(triton: devtriton.TritonServer,
                                                        prometheus: devprom.PrometheusServer) -> None:
    port = port_for(FAST.name, prometheus.url)
    # rate() needs two samples in its window: right after the first scrape only the gauge is there.
    obs = observe_until(port, lambda o: o.request_rate is not None, what="an idle observation with two scrapes")
    assert port.available, port.summary()
    assert obs.queue_depth == 0.0
    assert obs.request_rate == 0.0
    assert obs.sampled_at is not None and 0 <= time.time() - obs.sampled_at < 3 * SCRAPE_S + 1


@pytest.mark.triton
@pytest.mark.prometheus
def test_request_rate_and_queue_time_match_what_triton_served(triton: devtriton.TritonServer,
                                                              prometheus: devprom.PrometheusServer) -> None:
    # rate()'s extrapolation is smallest when the window holds many samples: let ~10 accumulate first.
    wait_for(lambda: (prom_value(prometheus.url, f'count_over_time(nv_inference_request_success'
                                                 f'{{pod="{POD}",model="{FAST.name}"}}[1m])') or 0) >= 10,
             timeout=30, what="10 scrapes of the chat model")
    before = stats(triton, FAST.name)
    assert before.success == 0, "no test before this one sends to the chat model"
    sent = 120
    send(triton, FAST.name, sent, concurrency=6)
    after = stats(triton, FAST.name)
    assert after.success == sent and after.queue_count == sent
    wait_for(lambda: scraped_success(prometheus, FAST.name) == sent, timeout=15,
             what=f"Prometheus to scrape {sent} successes")

    port = port_for(FAST.name, prometheus.url)
    obs = port.observe(now=time.time())
    assert port.available, port.summary()
    # Every request falls inside the 1m window: rate = requests / 60 s, plus Prometheus's
    # extrapolation towards the window's end (at most ~1.1 scrape intervals over >= 10 s of samples).
    assert obs.request_rate is not None
    assert sent / 60 * 0.98 <= obs.request_rate <= sent / 60 * 1.2, obs
    # Queue time: Triton's own mean (statistics, ns) vs the built-in PromQL on the /metrics counters (µs).
    truth_ms = after.queue_ns / after.queue_count / 1e6
    assert obs.queue_time_ms is not None
    assert obs.queue_time_ms == pytest.approx(truth_ms, rel=0.05, abs=0.02), (obs, truth_ms)
    # The mean latency query (per request, like the statistics' success ns / count).
    assert obs.latency_mean_ms == pytest.approx(after.request_ns / after.success / 1e6, rel=0.05, abs=0.05)
    assert obs.queue_depth == 0.0
    assert obs.sampled_at is not None and time.time() - obs.sampled_at < 3 * SCRAPE_S + 1


@pytest.mark.triton
@pytest.mark.prometheus
def test_queue_depth_rises_while_a_slow_model_holds_requests(triton: devtriton.TritonServer,
                                                             prometheus: devprom.PrometheusServer) -> None:
    port = port_for(SLOW.name, prometheus.url)
    held = 8
    c = client(triton, concurrency=held)
    try:
        t0 = time.time()
        requests = [c.async_infer(SLOW.name, [one_input(float(i))]) for i in range(held)]
        # 8 requests, batches of 2, 1.5 s a batch: at least 6 wait in the queue for the first 1.5 s.
        busy = observe_until(port, lambda o: bool(o.queue_depth), timeout=10, interval=0.25,
                             what="queue depth > 0")
        assert busy.queue_depth is not None and 0 < busy.queue_depth <= held
        for req in requests:
            req.get_result(timeout=60)
        slowest_ms = (time.time() - t0) * 1000  # the last request's latency, as the client saw it
    finally:
        c.close()
    wait_for(lambda: scraped_success(prometheus, SLOW.name) == held, timeout=15,
             what=f"Prometheus to scrape {held} successes of the slow model")
    idle = port.observe(now=time.time())
    assert idle.queue_depth == 0.0, port.summary()
    # Long, uneven waits (0 to ~4.5 s): the PromQL mean must still equal Triton's own.
    truth = stats(triton, SLOW.name)
    assert truth.success == held
    truth_ms = truth.queue_ns / truth.queue_count / 1e6
    assert truth_ms > 500, "requests really waited in the queue"
    assert idle.queue_time_ms == pytest.approx(truth_ms, rel=0.01), (idle, truth_ms)
    # p95 against the mean: 8 requests in batches of (at most) 2 at 1.5 s each end 1.5 s apart
    # (1.5 s, 3, 3, 4.5, 4.5, 6, 6, 7.5 when the first runs alone). Triton's summary estimates the
    # 0.95 quantile of so few within its error: one of the slowest pair(s), well above the mean.
    # Both read through Prometheus: the mean from the counters, the p95 from the summary.
    mean_ms = truth.request_ns / truth.success / 1e6
    assert idle.latency_mean_ms == pytest.approx(mean_ms, rel=0.02), (idle, mean_ms)
    assert idle.latency_p95_ms is not None, port.summary()
    assert 1.2 * mean_ms < idle.latency_p95_ms <= 1.05 * slowest_ms, (idle, mean_ms, slowest_ms)


@pytest.mark.triton
def test_triton_stats_turns_counter_deltas_into_rate_and_queue_time(triton: devtriton.TritonServer) -> None:
    source = TritonStats(endpoints=[triton.http_address], model=FAST.name)
    t0 = time.time()
    first = source.observe(now=t0)
    assert source.available and first.sampled_at == t0
    assert first.request_rate is None and first.queue_time_ms is None  # no interval yet
    assert first.queue_depth is None  # the statistics have no queue gauge

    before = stats(triton, FAST.name)
    sent = 30
    send(triton, FAST.name, sent, concurrency=3)
    after = stats(triton, FAST.name)
    t1 = t0 + 2.5  # observe() takes the interval from `now`, so the test controls it exactly
    obs = source.observe(now=t1)
    assert source.available, source.summary()
    assert obs.request_rate == pytest.approx(sent / 2.5)
    assert obs.queue_time_ms == pytest.approx((after.queue_ns - before.queue_ns) / sent / 1e6)
    assert obs.sampled_at == t1

    idle = source.observe(now=t1 + 1.0)
    assert idle.request_rate == 0.0 and idle.queue_time_ms is None  # nothing finished: no mean


@pytest.mark.triton
def test_triton_stats_missing_values_never_raise(triton: devtriton.TritonServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    both = TritonStats(endpoints=[triton.http_address, dead], model=FAST.name, timeout_s=1.0)
    for now in (100.0, 110.0):  # an unreachable pod: everything missing, every time
        obs = both.observe(now=now)
        assert obs.sampled_at is None and obs.request_rate is None and obs.queue_time_ms is None
        # Counted by cause; the pod's address is in the operator log, not in status.
        assert not both.available and both.summary() == "1 of 2 pods: unreachable (connection refused)"

    unknown = TritonStats(endpoints=[triton.http_address], model="no-such-model")
    assert unknown.observe(now=1.0).sampled_at is None and not unknown.available

    # A pod joins: one read without rates (it has no earlier counters), then rates again.
    grow = TritonStats(endpoints=[triton.http_address], model=FAST.name)
    grow.observe(now=10.0)
    assert grow.observe(now=11.0).request_rate == 0.0
    grow.endpoints = [triton.http_address, f"http://{triton.http_address}"]  # a second "pod"
    assert grow.observe(now=12.0).request_rate is None and grow.available
    assert grow.observe(now=13.0).request_rate == 0.0


def test_counters_reset_counts_the_whole_new_value() -> None:
    old = Counters(success=100, queue_count=100, queue_ns=5_000, request_ns=9_000)
    restarted = Counters(success=3, queue_count=3, queue_ns=30, request_ns=90)
    assert restarted.since(old) == restarted
    later = Counters(success=110, queue_count=110, queue_ns=5_500, request_ns=9_900)
    assert later.since(old) == Counters(success=10, queue_count=10, queue_ns=500, request_ns=900)


@pytest.mark.triton
@pytest.mark.prometheus
def test_stopped_prometheus_gives_a_missing_observation(triton: devtriton.TritonServer,
                                                        prometheus_binary: None) -> None:
    prom = prometheus_for(triton).start()
    try:
        prom.wait_for_targets(1, timeout_s=30)
        port = port_for(FAST.name, prom.url)
        observe_until(port, lambda o: o.queue_depth is not None, timeout=15, what="a first observation")
        assert port.available
    finally:
        prom.stop()
    obs = port.observe(now=time.time())
    assert not port.available and "sampled_at" in port.summary()
    assert obs == Observation()  # every signal missing, none zero


@pytest.mark.triton
@pytest.mark.prometheus
def test_built_in_queries_select_the_labelled_pod(prometheus: devprom.PrometheusServer) -> None:
    # Every built-in Triton query returns exactly one series for the service (scalar() needs one),
    # and none for another namespace: the static target's labels are what the selectors match.
    for key, query in queries_for(spec_for(FAST.name), namespace=NAMESPACE, name=SERVICE).items():
        if key == "ttft_p95_ms":
            continue  # decoupled models only: a plain Triton model has no first-response histogram
        if key == "window_coverage":
            # Per pod, and only once Prometheus has 30 s of samples before the window's last half
            # (a fresh one has not: no value, read as uncovered; tests/unit/test_partial_scrape.py).
            assert len(promql(prometheus.url, query)) <= 1, query
            continue
        if key == "latency_p95_ms":  # a summary: one series per quantile, the built-in reads 0.95
            assert len(promql(prometheus.url, query.removesuffix(" / 1000").removeprefix("max"))) == 1, query
            continue
        assert len(promql(prometheus.url, query)) == 1, (key, query)
    other = queries_for(spec_for(FAST.name), namespace="elsewhere", name=SERVICE)
    assert promql(prometheus.url, other["queue_depth"]) == []


@pytest.mark.triton
@pytest.mark.prometheus
def test_cli_prometheus_picks_up_file_sd_targets(triton: devtriton.TritonServer, prometheus_binary: None,
                                                 tmp_path: Path) -> None:
    """The demo's entry point: targets written to the file_sd dir (as the pod emulator does) get
    scraped with their labels, and go away when their file is removed; SIGTERM stops Prometheus."""
    sd = tmp_path / "file_sd"
    port = free_port()
    cli = subprocess.Popen([sys.executable, "-m", "gpufleet.devenv.prometheus", "--port", str(port),
                            "--file-sd", str(sd), "--scrape-interval", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        assert cli.stdout is not None
        url = cli.stdout.readline().strip()  # printed once Prometheus is ready
        assert url == f"http://127.0.0.1:{port}", url
        labels = {"namespace": "team-a", "pod": "chat-spot-7", "capacity_class": "spot"}
        devprom.write_file_sd(sd, "chat-spot-7", [devprom.Target(triton.metrics_address, labels)])
        query = 'nv_inference_pending_request_count{namespace="team-a",pod="chat-spot-7",capacity_class="spot"}'
        wait_for(lambda: len(promql(url, query)) == len(triton.models), timeout=20,
                 what="every model scraped via file_sd")
        devprom.remove_file_sd(sd, "chat-spot-7")
        wait_for(lambda: "chat-spot-7" not in target_pods(url), timeout=20, what="the removed target to be dropped")
    finally:
        cli.terminate()
        cli.wait(timeout=30)
    assert cli.returncode == 0
    assert not http_ok(f"http://127.0.0.1:{port}/-/ready")  # the child went with it


@pytest.mark.triton
def test_fallback_reads_triton_statistics_while_prometheus_is_down(triton: devtriton.TritonServer) -> None:
    spec = InferenceServiceSpec.model_validate({"model": {"name": FAST.name},
                                                "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}})
    dead = PrometheusMetrics(url=f"http://127.0.0.1:{free_port()}", stale_after_s=30, timeout_s=1.0,
                             queries=queries_for(spec, namespace=NAMESPACE, name="svc"))
    port = FallbackMetrics(primary=dead, secondary=TritonStats(endpoints=[], model=FAST.name),
                           endpoints=lambda: [triton.http_address])
    t0 = time.time()
    port.observe(now=t0)  # first read: fresh, no interval yet
    assert port.available and port.source == "triton-statistics"
    send(triton, FAST.name, 20, concurrency=2)
    obs = port.observe(now=t0 + 2.0)
    assert obs.request_rate == pytest.approx(20 / 2.0)
    assert obs.queue_depth is None  # no gauge: the core keeps safe mode for scale-down
    assert "Prometheus" in port.summary()


@pytest.mark.triton
@pytest.mark.prometheus
def test_ttft_of_a_decoupled_model_is_the_histograms_p95_or_missing(triton: devtriton.TritonServer,
                                                                   prometheus: devprom.PrometheusServer) -> None:
    """A streaming model with histogram_latencies=true: the TTFT query reads the first-response
    histogram where this Triton build exports it, and is missing with its cause where it does not
    (the wheel's 2.51): never a zero, never the mean."""
    spec = InferenceServiceSpec.model_validate({
        "model": {"name": STREAM.name}, "slo": {"ttftP95Ms": 1000},
        "template": {"spec": {"containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver"}]}}})
    port = metrics_port(spec, namespace=NAMESPACE, name=SERVICE, default_url=prometheus.url)
    assert isinstance(port, PrometheusMetrics)
    for i in range(6):  # over the generate extension: two responses each, the first after 50 ms
        req = urllib.request.Request(f"http://{triton.http_address}/v2/models/{STREAM.name}/generate_stream",
                                     data=json.dumps({"INPUT0": [float(i)]}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.read().decode().count("data: ") == 2
    wait_for(lambda: scraped_success(prometheus, STREAM.name) == 6, timeout=15, what="6 streamed requests scraped")
    exported = promql(prometheus.url, f'nv_inference_first_response_histogram_ms_count{{model="{STREAM.name}"}}')
    obs = observe_until(port, lambda o: o.request_rate is not None, what="a fresh observation")
    if exported:
        assert obs.ttft_p95_ms is not None and 0 < obs.ttft_p95_ms <= 100, obs  # the 100 ms bucket holds all
    else:
        assert obs.ttft_p95_ms is None and "no first-token histogram exported" in port.errors["ttft_p95_ms"]
        assert "histogram_latencies=true" in port.summary()
