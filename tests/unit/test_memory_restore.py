"""What the policy learned survives a restart: the policy run through status.memory's codec decides
after a restart as it would have without one, where a fresh memory would not.

A small closed loop (replicas become Ready at once, the load is a step series) drives the real
GpufleetPolicy every 10 s; at the "kill" the memory is encoded, the operator is down for 20 s, and
the decoded memory continues.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.control import schedule as calendar
from gpufleet.control.memory import decode, encode
from gpufleet.core import stabilize, warmpool
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.types import ON_DEMAND, FleetState, Observation, Plan, PolicyMemory, Replica, ReplicaState

POLICY = GpufleetPolicy()
TICK = 10.0


def spec_of(**extra: object) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": "chat"},
        "template": {"spec": {"containers": [{"name": "triton", "image": "triton"}]}},
        "replicas": {"min": 1, "max": 40},
        "capacity": {"onDemand": {"base": 0}},
        "scaling": {"targetRpsPerReplica": 10, "intervalSeconds": 10,
                    "scaleDown": {"stabilizationSeconds": 300}},
        **extra,
    })


def fleet_for(plan: Plan | None) -> FleetState:
    """The fleet the previous plan asked for, all Ready: serving first, then standbys."""
    if plan is None:
        return FleetState(replicas=(Replica("r0", ON_DEMAND, ReplicaState.serving, 0.0, 60.0),),
                          time_to_ready_s={ON_DEMAND: 90.0})
    reps = [Replica(f"s{i}", ON_DEMAND, ReplicaState.serving, 0.0, 60.0) for i in range(plan.serving)]
    reps += [Replica(f"w{i}", ON_DEMAND, ReplicaState.standby, 0.0, 60.0) for i in range(plan.standby)]
    return FleetState(replicas=tuple(reps), time_to_ready_s={ON_DEMAND: 90.0})


def run(spec: InferenceServiceSpec, load: Callable[[float], float], start: float, end: float,
        memory: PolicyMemory, plan: Plan | None) -> tuple[list[tuple[float, Plan]], PolicyMemory, Plan | None]:
    out = []
    t = start
    while t < end:
        rate = load(t)
        obs = Observation(sampled_at=t, queue_depth=0.0, queue_time_ms=0.0, request_rate=rate)
        plan, memory = POLICY.decide(spec=spec, observation=obs, forecast=None, fleet=fleet_for(plan),
                                     memory=memory, now=t, windows=calendar.windows(spec.schedules, t))
        out.append((t, plan))
        t += TICK
    return out, memory, plan


def through_status(spec: InferenceServiceSpec, memory: PolicyMemory, killed: float, restarted: float) -> PolicyMemory:
    keep = stabilize.retention_s(spec, warmpool.horizon_s(spec, {ON_DEMAND: 90.0}))
    restored, _ = decode(encode(memory, {}, now=killed, keep_s=keep), now=restarted)
    return restored


def test_learned_pool_is_not_retired_after_a_restart() -> None:
    spec = spec_of(warmPool={"size": "auto", "max": 8})

    def load(t: float) -> float:  # 50 rps with a jump to 150 rps for 2 minutes every 10 minutes
        return 150.0 if (t % 600.0) < 120.0 else 50.0

    t0, kill = 0.0, 3 * 3600.0 + 150.0  # killed just after a jump, after hours of recurring jumps
    _, memory, plan = run(spec, load, t0, kill, PolicyMemory(), None)
    assert plan is not None
    pool_before = plan.standby
    assert pool_before >= 2, "the scenario should teach the pool a few standbys"
    restart = kill + 20.0
    after, _, _ = run(spec, load, restart, restart + 120.0, through_status(spec, memory, kill, restart), plan)
    continuous, _, _ = run(spec, load, restart, restart + 120.0, memory, plan)
    fresh, _, _ = run(spec, load, restart, restart + 120.0, PolicyMemory(), plan)
    # No standby retired in the first two minutes, exactly as without the restart ...
    assert min(p.standby for _, p in after) >= pool_before
    assert [p.standby for _, p in after] == [p.standby for _, p in continuous]
    # ... where a process that forgot would have let standbys go.
    assert min(p.standby for _, p in fresh) < pool_before


def test_spot_backoff_and_load_multiplier_window_survive_a_restart() -> None:
    opens = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc).timestamp()
    spec = spec_of(schedules=[{"name": "launch", "start": "2026-12-02T12:00:00Z", "duration": "2h",
                               "loadMultiplier": 2.0}])

    def load(t: float) -> float:  # the event's own traffic doubles the load once the window is open
        return 100.0 if t < opens else 200.0

    kill = opens + 600.0
    _, memory, plan = run(spec, load, opens - 3600.0, kill, PolicyMemory(), None)
    assert plan is not None
    memory = replace(memory, spot_retry_at=kill + 500.0, spot_backoff_s=600.0, spot_outage_at=kill - 100.0)
    restart = kill + 20.0
    restored = through_status(spec, memory, kill, restart)
    assert (restored.spot_retry_at, restored.spot_backoff_s) == (memory.spot_retry_at, memory.spot_backoff_s)
    after, _, _ = run(spec, load, restart, restart + 120.0, restored, plan)
    fresh, _, _ = run(spec, load, restart, restart + 120.0, PolicyMemory(), plan)
    # The floor stays the multiplier times the load *before* the event ...
    assert {p.serving for _, p in after} == {plan.serving}
    # ... while a forgetful restart multiplies the event's own (already doubled) traffic again.
    assert max(p.serving for _, p in fresh) > plan.serving
