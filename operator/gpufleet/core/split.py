"""On-demand vs spot, and which replicas go first.

The split is a function of the wanted total and of spot availability only; returning to spot
after an outage is paced by core.spotback (hysteresis), so it cannot ping-pong. While spot is
out, new capacity goes on-demand and Ready spot replicas stay. Moving capacity between classes
is make-before-break: Ready replicas of the class being shrunk stay until the other class has
Ready replacements, as far as replicas.max allows.

Interruptions are break-before-make by necessity: the node goes at the end of its notice whatever
the plan says. Their replacements start at once on on-demand (standbys are promoted first), and
an interrupted serving replica leaves the Service as soon as the healthy ones cover the serving
target, and in any case once less than DRAIN_S and one decision interval of its notice is left
(`notice_drain_due`), so that its in-flight requests finish before the node goes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.fleet import FleetView
from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, ReplicaState

_EPS = 1e-9

# Time a replica needs to finish its in-flight requests after leaving the Service: the longest
# answer (4,096 tokens, the trace loaders' clip) at ~9 ms per token under a full batch, rounded up.
# The one figure for the operator and the simulator (whose pods take this long to drain). An
# interrupted replica with less than this (and one interval) left on its notice is drained even
# if its replacements are not Ready: from then on, keeping it in the Service only loses the
# requests that would still be running on it.
DRAIN_S = 40.0


@dataclass(frozen=True, slots=True)
class Split:
    on_demand: int
    spot: int
    note: str


def spot_usable(spec: InferenceServiceSpec, unavailable: bool) -> bool:
    prices = spec.capacity.price_per_gpu_hour
    # Spot is only worth its interruptions when it is cheaper.
    return spec.capacity.spot.enabled and not unavailable and prices.spot < prices.on_demand


def spot_cap(spec: InferenceServiceSpec, total: int) -> int:
    """Most spot replicas in a fleet of `total`: beyond the base and within maxFraction."""
    base = min(spec.capacity.on_demand.base, total)
    return max(0, min(total - base, math.floor(spec.capacity.spot.max_fraction * total + _EPS)))


def class_split(spec: InferenceServiceSpec, total: int, unavailable: bool, ready_spot: int, why: str = "") -> Split:
    """Replicas per class for a fleet of `total`.

    `unavailable`: spot is out (the fleet's signal, an interruption notice, or still backing off
    after one). Then new capacity goes on-demand at once, but spot replicas already Ready stay
    (within the share): they are running and cheaper, and moving them would cost cold starts.
    """
    if not spot_usable(spec, unavailable):
        if not (spec.capacity.spot.enabled and unavailable):
            return Split(total, 0, "")
        keep = min(ready_spot, spot_cap(spec, total))
        note = f"spot unavailable: new capacity on on-demand, {keep} Ready spot kept"
        note += f" ({why})" if why else ""
        return Split(total - keep, keep, note)
    spot = spot_cap(spec, total)
    return Split(total - spot, spot, "")


def make_before_break(spec: InferenceServiceSpec, split: Split, view: FleetView, total: int) -> Split:
    """Keep Ready replicas of a shrinking class until the other class has caught up.

    A class keeps min(its Ready replicas, total - Ready replicas of the other class): exactly what
    keeps the Ready count at the total. At most one class can be short at a time, so the sum
    stays within replicas.max.
    """
    hi = spec.replicas.max
    ready_od = view.ready_by_class[ON_DEMAND]
    ready_spot = view.ready_by_class[SPOT]
    od = max(split.on_demand, min(ready_od, total - ready_spot, hi - split.spot))
    spot = max(split.spot, min(ready_spot, total - ready_od, hi - split.on_demand))
    note = split.note
    if (od, spot) != (split.on_demand, split.spot):
        kept = f"keeping {od - split.on_demand} on-demand" if od > split.on_demand else f"keeping {spot - split.spot} spot"
        note = f"{note}; " if note else ""
        note += f"{kept} until replacements are Ready"
    return Split(od, spot, note)


def keep_ready(split: Split, view: FleetView, hi: int) -> Split:
    """Safe mode: every healthy Ready replica stays (as far as replicas.max allows); what the
    split adds on top of them gives way first, new spot before new on-demand."""
    od_floor = min(view.ready_by_class[ON_DEMAND], hi)
    spot_floor = min(view.ready_by_class[SPOT], hi - od_floor)
    od = max(split.on_demand, od_floor)
    spot = max(split.spot, spot_floor)
    excess = od + spot - hi
    if excess > 0:
        cut = min(excess, spot - spot_floor)
        spot -= cut
        excess -= cut
    if excess > 0:
        od -= min(excess, od - od_floor)
    return Split(od, spot, split.note)


def interrupted_by_class(fleet: FleetState) -> dict[str, int]:
    """Replicas on nodes with an interruption notice, not yet draining, per class."""
    out = {ON_DEMAND: 0, SPOT: 0}
    for r in fleet.replicas:
        if r.interrupted and r.state != ReplicaState.draining:
            out[r.capacity_class] = out.get(r.capacity_class, 0) + 1
    return out


def notice_drain_due(reclaim_at: float | None, now: float, interval_s: float = 0.0) -> bool:
    """Whether an interrupted serving replica must leave the Service now, covered or not: at the
    last decision (every `interval_s`) that still leaves it DRAIN_S before its node goes.

    `reclaim_at` is when its node is expected to go (notice time + the cloud's notice length);
    None for a notice without a deadline (cordon, rebalance recommendation): drained once covered.
    """
    return reclaim_at is not None and now >= reclaim_at - DRAIN_S - interval_s
