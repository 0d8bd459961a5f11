"""spec.capacity.classes in the decision: the policy's fleet, as replicas per class.

The policy sizes the fleet in one unit, replicas of the service's reference capacity
(scaling.targetRpsPerReplica or the learned rate, at the utilisation target), and splits it into
the two classes on-demand and spot (core.split). With a class list, `apply_mix` is the last step
of the same decision: the need is that fleet's planned capacity in requests/s, core.classes.choose
picks the cheapest replicas per class that meet it, and serving/standby are rescaled to the mix's
pod count. One sizing rule for the operator and the simulator; see docs/gpu-types.md.

Availability per class (core.classes.track) is carried in PolicyMemory.class_availability;
signals are the class's pods Pending past its pendingTimeoutSeconds (FleetState.pending_by_class,
counted by the fleet adapter) and interruption notices on its pods.

Capacity per class: its targetRpsPerReplica, else the requests/s per serving replica learned for
it (PolicyMemory.learned_class_rps, core.classes.learn_class_rps, from the rate each class's pods
carried: Observation.class_request_rate), else the reference figure (the service's
scaling.targetRpsPerReplica or its learned rate); each at targetUtilization.
A decision sizes with what was learned before its own sample, like the single learned rate.

A GPUQuota's grant (core.quota.Grant) reaches the mix as shared limits per capped dimension
(core.classes.Limit): a class whose GPU product is full under the quota gets no more pods and the
mix moves to a class of another product, saying so. spec.budget prices a class-mixed plan at its
classes' own prices (`cost_of`: the cost of the cheapest mix for that many reference replicas).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from gpufleet.api.classes import to_core_fields
from gpufleet.api.models import CapacityClassSpec, InferenceServiceSpec
from gpufleet.core import rollout
from gpufleet.core.budget import BUDGET
from gpufleet.core.capacity import MIN_LEARNED_RPS
from gpufleet.core.fleet import READY_STATES, is_healthy
from gpufleet.core.split import interrupted_by_class
from gpufleet.core.types import (
    ON_DEMAND,
    SPOT,
    ClassChoice,
    FleetState,
    Observation,
    Plan,
    PolicyMemory,
    ReplicaState,
)

if TYPE_CHECKING:
    from gpufleet.core.classes import Availability, GpuClass, Limit
    from gpufleet.core.quota import Grant

REMOVED = "removed"  # a class with pods that the list no longer names

# core.classes (numpy, scipy's MILP) is imported only by services with a class list: the
# two-class form, the simulator's sweeps and the property tests never load scipy through here.


def reference_rps(spec: InferenceServiceSpec, planned_rps: float | None) -> float:
    """Requests/s one reference replica is planned to serve: the policy's figure, else the first
    on-demand class's own, else 1 (capacity unknown: every class counts as one replica)."""
    if planned_rps is not None and math.isfinite(planned_rps) and planned_rps > 0:
        return planned_rps
    util = spec.scaling.target_utilization
    for c in spec.capacity.classes or ():
        if not c.spot and c.target_rps_per_replica is not None:
            return c.target_rps_per_replica * util
    return 1.0


def _usable(rps: float | None) -> float | None:
    return rps if rps is not None and math.isfinite(rps) and rps >= MIN_LEARNED_RPS else None


def gpu_classes(spec: InferenceServiceSpec, ref_rps: float,
                learned: Mapping[str, float] | None = None) -> list[GpuClass]:
    """The spec's classes as the core's GpuClass (prices already resolved into the spec, else
    capacity.pricePerGpuHour per GPU). Capacity: the class's targetRpsPerReplica, else its
    `learned` figure, at targetUtilization; else `ref_rps` (already planned)."""
    from gpufleet.core.classes import GpuClass

    util = spec.scaling.target_utilization
    prices = spec.capacity.price_per_gpu_hour
    fallback = {ON_DEMAND: prices.on_demand, SPOT: prices.spot}
    out = []
    for c in spec.capacity.classes or ():
        fields = to_core_fields(c, util, _usable((learned or {}).get(c.name)), None, fallback)
        if fields["rps_per_replica"] <= 0:
            fields["rps_per_replica"] = ref_rps
        out.append(GpuClass(**fields))
    return out


