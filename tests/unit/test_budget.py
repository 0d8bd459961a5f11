"""Budgets in the pure core: properties of the cap (hypothesis) and the pacing arithmetic."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpufleet.api.models import Budget, InferenceServiceSpec, Prices
from gpufleet.core import budget
from gpufleet.core.capacity import bounds
from gpufleet.core.policy import REASONS, GpufleetPolicy
from gpufleet.core.split import interrupted_by_class, spot_usable
from gpufleet.core.types import (
    ON_DEMAND,
    SPOT,
    FleetState,
    ForecastSummary,
    Observation,
    Plan,
    PolicyMemory,
    Replica,
    ReplicaState,
)
from tests.strategies import SETTINGS, fleets, forecasts, memories, observations, specs

NOW = 100_000.0
POLICY = GpufleetPolicy()


def with_budget(spec: InferenceServiceSpec, limit: float, od: float, sp: float) -> InferenceServiceSpec:
    capacity = spec.capacity.model_copy(update={"price_per_gpu_hour": Prices(on_demand=od, spot=sp)})
    return spec.model_copy(update={"capacity": capacity, "budget": Budget(max_cost_per_hour=limit)})


def healthy(plan: Plan, fleet: FleetState) -> tuple[int, int]:
    interrupted = interrupted_by_class(fleet)
    return plan.on_demand - interrupted[ON_DEMAND], plan.spot - interrupted[SPOT]


@SETTINGS
@given(spec=specs(), fleet=fleets(), obs=observations(), fc=forecasts(), mem=memories(),
       limit=st.floats(0.5, 200), od=st.sampled_from([2.0, 4.1, 6.0]), sp=st.sampled_from([0.8, 1.3, 3.0, 7.0]))
def test_budget_cap_properties(spec: InferenceServiceSpec, fleet: FleetState, obs: Observation,
                               fc: ForecastSummary | None, mem: PolicyMemory, limit: float, od: float,
                               sp: float) -> None:
    capped_spec = with_budget(spec, limit, od, sp)
    free_spec = capped_spec.model_copy(update={"budget": None})
    free, _ = POLICY.decide(spec=free_spec, observation=obs, forecast=fc, fleet=fleet, memory=mem, now=NOW)
    plan, memory = POLICY.decide(spec=capped_spec, observation=obs, forecast=fc, fleet=fleet, memory=mem, now=NOW)
    assert free.budget is None
    check = plan.budget
    assert check is not None and check.state in ("OK", "Alert", "Capped", "Infeasible")
    assert plan.reason in REASONS
    lo, _ = bounds(capped_spec)
    od_h, sp_h = healthy(plan, fleet)
    free_od, free_sp = healthy(free, fleet)
    rate = budget.cost_rate(capped_spec, od_h, sp_h)
    assert check.planned_per_hour == pytest.approx(rate)
    assert check.wanted_per_hour == pytest.approx(budget.cost_rate(capped_spec, free_od, free_sp))
    # Never below the floor (nor below what the load plan itself had, if that was lower).
    assert plan.serving >= min(lo, free.serving)
    assert od_h >= 0 and sp_h >= 0 and od_h + sp_h >= plan.serving + plan.standby or od_h + sp_h == free_od + free_sp
    # The budget only ever takes away.
    assert rate <= check.wanted_per_hour + 1e-9
    assert plan.serving <= free.serving and plan.standby <= free.standby
    if check.state in ("OK", "Alert"):
        assert (plan.serving, plan.standby, plan.on_demand, plan.spot) == (
            free.serving, free.standby, free.on_demand, free.spot)
        assert check.wanted_per_hour <= limit + 1e-6
    else:
        assert check.wanted_per_hour > limit
    if check.state == "Capped":
        assert rate <= limit + 1e-6
        assert plan.reason == budget.BUDGET and "limit" in plan.message
        assert memory.last_serving == plan.serving
    # Standbys go first: serving is cut only once no standby is left.
    if plan.serving < free.serving:
        assert plan.standby == 0
        # ... and on-demand above the base was swapped for spot first, when spot is usable.
        # (A reclaim notice on a spot replica, or a running spot backoff, means spot is out too.)
        reclaimed = any(r.interrupted and r.capacity_class == "spot" for r in fleet.replicas)
        backing_off = mem.spot_retry_at is not None and NOW < mem.spot_retry_at
        if spot_usable(capped_spec, fleet.spot_unavailable) and not (reclaimed or backing_off):
            assert od_h <= capped_spec.capacity.on_demand.base
    # Within budget whenever the floor fits: the floor at the dearest price is affordable.
    floor = min(lo, free.serving)
    dearest = max(od, sp) * capped_spec.capacity.gpus_per_replica
    if floor * dearest <= limit:
        assert check.state != "Infeasible" and rate <= limit + 1e-6
    if check.state == "Infeasible":
        assert plan.serving == floor and plan.standby == 0


def spec_doc(**extra: object) -> InferenceServiceSpec:
    doc = {"model": {"name": "m"}, "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
           "replicas": {"min": 2, "max": 10}, "scaling": {"targetRpsPerReplica": 10.0},
           "warmPool": {"size": 2, "max": 2},
           "capacity": {"onDemand": {"base": 1}, "spot": {"enabled": True, "maxFraction": 0.5},
                        "pricePerGpuHour": {"onDemand": 4.0, "spot": 1.0}}}
    doc.update(extra)
    return InferenceServiceSpec.model_validate(doc)


def serving_fleet(n: int) -> FleetState:
    return FleetState(tuple(Replica(f"r{i}", ON_DEMAND, ReplicaState.serving, 0.0, 1.0) for i in range(n)))


def test_cap_order_standby_then_spot_then_serving() -> None:
    # 80 req/s at 10 per replica: 8 serving + 2 standby, split 5 on-demand + 5 spot = 25/h.
    obs = Observation(sampled_at=NOW, request_rate=80.0, queue_depth=0.0)
    fleet = serving_fleet(8)
    mem = PolicyMemory(last_serving=8, started_at=0.0, last_decided_at=NOW - 10)

    def decide(limit: float) -> Plan:
        spec = spec_doc(budget={"maxCostPerHour": limit})
        return POLICY.decide(spec=spec, observation=obs, forecast=None, fleet=fleet, memory=mem, now=NOW)[0]

    free = decide(1000.0)
    assert (free.serving, free.standby, free.on_demand, free.spot) == (8, 2, 5, 5)
    assert free.budget is not None and free.budget.state == "OK"
    # 21/h: standbys go (8 = 4 od + 4 spot = 20/h), nothing else.
    p = decide(21.0)
    assert (p.serving, p.standby, p.on_demand, p.spot) == (8, 0, 4, 4) and p.reason == "Budget"
    assert "standby 2 -> 0" in p.message and "limit 21.00/h" in p.message
    # 12/h: then on-demand above the base moves to spot (1 od + 7 spot = 11/h).
    p = decide(12.0)
    assert (p.serving, p.standby, p.on_demand, p.spot) == (8, 0, 1, 7)
    assert "3 on-demand -> spot" in p.message
    # 6/h: then serving down (1 od + 2 spot = 6/h), never below replicas.min = 2.
    p = decide(6.0)
    assert (p.serving, p.on_demand, p.spot) == (3, 1, 2) and p.budget is not None and p.budget.state == "Capped"
    p = decide(1.0)
    assert (p.serving, p.on_demand, p.spot) == (2, 1, 1) and p.budget is not None
    assert p.budget.state == "Infeasible" and "floor costs more" in p.message
    # At 80 % of the limit: an alert, the plan unchanged.
    p = decide(25.0 / 0.85)
    assert p.budget is not None and p.budget.state == "Alert" and p.reason != "Budget"


def test_daily_budget_is_paced_over_the_rest_of_the_day() -> None:
    b = Budget(max_cost_per_day=240.0)
    noon = 20000 * 86400.0 + 12 * 3600
    limit, why = budget.limit_per_hour(b, spent_today=120.0, now=noon) or (0.0, "")
    assert limit == pytest.approx(10.0) and "120.00 spent" in why  # 120 left over 12 h
    limit, _ = budget.limit_per_hour(b, spent_today=300.0, now=noon) or (1.0, "")
    assert limit == 0.0  # overspent: only the floor runs
    both = Budget(max_cost_per_hour=5.0, max_cost_per_day=240.0)
    assert (budget.limit_per_hour(both, 0.0, noon) or (0.0, ""))[0] == 5.0
    assert budget.limit_per_hour(Budget(), 0.0, noon) is None


def test_spend_is_tracked_per_utc_day() -> None:
    spec = spec_doc()
    fleet = serving_fleet(2)  # 8/h
    midnight = 20000 * 86400.0
    mem = PolicyMemory(last_decided_at=midnight - 1800, spend_day=19999, spent_today=50.0)
    day, spent = budget.track_spend(spec, fleet, mem, midnight + 1800)
    assert day == 20000 and spent == pytest.approx(4.0)  # only the half hour after midnight
    day, spent = budget.track_spend(spec, fleet, replace(mem, spend_day=20000, last_decided_at=midnight + 1800),
                                    midnight + 3600)
    assert spent == pytest.approx(54.0)


def test_daily_budget_caps_after_the_day_is_spent() -> None:
    spec = spec_doc(budget={"maxCostPerDay": 100.0})
    obs = Observation(sampled_at=NOW, request_rate=80.0, queue_depth=0.0)
    fleet = serving_fleet(8)
    mem = PolicyMemory(last_serving=8, started_at=0.0, last_decided_at=NOW - 10, spend_day=int(NOW // 86400),
                       spent_today=99.99)
    plan, memory = POLICY.decide(spec=spec, observation=obs, forecast=None, fleet=fleet, memory=mem, now=NOW)
    assert plan.reason == "Budget" and plan.serving == 2 and plan.standby == 0
    assert memory.spent_today > 99.99 and memory.spend_day == int(NOW // 86400)


def test_cap_keeps_a_scheduled_floor() -> None:
    spec = spec_doc(budget={"maxCostPerHour": 1.0})
    fleet = serving_fleet(8)
    plan = Plan(serving=8, standby=2, on_demand=5, spot=5, reason="QueueDepth", message="m")
    mem = PolicyMemory(last_decided_at=NOW - 10)
    capped, _ = budget.enforce(spec, plan, mem, fleet=fleet, previous=mem, now=NOW, spot_unavailable=False, floor=6)
    assert (capped.serving, capped.standby) == (6, 0) and "scheduled floor 6" in capped.message
    assert capped.budget is not None and capped.budget.state == "Infeasible"


# -- spec.capacity.classes: the plan's cost is its classes' own ------------------------------------

CLASS_NOW = 1_767_225_600.0


def class_spec(limit: float | None, mn: int = 1) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": "m"}, "replicas": {"min": mn, "max": 60},
        "template": {"spec": {"containers": [{"name": "t", "image": "x"}]}},
        "scaling": {"targetRpsPerReplica": 4.0, "targetUtilization": 1.0},
        # pricePerGpuHour (4.10 on-demand) is not what these classes cost.
        "capacity": {"classes": [
            {"name": "h100", "pricePerReplicaHour": 3.0, "targetRpsPerReplica": 13.6},
            {"name": "l4", "pricePerReplicaHour": 1.2, "targetRpsPerReplica": 4.0}]},
        **({"budget": {"maxCostPerHour": limit}} if limit is not None else {})})


def busy(rps: float) -> Observation:
    return Observation(sampled_at=CLASS_NOW, queue_depth=0.0, queue_time_ms=1.0, ttft_p95_ms=100.0,
                       latency_p95_ms=200.0, request_rate=rps)


def class_cost(plan: Plan) -> float:
    return sum(c.replicas * c.price_per_hour for c in plan.classes or ())


def test_a_class_mixed_plan_is_costed_at_its_classes_prices() -> None:
    mem = PolicyMemory(last_serving=25, started_at=CLASS_NOW - 3600, last_decided_at=CLASS_NOW - 10)
    fleet = FleetState(tuple(Replica(f"h{i}", "h100", ReplicaState.serving, 0.0, 1.0) for i in range(7)))
    # 100 rps: 7 x h100 + 2 x l4 = 23.40/h (25 reference replicas at 4.10 would read 102.50/h).
    plan, _ = POLICY.decide(spec=class_spec(30.0), observation=busy(100.0), forecast=None, fleet=fleet,
                            memory=mem, now=CLASS_NOW)
    assert plan.budget is not None and plan.budget.state == budget.OK
    assert plan.budget.wanted_per_hour == pytest.approx(23.4) == pytest.approx(class_cost(plan))
    # A limit below it cuts serving capacity until the mix fits: at most 20/h, priced per class.
    plan, _ = POLICY.decide(spec=class_spec(20.0), observation=busy(100.0), forecast=None, fleet=fleet,
                            memory=mem, now=CLASS_NOW)
    assert plan.budget is not None and plan.budget.state == budget.CAPPED, plan.budget
    assert plan.reason == budget.BUDGET
    assert class_cost(plan) == pytest.approx(plan.budget.planned_per_hour) and class_cost(plan) <= 20.0 + 1e-9
    assert class_cost(plan) > 20.0 - 3.0  # no more than one H100's price left unspent
    assert plan.by_class("h100") <= 7


def test_class_pods_are_spent_at_their_classes_prices() -> None:
    fleet = FleetState((Replica("h0", "h100", ReplicaState.serving, 0.0, 1.0),
                        Replica("l0", "l4", ReplicaState.starting, 0.0),
                        Replica("old", ON_DEMAND, ReplicaState.draining, 0.0, 1.0)))
    # A class's pods at its price; a pod of the two-class form's name at pricePerGpuHour (4.10).
    assert budget.fleet_rate(class_spec(None), fleet) == pytest.approx(3.0 + 1.2 + 4.1)
    later = CLASS_NOW + 7200  # CLASS_NOW is a midnight: an hour into the day
    _, spent = budget.track_spend(class_spec(None), fleet, PolicyMemory(last_decided_at=later - 1800), later)
    assert spent == pytest.approx((3.0 + 1.2 + 4.1) / 2)
