"""One service's loop without kopf or a cluster (control.service): what a tick asks its caller to
write and post, what survives in status.memory, and the reroute that a pod turning Ready between
ticks triggers. The fleet port is the real KubeFleet on a RecordingKube."""

from __future__ import annotations

from typing import Any

from gpufleet.api.timefmt import iso_seconds
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.control.service import Event, ServiceLoop, Settings, TickOutcome
from tests.builders import make_spec
from tests.fakes import FakeMetrics, FakeWiring, RecordingKube, pod

NOW = iso_seconds("2026-01-01T00:05:00Z")  # after the fake pods' creation (00:00) and Ready (00:01)
HEARTBEAT_S = 60.0


def spec_of(**over: Any) -> InferenceServiceSpec:
    base: dict[str, Any] = {"replicas": {"min": 2, "max": 8}, "warmPool": {"size": 0, "max": 0},
                            "capacity": {"spot": {"enabled": False}}, "forecast": {"enabled": False}}
    return make_spec(**{**base, **over})


def two_pods(second_ready: bool = False) -> RecordingKube:
    """One serving pod, and one of the Deployment's two still loading (unless `second_ready`)."""
    return RecordingKube(pods={"chat-a": pod("chat-a", serving=True),
                               "chat-b": pod("chat-b", ready_at="2026-01-01T00:04:00Z" if second_ready else None)},
                         deployments={"chat-ondemand": 2})


def turn_ready(kube: RecordingKube, name: str) -> None:
    kube.pods[name]["status"]["conditions"] = [{"type": "Ready", "status": "True",
                                                "lastTransitionTime": "2026-01-01T00:05:01Z"}]


class Service:
    """A loop and its caller: the status as the API server holds it, patched from each outcome."""

    def __init__(self, kube: RecordingKube, spec: InferenceServiceSpec | None = None,
                 metrics: FakeMetrics | None = None, status: dict[str, Any] | None = None) -> None:
        self.spec = spec or spec_of()
        self.wiring = FakeWiring(kube, metrics_port=metrics or FakeMetrics())
        self.loop = ServiceLoop(name="chat", wiring=self.wiring, settings=Settings(heartbeat_s=HEARTBEAT_S))
        self.status: dict[str, Any] = dict(status or {})

    def tick(self, now: float, *, write_fails: bool = False) -> TickOutcome:
        self.loop.configure(self.spec, now)
        outcome = self.loop.tick(self.status, 1, now=now)
        if outcome.status is not None and not write_fails:
            self.status = {k: v for k, v in {**self.status, **outcome.status}.items() if v is not None}
            self.loop.confirm(outcome)
        return outcome


def reasons(events: tuple[Event, ...], kind: str | None = None) -> list[str]:
    return [e.reason for e in events if kind is None or e.type == kind]


def test_an_unchanged_tick_writes_nothing_until_the_heartbeat() -> None:
    svc = Service(two_pods())
    first = svc.tick(NOW)
    assert first.status is not None and first.status["replicas"]["serving"] == 1
    assert first.status["memory"] and first.status["lastDecision"]["desired"] == 2
    assert first.telemetry is not None and first.telemetry.result.plan.serving == 2
    for t in (2.0, 4.0, HEARTBEAT_S - 1):
        again = svc.tick(NOW + t)
        assert again.status is None and again.events == (), t
    assert svc.tick(NOW + HEARTBEAT_S + 1).status is not None  # the per-tick fields, once a heartbeat


def test_a_write_that_did_not_go_through_is_tried_again() -> None:
    svc = Service(two_pods())
    assert svc.tick(NOW, write_fails=True).status is not None
    assert svc.tick(NOW + 2).status is not None
    assert svc.tick(NOW + 4).status is None


def test_a_change_is_written_and_reported_at_once() -> None:
    kube = two_pods()
    svc = Service(kube)
    svc.tick(NOW)
    turn_ready(kube, "chat-b")
    changed = svc.tick(NOW + 2)  # status shows the fleet as the tick found it: one Ready standby
    assert changed.status is not None and changed.status["replicas"]["standby"] == 1
    assert reasons(changed.events) == ["Promoted"] and changed.events[0].type == "Normal"
    promoted = svc.tick(NOW + 4)
    assert promoted.status is not None and promoted.status["replicas"]["serving"] == 2


