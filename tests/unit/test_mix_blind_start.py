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
