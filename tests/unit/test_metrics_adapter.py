"""Prometheus results to Observation: failures become missing values, never zeros or exceptions."""

from __future__ import annotations

import socket

import pytest

from gpufleet.adapters.metrics import NoMetrics, PrometheusMetrics, metrics_port, queries_for, scalar
from gpufleet.api.models import InferenceServiceSpec

SPEC = InferenceServiceSpec.model_validate({"model": {"name": "llama", "backend": "tensorrtllm"},
                                            "slo": {"ttftP95Ms": 500},
                                            "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}})


@pytest.mark.parametrize("result,expected", [
    ([], None),
    ([{"metric": {}, "value": [1.0, "NaN"]}], None),
    ([{"metric": {}, "value": [1.0, "+Inf"]}], None),
    ([{"metric": {"a": "1"}, "value": [1.0, "1"]}, {"metric": {"a": "2"}, "value": [1.0, "2"]}], None),
    ([{"metric": {}, "value": [1.0, "garbage"]}], None),
    ([{"metric": {}, "value": [1.0, "0"]}], 0.0),
    ([{"metric": {}, "value": [1.0, "12.5"]}], 12.5),
])
def test_scalar(result: list[dict[str, object]], expected: float | None) -> None:
    assert scalar(result) == expected


def test_queries_select_the_service_and_backend() -> None:
    q = queries_for(SPEC, namespace="prod", name="chat")
    seg = "[b-df-hj-np-tv-z0-9]"
    pods = f'pod=~"chat-(?:ondemand|spot)-(?:{seg}{{1,10}}-{seg}{{5}}|{seg}{{1,15}})"'  # not chat-spot's pods
    assert 'namespace="prod"' in q["queue_depth"] and pods in q["queue_depth"]
    assert 'model="llama"' in q["request_rate"]
    assert 'request_type="waiting"' in q["queue_depth"]  # TensorRT-LLM in-flight batcher queue
    assert "ttft_p95_ms" in q and "latency_p95_ms" not in q  # only signals an SLO uses


def test_user_override_wins_and_is_templated() -> None:
    spec = SPEC.model_copy(update={"metrics": SPEC.metrics.model_copy(update={
        "queries": SPEC.metrics.queries.model_copy(update={"request_rate": 'sum(rate(x{ns="$namespace"}[2m]))'})})})
    assert queries_for(spec, namespace="prod", name="chat")["request_rate"] == 'sum(rate(x{ns="prod"}[2m]))'


def test_unreachable_prometheus_gives_missing_observation() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    port_ = metrics_port(SPEC, namespace="prod", name="chat", default_url=f"http://127.0.0.1:{port}")
    assert isinstance(port_, PrometheusMetrics)
    port_.timeout_s = 1.0
    obs = port_.observe(now=1000.0)
    assert obs.sampled_at is None and obs.queue_depth is None and obs.request_rate is None
    assert port_.available is False and "sampled_at" in port_.summary()


def test_no_url_means_no_metrics() -> None:
    port_ = metrics_port(SPEC, namespace="prod", name="chat", default_url=None)
    assert isinstance(port_, NoMetrics) and port_.observe(now=1.0).queue_depth is None
