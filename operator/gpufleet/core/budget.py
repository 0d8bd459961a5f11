"""Budgets: cap non-essential capacity when the plan would cost more than spec.budget allows.

The cap works on the finished plan, after every load-driven decision, in this order (cheapest
in SLO risk first):
1. standbys (and replicas kept only for make-before-break) go;
2. spot replaces on-demand beyond onDemand.base, even past spot.maxFraction (only when spot is
   enabled, available and cheaper): a budget is a harder limit than a spot share;
3. serving replicas go, down to replicas.min (or a planned window's floor, spec.schedules, if
   higher) and never further.
What stays above the limit after step 3 is the floor the user asked for: the state is
"Infeasible" and the fleet runs at its floor. Without spend history (no day yet) the daily limit
is paced from the start of the day.

With spec.capacity.classes the plan's cost is its classes' own: sum over classes of replicas x
that class's price (`enforce(cost=...)`, core.mix.cost_of: the cheapest mix for that many
reference replicas), and spend is tracked per class at each class's price. Step 2 does not apply
(the mix is already the cheapest one within its classes' shares).

Pure: time is `now` (seconds since the Unix epoch, so `now // 86400` is the UTC day), prices are
the spec's (the operator substitutes its price table into the spec before deciding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import repeat
from operator import attrgetter

from gpufleet.api.classes import replica_price
from gpufleet.api.models import Budget, InferenceServiceSpec
from gpufleet.core import rollout, split
from gpufleet.core.fleet import FleetView
from gpufleet.core.types import ON_DEMAND, SPOT, BudgetCheck, FleetState, Plan, PolicyMemory

BUDGET = "Budget"
OK, ALERT, CAPPED, INFEASIBLE = "OK", "Alert", "Capped", "Infeasible"

DAY_S = 86400.0
# Pacing divides what is left of the day by the hours left; near midnight that would allow any
# rate, which is harmless (little time left to spend it), but keep the divisor finite.
MIN_PACE_H = 1.0 / 60.0
# Float noise must not cap a plan that costs exactly the limit.
_EPS = 1e-9
_CLASS_OF = attrgetter("capacity_class")


def replica_hour_prices(spec: InferenceServiceSpec) -> dict[str, float]:
    """Price of one replica for one hour, per capacity class: with spec.capacity.classes each
    listed class at its own price (pods of the two-class names at pricePerGpuHour x GPUs)."""
    prices, gpus = spec.capacity.price_per_gpu_hour, spec.capacity.gpus_per_replica
    out = {ON_DEMAND: prices.on_demand * gpus, SPOT: prices.spot * gpus}
    fallback = {ON_DEMAND: prices.on_demand, SPOT: prices.spot}
    for c in spec.capacity.classes or ():
        out[c.name] = replica_price(c, None, fallback)
    return out


def cost_rate(spec: InferenceServiceSpec, on_demand: int, spot: int) -> float:
    p = replica_hour_prices(spec)
    return on_demand * p[ON_DEMAND] + spot * p[SPOT]


def fleet_rate(spec: InferenceServiceSpec, fleet: FleetState) -> float:
    """What the fleet costs per hour now: every pod holding a GPU, whatever its state, at its
    class's price (a pod of a class no longer listed as on-demand, as metering counts it)."""
    p = replica_hour_prices(spec)
    # Iterated in C: once per decision over every pod.
    return sum(map(p.get, map(_CLASS_OF, fleet.replicas), repeat(p[ON_DEMAND])))


