"""A shared GPUQuota between services' loops: the needs they publish, the arbitration over them,
and the policy wrapper that caps each service's plan at its allocation.

- Each service's loop decides as if alone (its own policy), then publishes that need on the
  `QuotaBoard` (memory of this operator process; no I/O) and caps the plan at the allocation of
  the last arbitration (`QuotaPolicy`, a Policy around the service's own).
- Once per quota interval, `QuotaBoard.arbitrate` runs core.quota.arbitrate over every need
  naming that quota (the operator: a kopf timer on the GPUQuota; the simulator: in lockstep).

A service with spec.capacity.classes is counted per class (core.quota): its need is in reference
replicas and names, per class, the pods its own mix wants and what one pod uses of each capped
dimension (`class_per_replica`: the class's own resources, node pool by its nodeSelector or
product, its own price). Its allocation comes back as a core.quota.Grant that its policy applies
in a second decision (the capacity, and per dimension what its classes may hold: a GPU product
full under the quota makes the mix fall back to another product's class).

What the quota never does on missing data: a service whose need is stale (its loop has not
ticked for a while) counts with what it runs, not with nothing; a service whose allocation is
stale or not computed yet keeps what it runs (it does not grow, it does not shrink); a plan in
safe mode (no metrics) is not cut below the replicas running. A quota or tier that does not
exist caps nothing and is reported (QuotaNotFound, TierNotFound).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gpufleet.api.classes import replica_price
from gpufleet.api.models import MIG_PREFIX, CapacityClassSpec, Condition, InferenceServiceSpec
from gpufleet.api.quota import GPUQuotaSpec, GPUQuotaStatus, QuotaServiceStatus, QuotaTierStatus
from gpufleet.api.timefmt import iso
from gpufleet.control.ports import Policy
from gpufleet.control.status import set_condition
from gpufleet.core import capacity, split
from gpufleet.core import quota as core
from gpufleet.core.fleet import FleetView, is_healthy
from gpufleet.core.schedule import Window
from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, ForecastSummary, Observation, Plan, PolicyMemory

GPU = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
# Condition reasons beside core.quota's allocation reasons.
NOT_FOUND = "QuotaNotFound"
TIER_NOT_FOUND = "TierNotFound"
PENDING = "QuotaPending"  # the quota exists; no arbitration has counted this service yet


def _quantity(value: object) -> float:
    """A resource quantity as units: extended resources are integers ("1", 2)."""
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def pod_resources(spec: InferenceServiceSpec) -> dict[str, float]:
    """What one replica's containers ask for (limits, else requests), per resource name."""
    pod = (spec.template or {}).get("spec") or {}
    out: dict[str, float] = {}
    for c in pod.get("containers") or []:
        res = c.get("resources") or {}
        asked = {**(res.get("requests") or {}), **(res.get("limits") or {})}
        for name, value in asked.items():
            out[name] = out.get(name, 0.0) + _quantity(value)
    return out


def node_selector(spec: InferenceServiceSpec) -> dict[str, str]:
    """Labels every replica's node carries: the template's nodeSelector and the on-demand class's."""
    pod = (spec.template or {}).get("spec") or {}
    return {**(pod.get("nodeSelector") or {}), **spec.capacity.on_demand.node_selector}


def caps(quota: GPUQuotaSpec) -> dict[str, float]:
    """The quota's caps as dimensions: resource, pool/resource, costPerHour."""
    out = {name: float(v) for name, v in quota.limits.items()}
    for pool in quota.node_pools:
        out.update({f"{pool.name}/{name}": float(v) for name, v in pool.limits.items()})
    if quota.max_cost_per_hour is not None:
        out[core.COST] = quota.max_cost_per_hour
    return out


