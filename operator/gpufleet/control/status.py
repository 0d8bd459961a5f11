"""Render the InferenceService status from one step's values (pure)."""

from __future__ import annotations

from gpufleet.api.models import (
    ClassCounts,
    Condition,
    DecisionStatus,
    ForecastStatus,
    InferenceServiceSpec,
    ObservedStatus,
    ReplicaStatus,
    ScheduleStatus,
)
from gpufleet.api.timefmt import iso
from gpufleet.core.schedule import Window
from gpufleet.core.types import (
    ON_DEMAND,
    SPOT,
    FleetState,
    ForecastSummary,
    Observation,
    Plan,
    ReplicaState,
)


def replica_status(fleet: FleetState, desired: dict[str, int]) -> ReplicaStatus:
    def counts(capacity_class: str) -> ClassCounts:
        mine = [r for r in fleet.replicas if r.capacity_class == capacity_class and r.state != ReplicaState.draining]
        return ClassCounts(
            desired=desired.get(capacity_class, 0),
            ready=sum(1 for r in mine if r.ready_at is not None),
            starting=sum(1 for r in mine if r.state == ReplicaState.starting),
        )

    return ReplicaStatus(
        desired=sum(desired.values()),
        serving=fleet.count(ReplicaState.serving),
        standby=fleet.count(ReplicaState.standby),
        starting=fleet.count(ReplicaState.starting),
        on_demand=counts(ON_DEMAND),
        spot=counts(SPOT),
    )


def observed_status(obs: Observation) -> ObservedStatus:
    return ObservedStatus(
        queue_depth=obs.queue_depth,
        queue_time_ms=obs.queue_time_ms,
        ttft_p95_ms=obs.ttft_p95_ms,
        latency_p95_ms=obs.latency_p95_ms,
        request_rate=obs.request_rate,
        time=iso(obs.sampled_at) if obs.sampled_at is not None else None,
    )


def forecast_status(forecast: ForecastSummary | None) -> ForecastStatus:
    if forecast is None:
        return ForecastStatus(note="no forecast")
    return ForecastStatus(
        method=forecast.method,
        horizon_seconds=round(forecast.horizon_s, 1),
        mean_rps=round(forecast.mean_rps, 3),
        upper_rps=round(forecast.upper_rps, 3),
        note=forecast.note or None,
    )


def schedule_status(windows: tuple[Window, ...], now: float, default_lead_s: float) -> list[ScheduleStatus]:
    """Each schedule's open window and its next one, soonest first."""
    out = []
    for w in sorted(windows, key=lambda w: (w.start, w.name)):
        lead = w.lead_s if w.lead_s is not None else default_lead_s
        state = "Open" if w.start <= now < w.end else ("Provisioning" if now >= w.start - lead else "Upcoming")
        out.append(ScheduleStatus(name=w.name, state=state, opens=iso(w.start), closes=iso(w.end),
                                  provision_from=iso(w.start - lead)))
    return out


def decision_status(plan: Plan, now: float, applied: bool) -> DecisionStatus:
    return DecisionStatus(
        time=iso(now),
        desired=plan.serving,
        standby=plan.standby,
        on_demand=plan.on_demand,
        spot=plan.spot,
        reason=plan.reason,
        message=plan.message,
        applied=applied,
    )


def cost_per_hour(spec: InferenceServiceSpec, fleet: FleetState) -> float:
    """Every pod that holds a GPU costs money, whether serving, standby or still loading."""
    prices = {ON_DEMAND: spec.capacity.price_per_gpu_hour.on_demand, SPOT: spec.capacity.price_per_gpu_hour.spot}
    gpus = spec.capacity.gpus_per_replica
    return round(sum(prices.get(r.capacity_class, 0.0) * gpus for r in fleet.replicas), 4)


def set_condition(
    conditions: list[Condition],
    *,
    type: str,
    status: bool | None,
    reason: str,
    message: str,
    now: float,
    generation: int | None,
) -> list[Condition]:
    """Upsert one condition; lastTransitionTime moves only when the status flips."""
    value = "Unknown" if status is None else ("True" if status else "False")
    previous = next((c for c in conditions if c.type == type), None)
    since = previous.last_transition_time if previous and previous.status == value else iso(now)
    new = Condition(
        type=type, status=value, reason=reason, message=message,
        last_transition_time=since, observed_generation=generation,
    )
    return [c for c in conditions if c.type != type] + [new]


def ready_condition(fleet: FleetState, spec: InferenceServiceSpec) -> tuple[bool, str, str]:
    serving = fleet.count(ReplicaState.serving)
    floor = spec.replicas.min
    if serving >= max(floor, 1) or (floor == 0 and serving == 0):
        return True, "ServingAtFloor" if serving == floor else "Serving", f"{serving} replicas serving (min {floor})"
    starting = fleet.count(ReplicaState.starting)
    return False, "ReplicasStarting", f"{serving}/{floor} replicas serving, {starting} starting"


def degraded_condition(plan: Plan, fleet: FleetState) -> tuple[bool, str, str]:
    """Degraded: the fleet runs, but not as it would by choice (no metrics, no spot, notices)."""
    if plan.safe_mode:
        return True, "SafeMode", "metrics missing or stale: holding capacity, no scale-down"
    interrupted = sum(1 for r in fleet.replicas if r.interrupted)
    if interrupted:
        return True, "Interruption", f"{interrupted} replicas on nodes with an interruption notice"
    if fleet.spot_unavailable:
        return True, "SpotUnavailable", "spot pods Pending past their timeout: new capacity goes on-demand"
    return False, "AsPlanned", "no degradation"
