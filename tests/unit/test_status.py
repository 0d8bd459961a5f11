"""Status rendering (pure): conditions keep their transition time; Degraded says why."""

from __future__ import annotations

from gpufleet.control import status
from gpufleet.core.types import FleetState, Plan, Replica, ReplicaState

PLAN = Plan(serving=2, standby=0, on_demand=2, spot=0, reason="QueueDepth", message="m")


def test_condition_transition_time_moves_only_on_flip() -> None:
    first = status.set_condition([], type="Ready", status=True, reason="A", message="", now=100.0, generation=1)
    same = status.set_condition(first, type="Ready", status=True, reason="B", message="", now=200.0, generation=2)
    flipped = status.set_condition(same, type="Ready", status=False, reason="C", message="", now=300.0, generation=2)
    assert same[0].last_transition_time == first[0].last_transition_time == status.iso(100.0)
    assert same[0].reason == "B" and same[0].observed_generation == 2
    assert flipped[0].last_transition_time == status.iso(300.0) and flipped[0].status == "False"


def test_degraded_names_the_cause() -> None:
    noticed = FleetState(replicas=(Replica("p", "spot", ReplicaState.serving, 0.0, interrupted=True),))
    assert status.degraded_condition(PLAN, FleetState())[0] is False
    assert status.degraded_condition(PLAN, noticed)[1] == "Interruption"
    assert status.degraded_condition(PLAN, FleetState(spot_unavailable=True))[1] == "SpotUnavailable"
    safe = Plan(**{**PLAN.__dict__, "safe_mode": True})
    assert status.degraded_condition(safe, noticed)[1] == "SafeMode"


def test_cost_counts_every_gpu_holding_pod() -> None:
    from gpufleet.api.models import InferenceServiceSpec

    spec = InferenceServiceSpec.model_validate({"model": {"name": "m"}, "capacity": {"gpusPerReplica": 2},
                                                "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}})
    fleet = FleetState(replicas=(Replica("a", "on-demand", ReplicaState.serving, 0.0),
                                 Replica("b", "spot", ReplicaState.starting, 0.0)))
    assert status.cost_per_hour(spec, fleet) == round(2 * 4.10 + 2 * 1.30, 4)