def per_replica(spec: InferenceServiceSpec, quota: GPUQuotaSpec) -> dict[str, float]:
    """What one replica of `spec` uses of each of the quota's dimensions. nvidia.com/gpu falls back
    to capacity.gpusPerReplica where the template does not say (shadow mode has no template)."""
    res = pod_resources(spec)
    if GPU not in res and spec.capacity.gpus_per_replica:
        res[GPU] = float(spec.capacity.gpus_per_replica)
    out = {name: res.get(name, 0.0) for name in quota.limits}
    labels = node_selector(spec)
    for pool in quota.node_pools:
        on_pool = all(labels.get(k) == v for k, v in pool.node_selector.items())
        out.update({f"{pool.name}/{name}": res.get(name, 0.0) if on_pool else 0.0 for name in pool.limits})
    if quota.max_cost_per_hour is not None:
        out[core.COST] = spec.capacity.price_per_gpu_hour.on_demand * res.get(GPU, 0.0)
    return out


def class_per_replica(spec: InferenceServiceSpec, cls: CapacityClassSpec, quota: GPUQuotaSpec) -> dict[str, float]:
    """What one pod of capacity class `cls` uses of each of the quota's dimensions: its own
    resources (in place of the template's GPUs and MIG slices), the node pools its labels (the
    template's nodeSelector, its own, and `product` as the GPU product label) fall in, and its
    own price per replica-hour."""
    res = {k: v for k, v in pod_resources(spec).items() if k != GPU and not k.startswith(MIG_PREFIX)}
    for name, value in cls.resources.items():
        res[name] = res.get(name, 0.0) + float(value)
    out = {name: res.get(name, 0.0) for name in quota.limits}
    pod = (spec.template or {}).get("spec") or {}
    labels = {**(pod.get("nodeSelector") or {}), **cls.node_selector}
    if cls.product and PRODUCT_LABEL not in labels:
        labels[PRODUCT_LABEL] = cls.product
    for pool in quota.node_pools:
        on_pool = all(labels.get(k) == v for k, v in pool.node_selector.items())
        out.update({f"{pool.name}/{name}": res.get(name, 0.0) if on_pool else 0.0 for name in pool.limits})
    if quota.max_cost_per_hour is not None:
        prices = spec.capacity.price_per_gpu_hour
        out[core.COST] = replica_price(cls, None, {ON_DEMAND: prices.on_demand, SPOT: prices.spot})
    return out


@dataclass(frozen=True)
class ClassDemand:
    """One capacity class of a service counted per class, as its last tick saw it."""

    name: str
    units: float  # reference replicas one pod serves
    desired: int  # pods its own mix wants (healthy)
    max: int  # most pods it may have now
    price: float  # one pod-hour
    held: int  # pods of the class that hold their resources now (any state)
    max_share: float = 1.0  # its maxShare of the service's capacity


@dataclass(frozen=True)
class Demand:
    """One service's need as its last tick published it."""

    key: str  # namespace/name
    quota: str
    tier: str
    desired: int
    floor: int
    running: int  # healthy replicas it ran then (or had just asked for, when more)
    spec: InferenceServiceSpec
    at: float
    leaving: int = 0  # pods still there but on their way out (draining, interrupted): they hold GPUs
    # spec.capacity.classes: desired/floor/running are reference replicas, the pods are per class.
    classes: tuple[ClassDemand, ...] = ()

    def class_use(self, quota: GPUQuotaSpec) -> dict[str, dict[str, float]]:
        """Per listed class, what one of its pods uses of each of the quota's dimensions."""
        listed = {c.name: c for c in self.spec.capacity.classes or ()}
        return {c.name: class_per_replica(self.spec, listed[c.name], quota) for c in self.classes if c.name in listed}

    def holds(self, quota: GPUQuotaSpec, pods: Mapping[str, int] | None = None) -> dict[str, float]:
        """Units of each dimension `pods` per class hold (default: the pods held now); for a
        service without classes, its running and leaving replicas."""
        dims = caps(quota)
        if not self.classes:
            one = per_replica(self.spec, quota)
            return {d: (self.running + self.leaving) * one.get(d, 0.0) for d in dims}
        use = self.class_use(quota)
        count = pods if pods is not None else {c.name: c.held for c in self.classes}
        return {d: sum(n * use.get(c, {}).get(d, 0.0) for c, n in count.items()) for d in dims}