def track_spend(
    spec: InferenceServiceSpec, fleet: FleetState, memory: PolicyMemory, now: float
) -> tuple[int, float]:
    """(day, spent that day) after integrating the fleet's cost since the previous decision.

    The fleet seen now ran since the previous decision (its pods were created by it at the
    latest); at a day boundary only the part after midnight counts for the new day.
    """
    day = int(now // DAY_S)
    last = memory.last_decided_at
    spent = memory.spent_today if memory.spend_day == day else 0.0
    if last is None or now <= last:
        return day, spent
    since = max(last, day * DAY_S)
    return day, spent + fleet_rate(spec, fleet) * (now - since) / 3600.0


def limit_per_hour(budget: Budget, spent_today: float, now: float) -> tuple[float, str] | None:
    """The highest cost per hour allowed now and where it comes from; None without limits."""
    limits: list[tuple[float, str]] = []
    if budget.max_cost_per_hour is not None:
        limits.append((budget.max_cost_per_hour, f"maxCostPerHour {budget.max_cost_per_hour:g}"))
    if budget.max_cost_per_day is not None:
        left_h = max((DAY_S - now % DAY_S) / 3600.0, MIN_PACE_H)
        left = max(0.0, budget.max_cost_per_day - spent_today)
        limits.append((left / left_h, f"maxCostPerDay {budget.max_cost_per_day:g}: {spent_today:.2f} spent, "
                                      f"{left:.2f} left over {left_h:.1f} h"))
    return min(limits, key=lambda x: x[0]) if limits else None


@dataclass(slots=True)
class _Fleet:
    """The healthy counts being cut (interrupted replicas stay on top: they are leaving anyway)."""

    on_demand: int
    spot: int
    serving: int
    standby: int

    @property
    def total(self) -> int:
        return self.on_demand + self.spot


def _drop_one(spec: InferenceServiceSpec, f: _Fleet, spot_ok: bool) -> None:
    """Remove one replica from the class that keeps the split as the spec wants it: spot beyond
    the share the smaller fleet may hold goes first, then on-demand above the base."""
    n = f.total - 1
    base = min(spec.capacity.on_demand.base, n)
    if f.spot > 0 and (spot_ok and f.spot > split.spot_cap(spec, n) or f.on_demand <= base):
        f.spot -= 1
    else:
        f.on_demand -= 1


def _cut(spec: InferenceServiceSpec, f: _Fleet, limit: float, spot_ok: bool, floor: int,
         cost: Callable[[int], float] | None = None) -> list[str]:
    """Apply the three steps until the fleet fits `limit`; return what was done, for the message.
    `cost`: the cost per hour of a fleet of that many replicas (classes), instead of the split's."""
    done: list[str] = []

    def over() -> bool:
        rate = cost(f.total) if cost is not None else cost_rate(spec, f.on_demand, f.spot)
        return rate > limit + _EPS

    # 1. Standbys, and replicas held only until replacements are Ready (the plan's padding).
    extra0, standby0 = f.total - f.serving, f.standby
    while over() and f.total > f.serving:
        _drop_one(spec, f, spot_ok)
        f.standby = min(f.standby, f.total - f.serving)
    if f.total - f.serving < extra0:
        done.append(f"standby {standby0} -> {f.standby}")
    # 2. Spot instead of on-demand above the base.
    moved = 0
    base = min(spec.capacity.on_demand.base, f.total)
    while over() and spot_ok and f.on_demand > base:
        f.on_demand -= 1
        f.spot += 1
        moved += 1
    if moved:
        done.append(f"{moved} on-demand -> spot")
    # 3. Serving replicas, down to the floor.
    serving0 = f.serving
    while over() and f.serving > floor and f.total > 0:
        _drop_one(spec, f, spot_ok)
        f.serving -= 1
    if f.serving < serving0:
        what = "replicas.min" if floor <= spec.replicas.min else "scheduled floor"
        done.append(f"serving {serving0} -> {f.serving} ({what} {floor})")
    return done


def _alerting(budget: Budget, wanted: float, limit: float, spent: float) -> bool:
    share = budget.alert_percent / 100.0
    over_rate = limit > 0 and wanted >= share * limit - _EPS
    hourly = budget.max_cost_per_hour
    over_hour = hourly is not None and wanted >= share * hourly - _EPS
    daily = budget.max_cost_per_day
    over_day = daily is not None and spent >= share * daily - _EPS
    return over_rate or over_hour or over_day


def enforce(
    spec: InferenceServiceSpec,
    plan: Plan,
    memory: PolicyMemory,
    *,
    fleet: FleetState,
    previous: PolicyMemory,
    now: float,
    spot_unavailable: bool,
    floor: int = 0,
    cost: Callable[[int], float] | None = None,
) -> tuple[Plan, PolicyMemory]:
    """Track today's spend in `memory` and fit `plan` to spec.budget (unchanged without one).

    `floor`: serving replicas a planned window (spec.schedules) holds; the cap keeps the larger of
    it and replicas.min (within replicas.max). `cost`: with spec.capacity.classes, the cost per
    hour of a fleet of n healthy replicas as its classes (core.mix.cost_of).
    """
    day, spent = track_spend(spec, fleet, previous, now)
    memory = replace(memory, spend_day=day, spent_today=spent)
    budget = spec.budget
    limit_src = limit_per_hour(budget, spent, now) if budget is not None else None
    if budget is None or limit_src is None:
        return plan, memory
    limit, source = limit_src
    interrupted = split.interrupted_by_class(fleet)
    f = _Fleet(
        on_demand=plan.on_demand - interrupted[ON_DEMAND],
        spot=plan.spot - interrupted[SPOT],
        serving=plan.serving,
        standby=plan.standby,
    )
    rate: Callable[[], float] = (lambda: cost(f.total)) if cost is not None \
        else (lambda: cost_rate(spec, f.on_demand, f.spot))
    wanted = rate()
    alert = _alerting(budget, wanted, limit, spent)
    if wanted <= limit + _EPS:
        state = ALERT if alert else OK
        msg = f"cost {wanted:.2f}/h within {limit:.2f}/h ({source})"
        return replace(plan, budget=BudgetCheck(state, limit, wanted, wanted, spent, msg)), memory

    # With classes the mix is already the cheapest within its shares: no spot-for-on-demand step.
    spot_ok = split.spot_usable(spec, spot_unavailable) and cost is None
    lowest = min(max(spec.replicas.min, floor), spec.replicas.max, f.serving)
    done = _cut(spec, f, limit, spot_ok, lowest, cost)
    planned = rate()
    feasible = planned <= limit + _EPS
    what = "; ".join(done) if done else "nothing above the floor to cut"
    msg = f"budget: cost {wanted:.2f}/h > limit {limit:.2f}/h ({source}): {what}: now {planned:.2f}/h"
    if not feasible:
        msg += " (the floor costs more than the limit)"
    check = BudgetCheck(CAPPED if feasible else INFEASIBLE, limit, wanted, planned, spent, msg)
    if not done:
        return replace(plan, budget=check), memory

    # Who goes and who joins, again, for the capped counts (same rules as the policy's step 4).
    view = FleetView.of(fleet)
    retire = rollout.retirements(fleet, {ON_DEMAND: f.on_demand, SPOT: f.spot})
    leaving = frozenset(retire)
    promote = rollout.promotions(tuple(r for r in fleet.replicas if r.name not in leaving), f.serving - view.serving)
    capped = replace(
        plan,
        serving=f.serving,
        standby=f.standby,
        on_demand=f.on_demand + interrupted[ON_DEMAND],
        spot=f.spot + interrupted[SPOT],
        reason=BUDGET,
        message=f"{msg}; wanted: {plan.message}",
        promote=promote,
        retire=retire,
        budget=check,
        interrupted=tuple(interrupted.items()),
    )
    # Later steps are measured from what runs, not from the uncapped wish.
    return capped, replace(memory, last_serving=f.serving)
