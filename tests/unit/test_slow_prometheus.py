"""A slow Prometheus holds a service's tick no longer than its interval (make chaos: a Prometheus
20 s slow held each 2 s tick 10 s, a 5 s timeout retried once, and the first decision after it
recovered came late). Against a real HTTP server on loopback that answers after a delay."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpufleet.adapters.fleet_metrics import FleetQueries, ServiceMetrics
from gpufleet.adapters.metrics import TIMEOUT_S, PrometheusMetrics, metrics_port, query_timeout
from gpufleet.api.models import InferenceServiceSpec

DELAY_S = 12.0  # longer than a timeout and its retry would take


class Slow:
    def __init__(self) -> None:
        self.requests = 0
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.requests += 1
                outer.release.wait(DELAY_S)
                body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def slow() -> Iterator[Slow]:
    prom = Slow()
    yield prom
    prom.release.set()
    prom.server.shutdown()


def spec(interval: int) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": "m"}, "scaling": {"intervalSeconds": interval},
        "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}})


def test_the_timeout_is_the_interval_when_shorter() -> None:
    assert query_timeout(spec(2)) == 2.0
    assert query_timeout(spec(60)) == TIMEOUT_S


def test_a_slow_prometheus_holds_a_2s_service_about_2s_with_no_retry(slow: Slow) -> None:
    port = metrics_port(spec(2), namespace="a", name="chat", default_url=slow.url)
    assert isinstance(port, PrometheusMetrics)
    started = time.monotonic()
    port.observe(now=time.time())
    took = time.monotonic() - started
    assert not port.available and "timeout" in port.summary()
    assert took < 3.5, f"observe took {took:.1f} s for a 2 s service"
    assert slow.requests == 1  # a read that timed out is not sent again


def test_batched_queries_time_out_within_the_shortest_interval(slow: Slow) -> None:
    fleet = FleetQueries(slow.url)
    chat = ServiceMetrics(fleet, namespace="a", name="chat", spec=spec(2))
    started = time.monotonic()
    chat.observe(now=time.time())
    took = time.monotonic() - started
    assert not chat.available
    assert took < 3.5, f"observe took {took:.1f} s for a 2 s service"
    assert slow.requests == 1
