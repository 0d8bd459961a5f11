"""Events aggregated: one per cause and transition, never one per tick (issue 17). A cause that
lasts an hour at a 10 s interval used to post 360 identical Warnings (RolloutFailed, TickFailed)."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from kubernetes.client.exceptions import ApiException

from gpufleet import kopf_app
from gpufleet.api.timefmt import iso_seconds
from gpufleet.control.service import Causes, Event, ServiceLoop, Settings, metrics_causes
from tests.builders import make_spec
from tests.fakes import FakeMetrics, FakeWiring, RecordingKube, pod

NOW = iso_seconds("2026-01-01T00:05:00Z")


def test_causes_report_appearance_change_and_clearing_once() -> None:
    causes = Causes()
    assert causes.changed("X", "a") and not causes.changed("X", "a") and not causes.changed("X", "a")
    assert causes.changed("X", "b")  # another cause is another transition
    assert causes.active("X") and causes.changed("X", None) and not causes.active("X")
    assert not causes.changed("X", None)
    assert causes.changed("X", "a")  # back after it cleared: reported again


def warnings(events: tuple[Event, ...], reason: str) -> list[str]:
    return [e.message for e in events if e.reason == reason and e.type == "Warning"]


def promoting_loop(kube: RecordingKube) -> ServiceLoop:
    spec = make_spec(replicas={"min": 2, "max": 8}, warmPool={"size": 0, "max": 0},
                     capacity={"spot": {"enabled": False}}, forecast={"enabled": False})
    loop = ServiceLoop(name="chat", wiring=FakeWiring(kube, metrics_port=FakeMetrics()), settings=Settings())
    loop.configure(spec, NOW)
    return loop


def test_a_patch_failing_every_tick_is_one_rollout_failed_and_one_recovery() -> None:
    # chat-b is Ready and out of the Service; the floor of 2 promotes it, and its patch fails.
    kube = RecordingKube(pods={"chat-a": pod("chat-a", serving=True), "chat-b": pod("chat-b")},
                         deployments={"chat-ondemand": 2}, fail={("patch", "chat-b"): 500})
    loop = promoting_loop(kube)
    failing = [loop.tick({}, 1, now=NOW + 10 * i) for i in range(6)]
    assert [len(warnings(o.events, "RolloutFailed")) for o in failing] == [1, 0, 0, 0, 0, 0]
    assert kube.calls.count(("patch", "chat-b")) == 6  # tried again every tick, reported once
    kube.fail.clear()
    recovered = loop.tick({}, 1, now=NOW + 100)
    assert [e.reason for e in recovered.events if "Rollout" in e.reason] == ["RolloutRecovered"]
    assert "Promoted" in [e.reason for e in recovered.events]
    assert [e.reason for e in loop.tick({}, 1, now=NOW + 110).events if "Rollout" in e.reason] == []


def test_a_metrics_outage_is_one_warning_per_cause() -> None:
    class Metrics(FakeMetrics):
        note = "request_rate: Prometheus unreachable (details in the operator log)"

        def summary(self) -> str:
            return "all signals read" if self.available else self.note

    metrics = Metrics()
    kube = RecordingKube(pods={"chat-a": pod("chat-a", serving=True), "chat-b": pod("chat-b", serving=True)},
                         deployments={"chat-ondemand": 2})
    loop = ServiceLoop(name="chat", wiring=FakeWiring(kube, metrics_port=metrics), settings=Settings())
    loop.configure(make_spec(replicas={"min": 2, "max": 8}, warmPool={"size": 0, "max": 0},
                             capacity={"spot": {"enabled": False}}, forecast={"enabled": False}), NOW)
    loop.tick({}, 1, now=NOW)
    metrics.available = False
    seen = []
    for i, note in enumerate([
        "request_rate: Prometheus unreachable (details in the operator log)",
        "queue_depth, request_rate: Prometheus unreachable (details in the operator log)",  # same cause
        "queue_depth, request_rate: Prometheus unreachable (details in the operator log)",
        "request_rate: Prometheus timed out (details in the operator log)",  # another cause
        "request_rate: Prometheus timed out (details in the operator log)",
    ]):
        metrics.note = note
        seen.append(warnings(loop.tick({}, 1, now=NOW + 10 * (i + 1)).events, "MetricsUnavailable"))
    assert [len(w) for w in seen] == [1, 0, 0, 1, 0]
    metrics.available = True
    assert [e.reason for e in loop.tick({}, 1, now=NOW + 100).events] == ["MetricsAvailable"]
    assert metrics_causes("a, b: x; c: y (details in the operator log)") == ("x", "y")


def test_a_tick_failing_every_interval_is_one_warning_per_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(kopf, "warn", lambda body, *, reason, message: posted.append(("Warning", reason)))
    monkeypatch.setattr(kopf, "info", lambda body, *, reason, message: posted.append(("Normal", reason)))
    body: Any = object()
    causes = Causes()
    for _ in range(5):
        kopf_app.report_failure(causes, body, "TickFailed", ApiException(status=500, reason="boom"))
    kopf_app.report_failure(causes, body, "TickFailed", ApiException(status=409, reason="conflict"))
    kopf_app.report_failure(causes, body, "TickFailed", ApiException(status=409, reason="conflict again"))
    kopf_app.report_recovery(causes, body, "TickFailed")
    kopf_app.report_recovery(causes, body, "TickFailed")
    kopf_app.report_failure(causes, body, "TickFailed", TimeoutError("read timed out"))
    assert posted == [("Warning", "TickFailed"), ("Warning", "TickFailed"), ("Normal", "TickRecovered"),
                      ("Warning", "TickFailed")]
