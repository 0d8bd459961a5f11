"""A decision that changes the fleet is in status before the fleet changes (control.service's
write-ahead), so an operator killed between the two never leaves promoted pods under a status that
does not know them.

make chaos saw it: a SIGKILL between a promotion (standbys labelled serving) and the status write
left status.memory from before the load step. The new process read 2 serving as its last decision,
a 1-minute rate still lagging the step and no backlog (the promoted pods had absorbed it), and
demoted the two pods it had just promoted. Here the kill is an exception raised by the fleet's
first call, after that call changed the pod: the tick never returns, as after a SIGKILL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.api.timefmt import iso_seconds
from gpufleet.control.service import ServiceLoop, Settings
from gpufleet.core.types import Observation
from gpufleet.adapters import manifests
from tests.builders import make_spec
from tests.fakes import FakeWiring, RecordingKube, pod

NOW = iso_seconds("2026-01-01T00:05:00Z")  # the fake pods were created at 00:00 and Ready at 00:01
SPEC = make_spec(replicas={"min": 2, "max": 8}, warmPool={"size": 2, "max": 2}, capacity={"spot": {"enabled": False}},
                 forecast={"enabled": False},
                 scaling={"targetRpsPerReplica": 100, "intervalSeconds": 2,
                          "scaleDown": {"stabilizationSeconds": 4, "maxStepPercent": 100}})


class Killed(BaseException):
    """The process ends here (a BaseException: nothing in the loop may catch it)."""


@dataclass
class Load:
    """The metrics port: a queue gauge and a 1-minute request rate, as set."""

    request_rate: float = 150.0
    queue_depth: float = 0.0
    available: bool = True
    history_error: str | None = None

    def observe(self, *, now: float) -> Observation:
        if not self.available:  # no answer yet: the decision is blind (safe mode)
            return Observation()
        return Observation(sampled_at=now, queue_depth=self.queue_depth, request_rate=self.request_rate)

    def summary(self) -> str:
        return "all signals read"

    def history(self, key: str, *, start: float, end: float, step: float) -> list[tuple[float, float]]:
        return []


class KilledAfterFirstPatch(RecordingKube):
    """The first pod patch goes through, then the process dies."""

    armed = False

    def patch_pod_metadata(self, namespace: str, name: str, **kw: Any) -> dict[str, Any] | None:
        out = super().patch_pod_metadata(namespace, name, **kw)
        if self.armed:
            raise Killed(name)
        return out


class Operator:
    """One operator process: a loop, and the API server's copy of the status it writes."""

    def __init__(self, kube: RecordingKube, load: Load, apiserver: dict[str, Any]) -> None:
        self.loop = ServiceLoop(name="chat", wiring=FakeWiring(kube, metrics_port=load),  # type: ignore[arg-type]
                                settings=Settings())
        self.apiserver = apiserver

    def write(self, patch: dict[str, Any]) -> None:
        merged = {**self.apiserver, **patch}
        self.apiserver.clear()
        self.apiserver.update({k: v for k, v in merged.items() if v is not None})

    def tick(self, spec: InferenceServiceSpec, now: float) -> int:
        """One tick as kopf_app runs it; the serving count it decided."""
        self.loop.configure(spec, now)
        outcome = self.loop.tick(dict(self.apiserver), 1, now=now, write_ahead=self.write)
        if outcome.status is not None:
            self.write(outcome.status)
            self.loop.confirm(outcome)
        assert outcome.telemetry is not None
        return outcome.telemetry.result.plan.serving


def serving(kube: RecordingKube) -> int:
    return sum(1 for p in kube.pods.values() if p["metadata"]["labels"].get(manifests.LABEL_SERVING) == "true")


def fleet() -> KilledAfterFirstPatch:
    """Two serving pods and two Ready standbys."""
    return KilledAfterFirstPatch(pods={"chat-a": pod("chat-a", serving=True), "chat-b": pod("chat-b", serving=True),
                                       "chat-c": pod("chat-c"), "chat-d": pod("chat-d")},
                                 deployments={"chat-ondemand": 4})


def test_a_process_killed_during_a_promotion_leaves_the_decision_in_status() -> None:
    kube, load, apiserver = fleet(), Load(), {}
    first = Operator(kube, load, apiserver)
    t = NOW
    while t < NOW + 120:  # two quiet minutes at 150 rps: 2 serving, 2 standbys, memory in status
        assert first.tick(SPEC, t) == 2
        t += 2.0
    assert serving(kube) == 2 and apiserver["lastDecision"]["desired"] == 2
    # The load steps to 380 rps; the rate still reads the minute before, the queue shows it.
    load.queue_depth = 400.0
    kube.armed = True
    try:
        first.tick(SPEC, t)
    except Killed:
        pass
    else:
        raise AssertionError("the step promoted nobody")
    kube.armed = False
    promoted = serving(kube)
    assert promoted > 2
    # What the killed process decided is in status, its backlog too.
    assert apiserver["lastDecision"]["desired"] >= promoted

    # A new process starts 3 s later: the promoted pods have absorbed the queue, the 1-minute
    # rate still lags. It never decides, nor leaves serving, fewer than the killed one promoted.
    load.queue_depth = 0.0
    second = Operator(kube, load, apiserver)
    t += 3.0
    for _ in range(15):
        assert second.tick(SPEC, t) >= promoted, t
        assert serving(kube) >= promoted, t
        t += 2.0


def test_a_blind_restart_after_the_write_ahead_carries_out_the_decision() -> None:
    """The kill falls after the status write and before any pod changed. The new process has no
    metrics on its first ticks (safe mode: it may not shrink). It steps from the serving target in
    status.memory, not from the two pods it sees serving: it promotes the standbys the killed
    process decided on (make chaos: it held 2 serving where 3 were decided, below the load)."""
    kube, load, apiserver = fleet(), Load(), {}
    first = Operator(kube, load, apiserver)
    t = NOW
    while t < NOW + 120:
        assert first.tick(SPEC, t) == 2
        t += 2.0

    def write_then_die(patch: dict[str, Any]) -> None:
        first.write(patch)
        raise Killed("after the write-ahead")

    load.queue_depth = 400.0
    first.loop.configure(SPEC, t)
    try:
        first.loop.tick(dict(apiserver), 1, now=t, write_ahead=write_then_die)
    except Killed:
        pass
    else:
        raise AssertionError("the step changed nothing")
    decided = apiserver["lastDecision"]["desired"]
    assert decided > 2 and serving(kube) == 2  # decided, not carried out

    load.available = False
    second = Operator(kube, load, apiserver)
    t += 3.0
    for _ in range(5):
        assert second.tick(SPEC, t) >= decided, t
        t += 2.0
    # Both standbys promoted, and the Deployment grown for the rest (the fake makes no new pods).
    assert serving(kube) == 4 and kube.deployments["chat-ondemand"] >= decided
