"""gpufleet's scaling policy: one pure decision from spec, observation, forecast and fleet.

    assess metrics (safe mode?) -> need per signal -> worst need -> stabilise (windows, steps)
    -> warm pool -> total within replicas.max -> on-demand/spot split -> promotions, retirements

The operator and the simulator both call `GpufleetPolicy.decide` through the control step, so
every benchmark number is this code. No clock, no I/O: `now` and everything else are arguments,
and the same arguments always give the same plan and memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from gpufleet.api.models import InferenceServiceSpec, Mode
from gpufleet.core import budget, capacity, rollout, schedule, split, stabilize, warmpool
from gpufleet.core.capacity import Need
from gpufleet.core.fleet import FleetView
from gpufleet.core.schedule import Window
from gpufleet.core.safety import Health, assess
from gpufleet.core.spotback import SpotBackoff, spot_backoff
from gpufleet.core.types import (
    ON_DEMAND,
    SPOT,
    FleetState,
    ForecastSummary,
    Observation,
    Plan,
    PolicyMemory,
)

if TYPE_CHECKING:
    from gpufleet.core.quota import Grant

SAFE_MODE = "SafeMode"
STABILIZING = "Stabilizing"
SPOT_UNAVAILABLE = "SpotUnavailable"
INTERRUPTION = "Interruption"

REASONS = (
    capacity.QUEUE_DEPTH,
    capacity.LATENCY,
    capacity.FORECAST_LOAD,
    capacity.REQUEST_RATE,
    capacity.KV_CACHE,
    capacity.GPU_UTILIZATION,
    capacity.MIN_REPLICAS,
    capacity.MAX_REPLICAS,
    SAFE_MODE,
    STABILIZING,
    SPOT_UNAVAILABLE,
    INTERRUPTION,
    budget.BUDGET,
    schedule.SCHEDULE,
)


def current_serving(view: FleetView, memory: PolicyMemory, units: int | None = None) -> int:
    """The size steps are measured from, like a Deployment's spec.replicas: the previous target.

    Not the Ready count: pods still starting for that target must not be asked for twice, and
    replicas an adapter has not demoted yet must not undo the previous scale-down. Without
    memory (first decision), what serves plus what is starting: `units`, those pods' capacity in
    reference replicas, where the service has capacity classes (a pod of a large class is several
    reference replicas; counting pods would understate the fleet and shrink it under its load).
    """
    if memory.last_serving is not None:
        return memory.last_serving
    if units is not None:
        return units
    return view.serving + view.starting


def serving_target(
    spec: InferenceServiceSpec,
    health: Health,
    top: Need,
    sustained: int,
    current: int,
    serving_now: int,
    time_to_ready_s: dict[str, float],
    memory: PolicyMemory,
    now: float,
    promotable: int = 0,
    backlog_recent: bool = False,
) -> tuple[int, stabilize.Stabilized, stabilize.Recommendations, stabilize.Recommendations]:
    lo, hi = capacity.bounds(spec)
    # In safe mode the remembered recommendation is the held size, so the scale-down window
    # restarts when metrics come back instead of trusting the blind period.
    remembered = max(top.replicas, current) if health.safe_mode else top.replicas
    remembered_sustained = max(sustained, current) if health.safe_mode else sustained
    keep = stabilize.retention_s(spec, warmpool.horizon_s(spec, time_to_ready_s))
    recs = stabilize.record(memory.recommendations, now, remembered, keep)
    # The warm pool learns recurring steps from this series (see plan_pool).
    held = stabilize.record(memory.sustained_recommendations, now, remembered_sustained, keep)
    st = stabilize.stabilize(
        spec,
        current=current,
        raw=top.replicas,
        recs=recs,
        now=now,
        last_scale_down_at=memory.last_scale_down_at,
        history_since=memory.started_at if memory.started_at is not None else now,
        promotable=promotable,
        backlog_recent=backlog_recent,
    )
    target = st.target
    if health.safe_mode:
        # Blind: shrink nothing, neither the previous target nor what serves right now.
        target = max(target, current, serving_now)
    return min(max(target, lo), hi), st, recs, held


def explain(
    *, health: Health, top: Need, st: stabilize.Stabilized, target: int, current: int, spec: InferenceServiceSpec
) -> tuple[str, str]:
    """Reason code and one human line for the serving decision."""
    lo, hi = capacity.bounds(spec)
    # Bounds changed under the fleet (spec edited): they apply at once, whatever the windows say.
    if target < current and (health.safe_mode or st.how != stabilize.DOWN) and target == hi:
        text = f"replicas.max is {hi}: serving {current} -> {target}"
        if health.safe_mode:
            return SAFE_MODE, f"safe mode ({', '.join(health.missing)}): no scale-down but {text}"
        return capacity.MAX_REPLICAS, f"{top.message}; {text}"
    if target > current and not health.safe_mode and st.how != stabilize.UP and target == lo:
        return capacity.MIN_REPLICAS, f"{top.message}; replicas.min is {lo}: serving {current} -> {target}"
    if health.safe_mode:
        what = ", ".join(health.missing)
        if target > current:
            return SAFE_MODE, f"safe mode ({what}): scale-up only; {top.message}; serving {current} -> {target}"
        return SAFE_MODE, f"safe mode ({what}): holding {target} serving, no scale-down"
    if st.how == stabilize.UP:
        step = "" if target >= st.window_value else f" (step-limited from {st.window_value})"
        return top.reason, f"{top.message}; serving {current} -> {target}{step}"
    if st.how == stabilize.DOWN:
        window = spec.scaling.scale_down.stabilization_seconds
        return top.reason, f"{top.message}; highest need over {window}s is {st.window_value}: serving {current} -> {target}"
    if st.how == stabilize.HOLD_UP_WINDOW:
        window = spec.scaling.scale_up.stabilization_seconds
        return STABILIZING, f"{top.message}; waiting for it to persist {window}s: holding {target}"
    if st.how == stabilize.HOLD_DOWN_WINDOW:
        window = spec.scaling.scale_down.stabilization_seconds
        return STABILIZING, f"{top.message}; need was {st.window_value} within {window}s: holding {target}"
    if st.how == stabilize.HOLD_HISTORY:
        window = spec.scaling.scale_down.stabilization_seconds
        return STABILIZING, f"{top.message}; no scale-down before {window}s of history: holding {target}"
    if st.how == stabilize.HOLD_COOLDOWN:
        return STABILIZING, f"{top.message}; scaled down under {spec.scaling.interval_seconds}s ago: holding {target}"
    return top.reason, f"{top.message}; holding {target}"


@dataclass(frozen=True, slots=True)
class Pool:
    size: warmpool.PoolSize
    recs: stabilize.Recommendations
    burst: float
    last_need: int | None
    jump_fraction: float


def plan_pool(
    spec: InferenceServiceSpec,
    *,
    health: Health,
    top: Need,
    sustained: int,
    target: int,
    forecast: ForecastSummary | None,
    rps: float | None,
    fleet: FleetState,
    memory: PolicyMemory,
    now: float,
) -> Pool:
    # A need computed blind (safe mode) is not load: it must not register as a burst, neither
    # when metrics vanish nor when they come back.
    blind = health.safe_mode
    lead = warmpool.horizon_s(spec, fleet.time_to_ready_s)
    jump = 0 if blind else warmpool.recent_rise(top.replicas, memory.recommendations, now, lead, memory.last_need)
    dt = now - memory.last_decided_at if memory.last_decided_at is not None else 0.0
    burst = warmpool.decay_burst(memory.burst_replicas, jump, dt)
    # Recurring steps are learned from the sustained need (a backlog's drain capacity is not a
    # step in load), and only once a full scale-down window of history exists: the first minutes
    # after a start, while rate windows fill, look like a jump from nothing.
    started = memory.started_at if memory.started_at is not None else now
    learning = not blind and now - started >= spec.scaling.scale_down.stabilization_seconds
    rise = warmpool.rise_fraction(sustained, memory.sustained_recommendations, now, lead) if learning else 0.0
    fraction = warmpool.decay_jump_fraction(memory.jump_fraction, rise, dt)
    size = warmpool.pool_size(
        spec, serving=target, need=top.replicas, forecast=forecast, rps=rps, burst=burst, jump=fraction
    )
    size, recs = warmpool.stabilize_pool(
        spec, size, memory.standby_recommendations, now, max(0, spec.replicas.max - target)
    )
    return Pool(size, recs, burst, memory.last_need if blind else top.replicas, fraction)


def lift_to_schedule(
    sched: schedule.Scheduled, *, target: int, load: int, current: int, hi: int, reason: str, message: str
) -> tuple[int, str, str]:
    """A planned window's floor applies at once, like replicas.min (it is not a load signal to
    stabilise); the reason names the schedule when it is what holds the target above the load."""
    lifted = min(max(target, sched.floor), hi)
    if sched.need is None or lifted > sched.floor or load >= lifted:
        return lifted, reason, message
    move = f"serving {current} -> {lifted}" if lifted != current else f"holding {lifted}"
    return lifted, schedule.SCHEDULE, f"{sched.need.message}; {move} (load alone: {message})"


def plan_classes(
    spec: InferenceServiceSpec, *, health: Health, spot: SpotBackoff, view: FleetView, total: int
) -> split.Split:
    """Healthy replicas wanted per class (interrupted ones are extra, see `decide`)."""
    base = split.class_split(spec, total, spot.unavailable, view.ready_by_class[SPOT], spot.note)
    sp = split.make_before_break(spec, base, view, total)
    if health.safe_mode:
        # Never reduce capacity without metrics: every healthy Ready replica stays.
        sp = split.keep_ready(sp, view, spec.replicas.max)
    return sp


def final_reason(
    *, reason: str, message: str, health: Health, st: stabilize.Stabilized, view: FleetView, sp: split.Split,
    promote: tuple[str, ...], replacing: int,
) -> tuple[str, str]:
    """Interruptions and a spot outage outrank the load signal when they are what moves."""
    if health.safe_mode:
        return reason, message
    if view.interrupted:
        return INTERRUPTION, (
            f"{view.interrupted} replica(s) on interrupted nodes: replacing at once "
            f"(promote {len(promote)}, start {replacing}); {message}"
        )
    if st.how not in (stabilize.UP, stabilize.DOWN) and sp.note.startswith("spot unavailable"):
        return SPOT_UNAVAILABLE, message
    return reason, message


@dataclass(frozen=True, slots=True)
class GpufleetPolicy:
    """The Policy protocol's gpufleet implementation (stateless: memory is passed in and out)."""

    name: str = "gpufleet"
    # control.quota passes a GPUQuota's grant to a class-mixed service's decision (`quota=`).
    takes_quota_grant: ClassVar[bool] = True

    def decide(
        self,
        *,
        spec: InferenceServiceSpec,
        observation: Observation,
        forecast: ForecastSummary | None,
        fleet: FleetState,
        memory: PolicyMemory,
        now: float,
        windows: tuple[Window, ...] = (),
        quota: Grant | None = None,
    ) -> tuple[Plan, PolicyMemory]:
        """`quota`: a GPUQuota's grant to a service with capacity classes (control.quota): its
        capacity in reference replicas caps the plan, and its limits per capped dimension keep
        the mix's classes within what the quota leaves the service. Ignored without classes."""
        view = FleetView.of(fleet)
        health = assess(spec, observation, now)
        obs = health.observation
        forecast = forecast if spec.forecast.enabled else None

        # 1. Need per signal. This step uses what was learned before it, so the need is
        #    monotone in this sample.
        rps = capacity.rps_per_replica(spec, memory.learned_rps_per_replica)
        seen = capacity.settle(
            view.serving_all, now, memory.serving_seen, memory.serving_seen_since, memory.settled_serving
        )
        # A backlog seen by an earlier decision within the latency window (not this sample's own,
        # which would make the need fall as the queue crosses its target).
        echo = memory.backlog_at is not None and 0 <= now - memory.backlog_at <= capacity.LATENCY_SETTLE_S
        needs = capacity.all_needs(
            spec, obs, forecast, rps, view.serving_all, seen.settled, memory.last_queue,
            now=now, backlog_recent=echo, standby=view.standby,
        )
        top = capacity.worst(spec, needs)
        backlog_at = now if capacity.backlog(spec, obs, view.serving_all) else memory.backlog_at
        recent = backlog_at is not None and 0 <= now - backlog_at <= capacity.LATENCY_SETTLE_S
        sustained = min(capacity.sustained_need(needs, backlog_recent=recent), top.replicas)
        # Planned windows in effect (open, or opening within their lead): a floor on serving.
        lead = schedule.default_lead_s(fleet.time_to_ready_s, spec.scaling.interval_seconds)
        active = schedule.in_effect(windows, now, lead)
        refs = schedule.references(
            active, memory.schedule_refs,
            schedule.load_reference(obs.request_rate, rps, needs, blind=health.safe_mode),
        )
        sched = schedule.scheduled(active, refs, now=now, hi=spec.replicas.max)

        # 2. Serving target: stabilised, stepped, safe.
        units = None
        if spec.capacity.classes is not None and memory.last_serving is None:
            from gpufleet.core import mix

            units = mix.reference_units(spec, fleet, rps, dict(memory.learned_class_rps))
        current = current_serving(view, memory, units)
        target, st, recs, held = serving_target(
            spec, health, top, sustained, current, view.serving, fleet.time_to_ready_s, memory, now, view.standby,
            backlog_recent=recent,
        )
        reason, message = explain(health=health, top=top, st=st, target=target, current=current, spec=spec)
        target, reason, message = lift_to_schedule(
            sched, target=target, load=top.replicas, current=current, hi=spec.replicas.max, reason=reason,
            message=message,
        )

        # 3. Warm pool, then classes for serving + standby (serving has priority within max).
        pool = plan_pool(
            spec, health=health, top=top, sustained=sustained, target=target, forecast=forecast, rps=rps,
            fleet=fleet, memory=memory, now=now,
        )
        backoff = spot_backoff(
            spec,
            # A reclaim notice means the spot pool is shrinking: replacements go on-demand, until
            # no spot pod is left on a noticed node (draining ones too: else spot "returned" onto
            # the draining pods themselves and their Deployment never let them go).
            # (view.noticed: the pods are scanned only when one has a notice.)
            raw_unavailable=fleet.spot_unavailable or (view.noticed and any(
                r.interrupted and r.capacity_class == SPOT for r in fleet.replicas)),
            retry_at=memory.spot_retry_at,
            backoff_s=memory.spot_backoff_s,
            outage_at=memory.spot_outage_at,
            now=now,
        )
        sp = plan_classes(spec, health=health, spot=backoff, view=view, total=target + pool.size.standby)

        # 4. Who goes and who joins. Retire first, then promote among the standbys that stay: a
        #    standby of a class being shrunk must not enter the Service only to be drained again.
        retire = rollout.retirements(fleet, {ON_DEMAND: sp.on_demand, SPOT: sp.spot})
        leaving = frozenset(retire)
        wanted = target - view.serving
        # The standbys that stay are listed only when some are wanted (promotions returns () else).
        promote = rollout.promotions(
            fleet.replicas if not leaving else tuple(r for r in fleet.replicas if r.name not in leaving), wanted
        ) if wanted > 0 else ()

        # 5. Interrupted replicas are still in their Deployments until their node goes: the class
        #    counts (Deployment sizes) include them, so their replacements start now, not after
        #    the reclaim. They are first in `retire`, to be drained within the notice.
        # (No pod to count when the view saw none interrupted: they are counted the same way.)
        interrupted = split.interrupted_by_class(fleet) if view.interrupted else {ON_DEMAND: 0, SPOT: 0}
        od = sp.on_demand + interrupted[ON_DEMAND]
        spot = sp.spot + interrupted[SPOT]
        replacing = max(0, sp.on_demand + sp.spot - view.healthy_total)
        reason, message = final_reason(
            reason=reason, message=message, health=health, st=st, view=view, sp=sp, promote=promote,
            replacing=replacing,
        )
        details = [pool.size.message, f"{sp.on_demand} on-demand + {sp.spot} spot"]
        if view.interrupted:
            details.append(f"+ {view.interrupted} interrupted until drained")
        if sp.note:
            details.append(sp.note)
        plan = Plan(
            serving=target,
            standby=pool.size.standby,
            on_demand=od,
            spot=spot,
            reason=reason,
            message=f"{message}; {'; '.join(details)}",
            apply=spec.mode == Mode.active,
            safe_mode=health.safe_mode,
            promote=promote,
            retire=retire,
            interrupted=tuple(interrupted.items()),
        )
        latency_ok = not capacity.latency_needs(spec, obs, view.serving_all)
        new_memory = PolicyMemory(
            recommendations=recs,
            standby_recommendations=pool.recs,
            last_scale_up_at=now if target > current else memory.last_scale_up_at,
            last_scale_down_at=now if target < current else memory.last_scale_down_at,
            learned_rps_per_replica=capacity.learn_rps(
                spec,
                obs,
                view.serving_all,
                memory.learned_rps_per_replica,
                latency_ok=latency_ok,
            ),
            learned_class_rps=memory.learned_class_rps,  # core.mix learns them from this sample
            started_at=memory.started_at if memory.started_at is not None else now,
            last_serving=target,
            last_decided_at=now,
            last_need=pool.last_need,
            burst_replicas=pool.burst,
            sustained_recommendations=held,
            last_queue=(
                (obs.queue_depth, obs.sampled_at)
                if obs.queue_depth is not None and obs.sampled_at is not None
                else None
            ),
            jump_fraction=pool.jump_fraction,
            backlog_at=backlog_at,
            spot_retry_at=backoff.retry_at,
            spot_backoff_s=backoff.backoff_s,
            spot_outage_at=backoff.outage_at,
            serving_seen=seen.serving_seen,
            serving_seen_since=seen.since,
            settled_serving=seen.settled,
            schedule_refs=sched.refs,
        )
        # 6. Budget: it caps what the load asked for (standbys, then spot, then serving).
        if spec.capacity.classes is None:
            plan, new_memory = budget.enforce(spec, plan, new_memory, fleet=fleet, previous=memory, now=now,
                                              spot_unavailable=backoff.unavailable, floor=sched.floor)
            return plan, new_memory
        # 7. spec.capacity.classes: that fleet as the cheapest replicas per class (core.mix, and
        #    through it scipy, loaded only then: the two-class form's decisions load nothing more).
        #    The budget prices it at its classes' own prices; a quota's grant caps its capacity
        #    and, per capped dimension (a GPU product's pool), the classes the mix may use.
        from gpufleet.core import mix
        from gpufleet.core import quota as quotas

        cost = mix.cost_of(spec, memory, fleet=fleet, planned_rps=rps, now=now, previous=memory.class_availability,
                           grant=quota)
        plan, new_memory = budget.enforce(spec, plan, new_memory, fleet=fleet, previous=memory, now=now,
                                          spot_unavailable=backoff.unavailable, floor=sched.floor, cost=cost)
        if quota is not None:
            plan, new_memory = quotas.limit_plan(spec, plan, new_memory, fleet, quota.replicas, reason=quotas.LIMITED,
                                                 message=quota.message)
        return mix.apply_mix(spec, plan, new_memory, fleet=fleet, planned_rps=rps, now=now,
                             previous=memory.class_availability, observation=obs, latency_ok=latency_ok, grant=quota)