@dataclass(frozen=True)
class Verdict:
    """What the quota says to one service: its allocation (None: not capped) and why."""

    quota: str
    tier: str
    reason: str  # core.quota reasons, or NOT_FOUND / TIER_NOT_FOUND / PENDING
    message: str
    allocation: core.Allocation | None = None
    at: float = 0.0

    @property
    def limited(self) -> bool:
        return self.allocation is not None and self.allocation.limited


@dataclass
class QuotaBoard:
    """Needs and allocations of every quota, shared by the services' loops (threads: locked)."""

    stale_after_s: float = 120.0  # a need or an allocation older than this is missing data
    quotas: dict[str, GPUQuotaSpec] = field(default_factory=dict)
    demands: dict[str, Demand] = field(default_factory=dict)
    results: dict[str, tuple[core.Allocation, float, str]] = field(default_factory=dict)  # key -> (.., at, quota)
    last: dict[str, tuple[core.Arbitration, list[Demand], float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set_quota(self, name: str, spec: GPUQuotaSpec | None) -> None:
        with self._lock:
            if spec is None:
                self.quotas.pop(name, None)
                self.last.pop(name, None)
            else:
                self.quotas[name] = spec

    def publish(self, demand: Demand) -> None:
        with self._lock:
            self.demands[demand.key] = demand

    def withdraw(self, key: str) -> None:
        with self._lock:
            self.demands.pop(key, None)
            self.results.pop(key, None)

    def arbitrate(self, name: str, *, now: float) -> tuple[core.Arbitration, list[Demand]] | None:
        """Run the arbitration of quota `name` over the needs naming it; None if it does not exist."""
        with self._lock:
            spec = self.quotas.get(name)
            if spec is None:
                return None
            members = [d for d in self.demands.values()
                       if d.quota == name and spec.tier_index(d.tier) is not None]
        needs = []
        for d in members:
            # A need not refreshed for a while is missing data: its loop is not acting on allocations,
            # so what it runs is reserved for it (its floor), not handed to the others.
            desired, floor = d.desired, d.floor
            stale = now - d.at > self.stale_after_s
            if stale:
                desired = floor = max(d.running, d.floor)
            classes: tuple[core.NeedClass, ...] = ()
            if d.classes:
                use = d.class_use(spec)
                classes = tuple(core.NeedClass(c.name, c.units, use.get(c.name, {}), c.held if stale else c.desired,
                                               c.max, c.price, c.max_share) for c in d.classes)
            needs.append(core.Need(key=d.key, tier=spec.tier_index(d.tier) or 0, desired=desired, floor=floor,
                                   per_replica=per_replica(d.spec, spec), classes=classes))
        result = core.arbitrate(needs, caps(spec), [t.preemptible for t in spec.tiers], [t.name for t in spec.tiers])
        result = paced(result, members, spec)
        with self._lock:
            for a in result.allocations:
                self.results[a.key] = (a, now, name)
            self.last[name] = (result, members, now)
        return result, members

    def quota(self, name: str) -> GPUQuotaSpec | None:
        with self._lock:
            return self.quotas.get(name)

    def verdict(self, key: str, ref_quota: str, ref_tier: str, *, now: float) -> Verdict:
        with self._lock:
            spec = self.quotas.get(ref_quota)
            got = self.results.get(key)
        if spec is None:
            return Verdict(ref_quota, ref_tier, NOT_FOUND, f"GPUQuota {ref_quota} not found: not capped", at=now)
        if spec.tier_index(ref_tier) is None:
            names = ", ".join(t.name for t in spec.tiers)
            return Verdict(ref_quota, ref_tier, TIER_NOT_FOUND,
                           f"GPUQuota {ref_quota} has no tier {ref_tier} (tiers: {names}): not capped", at=now)
        # An allocation of another quota (spec.quota just changed) or too old is no allocation.
        if got is None or got[2] != ref_quota or now - got[1] > self.stale_after_s:
            return Verdict(ref_quota, ref_tier, PENDING,
                           f"GPUQuota {ref_quota}: no recent arbitration; holding the replicas running", at=now)
        return Verdict(ref_quota, ref_tier, got[0].reason, got[0].message, got[0], got[1])


def paced(result: core.Arbitration, members: list[Demand], spec: GPUQuotaSpec) -> core.Arbitration:
    """Growth only into capacity free now: GPUs a shrinking service gives up are held by its pods
    until they have drained, so a growing service gets them at a later interval, never beside
    them (a hard quota, like a NodePool limit, would leave its new pods Pending anyway). Higher
    tiers grow first."""
    limits = caps(spec)
    by_key = {d.key: d for d in members}
    use = {d.key: per_replica(d.spec, spec) for d in members}
    free = {dim: cap - sum(d.holds(spec).get(dim, 0.0) if d.classes else (d.running + d.leaving) * use[d.key].get(dim, 0.0)
                           for d in members) for dim, cap in limits.items()}
    out = []
    for a in sorted(result.allocations, key=lambda a: (a.tier, a.key)):
        d, u = by_key[a.key], use[a.key]
        if d.classes:
            out.append(_paced_classes(a, d, spec, free))
            continue
        grow = a.allocated - d.running
        k = 0
        # Only the dimensions it uses: another pool over its cap (floors) does not hold it.
        while k < grow and all(free[dim] - (k + 1) * u[dim] >= -core.EPS for dim in limits if u.get(dim, 0.0) > 0):
            k += 1
        if grow > 0:
            for dim in limits:
                free[dim] -= k * u.get(dim, 0.0)
        if k < grow:
            a = replace(a, allocated=d.running + k, reason=core.LIMITED,
                        message=f"{a.message}; {grow - k} more as pods elsewhere drain")
        out.append(a)
    order = {a.key: i for i, a in enumerate(result.allocations)}
    used = {dim: sum(dict(a.holds).get(dim, 0.0) if a.classes else a.allocated * use[a.key].get(dim, 0.0)
                     for a in out) for dim in limits}
    return replace(result, allocations=tuple(sorted(out, key=lambda a: order[a.key])), used=used)


def _paced_classes(a: core.Allocation, d: Demand, spec: GPUQuotaSpec, free: dict[str, float]) -> core.Allocation:
    """`paced` for a service counted per class: each class grows only into what is free now (the
    cheapest per unit first); a class granted fewer pods than it holds lets them drain."""
    use = d.class_use(spec)
    held = {c.name: c.held for c in d.classes}
    granted = dict(a.classes)
    pods = {n: min(g, held.get(n, 0)) for n, g in granted.items()}
    short = 0
    for c in sorted(d.classes, key=lambda c: (c.price / c.units if c.units > 0 else float("inf"), c.name)):
        grow = granted.get(c.name, 0) - held.get(c.name, 0)
        u = use.get(c.name, {})
        k = 0
        # Only the dimensions the class uses: another pool over its cap (floors) does not hold it.
        while k < grow and all(free[dim] - (k + 1) * u[dim] >= -core.EPS for dim in free if u.get(dim, 0.0) > 0):
            k += 1
        for dim in free:
            free[dim] -= k * u.get(dim, 0.0)
        pods[c.name] = pods.get(c.name, 0) + k
        short += max(grow - k, 0)
    holds = d.holds(spec, pods)
    if not short:
        return replace(a, holds=tuple(sorted(holds.items())))
    units = sum(pods[c.name] * c.units for c in d.classes)
    allocated = min(a.allocated, max(int(math.floor(units + core.EPS)), 0))
    return replace(a, allocated=allocated, reason=core.LIMITED if allocated < a.desired else a.reason,
                   message=f"{a.message}; {short} more pod(s) as pods elsewhere drain",
                   classes=tuple((c.name, pods[c.name]) for c in d.classes), holds=tuple(sorted(holds.items())))


def floor_of(spec: InferenceServiceSpec, windows: tuple[Window, ...], now: float) -> int:
    """replicas.min, raised by a planned window open now (within replicas.max)."""
    raised = [w.min_replicas for w in windows if w.min_replicas is not None and w.start <= now < w.end]
    return min(max([spec.replicas.min, *raised]), spec.replicas.max)


class QuotaPolicy:
    """A Policy that decides with `inner`, publishes the need and caps the plan at the quota's
    allocation. Without spec.quota it is `inner` unchanged. `sync` runs between publishing and
    reading the allocation (the simulator's lockstep barrier); the operator passes none and reads
    the allocation of the last arbitration."""

    def __init__(self, inner: Policy, board: QuotaBoard, key: str, sync: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.board = board
        self.key = key
        self.sync = sync
        self.verdict: Verdict | None = None  # the last tick's, for status (None: no spec.quota)

    @property
    def name(self) -> str:
        return self.inner.name

    def __getattr__(self, attr: str) -> object:  # interval_s, phase_s ... of the inner policy
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        plan, new_memory = self.inner.decide(spec=spec, observation=observation, forecast=forecast, fleet=fleet,
                                             memory=memory, now=now, windows=windows)
        ref = spec.quota
        if ref is None:
            self.verdict = None
            return plan, new_memory
        if plan.classes is not None and spec.capacity.classes:
            return self._decide_classes(plan, new_memory, spec=spec, observation=observation, forecast=forecast,
                                        fleet=fleet, memory=memory, now=now, windows=windows)
        running = FleetView.of(fleet).healthy_total
        floor = floor_of(spec, windows, now)
        demand = Demand(self.key, ref.name, ref.tier, core.healthy(plan, fleet), floor, running, spec, now,
                        leaving=len(fleet.replicas) - running)
        self.board.publish(demand)
        if self.sync is not None:
            self.sync()
        v = self.board.verdict(self.key, ref.name, ref.tier, now=now)
        self.verdict = v
        if v.reason in (NOT_FOUND, TIER_NOT_FOUND):
            return plan, new_memory
        allowed = v.allocation.allocated if v.allocation is not None else max(running, floor)
        if plan.safe_mode:  # no metrics: never cut below what runs
            allowed = max(allowed, running)
        plan, new_memory = core.limit_plan(spec, plan, new_memory, fleet, allowed, reason=core.LIMITED,
                                           message=f"GPUQuota {ref.name}, tier {v.message}")
        if plan.apply and core.healthy(plan, fleet) > running:
            # The pods this plan adds exist before the next tick reports them: count them as held now,
            # so that the next arbitration does not hand their GPUs out again.
            self.board.publish(replace(demand, running=core.healthy(plan, fleet)))
        return plan, new_memory


    def _decide_classes(self, plan: Plan, new_memory: PolicyMemory, *, spec: InferenceServiceSpec,
                        observation: Observation, forecast: ForecastSummary | None, fleet: FleetState,
                        memory: PolicyMemory, now: float, windows: tuple[Window, ...]) -> tuple[Plan, PolicyMemory]:
        """A service with capacity classes: publish its need per class; where the quota's grant does
        not hold the plan's mix, decide again with the grant (core.quota.Grant)."""
        ref = spec.quota
        assert ref is not None and plan.classes is not None
        demand = class_demand(self.key, spec, plan, fleet, memory, floor_of(spec, windows, now), now)
        self.board.publish(demand)
        if self.sync is not None:
            self.sync()
        v = self.board.verdict(self.key, ref.name, ref.tier, now=now)
        self.verdict = v
        quota = self.board.quota(ref.name)
        if v.reason in UNRESOLVED or quota is None:
            return plan, new_memory
        now_holds = demand.holds(quota)
        if v.allocation is not None:
            allowed, holds = v.allocation.allocated, dict(v.allocation.holds)
        else:  # no allocation yet: hold what runs, neither grow nor shrink (a service holding no pod
            # yet, as a plain one, is capped at its floor only: its new Deployments' pods are not seen yet)
            holds = now_holds if any(c.held for c in demand.classes) else {}
            allowed = max(demand.running, demand.floor)
        if plan.safe_mode:  # no metrics: never cut below what runs
            allowed = max(allowed, demand.running)
            holds = {dim: max(holds.get(dim, 0.0), now_holds.get(dim, 0.0)) for dim in now_holds}
        use = demand.class_use(quota)
        planned = healthy_pods(plan)
        within = demand.desired <= allowed and all(
            sum(n * use.get(c, {}).get(dim, 0.0) for c, n in planned.items()) <= cap + core.EPS
            for dim, cap in holds.items())
        if within or not getattr(self.inner, "takes_quota_grant", False):
            return plan, new_memory
        limits = tuple((f"quota {ref.name}: {dim}", cap, tuple((c, u[dim]) for c, u in use.items() if u.get(dim)))
                       for dim, cap in sorted(holds.items()) if any(u.get(dim) for u in use.values()))
        grant = core.Grant(replicas=allowed, limits=limits, message=f"GPUQuota {ref.name}, tier {v.message}")
        plan, new_memory = self.inner.decide(spec=spec, observation=observation, forecast=forecast,  # type: ignore[call-arg]
                                             fleet=fleet, memory=memory, now=now, windows=windows, quota=grant)
        if plan.apply:
            # Pods this plan adds exist before the next tick reports them: count them as held now.
            grown = healthy_pods(plan)
            self.board.publish(replace(demand, classes=tuple(
                replace(c, held=max(c.held, grown.get(c.name, 0))) for c in demand.classes)))
        return plan, new_memory


def healthy_pods(plan: Plan) -> dict[str, int]:
    """Pods per class a class plan wants, without the interrupted ones it keeps until they go."""
    interrupted = dict(plan.interrupted or ())
    return {c.name: max(c.replicas - interrupted.get(c.name, 0), 0) for c in plan.classes or ()}


def class_demand(key: str, spec: InferenceServiceSpec, plan: Plan, fleet: FleetState, memory: PolicyMemory,
                 floor: int, now: float) -> Demand:
    """A class-mixed service's need: reference replicas (the policy's fleet before the mix), and per
    listed class its pods wanted, its limit, its price and the pods it holds."""
    from gpufleet.core import mix

    assert spec.quota is not None
    ref = mix.reference_rps(spec, capacity.rps_per_replica(spec, memory.learned_rps_per_replica))
    interrupted = split.interrupted_by_class(fleet)
    desired = max(0, plan.on_demand + plan.spot - interrupted[ON_DEMAND] - interrupted[SPOT])
    listed = {c.name: c for c in spec.capacity.classes or ()}
    choices = {c.name: c for c in plan.classes or () if c.name in listed}
    wanted = healthy_pods(plan)
    held: dict[str, int] = {}
    ready: dict[str, int] = {}
    units = 0.0
    for r in fleet.replicas:
        held[r.capacity_class] = held.get(r.capacity_class, 0) + 1
        if is_healthy(r):
            c = choices.get(r.capacity_class)
            units += (c.rps_per_replica / ref) if c is not None else 1.0
            if r.state.value in ("serving", "standby"):
                ready[r.capacity_class] = ready.get(r.capacity_class, 0) + 1
    classes = tuple(ClassDemand(
        name=n, units=c.rps_per_replica / ref, desired=wanted.get(n, 0),
        max=listed[n].max if c.state == "available" else min(ready.get(n, 0), listed[n].max),
        price=c.price_per_hour, held=held.get(n, 0), max_share=listed[n].max_share) for n, c in choices.items())
    healthy_n = FleetView.of(fleet).healthy_total
    return Demand(key, spec.quota.name, spec.quota.tier, desired, floor, int(math.ceil(units - 1e-9)), spec, now,
                  leaving=len(fleet.replicas) - healthy_n, classes=classes)


# -- status: the service's QuotaLimited condition, the GPUQuota's status ----------------------

CONDITION = "QuotaLimited"


def with_condition(status: dict[str, Any], verdict: Verdict | None, *, now: float,
                   generation: int | None) -> dict[str, Any]:
    """A rendered InferenceService status with its QuotaLimited condition set (removed without
    spec.quota): True while the quota holds the plan below its want, False within it, Unknown
    when the quota or tier does not exist or has not been arbitrated yet."""
    conditions = [Condition.model_validate(c) for c in status.get("conditions") or ()]
    if verdict is None:
        kept = [c for c in conditions if c.type != CONDITION]
    else:
        state: bool | None = None if verdict.allocation is None else verdict.limited
        message = f"GPUQuota {verdict.quota}, tier {verdict.message}" if verdict.allocation is not None \
            else verdict.message
        kept = set_condition(conditions, type=CONDITION, status=state, reason=verdict.reason, message=message[:1000],
                             now=now, generation=generation)
    return {**status, "conditions": [c.model_dump(by_alias=True, exclude_none=True) for c in kept]}


def quota_status(name: str, spec: GPUQuotaSpec, arbitration: core.Arbitration, members: list[Demand],
                 *, now: float, generation: int | None, old: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """status of a GPUQuota after an arbitration: caps, allocated and used per dimension, per tier
    and per service."""
    limits = caps(spec)
    by_key = {d.key: d for d in members}
    usage = {d.key: per_replica(d.spec, spec) for d in members}

    def total(pairs: list[tuple[Mapping[str, float], int]]) -> dict[str, float]:
        return {dim: round(sum(u.get(dim, 0.0) * n for u, n in pairs), 4) for dim in limits}

    # A service counted per class: its units per dimension, as one "replica" of use.
    wants = {d.key: d.holds(spec, {c.name: c.desired for c in d.classes}) for d in members if d.classes}
    holds = {d.key: d.holds(spec) for d in members if d.classes}
    for a in arbitration.allocations:
        if a.key in wants:
            usage[a.key] = {}

    def want(a: core.Allocation) -> tuple[Mapping[str, float], int]:
        return (wants[a.key], 1) if a.key in wants else (usage[a.key], a.desired)

    def given(a: core.Allocation) -> tuple[Mapping[str, float], int]:
        return (dict(a.holds), 1) if a.key in wants else (usage[a.key], a.allocated)

    def held(d: Demand) -> tuple[Mapping[str, float], int]:
        return (holds[d.key], 1) if d.key in holds else (usage[d.key], d.running + d.leaving)

    services, tiers = [], []
    for a in sorted(arbitration.allocations, key=lambda a: (a.tier, a.key)):
        d = by_key[a.key]
        namespace, _, svc = a.key.partition("/")
        services.append(QuotaServiceStatus(namespace=namespace, name=svc, tier=d.tier, desired=a.desired,
                                           floor=a.floor, allocated=a.allocated, running=d.running,
                                           reason=a.reason, message=a.message[:500]))
    for i, tier in enumerate(spec.tiers):
        mine = [a for a in arbitration.allocations if a.tier == i]
        tiers.append(QuotaTierStatus(
            name=tier.name, services=len(mine),
            desired=total([want(a) for a in mine]),
            allocated=total([given(a) for a in mine]),
            used=total([held(by_key[a.key]) for a in mine])))
    over = arbitration.over
    ready_msg = (f"floors of non-preemptible tiers exceed {', '.join(over)}" if over
                 else f"{len(services)} services arbitrated")
    old_conditions = [Condition.model_validate(c) for c in (old or {}).get("conditions") or ()]
    conditions = set_condition(old_conditions, type="Ready", status=True, reason="Overcommitted" if over else "Arbitrated",
                               message=ready_msg, now=now, generation=generation)
    out = GPUQuotaStatus(
        observed_generation=generation, conditions=conditions, limits=limits,
        allocated={dim: round(v, 4) for dim, v in arbitration.used.items()},
        used=total([held(d) for d in members]),
        tiers=tiers, services=services, last_arbitration=iso(now))
    return out.model_dump(by_alias=True, exclude_none=True)


def invalid_quota_status(message: str, *, now: float, generation: int | None,
                         old: Mapping[str, Any] | None = None) -> dict[str, Any]:
    old_conditions = [Condition.model_validate(c) for c in (old or {}).get("conditions") or ()]
    conditions = set_condition(old_conditions, type="Ready", status=False, reason="InvalidSpec", message=message[:1000],
                               now=now, generation=generation)
    return {"conditions": [c.model_dump(by_alias=True, exclude_none=True) for c in conditions],
            "observedGeneration": generation}


UNRESOLVED = (NOT_FOUND, TIER_NOT_FOUND)  # the spec names what does not exist: a Warning
