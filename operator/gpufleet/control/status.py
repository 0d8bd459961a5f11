"""Render the InferenceService status from one step's values (pure), and tell which of its
fields a reader acts on (`material`: what decides whether a status is worth a write)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpufleet.api.models import (
    ClassCounts,
    ClassStatus,
    Condition,
    DecisionStatus,
    ForecastStatus,
    InferenceServiceSpec,
    InferenceServiceStatus,
    Mode,
    ObservedStatus,
    ReplicaStatus,
    ScheduleStatus,
    ShadowStatus,
    read_status,
)
from gpufleet.api.timefmt import iso
from gpufleet.control import metering
from gpufleet.control.accounting import Accounting
from gpufleet.control.step import StepResult
from gpufleet.core.budget import cost_rate, fleet_rate
from gpufleet.core.schedule import Window, default_lead_s
from gpufleet.core.types import (
    ON_DEMAND,
    SPOT,
    FleetState,
    ForecastSummary,
    Observation,
    Plan,
    ReplicaState,
)


@dataclass(frozen=True)
class TargetReading:
    """What shadow mode read of its target (spec.targetRef) this tick: adapters.shadow reads it,
    the status and Events report it."""

    target: str  # "Deployment/web"
    found: bool
    replicas: int | None = None  # the Deployment's spec.replicas (what its autoscaler set)
    message: str = ""  # why it could not be read (not found, no selector)
    autoscalers: tuple[str, ...] = ()  # HPAs / ScaledObjects that target it


def shadow_status(spec: InferenceServiceSpec, plan: Plan, fleet: FleetState, reading: TargetReading) -> ShadowStatus:
    """Recommended against actual: what gpufleet would run beside what the target runs."""
    ready = sum(1 for r in fleet.replicas if r.ready_at is not None and r.state != ReplicaState.draining)
    if not reading.found:
        message = reading.message
    else:
        would = f"would run {plan.total} ({plan.serving} serving, {plan.standby} standby)"
        runs = f"{reading.target} runs {reading.replicas} ({ready} Ready)"
        verdict = ("agrees" if plan.total == reading.replicas else
                   "more" if plan.total > (reading.replicas or 0) else "fewer")
        message = f"{would}; {runs}: {verdict} ({plan.reason})"
    return ShadowStatus(
        target=reading.target, found=reading.found, actual_replicas=reading.replicas, ready_replicas=ready,
        recommended_replicas=plan.total, recommended_serving=plan.serving, recommended_standby=plan.standby,
        actual_cost_per_hour=cost_per_hour(spec, fleet) if reading.found else None,
        recommended_cost_per_hour=round(cost_rate(spec, plan.on_demand, plan.spot), 4),
        autoscalers=list(reading.autoscalers), message=message[:1000])


def replica_status(fleet: FleetState, desired: dict[str, int], plan: Plan | None = None) -> ReplicaStatus:
    """Pods per class. With spec.capacity.classes (`plan.classes`), one entry per class, and the
    onDemand/spot counts sum the classes that are not spot / that are."""
    def counts(*classes: str) -> ClassCounts:
        mine = [r for r in fleet.replicas if r.capacity_class in classes and r.state != ReplicaState.draining]
        return ClassCounts(
            desired=sum(desired.get(c, 0) for c in classes),
            ready=sum(1 for r in mine if r.ready_at is not None),
            starting=sum(1 for r in mine if r.state == ReplicaState.starting),
        )

    per_class = None
    od: tuple[str, ...] = (ON_DEMAND,)
    sp: tuple[str, ...] = (SPOT,)
    if plan is not None and plan.classes is not None:
        per_class = [ClassStatus(**counts(c.name).model_dump(), name=c.name, spot=c.spot,
                                 price_per_replica_hour=round(c.price_per_hour, 4),
                                 rps_per_replica=round(c.rps_per_replica, 4),
                                 learned_rps_per_replica=(round(c.learned_rps_per_replica, 4)
                                                          if c.learned_rps_per_replica is not None else None),
                                 state=c.state, reason=c.reason[:300])
                     for c in plan.classes]
        od = tuple(c.name for c in plan.classes if not c.spot)
        sp = tuple(c.name for c in plan.classes if c.spot)
    return ReplicaStatus(
        desired=sum(desired.values()),
        serving=fleet.count(ReplicaState.serving),
        standby=fleet.count(ReplicaState.standby),
        starting=fleet.count(ReplicaState.starting),
        on_demand=counts(*od),
        spot=counts(*sp),
        classes=per_class,
    )


def observed_status(obs: Observation) -> ObservedStatus:
    return ObservedStatus(
        queue_depth=obs.queue_depth,
        queue_time_ms=obs.queue_time_ms,
        ttft_p95_ms=obs.ttft_p95_ms,
        latency_p95_ms=obs.latency_p95_ms,
        latency_mean_ms=obs.latency_mean_ms,
        itl_p95_ms=obs.itl_p95_ms,
        kv_cache_utilization=obs.kv_cache_utilization,
        gpu_utilization=obs.gpu_utilization,
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
        on_demand=plan.on_demand if plan.classes is None else sum(c.replicas for c in plan.classes if not c.spot),
        spot=plan.spot if plan.classes is None else sum(c.replicas for c in plan.classes if c.spot),
        reason=plan.reason,
        message=plan.message,
        applied=applied,
    )


def cost_per_hour(spec: InferenceServiceSpec, fleet: FleetState) -> float:
    """Every pod that holds a GPU costs money, whether serving, standby or still loading, at its
    class's price (spec.capacity.classes: each class's own)."""
    return round(fleet_rate(spec, fleet), 4)


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


def degraded_condition(plan: Plan, fleet: FleetState, autoscalers: Sequence[str] = ()) -> tuple[bool, str, str]:
    """Degraded: the fleet runs, but not as it would by choice (another autoscaler on its
    Deployments, no metrics, no spot, notices)."""
    if autoscalers:
        return True, "AutoscalerConflict", (
            "; ".join(autoscalers) + ": it and gpufleet would both set the replicas (remove it)")[:1000]
    if plan.safe_mode:
        return True, "SafeMode", "metrics missing or stale: holding capacity, no scale-down"
    interrupted = sum(1 for r in fleet.replicas if r.interrupted)
    if interrupted:
        return True, "Interruption", f"{interrupted} replicas on nodes with an interruption notice"
    if fleet.spot_unavailable:
        return True, "SpotUnavailable", "spot pods Pending past their timeout: new capacity goes on-demand"
    return False, "AsPlanned", "no degradation"


def render_status(status: Mapping[str, Any], generation: int | None, spec: InferenceServiceSpec,
                  result: StepResult, now: float, *, metrics_ok: bool, metrics_note: str,
                  accounting: Accounting | None = None, reconciled: int | None = None,
                  conflicts: Sequence[str] = (), autoscalers: Sequence[str] = (),
                  rejected: Sequence[str] = (), shadow: TargetReading | None = None) -> dict[str, Any]:
    """The status this tick's result calls for (from the previous one), as the API server stores it.

    `generation` is the spec's the tick decided under (the conditions' observedGeneration);
    `reconciled` is the generation whose children were last applied: status.observedGeneration
    says that one, never more (None: not known to this process, the status's value is kept).
    `conflicts`: objects of a child's name the service does not own (Ready=False, Conflict);
    `rejected`: children the API server refused as invalid (Ready=False, InvalidSpec);
    `autoscalers`: HPAs or ScaledObjects aimed at its Deployments (Degraded, AutoscalerConflict);
    `shadow`: what shadow mode read of spec.targetRef (status.shadow; Ready says whether it is read)."""
    old = read_status(status)
    fresh = result.fleet
    desired = {c: result.plan.by_class(c) for c in result.plan.class_names()}
    conditions: list[Condition] = old.conditions
    ready, reason, message = ready_condition(fresh, spec)
    if shadow is not None:
        ready, reason = shadow.found, "Shadowing" if shadow.found else "TargetUnavailable"
        message = (f"watching {shadow.target} (mode: recommend): nothing is created or changed"
                   if shadow.found else shadow.message)
    elif spec.mode == Mode.recommend and not ready:
        # Nothing will start: recommend creates and scales nothing. As asked, so not a wait.
        ready, reason = True, "Recommending"
        message = f"mode: recommend without targetRef: nothing is created or scaled ({message})"
    if conflicts:
        ready, reason, message = False, "Conflict", "; ".join(conflicts)[:1000]
    if rejected:
        ready, reason, message = False, "InvalidSpec", "; ".join(rejected)[:1000]
    conditions = set_condition(conditions, type="Ready", status=ready, reason=reason,
                               message=message, now=now, generation=generation)
    conditions = set_condition(
        conditions, type="MetricsAvailable", status=metrics_ok,
        reason="MetricsOK" if metrics_ok else "MetricsUnavailable",
        message=metrics_note[:1000],
        now=now, generation=generation)
    live = [r for r in fresh.replicas if r.state != ReplicaState.draining]
    scaling = result.plan.total != len(live) or fresh.count(ReplicaState.starting) > 0
    if shadow is not None:  # the target scales by its own autoscaler: only its pods starting count
        scaling = fresh.count(ReplicaState.starting) > 0
    conditions = set_condition(
        conditions, type="Scaling", status=scaling, reason=result.plan.reason, message=result.plan.message,
        now=now, generation=generation)
    degraded, reason, message = degraded_condition(result.plan, fresh, autoscalers)
    conditions = set_condition(conditions, type="Degraded", status=degraded, reason=reason,
                               message=message, now=now, generation=generation)
    budget_status, budget_condition = accounting.judge(spec, result.plan) if accounting else (None, None)
    if budget_condition is not None:
        conditions = set_condition(
            conditions, type="BudgetExceeded", status=budget_condition.status, reason=budget_condition.reason,
            message=budget_condition.message[:1000], now=now, generation=generation)
    else:
        conditions = [c for c in conditions if c.type != "BudgetExceeded"]
    observed = old.observed_generation if reconciled is None else reconciled
    new = InferenceServiceStatus(
        observed_generation=observed,
        conditions=conditions,
        replicas=replica_status(fresh, desired, result.plan),
        observed=observed_status(result.observation),
        forecast=forecast_status(result.forecast),
        last_decision=decision_status(result.plan, now, result.applied),
        time_to_ready_seconds={k: round(v, 1) for k, v in fresh.time_to_ready_s.items()},
        cost_per_hour=cost_per_hour(spec, fresh),
        usage=metering.rounded(accounting.usage) if accounting and accounting.usage else old.usage,
        budget=budget_status,
        shadow=shadow_status(spec, result.plan, fresh, shadow) if shadow is not None else None,
        schedules=schedule_status(
            result.windows, now, default_lead_s(fresh.time_to_ready_s, spec.scaling.interval_seconds)),
    )
    return new.model_dump(by_alias=True, exclude_none=True)


def finite(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """`value` with every NaN and Infinity taken out, and where they were. JSON has no such
    numbers (Python's encoder writes `Infinity`, which the API server rejects, every tick): in an
    object the field becomes None (a merge patch removes it), in a list the item goes."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, [path]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        bad: list[str] = []
        for k, v in value.items():
            out[k], where = finite(v, f"{path}.{k}" if path else str(k))
            bad += where
        return out, bad
    if isinstance(value, list):
        items: list[Any] = []
        bad = []
        for i, v in enumerate(value):
            clean, where = finite(v, f"{path}[{i}]")
            if where and clean is None:
                bad += where
                continue
            items.append(clean)
            bad += where
        return items, bad
    return value, []


# Status fields that change on every tick without meaning a change: written with the next
# material change or once per heartbeat.
VOLATILE = ("observed", "forecast", "usage", "memory")
# Which signal is the binding one (QueueDepth, RequestRate, ForecastLoad, ...) and the one-line
# explanation with its numbers move while the fleet holds still; the sizes decided do not.
DECISION_COUNTS = ("desired", "standby", "onDemand", "spot", "applied")
SHADOW_COUNTS = ("target", "found", "actualReplicas", "readyReplicas", "recommendedReplicas",
                 "recommendedServing", "recommendedStandby", "autoscalers")


def material(status: Mapping[str, Any]) -> dict[str, Any]:
    """What a reader acts on: sizes, conditions' states and reasons (the Scaling condition's
    reason is the decision's, so only its state counts), windows, budget, generation."""
    out = {k: v for k, v in status.items() if k not in VOLATILE}
    if "lastDecision" in out:
        out["lastDecision"] = {k: v for k, v in out["lastDecision"].items() if k in DECISION_COUNTS}
    if "shadow" in out:  # its one-line message names the binding signal, which moves every tick
        out["shadow"] = {k: v for k, v in out["shadow"].items() if k in SHADOW_COUNTS}
    if "conditions" in out:
        out["conditions"] = [
            {"type": c.get("type"), "status": c.get("status"),
             **({} if c.get("type") == "Scaling" else {"reason": c.get("reason")})}
            for c in out["conditions"]]
    return out
