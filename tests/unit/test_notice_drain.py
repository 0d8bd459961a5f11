"""Found by the chaos suite (tests/chaos, a SIGKILL during a spot notice): once the interrupted
spot pods drained, the policy no longer counted them as interrupted, so spot read "available"
again after returnAfterSeconds while their nodes still carried the notice. The plan sized the
spot Deployment back to those same pods: released every tick ("Drained ... released" each
interval) but never deleted, and at the notice's deadline put back into the Service."""

from __future__ import annotations

from dataclasses import replace

from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.rollout import rollout
from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, PolicyMemory, Replica, ReplicaState
from tests.builders import NOW, make_spec, obs

SPEC = make_spec(replicas={"min": 2, "max": 8}, warmPool={"size": 0, "max": 0}, forecast={"enabled": False},
                 scaling={"intervalSeconds": 2, "targetRpsPerReplica": 100,
                          "scaleDown": {"stabilizationSeconds": 4, "maxStepPercent": 100, "drainTimeoutSeconds": 10}},
                 capacity={"onDemand": {"base": 1},
                           "spot": {"enabled": True, "maxFraction": 0.5, "returnAfterSeconds": 10}})


def fleet(noticed_at: float) -> FleetState:
    healthy = tuple(Replica(f"od{i}", ON_DEMAND, ReplicaState.serving, 0.0, 60.0, 0.0) for i in range(4))
    draining = tuple(Replica(f"sp{i}", SPOT, ReplicaState.draining, 0.0, 60.0, 0.0, interrupted=True,
                             draining_since=noticed_at + 5, reclaim_at=noticed_at + 120) for i in range(2))
    return FleetState(replicas=healthy + draining)


def test_spot_stays_out_while_its_noticed_pods_drain() -> None:
    noticed_at = NOW - 60  # past returnAfterSeconds and the drain timeout, before the node goes
    memory = PolicyMemory(last_serving=4, spot_retry_at=noticed_at + 10, spot_backoff_s=10, spot_outage_at=noticed_at)
    plan, _ = GpufleetPolicy().decide(spec=SPEC, observation=obs(request_rate=350), forecast=None,
                                      fleet=fleet(noticed_at), memory=memory, now=NOW)
    assert plan.serving == 4
    assert plan.spot == 0, plan.message  # no spot wanted while spot pods sit on noticed nodes
    step = rollout(plan, fleet(noticed_at).replicas, now=NOW, drain_timeout_s=10, interval_s=2)
    assert sorted(r.name for r in step.release) == ["sp0", "sp1"]
    assert dict(step.sizes)[SPOT] == 0  # the released pods leave their Deployment


def test_spot_returns_once_the_noticed_pods_are_gone() -> None:
    noticed_at = NOW - 60
    memory = PolicyMemory(last_serving=4, spot_retry_at=noticed_at + 10, spot_backoff_s=10, spot_outage_at=noticed_at)
    gone = replace(fleet(noticed_at), replicas=fleet(noticed_at).replicas[:4])
    plan, _ = GpufleetPolicy().decide(spec=SPEC, observation=obs(request_rate=350), forecast=None,
                                      fleet=gone, memory=memory, now=NOW)
    assert plan.spot > 0, plan.message
