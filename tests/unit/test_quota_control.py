"""The quota between services' loops (control.quota): the board, the policy wrapper, the conditions
and the GPUQuota status; pure fakes for the inner policy and fleets."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.api.quota import GPUQuotaSpec
from gpufleet.control import quota as cq
from gpufleet.core import quota as core
from gpufleet.core.schedule import Window
from gpufleet.core.types import ON_DEMAND, FleetState, ForecastSummary, Observation, Plan, PolicyMemory, Replica, ReplicaState

GPU = "nvidia.com/gpu"


def spec(name: str = "q", tier: str = "paid", gpus: int = 1, mn: int = 1, extra: dict[str, Any] | None = None,
         quota: bool = True) -> InferenceServiceSpec:
    raw: dict[str, Any] = {
        "model": {"name": "m"}, "replicas": {"min": mn, "max": 20},
        "template": {"spec": {"containers": [{"name": "t", "image": "x",
                                              "resources": {"limits": {GPU: gpus}}}]}},
        **(extra or {}),
    }
    if quota:
        raw["quota"] = {"name": name, "tier": tier}
    return InferenceServiceSpec.model_validate(raw)


def quota_spec(gpus: int = 4, **extra: Any) -> GPUQuotaSpec:
    return GPUQuotaSpec.model_validate({"limits": {GPU: gpus}, "tiers": [
        {"name": "paid"}, {"name": "free", "preemptible": True}], **extra})


class Fixed:
    """An inner policy that wants `n` serving replicas, on-demand only."""

    name = "fixed"

    def __init__(self, n: int, safe: bool = False) -> None:
        self.n, self.safe = n, safe

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        return Plan(serving=self.n, standby=0, on_demand=self.n, spot=0, reason="QueueDepth", message="load",
                    safe_mode=self.safe), memory


def fleet(n: int) -> FleetState:
    return FleetState(tuple(Replica(f"r{i}", ON_DEMAND, ReplicaState.serving, 0.0, 1.0) for i in range(n)))


def decide(policy: cq.QuotaPolicy, s: InferenceServiceSpec, running: int, now: float = 100.0) -> Plan:
    return policy.decide(spec=s, observation=Observation(), forecast=None, fleet=fleet(running),
                         memory=PolicyMemory(), now=now)[0]


def test_missing_quota_and_tier_cap_nothing_and_say_so() -> None:
    board = cq.QuotaBoard()
    p = cq.QuotaPolicy(Fixed(6), board, "ns/a")
    plan = decide(p, spec(name="nope"), running=2)
    assert plan.total == 6 and p.verdict is not None and p.verdict.reason == cq.NOT_FOUND
    status = cq.with_condition({"conditions": []}, p.verdict, now=0.0, generation=3)
    cond = next(c for c in status["conditions"] if c["type"] == "QuotaLimited")
    assert (cond["status"], cond["reason"]) == ("Unknown", "QuotaNotFound") and "nope" in cond["message"]
    board.set_quota("q", quota_spec())
    plan = decide(p, spec(tier="gold"), running=2)
    assert plan.total == 6 and p.verdict is not None and p.verdict.reason == cq.TIER_NOT_FOUND
    assert "paid, free" in p.verdict.message


def test_no_allocation_yet_holds_what_runs() -> None:
    board = cq.QuotaBoard()
    board.set_quota("q", quota_spec())
    p = cq.QuotaPolicy(Fixed(6), board, "ns/a")
    assert decide(p, spec(), running=2).total == 2  # neither grows nor shrinks before an arbitration
    assert p.verdict is not None and p.verdict.reason == cq.PENDING


def test_lockstep_arbitration_caps_the_lower_tier_first() -> None:
    board = cq.QuotaBoard()
    board.set_quota("q", quota_spec(gpus=6))
    high = cq.QuotaPolicy(Fixed(5), board, "ns/high")
    low = cq.QuotaPolicy(Fixed(4), board, "ns/low")
    s_high, s_low = spec(tier="paid"), spec(tier="free", mn=2)
    decide(high, s_high, running=1)
    decide(low, s_low, running=4)
    got = board.arbitrate("q", now=100.0)
    assert got is not None
    alloc = {a.key: a.allocated for a in got[0].allocations}
    # free is preemptible: below its floor of 2. high grows only into what is free now (6 - 1 - 4):
    # the GPUs low gives up are its until its pods have drained.
    assert alloc == {"ns/high": 2, "ns/low": 1}
    assert "3 more as pods elsewhere drain" in got[0].allocations[0].message
    assert decide(high, s_high, running=1).total == 2
    plan = decide(low, s_low, running=4)
    assert plan.total == 1 and plan.reason == core.LIMITED and "GPUQuota q, tier free" in plan.message
    assert low.verdict is not None and low.verdict.reason == core.PREEMPTED
    cond = next(c for c in cq.with_condition({}, low.verdict, now=0.0, generation=1)["conditions"])
    assert (cond["status"], cond["reason"]) == ("True", "Preempted")
    # Once low's pods are gone, high gets the rest.
    decide(high, s_high, running=2)
    decide(low, s_low, running=1)
    got = board.arbitrate("q", now=110.0)
    assert got is not None and {a.key: a.allocated for a in got[0].allocations} == {"ns/high": 5, "ns/low": 1}
    # The GPUQuota's status: per tier and per service.
    status = cq.quota_status("q", quota_spec(gpus=6), got[0], got[1], now=110.0, generation=1)
    assert status["allocated"] == {GPU: 6.0} and status["limits"] == {GPU: 6.0}
    tiers = {t["name"]: t for t in status["tiers"]}
    assert tiers["paid"]["allocated"] == {GPU: 5.0} and tiers["free"]["used"] == {GPU: 1.0}
    assert [(s["name"], s["reason"]) for s in status["services"]] == [("high", "WithinQuota"), ("low", "Preempted")]


def test_safe_mode_is_never_cut_below_what_runs() -> None:
    board = cq.QuotaBoard()
    board.set_quota("q", quota_spec(gpus=2))
    p = cq.QuotaPolicy(Fixed(5, safe=True), board, "ns/a")
    decide(p, spec(), running=5)
    board.arbitrate("q", now=100.0)
    assert decide(p, spec(), running=5).total == 5


def test_a_stale_need_counts_with_what_it_runs() -> None:
    board = cq.QuotaBoard(stale_after_s=60.0)
    board.set_quota("q", quota_spec(gpus=10))
    old = cq.QuotaPolicy(Fixed(1), board, "ns/old")
    decide(old, spec(tier="paid"), running=6, now=0.0)  # wanted 1, ran 6, then went quiet
    new = cq.QuotaPolicy(Fixed(10), board, "ns/new")
    decide(new, spec(tier="paid"), running=0, now=500.0)
    got = board.arbitrate("q", now=500.0)
    assert got is not None
    alloc = {a.key: a.allocated for a in got[0].allocations}
    assert alloc["ns/old"] == 6 and alloc["ns/new"] == 4


def test_without_spec_quota_the_policy_is_the_inner_one() -> None:
    board = cq.QuotaBoard()
    p = cq.QuotaPolicy(Fixed(7), board, "ns/a")
    assert decide(p, spec(quota=False), running=1).total == 7 and p.verdict is None
    assert board.demands == {}
    assert cq.with_condition({"conditions": [{"type": "QuotaLimited", "status": "True"}]}, None, now=0.0,
                             generation=1)["conditions"] == []


@pytest.mark.parametrize(("extra", "want"), [
    ({}, {GPU: 2.0, "h100/" + GPU: 0.0}),
    ({"capacity": {"onDemand": {"nodeSelector": {"pool": "h100"}}}}, {GPU: 2.0, "h100/" + GPU: 2.0}),
    ({"capacity": {"onDemand": {"nodeSelector": {"pool": "l4"}}}}, {GPU: 2.0, "h100/" + GPU: 0.0}),
])
def test_per_replica_counts_template_resources_pools_and_cost(extra: dict[str, Any], want: dict[str, float]) -> None:
    q = GPUQuotaSpec.model_validate({"limits": {GPU: 8}, "tiers": [{"name": "paid"}],
                                     "nodePools": [{"name": "h100", "nodeSelector": {"pool": "h100"},
                                                    "limits": {GPU: 4}}]})
    assert cq.per_replica(spec(gpus=2, extra=extra), q) == want
    priced = q.model_copy(update={"max_cost_per_hour": 100.0})
    assert cq.per_replica(spec(gpus=2, extra=extra), priced)[core.COST] == pytest.approx(2 * 4.10)
    assert cq.caps(priced)[core.COST] == 100.0


def test_mig_slices_are_their_own_resource() -> None:
    q = GPUQuotaSpec.model_validate({"limits": {"nvidia.com/mig-3g.40gb": 7}, "tiers": [{"name": "paid"}]})
    s = InferenceServiceSpec.model_validate({
        "model": {"name": "m"}, "template": {"spec": {"containers": [{"name": "t", "image": "x", "resources": {
            "limits": {"nvidia.com/mig-3g.40gb": "1"}}}]}}})
    assert cq.per_replica(s, q) == {"nvidia.com/mig-3g.40gb": 1.0}


def test_quota_spec_refuses_duplicate_tiers_and_caps_nothing() -> None:
    with pytest.raises(ValueError, match="tier names must be unique"):
        GPUQuotaSpec.model_validate({"limits": {GPU: 1}, "tiers": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ValueError, match="caps something"):
        GPUQuotaSpec.model_validate({"tiers": [{"name": "a"}]})


def test_an_allocation_of_another_quota_does_not_count() -> None:
    board = cq.QuotaBoard()
    board.set_quota("q", quota_spec(gpus=2))
    board.set_quota("r", quota_spec(gpus=8))
    p = cq.QuotaPolicy(Fixed(6), board, "ns/a")
    decide(p, spec(name="q"), running=2)
    board.arbitrate("q", now=100.0)
    assert decide(p, spec(name="q"), running=2).total == 2
    # Moved to quota r (a spec edit): q's allocation of 2 no longer applies; r has not counted it yet.
    assert decide(p, spec(name="r"), running=2, now=101.0).total == 2
    assert p.verdict is not None and p.verdict.reason == cq.PENDING
    board.arbitrate("r", now=102.0)
    assert decide(p, spec(name="r"), running=2, now=103.0).total == 6


# -- a service with capacity classes under a quota per GPU product --------------------------------

H100_PRODUCT, L4_PRODUCT = "NVIDIA-H100-80GB-HBM3", "NVIDIA-L4"
NOW = 1_767_225_600.0


def class_spec(tier: str = "paid") -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": "m"}, "replicas": {"min": 1, "max": 60},
        "template": {"spec": {"containers": [{"name": "t", "image": "x"}]}},
        "scaling": {"targetRpsPerReplica": 4.0, "targetUtilization": 1.0},
        "quota": {"name": "q", "tier": tier},
        "capacity": {"classes": [
            {"name": "h100", "pricePerReplicaHour": 3.0, "targetRpsPerReplica": 13.6,
             "nodeSelector": {"nvidia.com/gpu.product": H100_PRODUCT}},
            {"name": "l4", "pricePerReplicaHour": 1.2, "targetRpsPerReplica": 4.0, "product": L4_PRODUCT}]}})


def per_product_quota(h100: int = 4, l4: int = 20, **extra: Any) -> GPUQuotaSpec:
    return GPUQuotaSpec.model_validate({"tiers": [{"name": "paid"}, {"name": "free", "preemptible": True}],
                                        "nodePools": [
                                            {"name": "h100", "nodeSelector": {"nvidia.com/gpu.product": H100_PRODUCT},
                                             "limits": {GPU: h100}},
                                            {"name": "l4", "nodeSelector": {"nvidia.com/gpu.product": L4_PRODUCT},
                                             "limits": {GPU: l4}}], **extra})


def class_fleet(**pods: int) -> FleetState:
    return FleetState(tuple(Replica(f"{c}-{i}", c, ReplicaState.serving, NOW - 900, NOW - 800)
                            for c, n in pods.items() for i in range(n)))


def busy(rps: float) -> Observation:
    return Observation(sampled_at=NOW, queue_depth=0.0, queue_time_ms=1.0, ttft_p95_ms=100.0, latency_p95_ms=200.0,
                       request_rate=rps)


def test_class_per_replica_counts_each_class_on_its_product() -> None:
    s = class_spec()
    listed = {c.name: c for c in s.capacity.classes or ()}
    priced = per_product_quota().model_copy(update={"max_cost_per_hour": 50.0, "limits": {GPU: 10}})
    assert cq.class_per_replica(s, listed["h100"], priced) == {GPU: 1.0, "h100/" + GPU: 1.0, "l4/" + GPU: 0.0,
                                                               core.COST: 3.0}
    # `product` places the class on its product's pool where no nodeSelector names it.
    assert cq.class_per_replica(s, listed["l4"], priced) == {GPU: 1.0, "h100/" + GPU: 0.0, "l4/" + GPU: 1.0,
                                                             core.COST: 1.2}


def test_a_full_product_moves_the_mix_to_the_other_class() -> None:
    from gpufleet.core.policy import GpufleetPolicy

    board = cq.QuotaBoard()
    board.set_quota("q", per_product_quota(h100=4))
    p = cq.QuotaPolicy(GpufleetPolicy(), board, "ns/chat")
    s = class_spec()
    fleet = class_fleet(h100=4)
    memory = PolicyMemory(last_serving=25, started_at=NOW - 3600, last_decided_at=NOW - 10)

    def run() -> Plan:
        return p.decide(spec=s, observation=busy(100.0), forecast=None, fleet=fleet, memory=memory, now=NOW)[0]

    # Alone, 100 rps is 7 x h100 + 2 x l4 (the cheapest mix); the H100 pool holds 4.
    alone, _ = GpufleetPolicy().decide(spec=s, observation=busy(100.0), forecast=None, fleet=fleet, memory=memory,
                                       now=NOW)
    assert alone.by_class("h100") == 7
    run()
    got = board.arbitrate("q", now=NOW)
    assert got is not None
    a = got[0].allocations[0]
    assert a.reason == core.WITHIN and dict(a.classes) == {"h100": 4, "l4": 12}, a
    plan = run()
    assert plan.by_class("h100") == 4 and plan.by_class("l4") == 12, plan.mix_note
    capacity = sum(c.replicas * c.rps_per_replica for c in plan.classes or ())
    assert capacity >= 100.0
    assert "quota q: h100/nvidia.com/gpu 4/4, serving on l4" in plan.mix_note, plan.mix_note
    reasons = {c.name: c.reason for c in plan.classes or ()}
    assert "held by quota q: h100/nvidia.com/gpu 4/4; 7 wanted" in reasons["h100"], reasons
    assert p.verdict is not None and not p.verdict.limited  # all its capacity, on another product
    # The GPUQuota's status counts each class on its own pool.
    status = cq.quota_status("q", per_product_quota(h100=4), got[0], got[1], now=NOW, generation=1)
    assert status["allocated"] == {"h100/" + GPU: 4.0, "l4/" + GPU: 12.0}
    assert status["used"] == {"h100/" + GPU: 4.0, "l4/" + GPU: 0.0}
    assert status["tiers"][0]["desired"] == {"h100/" + GPU: 7.0, "l4/" + GPU: 2.0}


def test_a_class_service_and_a_plain_one_share_a_product() -> None:
    from gpufleet.core.policy import GpufleetPolicy

    board = cq.QuotaBoard()
    board.set_quota("q", per_product_quota(h100=6, l4=3))
    chat = cq.QuotaPolicy(GpufleetPolicy(), board, "ns/chat")
    batch = cq.QuotaPolicy(Fixed(4), board, "ns/batch")
    plain = spec(tier="free", mn=0, extra={"template": {"spec": {
        "nodeSelector": {"nvidia.com/gpu.product": H100_PRODUCT},
        "containers": [{"name": "t", "image": "x", "resources": {"limits": {GPU: 1}}}]}}})
    s = class_spec()
    memory = PolicyMemory(last_serving=25, started_at=NOW - 3600, last_decided_at=NOW - 10)
    fleet = class_fleet(h100=2)

    def run() -> Plan:
        return chat.decide(spec=s, observation=busy(100.0), forecast=None, fleet=fleet, memory=memory, now=NOW)[0]

    run()
    batch.decide(spec=plain, observation=Observation(), forecast=None, fleet=class_fleet(**{ON_DEMAND: 4}),
                 memory=PolicyMemory(), now=NOW)
    got = board.arbitrate("q", now=NOW)
    assert got is not None
    alloc = {a.key: a for a in got[0].allocations}
    # The paid service gets what the H100 pool has once batch's pods drain; the batch tier is
    # held at its floor of 0; chat's pods on each pool stay within the pool's limit meanwhile.
    assert alloc["ns/batch"].allocated == 0 and alloc["ns/batch"].reason == core.AT_FLOOR
    holds = dict(alloc["ns/chat"].holds)
    assert holds["h100/" + GPU] + 4 <= 6 + 1e-9 and holds["l4/" + GPU] <= 3
    plan = run()
    assert plan.by_class("h100") <= 2 and plan.by_class("l4") <= 3, plan.mix_note
    assert plan.reason == core.LIMITED and "GPUQuota q, tier paid" in plan.message


def test_make_before_break_stays_within_a_full_product() -> None:
    # On-demand and spot H100s share the product's pool (6 GPUs, all held): the mix would swap an
    # on-demand pod for a spot one and keep the old one until the new one is Ready (7 on the pool).
    from gpufleet.core.policy import GpufleetPolicy

    s = class_spec().model_copy(deep=True)
    raw = s.model_dump(by_alias=True, exclude_none=True)
    raw["capacity"]["classes"].insert(1, {
        "name": "h100-spot", "pricePerReplicaHour": 2.25, "targetRpsPerReplica": 13.6, "spot": True,
        "maxShare": 0.7, "nodeSelector": {"nvidia.com/gpu.product": H100_PRODUCT}})
    s = InferenceServiceSpec.model_validate(raw)
    board = cq.QuotaBoard()
    board.set_quota("q", per_product_quota(h100=6, l4=16))
    p = cq.QuotaPolicy(GpufleetPolicy(), board, "ns/chat")
    fleet = class_fleet(**{"h100": 3, "h100-spot": 3})
    memory = PolicyMemory(last_serving=25, started_at=NOW - 3600, last_decided_at=NOW - 10)
    on_pool = ("h100", "h100-spot")
    for _ in range(2):  # before the first arbitration (hold what runs), then with the allocation
        plan = p.decide(spec=s, observation=busy(100.0), forecast=None, fleet=fleet, memory=memory, now=NOW)[0]
        assert sum(plan.by_class(c) for c in on_pool) <= 6, plan.mix_note
        got = board.arbitrate("q", now=NOW)
        assert got is not None
        status = cq.quota_status("q", per_product_quota(h100=6, l4=16), got[0], got[1], now=NOW, generation=1)
        assert status["used"]["h100/" + GPU] <= 6 and status["allocated"]["h100/" + GPU] <= 6
    assert plan.by_class("l4") > 0 and "quota q: h100/nvidia.com/gpu" in plan.mix_note, plan.mix_note
    assert sum(c.replicas * c.rps_per_replica for c in plan.classes or ()) >= 100.0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_services_mixes_together_never_exceed_a_product_quota(data: st.DataObject) -> None:
    """Class-mixed services in lockstep (each decides, the quota arbitrates, each decides again):
    the pods they ask for on each product's pool, make-before-break included, stay within its cap
    (the pods held before fit in it; tiers preemptible, so no floor is granted past a cap)."""
    from gpufleet.core.policy import GpufleetPolicy

    n = data.draw(st.integers(1, 3))
    held = [data.draw(st.tuples(st.integers(0, 4), st.integers(0, 4))) for _ in range(n)]
    h100_cap = sum(h for h, _ in held) + data.draw(st.integers(0, 4))
    l4_cap = sum(x for _, x in held) + data.draw(st.integers(0, 12))
    q = GPUQuotaSpec.model_validate({
        "tiers": [{"name": "paid", "preemptible": True}, {"name": "free", "preemptible": True}],
        "nodePools": [
            {"name": "h100", "nodeSelector": {"nvidia.com/gpu.product": H100_PRODUCT}, "limits": {GPU: h100_cap}},
            {"name": "l4", "nodeSelector": {"nvidia.com/gpu.product": L4_PRODUCT}, "limits": {GPU: l4_cap}}]})
    board = cq.QuotaBoard()
    board.set_quota("q", q)
    runs = []
    for i, (h, x) in enumerate(held):
        s = class_spec(tier=data.draw(st.sampled_from(["paid", "free"])))
        memory = PolicyMemory(last_serving=data.draw(st.integers(1, 40)), started_at=NOW - 3600,
                              last_decided_at=NOW - 10)
        runs.append((cq.QuotaPolicy(GpufleetPolicy(), board, f"ns/s{i}"), s, class_fleet(h100=h, l4=x), memory,
                     busy(data.draw(st.floats(1.0, 300.0)))))

    def decide_all() -> list[Plan]:
        return [p.decide(spec=s, observation=o, forecast=None, fleet=f, memory=m, now=NOW)[0]
                for p, s, f, m, o in runs]

    decide_all()
    assert board.arbitrate("q", now=NOW) is not None
    plans = decide_all()
    assert sum(p.by_class("h100") for p in plans) <= h100_cap, [p.mix_note for p in plans]
    assert sum(p.by_class("l4") for p in plans) <= l4_cap, [p.mix_note for p in plans]


def test_a_pool_over_its_cap_does_not_hold_a_service_on_another_pool() -> None:
    """Non-preemptible floors overcommit the H100 pool; a plain service on the L4 pool still grows
    into its own pool (pacing checks only the dimensions a replica uses)."""
    board = cq.QuotaBoard()
    board.set_quota("q", per_product_quota(h100=3, l4=3))

    def on(product: str, mn: int) -> InferenceServiceSpec:
        return spec(mn=mn, extra={"template": {"spec": {
            "nodeSelector": {"nvidia.com/gpu.product": product},
            "containers": [{"name": "t", "image": "x", "resources": {"limits": {GPU: 1}}}]}}})

    big, small = cq.QuotaPolicy(Fixed(5), board, "ns/big"), cq.QuotaPolicy(Fixed(2), board, "ns/small")
    decide(big, on(H100_PRODUCT, mn=5), running=5)
    decide(small, on(L4_PRODUCT, mn=0), running=0)
    got = board.arbitrate("q", now=100.0)
    assert got is not None
    alloc = {a.key: a for a in got[0].allocations}
    assert alloc["ns/big"].reason == core.OVER
    assert alloc["ns/small"].allocated == 2, alloc["ns/small"]
