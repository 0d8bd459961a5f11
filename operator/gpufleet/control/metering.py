"""Metering: GPU-hours, cost and requests of one InferenceService, accumulated tick by tick (pure).

Each tick integrates pod lifetimes since the previous accumulation: a pod seen now ran from the
later of its creation and the previous tick until now. Pods are created by the previous tick's
apply at the latest, so this is exact for every pod alive at the tick; a pod that went away
between two ticks (deleted after a drain, a spot reclaim) loses at most one interval.
The running totals live in status.usage, so an operator restart continues from them (the time the
operator was down is integrated from the pods' creation times like any other interval).
Requests are the observed request rate times the interval; across a gap longer than
MAX_RATE_GAP_S (operator down) the rate is unknown and only MAX_RATE_GAP_S is counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

from gpufleet.api.models import ClassUsage, InferenceServiceSpec, UsageStatus
from gpufleet.api.timefmt import iso, iso_seconds
from gpufleet.core.budget import DAY_S, replica_hour_prices
from gpufleet.core.types import CAPACITY_CLASSES, ON_DEMAND, SPOT, FleetState

MAX_RATE_GAP_S = 300.0


def iso_ms(ts: float) -> str:
    """Milliseconds: the next accumulation integrates from exactly here."""
    return iso(ts, ms=True)


def stamp_seconds(text: str | None) -> float | None:
    """A stored timestamp, or None if absent or unreadable (then the usage restarts from now)."""
    if not text:
        return None
    try:
        return iso_seconds(text)
    except ValueError:
        return None


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class UsageDelta:
    """What one accumulation added (the Prometheus counters' increments), per capacity class as
    the pods name it: `on-demand`/`spot`, or the names in spec.capacity.classes (every class of the
    spec present, at 0 if it ran no pod, so its counters exist from the first tick)."""

    gpu_hours: dict[str, float]
    cost: dict[str, float]
    requests: float


def class_names(spec: InferenceServiceSpec) -> tuple[str, ...]:
    """The capacity classes a spec sizes: its class list's names, or on-demand and spot."""
    return tuple(c.name for c in spec.capacity.classes) if spec.capacity.classes else CAPACITY_CLASSES


def empty(spec: InferenceServiceSpec) -> UsageDelta:
    return UsageDelta({c: 0.0 for c in class_names(spec)}, {c: 0.0 for c in class_names(spec)}, 0.0)


def _add(u: ClassUsage, gpu_h: float, cost: float) -> ClassUsage:
    return ClassUsage(gpu_hours=u.gpu_hours + gpu_h, cost=u.cost + cost)


def class_rates(spec: InferenceServiceSpec) -> dict[str, tuple[str, float, float]]:
    """Per capacity class: (the usage bucket, on-demand or spot; GPUs per replica; price per
    replica-hour). spec.capacity.classes: each class's own GPUs (a MIG slice as its share) and price,
    in the bucket of its spot flag; an unknown class (a pod of a class since removed) as on-demand."""
    price = replica_hour_prices(spec)
    gpus = float(spec.capacity.gpus_per_replica)
    out = {ON_DEMAND: (ON_DEMAND, gpus, price[ON_DEMAND]), SPOT: (SPOT, gpus, price[SPOT])}
    for c in spec.capacity.classes or ():
        out[c.name] = (SPOT if c.spot else ON_DEMAND, c.gpus(), price[c.name])
    return out


def accumulate(
    prev: UsageStatus, spec: InferenceServiceSpec, fleet: FleetState, request_rate: float | None, now: float
) -> tuple[UsageStatus, UsageDelta]:
    """The usage after integrating `fleet` from prev.updatedAt to `now`, and what was added.

    Prices are the spec's (the operator has already applied its price table to the spec).
    """
    last = stamp_seconds(prev.updated_at)
    if last is None or now < last:
        # First tick (or a clock step backwards): start metering here.
        since = prev.since or iso_ms(now)
        return prev.model_copy(update={"since": since, "updated_at": iso_ms(now), "day": utc_day(now)}), empty(spec)
    per_class = class_rates(spec)
    midnight = (now // DAY_S) * DAY_S
    gpu_h = {c: 0.0 for c in CAPACITY_CLASSES}  # status.usage's buckets
    cost = {c: 0.0 for c in CAPACITY_CLASSES}
    delta = empty(spec)  # per class as the pods name it (the metrics' label)
    today = 0.0
    for r in fleet.replicas:
        start = max(last, r.created_at)
        if start >= now:
            continue
        hours = (now - start) / 3600.0
        cls, gpus, price = per_class.get(r.capacity_class, per_class[ON_DEMAND])
        gpu_h[cls] += hours * gpus
        cost[cls] += hours * price
        delta.gpu_hours[r.capacity_class] = delta.gpu_hours.get(r.capacity_class, 0.0) + hours * gpus
        delta.cost[r.capacity_class] = delta.cost.get(r.capacity_class, 0.0) + hours * price
        today += (now - max(start, midnight)) / 3600.0 * price
    rate = request_rate if request_rate is not None and math.isfinite(request_rate) and request_rate > 0 else 0.0
    requests = rate * min(now - last, MAX_RATE_GAP_S)
    day = utc_day(now)
    cost_today = (prev.cost_today if prev.day == day else 0.0) + today
    od, sp = _add(prev.on_demand, gpu_h[ON_DEMAND], cost[ON_DEMAND]), _add(prev.spot, gpu_h[SPOT], cost[SPOT])
    total_requests = prev.requests + requests
    total_cost = od.cost + sp.cost
    usage = UsageStatus(
        since=prev.since or iso_ms(last),
        updated_at=iso_ms(now),
        on_demand=od,
        spot=sp,
        gpu_hours=od.gpu_hours + sp.gpu_hours,
        cost=total_cost,
        requests=total_requests,
        cost_per_million_requests=total_cost / total_requests * 1e6 if total_requests >= 1 else None,
        day=day,
        cost_today=cost_today,
    )
    return usage, UsageDelta(delta.gpu_hours, delta.cost, requests)


def rounded(usage: UsageStatus) -> UsageStatus:
    """For display in status: 6 significant decimals are plenty and keep the object small; the
    loop keeps the unrounded value in memory between ticks."""
    def r(x: float) -> float:
        return round(x, 6)

    return usage.model_copy(update={
        "on_demand": ClassUsage(gpu_hours=r(usage.on_demand.gpu_hours), cost=r(usage.on_demand.cost)),
        "spot": ClassUsage(gpu_hours=r(usage.spot.gpu_hours), cost=r(usage.spot.cost)),
        "gpu_hours": r(usage.gpu_hours), "cost": r(usage.cost), "requests": round(usage.requests, 1),
        "cost_per_million_requests": (None if usage.cost_per_million_requests is None
                                      else round(usage.cost_per_million_requests, 4)),
        "cost_today": r(usage.cost_today),
    })
