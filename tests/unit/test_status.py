"""Status rendering (pure): conditions keep their transition time; Degraded says why; what counts
as a status change."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gpufleet.api.timefmt import iso
from gpufleet.control import status
from gpufleet.core.types import FleetState, Plan, Replica, ReplicaState

PLAN = Plan(serving=2, standby=0, on_demand=2, spot=0, reason="QueueDepth", message="m")


def test_condition_transition_time_moves_only_on_flip() -> None:
    first = status.set_condition([], type="Ready", status=True, reason="A", message="", now=100.0, generation=1)
    same = status.set_condition(first, type="Ready", status=True, reason="B", message="", now=200.0, generation=2)
    flipped = status.set_condition(same, type="Ready", status=False, reason="C", message="", now=300.0, generation=2)
    assert same[0].last_transition_time == first[0].last_transition_time == iso(100.0)
    assert same[0].reason == "B" and same[0].observed_generation == 2
    assert flipped[0].last_transition_time == iso(300.0) and flipped[0].status == "False"


def test_degraded_names_the_cause() -> None:
    noticed = FleetState(replicas=(Replica("p", "spot", ReplicaState.serving, 0.0, interrupted=True),))
    assert status.degraded_condition(PLAN, FleetState())[0] is False
    assert status.degraded_condition(PLAN, noticed)[1] == "Interruption"
    assert status.degraded_condition(PLAN, FleetState(spot_unavailable=True))[1] == "SpotUnavailable"
    safe = dataclasses.replace(PLAN, safe_mode=True)
    assert status.degraded_condition(safe, noticed)[1] == "SafeMode"


def test_cost_counts_every_gpu_holding_pod() -> None:
    from gpufleet.api.models import InferenceServiceSpec

    spec = InferenceServiceSpec.model_validate({"model": {"name": "m"}, "capacity": {"gpusPerReplica": 2},
                                                "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}})
    fleet = FleetState(replicas=(Replica("a", "on-demand", ReplicaState.serving, 0.0),
                                 Replica("b", "spot", ReplicaState.starting, 0.0)))
    assert status.cost_per_hour(spec, fleet) == round(2 * 4.10 + 2 * 1.30, 4)


def test_schedule_status_says_open_provisioning_or_upcoming() -> None:
    from gpufleet.core.schedule import Window

    hour = 3600.0
    wins = (
        Window("batch", start=10 * hour, end=11 * hour, min_replicas=4),  # next occurrence, far
        Window("launch", start=2 * hour, end=3 * hour, min_replicas=8, lead_s=600.0),
        Window("business", start=0.0, end=8 * hour, min_replicas=2),
    )
    now = 2 * hour - 300.0  # inside launch's 10-min lead
    rows = status.schedule_status(wins, now, default_lead_s=120.0)
    assert [(r.name, r.state) for r in rows] == [("business", "Open"), ("launch", "Provisioning"),
                                                 ("batch", "Upcoming")]
    launch = rows[1]
    assert (launch.opens, launch.closes, launch.provision_from) == (
        iso(2 * hour), iso(3 * hour), iso(2 * hour - 600.0))
    assert rows[2].provision_from == iso(10 * hour - 120.0)  # the default lead
    assert status.schedule_status((), now, 120.0) == []


def test_new_deployments_start_at_an_open_windows_floor() -> None:
    from gpufleet.api.models import InferenceServiceSpec
    from gpufleet.kopf_app import initial_replicas

    spec = InferenceServiceSpec.model_validate({
        "model": {"name": "m"}, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
        "replicas": {"min": 1, "max": 10}, "capacity": {"onDemand": {"base": 0}},
        "schedules": [{"name": "launch", "start": "2026-12-01T14:00:00Z", "duration": "2h", "minReplicas": 6}],
    })
    opens = 1_796_133_600.0  # 2026-12-01T14:00:00Z
    assert sum(initial_replicas(spec, opens + 60).values()) == 6
    assert sum(initial_replicas(spec, opens - 86_400).values()) == 1


def written(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "observedGeneration": 3,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Serving", "message": "2/2"}],
        "replicas": {"desired": 2, "serving": 2},
        "observed": {"requestRate": 101.3, "time": "2026-12-02T10:00:00Z"},
        "forecast": {"meanRps": 99.0},
        "usage": {"gpuHours": 1.25},
        "lastDecision": {"time": "2026-12-02T10:00:00Z", "desired": 2, "reason": "QueueDepth"},
        "memory": '{"v":1}',
    }
    base.update(over)
    return base


def test_material_ignores_what_moves_every_tick() -> None:
    later = written(observed={"requestRate": 98.7, "time": "2026-12-02T10:00:10Z"}, usage={"gpuHours": 1.26},
                    lastDecision={"time": "2026-12-02T10:00:10Z", "desired": 2, "reason": "RequestRate",
                                  "message": "rate 98.7 rps: need 1; holding 2"},
                    conditions=[{"type": "Ready", "status": "True", "reason": "Serving", "message": "2/2 ok"},
                                {"type": "Scaling", "status": "False", "reason": "RequestRate", "message": "x"}],
                    forecast={"meanRps": 97.0}, memory='{"v":1,"r":[]}')
    earlier = written(conditions=[{"type": "Ready", "status": "True", "reason": "Serving", "message": "2/2"},
                                  {"type": "Scaling", "status": "False", "reason": "ForecastLoad", "message": "y"}])
    assert status.material(later) == status.material(earlier)


@pytest.mark.parametrize("change", [
    {"replicas": {"desired": 3, "serving": 2}},
    {"lastDecision": {"time": "2026-12-02T10:00:00Z", "desired": 3, "reason": "QueueDepth"}},
    {"conditions": [{"type": "Ready", "status": "False", "reason": "NoServingReplicas", "message": "0/2"}]},
    {"observedGeneration": 4},
    {"conditions": [{"type": "Ready", "status": "True", "reason": "Degraded", "message": "2/2"}]},
])
def test_material_sees_what_a_reader_acts_on(change: dict[str, Any]) -> None:
    assert status.material(written(**change)) != status.material(written())