def learn(classes: list[GpuClass], learned: Mapping[str, float], observation: Observation | None,
          fleet: FleetState, *, queue_depth_per_replica: float, latency_ok: bool) -> dict[str, float]:
    """The classes' learned requests/s per serving replica after this sample (only listed classes
    are kept): core.classes.learn_class_rps on the rate each class's serving pods carried."""
    from gpufleet.core.classes import learn_class_rps

    listed = {c.name for c in classes}
    kept = {n: v for n, v in learned.items() if n in listed}
    if observation is None or not observation.class_request_rate:
        return kept
    # As core.capacity.learn_rps: every replica in the Service carries load.
    serving = dict(Counter(r.capacity_class for r in fleet.replicas if r.state == ReplicaState.serving))
    total = sum(serving.values())
    ratio = (observation.queue_depth / total / queue_depth_per_replica
             if observation.queue_depth is not None and total > 0 and queue_depth_per_replica > 0 else None)
    rates = {n: v for n, v in observation.class_request_rate if v is not None}
    return learn_class_rps(classes, kept, rate_by_class=rates, serving_by_class=serving,
                           queue_per_replica_ratio=ratio, latency_ok=latency_ok)


def reference_units(spec: InferenceServiceSpec, fleet: FleetState, planned_rps: float | None,
                    learned: Mapping[str, float] | None = None) -> int:
    """The healthy serving and starting pods' planned capacity, in reference replicas (nearest
    whole one): what a fleet of a large class and a small reference measures as, where its pod
    count would understate it. A pod of a class no longer listed counts as one."""
    ref = reference_rps(spec, planned_rps)
    rps = {c.name: c.rps_per_replica for c in gpu_classes(spec, ref, learned)}
    units = sum(rps.get(r.capacity_class, ref) / ref for r in fleet.replicas
                if is_healthy(r) and r.state in (ReplicaState.serving, ReplicaState.starting))
    return int(math.floor(units + 0.5))


def limits_of(grant: Grant | None) -> list[Limit]:
    """A quota's grant as the mix's shared limits."""
    from gpufleet.core.classes import Limit

    if grant is None:
        return []
    return [Limit(label, cap, dict(use)) for label, cap, use in grant.limits]


def _availability(classes: list[GpuClass], fleet: FleetState, previous: tuple[tuple[str, Availability], ...],
                  now: float) -> dict[str, Availability]:
    """Each class's availability now, from its signals and what the last decision left."""
    from gpufleet.core.classes import Availability, Signal, track

    noticed_any = {c.name: 0 for c in classes}
    for r in fleet.replicas:
        if r.interrupted and r.capacity_class in noticed_any:
            noticed_any[r.capacity_class] += 1
    pending = dict(fleet.pending_by_class)
    before = dict(previous)
    avail: dict[str, Availability] = {}
    for c in classes:
        signal = Signal(pending_past_timeout=pending.get(c.name, 0), interrupted=noticed_any[c.name])
        avail[c.name] = track(c, signal, before.get(c.name, Availability()), now)
    return avail


def cost_of(spec: InferenceServiceSpec, memory: PolicyMemory, *, fleet: FleetState, planned_rps: float | None,
            now: float, previous: tuple[tuple[str, Availability], ...] = (),
            grant: Grant | None = None) -> Callable[[int], float]:
    """Cost per hour of the mix `apply_mix` would choose for a fleet of n reference replicas
    (healthy): sum over classes of replicas x that class's price. What spec.budget caps."""
    from gpufleet.core.classes import choose

    ref = reference_rps(spec, planned_rps)
    classes = gpu_classes(spec, ref, dict(memory.learned_class_rps))
    avail = _availability(classes, fleet, previous, now)
    healthy, ready = _counts(fleet)
    limits = limits_of(grant)

    def cost(n: int) -> float:
        return choose(classes, max(n, 0) * ref, avail, ready=ready, current=healthy, now=now,
                      limits=limits).cost_per_hour

    return cost


