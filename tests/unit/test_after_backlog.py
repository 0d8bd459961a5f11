"""After a backlog the scale-down window spans the request rate's minute at least.

The request rate is a 1-minute rate: right after a surge it still averages the minute before,
so a need read from it is low while the load is not. With a scale-down window shorter than that
minute (here 4 s, as the chaos suite runs), the policy retired replicas the load still needed
(the warm-pool test saw 8 serving go to 3 at 400 rps)."""

from __future__ import annotations

from dataclasses import replace

from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.stabilize import AFTER_BACKLOG_S
from gpufleet.core.types import FleetState, Observation, PolicyMemory
from tests.builders import make_spec, rep

POLICY = GpufleetPolicy()
SPEC = make_spec(replicas={"min": 1, "max": 16}, warmPool={"size": 0, "max": 0}, capacity={"spot": {"enabled": False}},
                 forecast={"enabled": False},
                 scaling={"targetRpsPerReplica": 100, "intervalSeconds": 2,
                          "scaleDown": {"stabilizationSeconds": 4, "maxStepPercent": 100}})
FLEET = FleetState(replicas=tuple(rep(f"p{i}") for i in range(8)))


def decide(obs: Observation, memory: PolicyMemory, now: float) -> tuple[int, PolicyMemory]:
    plan, memory = POLICY.decide(spec=SPEC, observation=obs, forecast=None, fleet=FLEET, memory=memory, now=now)
    return plan.serving, memory


def lagging_rate(now: float) -> Observation:
    return Observation(sampled_at=now, queue_depth=0.0, request_rate=200.0)  # needs 2 by the rate


def test_a_lagging_rate_does_not_retire_replicas_within_a_minute_of_a_backlog() -> None:
    memory = replace(PolicyMemory(), last_serving=8, started_at=0.0)
    # t=100: a backlog (the surge) on 8 serving.
    serving, memory = decide(Observation(sampled_at=100.0, queue_depth=400.0, request_rate=300.0), memory, 100.0)
    assert serving >= 8
    # The queue drained; the rate still averages the minute before the surge.
    t = 102.0
    while t < 100.0 + AFTER_BACKLOG_S:
        serving, memory = decide(lagging_rate(t), memory, t)
        assert serving >= 8, (t, serving)
        t += 2.0
    # A minute on, the window is the spec's 4 s again and the fleet comes down.
    for _ in range(5):
        serving, memory = decide(lagging_rate(t), memory, t)
        t += 2.0
    assert serving < 8


def test_without_a_backlog_the_spec_window_applies() -> None:
    # The control case: the same fleet and rate with no backlog come down after 4 s.
    memory = replace(PolicyMemory(), last_serving=8, started_at=0.0)
    t, serving = 100.0, 8
    for _ in range(5):
        serving, memory = decide(lagging_rate(t), memory, t)
        t += 2.0
    assert serving < 8
