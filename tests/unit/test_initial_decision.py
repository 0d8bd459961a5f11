"""A service's first tick starts from the decision its new Deployments were sized from.

The create handler sizes the Deployments from a decision with no load and no pods (min serving
plus the warm pool). The first tick then finds those pods all starting, usually before any metric
exists (safe mode: nothing may shrink). Counting every starting pod as serving would add a pool on
top: the integration test of the example service saw 4 pods where 3 were planned.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.control.step import initial_decision
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, Observation, PolicyMemory, Replica, ReplicaState

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_000_000.0
POLICY = GpufleetPolicy()


def example_spec() -> InferenceServiceSpec:
    obj = yaml.safe_load((ROOT / "examples/01-chat-triton.yaml").read_text())
    return InferenceServiceSpec.model_validate(obj["spec"])


def starting_pods(plan_on_demand: int, plan_spot: int, at: float) -> FleetState:
    pods = [Replica(f"od{i}", ON_DEMAND, ReplicaState.starting, at, None) for i in range(plan_on_demand)]
    pods += [Replica(f"sp{i}", SPOT, ReplicaState.starting, at, None) for i in range(plan_spot)]
    return FleetState(replicas=tuple(pods))


def test_first_blind_tick_keeps_the_initial_plan() -> None:
    spec = example_spec()
    plan, memory = initial_decision(spec, POLICY, now=NOW)
    assert (plan.serving, plan.standby) == (spec.replicas.min, 1)  # the example: min 2, one warm standby
    fleet = starting_pods(plan.on_demand, plan.spot, NOW)

    first, _ = POLICY.decide(spec=spec, observation=Observation(), forecast=None, fleet=fleet,
                             memory=memory, now=NOW + 2)
    assert first.safe_mode
    assert (first.serving, first.standby) == (plan.serving, plan.standby)
    assert first.on_demand + first.spot == len(fleet.replicas)


def test_without_the_initial_memory_the_starting_standby_counts_as_serving() -> None:
    # The control case: the same tick with empty memory grows the fleet, which is what the
    # initial memory prevents (if this ever stops growing, the memory is no longer needed).
    spec = example_spec()
    plan, _ = initial_decision(spec, POLICY, now=NOW)
    fleet = starting_pods(plan.on_demand, plan.spot, NOW)
    blind, _ = POLICY.decide(spec=spec, observation=Observation(), forecast=None, fleet=fleet,
                             memory=PolicyMemory(), now=NOW + 2)
    assert blind.on_demand + blind.spot > len(fleet.replicas)
