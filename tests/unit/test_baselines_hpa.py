"""HPA-like baseline: its knob (the utilisation target) and the documented default behaviour
(AverageValue arithmetic with tolerance, scale-up policies, 300 s scale-down stabilisation)."""

from __future__ import annotations

import math

import pytest

from gpufleet.api.models import InferenceServiceSpec, ModelRef, Replicas, Scaling
from gpufleet.core.types import ON_DEMAND, FleetState, Observation, PolicyMemory, Replica, ReplicaState
from gpufleet.sim.baselines import HpaLike, HpaScaler
from gpufleet.sim.scenarios import TEMPLATE

RPS = 10.0  # the load-test figure, targetRpsPerReplica


def spec(utilization: float = 0.8, max_replicas: int = 200) -> InferenceServiceSpec:
    return InferenceServiceSpec(model=ModelRef(name="m"), template=TEMPLATE, replicas=Replicas(min=1, max=max_replicas),
                                scaling=Scaling(target_rps_per_replica=RPS, target_utilization=utilization))


def fleet(n: int) -> FleetState:
    return FleetState(replicas=tuple(Replica(name=f"p{i}", capacity_class=ON_DEMAND, state=ReplicaState.serving,
                                             created_at=0.0, ready_at=0.0) for i in range(n)))


def decide(policy: HpaLike, s: InferenceServiceSpec, rate: float | None, n: int, now: float) -> int:
    plan, _ = policy.decide(spec=s, observation=Observation(sampled_at=now, request_rate=rate), forecast=None,
                            fleet=fleet(n), memory=PolicyMemory(), now=now)
    return plan.serving


@pytest.mark.parametrize("u", [0.55, 0.7, 0.85])
def test_utilization_knob_sets_the_per_replica_target(u: float) -> None:
    rate = 237.0
    want = math.ceil(rate / (RPS * u))
    # From a fleet near the answer (outside the tolerance), so the scale-up policies do not bind.
    start = math.ceil(want * 0.8)
    assert decide(HpaLike(utilization=u), spec(), rate, start, 0.0) == want


def test_lower_utilization_target_runs_more_replicas_and_default_is_the_specs() -> None:
    rate = 500.0
    counts = [decide(HpaLike(utilization=u), spec(), rate, 60, 0.0) for u in (0.55, 0.65, 0.75, 0.85)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    for u in (0.6, 0.8):
        by_spec = decide(HpaLike(), spec(utilization=u), rate, 60, 0.0)
        assert by_spec == decide(HpaLike(utilization=u), spec(), rate, 60, 0.0)
    with pytest.raises(ValueError):
        decide(HpaLike(utilization=1.5), spec(), rate, 60, 0.0)


def test_tolerance_keeps_the_count_within_ten_percent() -> None:
    s = spec()
    n = 20
    on_target = n * RPS * 0.8
    assert decide(HpaLike(), s, on_target * 1.09, n, 0.0) == n  # 9 % over: within tolerance
    assert decide(HpaLike(), s, on_target * 1.12, n, 0.0) == math.ceil(on_target * 1.12 / (RPS * 0.8))


def test_scale_up_is_limited_to_double_or_four_pods_per_sync() -> None:
    s = spec()
    huge = 10_000.0
    assert decide(HpaLike(), s, huge, 2, 0.0) == 2 + 4  # +4 pods beats +100 % on a small fleet
    assert decide(HpaLike(), s, huge, 10, 0.0) == 20  # +100 % beats +4 on a larger one


def test_stabilisation_window_holds_scale_down_for_300_s() -> None:
    s = spec()
    hpa = HpaLike()
    n = 20
    high, low = n * RPS * 0.8, 40.0
    assert decide(hpa, s, high, n, 0.0) == n
    held = [(t, decide(hpa, s, low, n, float(t))) for t in range(15, 600, 15)]
    low_count = math.ceil(low / (RPS * 0.8))
    # The highest recommendation of the last 300 s holds (the controller keeps those strictly newer
    # than now - 300 s), so the count stays until 300 s after the last high one, then drops.
    assert all(c == n for t, c in held if t < 300)
    assert all(c == low_count for t, c in held if t >= 300)


def test_a_missing_metric_keeps_the_count() -> None:
    assert decide(HpaLike(), spec(), None, 7, 0.0) == 7
    assert decide(HpaLike(), spec(), float("nan"), 7, 0.0) == 7


def test_several_metrics_take_the_largest_and_a_missing_one_blocks_only_scale_down() -> None:
    h = HpaScaler()
    # proposals 5 (rate) and 9 (queue) from 6 pods: the larger wins
    assert h.desired_of(((40.0, 8.0), (72.0, 8.0)), current=6, now=0.0, lo=1, hi=100) == 9
    # one missing, the other suggests a scale-down: scaling is skipped
    assert HpaScaler().desired_of(((8.0, 8.0), (None, 8.0)), current=6, now=0.0, lo=1, hi=100) == 6
    # one missing, the other suggests a scale-up: it scales up
    assert HpaScaler().desired_of(((80.0, 8.0), (None, 8.0)), current=6, now=0.0, lo=1, hi=100) == 10
