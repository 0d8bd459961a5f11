"""The quota arbitration (core.quota.arbitrate): properties over generated fleets, and capping a plan."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpufleet.api.models import Capacity, InferenceServiceSpec, OnDemand, Replicas, Spot
from gpufleet.core import quota
from gpufleet.core.quota import Need, arbitrate, effective_floor, limit_plan
from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, Plan, PolicyMemory, Replica, ReplicaState

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GPU = "nvidia.com/gpu"


@st.composite
def fleets(draw: st.DrawFn, unit: bool = False) -> tuple[list[Need], list[bool]]:
    """Up to 8 services in up to 3 tiers, one GPU dimension (sizes 1, 2, 4, 8 unless `unit`)."""
    tiers = draw(st.lists(st.booleans(), min_size=1, max_size=3))
    n = draw(st.integers(1, 8))
    needs = []
    for i in range(n):
        desired = draw(st.integers(0, 20))
        needs.append(Need(key=f"ns/s{i}", tier=draw(st.integers(0, len(tiers) - 1)), desired=desired,
                          floor=draw(st.integers(0, 6)),
                          per_replica={GPU: 1.0 if unit else float(draw(st.sampled_from([1, 2, 4, 8])))}))
    return needs, tiers


def base(n: Need, tiers: list[bool]) -> int:
    """What the service holds whatever the cap: its floor unless its tier is preemptible."""
    return 0 if tiers[n.tier] else effective_floor(n)


def usage(needs: list[Need], alloc: dict[str, int]) -> float:
    return sum(alloc[n.key] * n.per_replica[GPU] for n in needs)


@PROPS
@given(fleets(), st.integers(0, 200))
def test_within_cap_except_guaranteed_floors(f: tuple[list[Need], list[bool]], cap: int) -> None:
    needs, tiers = f
    res = arbitrate(needs, {GPU: cap}, tiers)
    alloc = {a.key: a.allocated for a in res.allocations}
    floors = sum(base(n, tiers) * n.per_replica[GPU] for n in needs)
    assert usage(needs, alloc) == res.used[GPU]
    for n in needs:
        assert base(n, tiers) <= alloc[n.key] <= n.desired
    if floors <= cap:
        assert res.used[GPU] <= cap and res.over == ()
    else:  # the guaranteed floors alone overcommit: reported, and nothing else is granted
        assert res.over == (GPU,)
        assert all(alloc[n.key] == base(n, tiers) for n in needs)
        assert any(a.reason == quota.OVER for a in res.allocations)


@PROPS
@given(fleets(), st.integers(0, 200))
def test_higher_tier_never_shorted_for_a_lower_tier_above_its_floor(f: tuple[list[Need], list[bool]], cap: int) -> None:
    needs, tiers = f
    res = arbitrate(needs, {GPU: cap}, tiers)
    alloc = {a.key: a.allocated for a in res.allocations}
    for i in needs:
        if alloc[i.key] >= i.desired:
            continue
        # What every lower tier holds beyond what it is guaranteed would not make room for one more
        # replica of i: the lower tiers only got what was left after i's tier stopped.
        surplus = sum((alloc[j.key] - base(j, tiers)) * j.per_replica[GPU] for j in needs if j.tier > i.tier)
        assert surplus < i.per_replica[GPU]
        # ... and neither does what is left under the cap.
        assert res.used[GPU] + i.per_replica[GPU] > cap


@PROPS
@given(fleets(unit=True), st.integers(0, 100), st.integers(0, 30))
def test_work_conserving_and_monotone_in_cap(f: tuple[list[Need], list[bool]], cap: int, more: int) -> None:
    needs, tiers = f
    lo = arbitrate(needs, {GPU: cap}, tiers)
    hi = arbitrate(needs, {GPU: cap + more}, tiers)
    floors = sum(base(n, tiers) for n in needs)
    # With one-GPU replicas the quota is used up to the smaller of the cap and the total want.
    assert lo.used[GPU] == min(max(cap, floors), sum(n.desired for n in needs))
    a_lo = {a.key: a for a in lo.allocations}
    a_hi = {a.key: a for a in hi.allocations}
    for t in range(len(tiers)):  # the tiers down to t never get less from a larger cap
        assert (sum(a_hi[n.key].allocated for n in needs if n.tier <= t)
                >= sum(a_lo[n.key].allocated for n in needs if n.tier <= t))
    top = min(n.tier for n in needs)
    for n in needs:
        if n.tier == top:
            assert a_hi[n.key].allocated >= a_lo[n.key].allocated


@PROPS
@given(fleets(unit=True), st.integers(0, 100))
def test_fair_within_a_tier(f: tuple[list[Need], list[bool]], cap: int) -> None:
    needs, tiers = f
    res = {a.key: a.allocated for a in arbitrate(needs, {GPU: cap}, tiers).allocations}
    for i in needs:
        if res[i.key] >= i.desired:
            continue
        for j in needs:
            if j.tier == i.tier and res[j.key] > effective_floor(j):
                # j's last replica went to it while its share was the smallest of those short.
                assert (res[j.key] - 1) / j.desired <= res[i.key] / i.desired + 1e-12


@PROPS
@given(fleets(), st.integers(0, 200), st.randoms(use_true_random=False))
def test_deterministic_whatever_the_order(f: tuple[list[Need], list[bool]], cap: int, rnd: random.Random) -> None:
    needs, tiers = f
    shuffled = list(needs)
    rnd.shuffle(shuffled)
    a = {x.key: (x.allocated, x.reason) for x in arbitrate(needs, {GPU: cap}, tiers).allocations}
    b = {x.key: (x.allocated, x.reason) for x in arbitrate(shuffled, {GPU: cap}, tiers).allocations}
    assert a == b


def test_worked_example_three_tiers() -> None:
    needs = [
        Need("p/chat", 0, desired=10, floor=2, per_replica={GPU: 1, quota.COST: 4.1}),
        Need("p/search", 0, desired=6, floor=2, per_replica={GPU: 1, quota.COST: 4.1}),
        Need("s/summarise", 1, desired=8, floor=2, per_replica={GPU: 1, quota.COST: 4.1}),
        Need("f/playground", 2, desired=6, floor=1, per_replica={GPU: 1, quota.COST: 4.1}),
    ]
    res = arbitrate(needs, {GPU: 20}, [False, False, True], ["paid", "standard", "free"])
    got = {a.key: (a.allocated, a.reason) for a in res.allocations}
    assert got == {"p/chat": (10, quota.WITHIN), "p/search": (6, quota.WITHIN),
                   "s/summarise": (4, quota.LIMITED), "f/playground": (0, quota.PREEMPTED)}
    assert "paid" not in res.of("s/summarise").message  # type: ignore[union-attr]
    assert "nvidia.com/gpu 20/20" in res.of("f/playground").message  # type: ignore[union-attr]
    # A cost cap binds instead of the GPUs: 50/h is 12 replicas at 4.10.
    res = arbitrate(needs, {GPU: 20, quota.COST: 50}, [False, False, True], ["paid", "standard", "free"])
    got2 = {a.key: a.allocated for a in res.allocations}
    assert sum(got2.values()) == 12 and got2["s/summarise"] == 2 and got2["f/playground"] == 0
    assert got2["p/chat"] + got2["p/search"] == 10 and got2["p/chat"] >= got2["p/search"]


def test_unused_dimension_and_unknown_tier_are_harmless() -> None:
    needs = [Need("a/x", 5, desired=3, floor=1, per_replica={"nvidia.com/mig-3g.40gb": 1})]
    res = arbitrate(needs, {GPU: 0}, [False])
    assert res.allocations[0].allocated == 3 and res.allocations[0].reason == quota.WITHIN


# -- limit_plan --------------------------------------------------------------------------------


def _spec() -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": "m"}, "replicas": {"min": 1, "max": 20},
        "template": {"spec": {"containers": [{"name": "t", "image": "x"}]}},
    }).model_copy(update={"replicas": Replicas(min=1, max=20),
                          "capacity": Capacity(on_demand=OnDemand(base=1), spot=Spot(enabled=True, max_fraction=0.5))})


def _fleet(serving: int, standby: int) -> FleetState:
    reps = [Replica(f"s{i}", ON_DEMAND if i % 2 else SPOT, ReplicaState.serving, 0.0, 1.0) for i in range(serving)]
    reps += [Replica(f"w{i}", ON_DEMAND, ReplicaState.standby, 0.0, 1.0) for i in range(standby)]
    return FleetState(tuple(reps))


def test_limit_plan_drops_standbys_then_serving() -> None:
    spec = _spec()
    fleet = _fleet(6, 2)
    plan = Plan(serving=6, standby=2, on_demand=4, spot=4, reason="QueueDepth", message="queue")
    same, _ = limit_plan(spec, plan, PolicyMemory(), fleet, 8, reason="QuotaLimited", message="m")
    assert same is plan
    capped, mem = limit_plan(spec, plan, PolicyMemory(last_serving=6), fleet, 7, reason="QuotaLimited", message="m")
    assert (capped.serving, capped.standby, capped.total) == (6, 1, 7)
    capped, mem = limit_plan(spec, plan, PolicyMemory(last_serving=6), fleet, 4, reason="QuotaLimited", message="m")
    assert (capped.serving, capped.standby, capped.total) == (4, 0, 4)
    assert capped.spot <= 2 and capped.on_demand >= 1 and mem.last_serving == 4
    assert capped.reason == "QuotaLimited" and capped.message.endswith("wanted: queue")
    assert len(capped.retire) == 4 and {"w0", "w1"} <= set(capped.retire)


# -- services counted per capacity class -------------------------------------------------------

H100_POOL, L4_POOL, MIG = "h100/" + GPU, "l4/" + GPU, "nvidia.com/mig-3g.40gb"


def klass(name: str, desired: int, max_: int = 10000) -> quota.NeedClass:
    """Three classes: an H100 (4 reference replicas a pod), an L4 (1) and a MIG slice (1.5)."""
    return {
        "h100": quota.NeedClass("h100", 4.0, {GPU: 1.0, H100_POOL: 1.0, quota.COST: 3.0}, desired, max_, 3.0),
        "l4": quota.NeedClass("l4", 1.0, {GPU: 1.0, L4_POOL: 1.0, quota.COST: 0.9}, desired, max_, 0.9),
        "mig": quota.NeedClass("mig", 1.5, {MIG: 1.0, quota.COST: 1.5}, desired, max_, 1.5),
    }[name]


@st.composite
def mixed_fleets(draw: st.DrawFn) -> tuple[list[Need], list[bool], dict[str, float]]:
    """Up to 6 services in up to 3 tiers, some counted per class (H100, L4, MIG), some plain."""
    tiers = draw(st.lists(st.booleans(), min_size=1, max_size=3))
    needs = []
    for i in range(draw(st.integers(1, 6))):
        tier = draw(st.integers(0, len(tiers) - 1))
        floor = draw(st.integers(0, 4))
        if draw(st.booleans()):
            names = draw(st.lists(st.sampled_from(["h100", "l4", "mig"]), min_size=1, max_size=3, unique=True))
            classes = tuple(klass(n, draw(st.integers(0, 6)), draw(st.integers(0, 12))) for n in names)
            desired = math.ceil(sum(c.desired * c.units for c in classes))
            needs.append(Need(f"ns/c{i}", tier, desired=desired, floor=floor, per_replica={}, classes=classes))
        else:
            needs.append(Need(f"ns/p{i}", tier, desired=draw(st.integers(0, 10)), floor=floor,
                              per_replica={GPU: 1.0, H100_POOL: 1.0, quota.COST: 3.0}))
    caps = {GPU: float(draw(st.integers(0, 40))), H100_POOL: float(draw(st.integers(0, 16))),
            L4_POOL: float(draw(st.integers(0, 16))), MIG: float(draw(st.integers(0, 8)))}
    if draw(st.booleans()):
        caps[quota.COST] = float(draw(st.integers(0, 80)))
    return needs, tiers, caps


def holds_of(n: Need, a: quota.Allocation, dims: list[str]) -> dict[str, float]:
    if not n.classes:
        return {d: a.allocated * n.per_replica.get(d, 0.0) for d in dims}
    pods = dict(a.classes)
    return {d: sum(pods[c.name] * c.per_replica.get(d, 0.0) for c in n.classes) for d in dims}


@PROPS
@given(mixed_fleets())
def test_per_product_use_of_the_granted_mixes_never_exceeds_a_cap(f: tuple[list[Need], list[bool],
                                                                           dict[str, float]]) -> None:
    needs, tiers, caps = f
    res = arbitrate(needs, caps, tiers)
    dims = list(caps)
    by_key = {n.key: n for n in needs}
    total = {d: 0.0 for d in dims}
    for a in res.allocations:
        n = by_key[a.key]
        held = holds_of(n, a, dims)
        for d in dims:
            total[d] += held[d]
        assert a.allocated <= n.desired
        if n.classes:
            pods = dict(a.classes)
            assert dict(a.holds) == pytest.approx(held)
            assert all(pods[c.name] <= c.max for c in n.classes)
            # The pods granted carry the capacity granted (whole reference replicas, or all it wants).
            assert sum(pods[c.name] * c.units for c in n.classes) >= a.allocated - 1e-9
    assert total == pytest.approx(res.used)
    if not res.over:  # unless the non-preemptible floors alone overcommit, every cap holds
        for d in dims:
            assert res.used[d] <= caps[d] + 1e-9, (d, res.used, caps)


@PROPS
@given(mixed_fleets(), st.randoms(use_true_random=False))
def test_class_needs_are_deterministic_whatever_the_order(f: tuple[list[Need], list[bool], dict[str, float]],
                                                           rnd: random.Random) -> None:
    needs, tiers, caps = f
    shuffled = list(needs)
    rnd.shuffle(shuffled)
    a = {x.key: (x.allocated, x.reason, x.classes) for x in arbitrate(needs, caps, tiers).allocations}
    b = {x.key: (x.allocated, x.reason, x.classes) for x in arbitrate(shuffled, caps, tiers).allocations}
    assert a == b


def test_a_full_product_is_granted_on_another_class() -> None:
    # chat wants 8 H100 pods (32 reference replicas); the quota's H100 pool has 6 GPUs.
    chat = Need("p/chat", 0, desired=32, floor=2, per_replica={},
                classes=(klass("h100", 8), klass("l4", 0)))
    res = arbitrate([chat], {H100_POOL: 6, L4_POOL: 16}, [False], ["paid"])
    a = res.allocations[0]
    assert (a.allocated, a.reason) == (32, quota.WITHIN)
    assert dict(a.classes) == {"h100": 6, "l4": 8}  # 24 + 8 reference replicas
    assert dict(a.holds)[H100_POOL] == 6 and dict(a.holds)[L4_POOL] == 8
    assert "on 6 x h100 + 8 x l4" in a.message and "h100/nvidia.com/gpu 6/6 in use" in a.message
    # With the L4 pool small too, the service is short: QuotaLimited, both pools named.
    res = arbitrate([chat], {H100_POOL: 6, L4_POOL: 3}, [False], ["paid"])
    a = res.allocations[0]
    assert (a.allocated, a.reason, dict(a.classes)) == (27, quota.LIMITED, {"h100": 6, "l4": 3})
    assert "h100/nvidia.com/gpu 6/6" in a.message and "l4/nvidia.com/gpu 3/3" in a.message


def test_a_higher_tier_class_service_takes_the_product_first() -> None:
    # Two services want H100s; the pool has 4: the paid tier gets them, the batch tier falls back to L4.
    paid = Need("p/chat", 0, desired=16, floor=0, per_replica={}, classes=(klass("h100", 4), klass("l4", 0)))
    batch = Need("b/jobs", 1, desired=8, floor=0, per_replica={}, classes=(klass("h100", 2), klass("l4", 0)))
    res = arbitrate([paid, batch], {H100_POOL: 4, L4_POOL: 8}, [False, False], ["paid", "batch"])
    got = {a.key: (a.allocated, dict(a.classes)) for a in res.allocations}
    assert got == {"p/chat": (16, {"h100": 4, "l4": 0}), "b/jobs": (8, {"h100": 0, "l4": 8})}
