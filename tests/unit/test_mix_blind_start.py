"""core.mix when the policy is blind (no metrics) and has no memory (a start or a restart), and
core.classes' one-class case.

The policy holds what it finds, in replicas of the reference class; with a class list whose large
class serves several references' worth, 40 serving H100 pods read as 40 slices' worth. The mix
keeps every serving pod in the Service while blind (found by the GPU-type benchmark: the first
minute of every class-mix run lost its load)."""

from __future__ import annotations

import numpy as np
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core import classes as C
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.types import (
    FleetState,
    Observation,
    PolicyMemory,
    Replica,
    ReplicaState,
)
from hypothesis import given
from hypothesis import strategies as st

NOW = 1_767_225_600.0
H100 = {"name": "h100", "pricePerReplicaHour": 3.0, "targetRpsPerReplica": 13.6}
MIG = {"name": "mig", "pricePerReplicaHour": 1.5, "targetRpsPerReplica": 4.6,
       "resources": {"nvidia.com/mig-3g.40gb": 1}}


def spec() -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": "m"}, "template": {"spec": {"containers": [{"name": "triton", "image": "t"}]}},
        "replicas": {"min": 1, "max": 500},
        # The reference is the smallest class (docs/gpu-types.md).
        "scaling": {"targetRpsPerReplica": 4.6, "targetUtilization": 1.0},
        "capacity": {"classes": [H100, MIG]}})


def serving_h100(n: int) -> FleetState:
    return FleetState(replicas=tuple(Replica(f"h{i}", "h100", ReplicaState.serving, NOW - 600, NOW - 500)
                                     for i in range(n)))


def test_a_blind_start_keeps_every_serving_pod_in_the_service() -> None:
    plan, _ = GpufleetPolicy().decide(spec=spec(), observation=Observation(), forecast=None, fleet=serving_h100(40),
                                      memory=PolicyMemory(), now=NOW)
    assert plan.safe_mode
    assert plan.by_class("h100") == 40  # every Ready pod kept
    assert plan.serving >= 40 and not plan.retire


@given(cap=st.floats(0.1, 50.0), lo=st.integers(0, 3), span=st.integers(0, 40), need=st.floats(0.0, 2000.0),
       current=st.integers(0, 40))
def test_one_class_is_solved_as_the_program_would(cap: float, lo: int, span: int, need: float, current: int) -> None:
    hi = lo + span
    fast = C._solve_memo.__wrapped__(((cap, 3.0, False, 1.0),), (float(lo),), (float(hi),), need, 1.0,
                                     (float(current),), False)
    # The same program through the solver: a second class that can have no replicas.
    milp = C._solve_memo.__wrapped__(((cap, 3.0, False, 1.0), (1.0, 1.0, False, 1.0)), (float(lo), 0.0),
                                     (float(hi), 0.0), need, 1.0, (float(current), 0.0), False)
    assert fast == (None if milp is None else milp[:1])
    if fast is not None:
        assert fast[0] * cap >= need - 1e-6 and lo <= fast[0] <= hi


def test_one_class_choice_meets_the_need_with_the_fewest_replicas() -> None:
    mix = C.choose([C.GpuClass("h100", 3.0, 10.0)], 35.0)
    assert mix.replicas == {"h100": 4} and mix.feasible
    mix = C.choose([C.GpuClass("h100", 3.0, 10.0, max=3)], 35.0)
    assert not mix.feasible and mix.replicas == {"h100": 3}  # the most the limits allow
    assert np.isclose(C.choose([C.GpuClass("h100", 3.0, 10.0, min=2)], 0.0).cost_per_hour, 6.0)


def busy(rps: float) -> Observation:
    """Metrics present and healthy: the load at `rps`, no queue."""
    return Observation(sampled_at=NOW, queue_depth=0.0, queue_time_ms=1.0, ttft_p95_ms=100.0, latency_p95_ms=200.0,
                       request_rate=rps)


def test_an_adopted_fleet_is_measured_in_reference_replicas_not_pods() -> None:
    # 40 serving H100 pods (544 rps planned) adopted without status.memory, 400 rps of load. Counted
    # as 40 pods, the fleet read as 40 slices' worth (184 rps): the step up from there fell short of
    # the load and the mix shrank the H100s under it for an interval.
    plan, memory = GpufleetPolicy().decide(spec=spec(), observation=busy(400.0), forecast=None,
                                           fleet=serving_h100(40), memory=PolicyMemory(), now=NOW)
    assert not plan.safe_mode
    assert memory.last_serving is not None and memory.last_serving >= 400.0 / 4.6
    capacity = sum(c.replicas * c.rps_per_replica for c in plan.classes or ())
    assert capacity >= 400.0, plan.mix_note
    assert plan.by_class("h100") >= 30 and not [n for n in plan.retire if n.startswith("h")], plan.mix_note


def test_current_serving_counts_capacity_units_when_given() -> None:
    from gpufleet.core.fleet import FleetView
    from gpufleet.core.mix import reference_units
    from gpufleet.core.policy import current_serving

    fleet = serving_h100(40)
    units = reference_units(spec(), fleet, 4.6)
    assert units == round(40 * 13.6 / 4.6)  # 118 reference replicas
    assert current_serving(FleetView.of(fleet), PolicyMemory(), units) == units
    assert current_serving(FleetView.of(fleet), PolicyMemory()) == 40  # the two-class form: pods
    assert current_serving(FleetView.of(fleet), PolicyMemory(last_serving=7), units) == 7  # memory first