def _counts(fleet: FleetState) -> tuple[dict[str, int], dict[str, int]]:
    """Healthy replicas (any state) and healthy Ready ones, per class."""
    healthy: dict[str, int] = {}
    ready: dict[str, int] = {}
    for r in fleet.replicas:
        if not is_healthy(r):
            continue
        healthy[r.capacity_class] = healthy.get(r.capacity_class, 0) + 1
        if r.state in READY_STATES:
            ready[r.capacity_class] = ready.get(r.capacity_class, 0) + 1
    return healthy, ready


def keep_ready(chosen: dict[str, int], ready: dict[str, int], classes: list[GpuClass],
               safe_mode: bool) -> tuple[dict[str, int], str]:
    """Make-before-break: a class being shrunk keeps its Ready replicas while the classes that
    grow are short of Ready ones (capacity-weighted); in safe mode every Ready replica stays.
    Each class within its max."""
    by_name = {c.name: c for c in classes}
    short = sum(max(chosen[n] - ready.get(n, 0), 0) * by_name[n].rps_per_replica for n in chosen)
    out = dict(chosen)
    kept = []
    for n in sorted(chosen, key=lambda n: by_name[n].price_per_hour / max(by_name[n].rps_per_replica, 1e-12)):
        extra = ready.get(n, 0) - chosen[n]
        if extra <= 0:
            continue
        if not safe_mode:
            extra = min(extra, math.ceil(short / by_name[n].rps_per_replica - 1e-9)) if short > 0 else 0
        extra = max(0, min(extra, by_name[n].max - chosen[n]))
        if extra:
            out[n] += extra
            short -= extra * by_name[n].rps_per_replica
            kept.append(f"{extra} {n}")
    note = ""
    if kept:
        note = (f"keeping {', '.join(kept)} Ready (no metrics)" if safe_mode
                else f"keeping {', '.join(kept)} until replacements are Ready")
    return out, note


def within_grant(sized: dict[str, int], healthy: Mapping[str, int], classes: list[GpuClass],
                 limits: list[Limit]) -> dict[str, int]:
    """Pods asked for within a quota's grant, make-before-break included: per dimension at most the
    larger of the grant and what the service's pods hold now (the arbitration paced its growth
    beside them). Where the pods kept for make-before-break and their replacements would not fit
    together, the replacements wait (the most expensive per request/s first): a full product's pods
    are not swapped for each other, and the replacements of another product proceed."""
    out = dict(sized)
    by_name = {c.name: c for c in classes}
    for lim in limits:
        bound = max(lim.cap, lim.used(healthy))
        while lim.used(out) > bound + 1e-9:
            growing = [n for n, v in out.items() if lim.use.get(n, 0.0) > 0 and v > healthy.get(n, 0)]
            if not growing:
                break
            n = max(growing, key=lambda n: (by_name[n].cost_per_rps if n in by_name else math.inf, n))
            out[n] -= 1
    return out


