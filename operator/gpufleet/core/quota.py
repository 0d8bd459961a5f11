"""A shared GPU quota arbitrated by priority tier: one pure function over every service's need.

The model is Kueue's ClusterQueue (a nominal quota per resource, workloads ordered by priority,
lower priorities preempted to make room) and Karpenter's NodePool `spec.limits` (a cap on the
resources a pool may hold), applied to replicas of long-running services instead of jobs:

1. every non-preemptible tier's floors are granted first, even past the cap (reported in `over`):
   a service is never taken below replicas.min unless its tier says it may be;
2. then tier by tier, highest first, each tier's services get replicas up to what their own plan
   wants; a preemptible tier first fills its floors, then the rest;
3. within a tier the split is max-min fair on the share of the want granted (water-filling one
   replica at a time, ties by key), so two services of one tier short of capacity are short by
   the same fraction; a replica that does not fit under every cap is skipped, a smaller one of
   another service may still fit.

A service with spec.capacity.classes is counted per class: its Need is in reference replicas of
capacity (what its policy sizes) and lists its classes, each with what one pod uses of each capped
dimension (its own resources, its GPU product's node pool, its own price). A grant to it is one
pod of a class: first the classes its own mix wants (cheapest per unit of capacity first), then,
where those do not fit, the cheapest other class that does (each within its maxShare), so a service whose GPU product is
full under the quota is granted its capacity on another product. Its allocation carries the pods
per class and, per dimension, the units they hold: the service's mix is kept within those units
(core.mix, `Grant`), so the services' mixes together stay within every cap.

Pure: no clock, no I/O. The operator runs it once per interval over the needs the services
published (control.quota); the simulator runs it in lockstep (sim.multiservice).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core import rollout, split
from gpufleet.core.fleet import FleetView
from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, Plan, PolicyMemory

EPS = 1e-9
COST = "costPerHour"  # the dimension spec.maxCostPerHour caps

# Reasons an allocation carries (status and Events show them).
WITHIN = "WithinQuota"  # everything the service wants
LIMITED = "QuotaLimited"  # above its floor, below its want
AT_FLOOR = "HeldAtFloor"  # held at its floor while higher tiers use the rest
PREEMPTED = "Preempted"  # below its floor: its tier is preemptible
OVER = "FloorOverQuota"  # a non-preemptible floor granted although the floors exceed the cap


@dataclass(frozen=True, slots=True)
class NeedClass:
    """One capacity class of a service counted per class (spec.capacity.classes)."""

    name: str
    units: float  # reference replicas of capacity one pod of this class serves
    per_replica: Mapping[str, float]  # what one pod uses of each capped dimension
    desired: int = 0  # pods the service's own mix wants on this class
    max: int = 10000  # most pods (its max; its Ready pods while it cannot be had)
    price: float = 0.0  # one pod-hour: the cheapest per unit of capacity is granted first
    max_share: float = 1.0  # most of the service's granted capacity on this class (its maxShare)


@dataclass(frozen=True, slots=True)
class Need:
    """One service as the arbitration sees it."""

    key: str  # namespace/name
    tier: int  # index into the quota's tiers: 0 is the highest priority
    desired: int  # replicas its own plan wants, before the quota
    floor: int  # replicas.min, or a planned window's higher floor
    per_replica: Mapping[str, float]  # what one replica uses of each capped dimension
    # spec.capacity.classes: desired and floor are reference replicas of capacity, granted as pods
    # of these classes (per_replica is then unused). Empty: every replica is alike.
    classes: tuple[NeedClass, ...] = ()


@dataclass(frozen=True, slots=True)
class Allocation:
    key: str
    tier: int
    desired: int
    floor: int
    allocated: int
    reason: str
    message: str
    # A service counted per class: the pods granted per class, and the units they hold per
    # capped dimension (what its mix may use). Empty otherwise.
    classes: tuple[tuple[str, int], ...] = ()
    holds: tuple[tuple[str, float], ...] = ()

    @property
    def limited(self) -> bool:
        return self.allocated < self.desired


@dataclass(frozen=True, slots=True)
class Arbitration:
    allocations: tuple[Allocation, ...]  # in input order
    used: dict[str, float]  # what the allocations use, per capped dimension
    over: tuple[str, ...]  # dimensions the non-preemptible floors alone exceed

    def of(self, key: str) -> Allocation | None:
        return next((a for a in self.allocations if a.key == key), None)


def effective_floor(n: Need) -> int:
    """A floor is never more than the service wants."""
    return max(0, min(n.floor, n.desired))


def arbitrate(needs: Sequence[Need], caps: Mapping[str, float], preemptible: Sequence[bool],
              tier_names: Sequence[str] = ()) -> Arbitration:
    """Replicas per service under `caps` (dimension -> most units; a dimension no service uses is
    ignored). `preemptible[t]`: tier t's services may be taken below their floors.
    Deterministic: the result does not depend on the order of `needs`."""
    order = sorted(needs, key=lambda n: n.key)
    alloc: dict[str, float] = {n.key: 0 for n in order}  # replicas; reference replicas with classes
    pods: dict[str, dict[str, int]] = {n.key: {c.name: 0 for c in n.classes} for n in order if n.classes}
    used = {d: 0.0 for d in caps}

    def preempt(n: Need) -> bool:
        return bool(preemptible[n.tier]) if 0 <= n.tier < len(preemptible) else True

    def fits_use(use: Mapping[str, float]) -> bool:
        # Only the dimensions it uses: a pool over its cap (floors) does not hold another pool's replica.
        return all(used[d] + use[d] <= caps[d] + EPS for d in caps if use.get(d, 0.0) > 0)

    def pick(n: Need, forced: bool = False) -> NeedClass | None:
        """The class of the next pod: a wanted one first, then the cheapest per unit that fits."""
        have = pods[n.key]

        def within_share(c: NeedClass) -> bool:  # as the mix keeps it: of the capacity with this pod
            return c.max_share >= 1.0 or (have[c.name] + 1) * c.units <= c.max_share * (alloc[n.key] + c.units) + EPS

        open_ = [c for c in n.classes if have[c.name] < c.max and c.units > 0 and within_share(c)
                 and (forced or fits_use(c.per_replica))]
        if not open_:
            return None
        return min(open_, key=lambda c: (have[c.name] >= c.desired, c.price / c.units, -c.units, c.name))

    def fits(n: Need) -> bool:
        if n.classes:
            return pick(n) is not None
        return fits_use(n.per_replica)

    def grant(n: Need, forced: bool = False) -> bool:
        use = n.per_replica
        if n.classes:
            c = pick(n, forced)
            if c is None:
                return False
            pods[n.key][c.name] += 1
            alloc[n.key] += c.units
            use = c.per_replica
        else:
            alloc[n.key] += 1
        for d in caps:
            used[d] += use.get(d, 0.0)
        return True

    def short(key: str, target: float) -> bool:
        return alloc[key] < target - EPS

    def fill(members: Sequence[Need], target: Mapping[str, int]) -> None:
        # Water-filling: the member with the smallest granted share of its target gets the next
        # replica. `used` only grows, so a replica that does not fit now never will in this fill.
        heap = [(alloc[n.key] / target[n.key], n.key, i) for i, n in enumerate(members)
                if short(n.key, target[n.key])]
        heapq.heapify(heap)
        while heap:
            _, key, i = heapq.heappop(heap)
            n = members[i]
            if not fits(n):
                continue
            grant(n)
            if short(key, target[key]):
                heapq.heappush(heap, (alloc[key] / target[key], key, i))

    # 1. Floors no one may take away, granted whatever the cap.
    for n in order:
        if not preempt(n):
            if n.classes:  # in pods of classes that fit while any does, else the cheapest
                while short(n.key, effective_floor(n)) and (grant(n) or grant(n, forced=True)):
                    pass
                continue
            for _ in range(effective_floor(n)):
                grant(n)
    over = tuple(sorted(d for d in caps if used[d] > caps[d] + EPS))
    # 2. Tier by tier, highest first.
    for tier in sorted({n.tier for n in order}):
        members = [n for n in order if n.tier == tier]
        if any(preempt(n) for n in members):
            fill(members, {n.key: effective_floor(n) for n in members})
        fill(members, {n.key: n.desired for n in members})

    def binding(n: Need) -> str:
        uses = [c.per_replica for c in n.classes] if n.classes else [n.per_replica]
        full = [d for d in caps if any(u.get(d, 0.0) > 0 and used[d] + u[d] > caps[d] + EPS for u in uses)]
        return ", ".join(f"{d} {used[d]:g}/{caps[d]:g}" for d in sorted(full)) or "quota"

    def tier_name(t: int) -> str:
        return tier_names[t] if 0 <= t < len(tier_names) else f"tier {t}"

    out: list[Allocation] = []
    for n in needs:
        if n.classes:
            out.append(_class_allocation(n, alloc[n.key], pods[n.key], caps, over, preempt(n), tier_name(n.tier),
                                         binding(n)))
            continue
        a = int(alloc[n.key])
        uses_over = any(n.per_replica.get(d, 0.0) > 0 for d in over)
        reason, msg = _verdict(n, a, tier_name(n.tier), over, preempt(n) or not uses_over, binding(n))
        out.append(Allocation(n.key, n.tier, n.desired, n.floor, a, reason, msg))
    return Arbitration(tuple(out), used, over)


def _verdict(n: Need, a: int, tier: str, over: tuple[str, ...], preempt: bool, binding: str,
             where: str = "") -> tuple[str, str]:
    """The reason and message of granting `a` to `n`. `preempt`: its floor is not one that
    overcommits the quota (its tier is preemptible, or it holds nothing of an overcommitted dimension)."""
    lo = effective_floor(n)
    head = f"{tier}: {a} of {n.desired} wanted"
    if over and not preempt and a == lo and a > 0:
        return OVER, f"{head}, floor {lo} granted: non-preemptible floors exceed {', '.join(over)}"
    if a >= n.desired:
        return WITHIN, head + where
    if a > lo:
        return LIMITED, f"{head}, floor {lo}; {binding} in use"
    if a == lo:
        return AT_FLOOR, f"{head}, held at floor {lo}; {binding} in use"
    return PREEMPTED, f"{head}, below floor {lo} (tier preemptible); {binding} in use"


def _class_allocation(n: Need, units: float, pods: Mapping[str, int], caps: Mapping[str, float],
                      over: tuple[str, ...], preempt: bool, tier: str, binding: str) -> Allocation:
    """The allocation of a service counted per class: reference replicas granted (whole ones; all
    it wants when its pods' capacity covers it), its pods per class and what they hold."""
    a = n.desired if units >= n.desired - EPS else int(math.floor(units + EPS))
    holds = {d: sum(pods[c.name] * c.per_replica.get(d, 0.0) for c in n.classes) for d in caps}
    granted = tuple((c.name, pods[c.name]) for c in n.classes)
    # Where the pods granted are not the ones the service's mix wanted: which cap moved them.
    where = ""
    if any(pods[c.name] < c.desired for c in n.classes):
        on = [f"{pods[c.name]} x {c.name}" for c in n.classes if pods[c.name] > 0]
        where = f" (on {' + '.join(on) or 'nothing'}: {binding} in use)"
    uses_over = any(holds.get(d, 0.0) > 0 for d in over)
    reason, msg = _verdict(n, a, tier, over, preempt or not uses_over, binding, where)
    return Allocation(n.key, n.tier, n.desired, n.floor, a, reason, msg, classes=granted,
                      holds=tuple(sorted(holds.items())))


@dataclass(frozen=True, slots=True)
class Grant:
    """What the quota lets a service with spec.capacity.classes run, as its policy applies it:
    `replicas` reference replicas of capacity (standbys cut first, as for any plan), and, per capped
    dimension, at most `cap` units held by its classes' pods (core.mix keeps the mix within them)."""

    replicas: int
    limits: tuple[tuple[str, float, tuple[tuple[str, float], ...]], ...]  # (label, cap, ((class, use), ...))
    message: str  # why, for the plan's message


# -- capping one service's plan at its allocation ----------------------------------------------


def healthy(plan: Plan, fleet: FleetState) -> int:
    """Replicas the plan wants that are not leaving on an interruption notice (its need)."""
    interrupted = split.interrupted_by_class(fleet)
    return max(0, plan.total - interrupted[ON_DEMAND] - interrupted[SPOT])


def limit_plan(spec: InferenceServiceSpec, plan: Plan, memory: PolicyMemory, fleet: FleetState, allowed: int,
               *, reason: str, message: str) -> tuple[Plan, PolicyMemory]:
    """`plan` with at most `allowed` healthy replicas: standbys go first, then serving replicas;
    spot beyond the share the smaller fleet may hold before on-demand above its base. A plan
    within `allowed` comes back unchanged."""
    interrupted = split.interrupted_by_class(fleet)
    od = plan.on_demand - interrupted[ON_DEMAND]
    sp = plan.spot - interrupted[SPOT]
    if od + sp <= allowed:
        return plan, memory
    serving, standby = plan.serving, plan.standby
    while od + sp > max(allowed, 0):
        n = od + sp - 1
        if sp > 0 and (sp > split.spot_cap(spec, n) or od <= min(spec.capacity.on_demand.base, n)):
            sp -= 1
        else:
            od -= 1
    serving = min(serving, od + sp)
    standby = max(0, min(standby, od + sp - serving))
    retire = rollout.retirements(fleet, {ON_DEMAND: od, SPOT: sp})
    leaving = frozenset(retire)
    promote = rollout.promotions(tuple(r for r in fleet.replicas if r.name not in leaving),
                                 serving - FleetView.of(fleet).serving)
    capped = replace(
        plan, serving=serving, standby=standby, on_demand=od + interrupted[ON_DEMAND], spot=sp + interrupted[SPOT],
        reason=reason, message=f"{message}; wanted: {plan.message}", promote=promote, retire=retire,
        interrupted=tuple(interrupted.items()))
    # Later steps are measured from what runs, not from the uncapped wish (as for the budget).
    return capped, replace(memory, last_serving=serving)