def test_a_metrics_outage_warns_once_not_once_per_tick() -> None:
    metrics = FakeMetrics()
    svc = Service(two_pods(second_ready=True), metrics=metrics)
    svc.tick(NOW)
    metrics.available = False
    outage = [svc.tick(NOW + 2 * i) for i in range(1, 6)]
    warned = [reasons(o.events, "Warning") for o in outage]
    assert warned == [["MetricsUnavailable"], [], [], [], []]
    assert outage[0].events[0].message == "request_rate: connection refused"
    assert outage[0].status is not None and outage[0].status["conditions"][1]["reason"] == "MetricsUnavailable"
    metrics.available = True
    back = [svc.tick(NOW + 20 + 2 * i) for i in range(3)]
    assert [reasons(o.events) for o in back] == [["MetricsAvailable"], [], []]


def test_memory_written_comes_back_in_a_new_loop_and_unreadable_memory_is_reported() -> None:
    kube = two_pods(second_ready=True)
    first = Service(kube)
    first.tick(NOW)
    restarted = Service(kube, status=first.status)
    restarted.loop.configure(restarted.spec, NOW + 5)
    assert restarted.loop.restore(first.status, NOW + 5) is None
    # The same policy memory and time-to-Ready samples as the loop that wrote them.
    assert restarted.loop.memory_fp == first.loop.memory_fp
    assert restarted.loop.fleet is not None and first.loop.fleet is not None
    assert restarted.loop.fleet.start_samples() == first.loop.fleet.start_samples() != {}

    garbage = Service(kube, status={**first.status, "memory": "{not json"})
    discarded = garbage.tick(NOW + 5)
    assert reasons(discarded.events, "Warning") == ["MemoryDiscarded"]
    assert "MemoryDiscarded" not in reasons(garbage.tick(NOW + 7).events)


def test_reroute_promotes_a_pod_that_turned_ready_between_ticks() -> None:
    kube = two_pods()
    metrics = FakeMetrics()
    svc = Service(kube, metrics=metrics)
    svc.tick(NOW)  # the plan: 2 serving; chat-b is still loading
    assert "gpufleet.io/serving" not in kube.pods["chat-b"]["metadata"]["labels"]
    turn_ready(kube, "chat-b")
    reads = metrics.reads
    outcome = svc.loop.reroute(svc.spec, now=NOW + 3)
    assert outcome is not None and reasons(outcome.events) == ["Promoted"]
    assert "chat-b" in outcome.events[0].message and outcome.status is None
    assert kube.pods["chat-b"]["metadata"]["labels"]["gpufleet.io/serving"] == "true"
    assert metrics.reads == reads  # no metrics read, no new decision
    again = svc.loop.reroute(svc.spec, now=NOW + 4)
    assert again is not None and again.events == ()  # nothing left to carry out


def test_reroute_needs_an_applied_plan_in_active_mode_under_the_same_spec() -> None:
    kube = two_pods()
    svc = Service(kube)
    assert svc.loop.reroute(svc.spec, now=NOW) is None  # no tick yet
    svc.tick(NOW)
    turn_ready(kube, "chat-b")
    assert svc.loop.reroute(spec_of(replicas={"min": 1, "max": 8}), now=NOW + 3) is None  # edited since
    assert svc.loop.reroute(spec_of(mode="recommend"), now=NOW + 3) is None

    kube = two_pods()
    recommend = Service(kube, spec=spec_of(mode="recommend"))
    recommend.tick(NOW)
    turn_ready(kube, "chat-b")
    assert recommend.loop.reroute(recommend.spec, now=NOW + 3) is None
    assert kube.calls == []


def test_a_new_service_starts_from_its_initial_decision_whatever_else_status_holds() -> None:
    # The create handler writes observedGeneration before the loop's first tick; an API server
    # that defaulted status fields then also held a lastDecision of zeros (no time). Read as a
    # decision made, it left the loop without the initial memory, and the blind first tick held
    # every starting pod as serving: 3 serving + 1 standby where 2 + 1 were planned.
    kube = RecordingKube(pods={f"chat-{i}": pod(f"chat-{i}", ready_at=None) for i in "abc"},
                         deployments={"chat-ondemand": 3})
    defaulted = {"observedGeneration": 1, "lastDecision": {"desired": 0, "standby": 0, "applied": False}}
    for status in ({}, defaulted):
        svc = Service(kube, spec_of(warmPool={"size": 1, "max": 1}), FakeMetrics(available=False), status)
        plan = svc.tick(NOW).telemetry.result.plan  # type: ignore[union-attr]
        assert plan.safe_mode
        assert (plan.serving, plan.standby, plan.on_demand) == (2, 1, 3), status