def apply_mix(spec: InferenceServiceSpec, plan: Plan, memory: PolicyMemory, *, fleet: FleetState,
              planned_rps: float | None, now: float,
              previous: tuple[tuple[str, Availability], ...] = (),
              observation: Observation | None = None, latency_ok: bool = False,
              grant: Grant | None = None) -> tuple[Plan, PolicyMemory]:
    """The plan with replicas per class (spec.capacity.classes); unchanged without a list.
    `previous`: the classes' availability as the last decision left it. `observation` (its
    per-class rates) and `latency_ok` (the latency SLO held): this sample for the classes'
    learned capacity, used from the next decision on. `grant`: a GPUQuota's limits per capped
    dimension, which the mix stays within."""
    specs: list[CapacityClassSpec] = list(spec.capacity.classes or ())
    if not specs:
        return plan, memory
    from gpufleet.core.classes import GpuClass, choose

    ref = reference_rps(spec, planned_rps)
    classes = gpu_classes(spec, ref, dict(memory.learned_class_rps))
    learned = learn(classes, dict(memory.learned_class_rps), observation, fleet,
                    queue_depth_per_replica=spec.slo.queue_depth_per_replica, latency_ok=latency_ok)
    # The fleet the policy wants, healthy (its counts include the interrupted pods it keeps).
    included = dict(plan.interrupted or ())
    total = max(0, plan.on_demand + plan.spot - included.get(ON_DEMAND, 0) - included.get(SPOT, 0))
    healthy, ready = _counts(fleet)
    interrupted = {c.name: 0 for c in classes}
    interrupted.update({k: v for k, v in interrupted_by_class(fleet).items() if k in interrupted})
    avail = _availability(classes, fleet, previous, now)
    mix = choose(classes, total * ref, avail, ready=ready, current=healthy, now=now, limits=limits_of(grant))
    # Pods of a class no longer listed (removed, or the onDemand/spot form replaced by a list):
    # wanted by no mix, they serve until the listed classes' replacements are Ready, then drain.
    listed = {c.name for c in classes}
    stale = [GpuClass(name=n, price_per_hour=math.inf, rps_per_replica=ref, max=ready.get(n, 0))
             for n in dict.fromkeys(r.capacity_class for r in fleet.replicas) if n not in listed]
    wanted_pods = {**mix.replicas, **{c.name: 0 for c in stale}}
    if plan.reason == BUDGET and not plan.safe_mode:
        # The budget cut this fleet: replicas kept only for make-before-break go first (as in
        # core.budget's first step), so none is padded back here.
        sized, kept_note = wanted_pods, ""
    else:
        sized, kept_note = keep_ready(wanted_pods, ready, [*classes, *stale], plan.safe_mode)
    if grant is not None:
        sized = within_grant(sized, healthy, classes, limits_of(grant))
    counted = interrupted_by_class(fleet)
    interrupted.update({c.name: counted.get(c.name, 0) for c in stale})
    # Serving and standby in pods of the mix, in the proportion the policy planned them.
    pods = sum(mix.replicas.values())
    wanted = plan.serving + plan.standby
    serving = min(pods, math.ceil(pods * plan.serving / wanted - 1e-9)) if wanted > 0 else 0
    serving_now = sum(1 for r in fleet.replicas if is_healthy(r) and r.state == ReplicaState.serving)
    if plan.safe_mode:
        # Blind, nothing serving leaves the Service. The policy's hold is in reference replicas
        # and, without memory (a restart), read from the pods: 40 H100 pods held as 40 slices'
        # worth would demote most of them while the metrics are missing.
        serving = max(serving, min(serving_now, sum(sized.values())))
    standby = max(pods - serving, 0)
    retire = rollout.retirements(fleet, sized)
    leaving = frozenset(retire)
    promote = rollout.promotions(tuple(r for r in fleet.replicas if r.name not in leaving), serving - serving_now)
    choices = tuple(
        ClassChoice(name=c.name, replicas=sized[c.name] + interrupted[c.name], price_per_hour=c.price_per_hour,
                    rps_per_replica=c.rps_per_replica, state=avail[c.name].state.value,
                    reason=mix.reasons[c.name], spot=c.spot, gpus=s.gpus(),
                    learned_rps_per_replica=learned.get(c.name))
        for c, s in zip(classes, specs)) + tuple(
        ClassChoice(name=c.name, replicas=sized[c.name] + interrupted[c.name], price_per_hour=0.0,
                    rps_per_replica=ref, state=REMOVED,
                    reason="not in spec.capacity.classes: serves until the listed classes' replicas are Ready")
        for c in stale)
    note = mix.note + (f"; {kept_note}" if kept_note else "")
    # The policy's message names its two-class split; with a list the classes' note replaces it.
    od, sp = plan.on_demand - included.get(ON_DEMAND, 0), plan.spot - included.get(SPOT, 0)
    split_words = f"; {od} on-demand + {sp} spot"
    message = plan.message.replace(split_words, "", 1)
    new_plan = replace(plan, serving=serving, standby=standby, promote=promote, retire=retire,
                       interrupted=tuple(interrupted.items()), classes=choices, mix_note=note,
                       message=f"{message}; classes: {note}")
    return new_plan, replace(memory, class_availability=tuple(avail.items()),
                             learned_class_rps=tuple(sorted(learned.items())))
