"""gpufleet's scaling policy: one pure decision from spec, observation, forecast and fleet.

    assess metrics (safe mode?) -> need per signal -> worst need -> stabilise (windows, steps)
    -> warm pool -> total within replicas.max -> on-demand/spot split -> promotions, retirements

The operator and the simulator both call `GpufleetPolicy.decide` through the control step, so
every benchmark number is this code. No clock, no I/O: `now` and everything else are arguments,
and the same arguments always give the same plan and memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpufleet.api.models import InferenceServiceSpec, Mode
from gpufleet.core import capacity, split, stabilize, warmpool
from gpufleet.core.capacity import Need
from gpufleet.core.fleet import FleetView
from gpufleet.core.safety import Health, assess
from gpufleet.core.types import (
    ON_DEMAND,
    SPOT,
    FleetState,
    ForecastSummary,
    Observation,
    Plan,
    PolicyMemory,
)

SAFE_MODE = "SafeMode"
STABILIZING = "Stabilizing"
SPOT_UNAVAILABLE = "SpotUnavailable"
INTERRUPTION = "Interruption"

REASONS = (
    capacity.QUEUE_DEPTH,
    capacity.LATENCY,
    capacity.FORECAST_LOAD,
    capacity.REQUEST_RATE,
    capacity.MIN_REPLICAS,
    capacity.MAX_REPLICAS,
    SAFE_MODE,
    STABILIZING,
    SPOT_UNAVAILABLE,
    INTERRUPTION,
)


def current_serving(view: FleetView, memory: PolicyMemory) -> int:
    """The size steps are measured from, like a Deployment's spec.replicas: the previous target.

    Not the Ready count: pods still starting for that target must not be asked for twice, and
    replicas an adapter has not demoted yet must not undo the previous scale-down. Without
    memory (first decision), what serves plus what is starting.
    """
    if memory.last_serving is not None:
        return memory.last_serving
    return view.serving + view.starting


def serving_target(
    spec: InferenceServiceSpec,
    health: Health,
    top: Need,
    current: int,
    serving_now: int,
    memory: PolicyMemory,
    now: float,
) -> tuple[int, stabilize.Stabilized, stabilize.Recommendations]:
    lo, hi = capacity.bounds(spec)
    # In safe mode the remembered recommendation is the held size, so the scale-down window
    # restarts when metrics come back instead of trusting the blind period.
    remembered = max(top.replicas, current) if health.safe_mode else top.replicas
    recs = stabilize.record(memory.recommendations, now, remembered, stabilize.retention_s(spec))
    st = stabilize.stabilize(
        spec,
        current=current,
        raw=top.replicas,
        recs=recs,
        now=now,
        last_scale_down_at=memory.last_scale_down_at,
        history_since=memory.started_at if memory.started_at is not None else now,
    )
    target = st.target
    if health.safe_mode:
        # Blind: shrink nothing, neither the previous target nor what serves right now.
        target = max(target, current, serving_now)
    return min(max(target, lo), hi), st, recs


def explain(
    *, health: Health, top: Need, st: stabilize.Stabilized, target: int, current: int, spec: InferenceServiceSpec
) -> tuple[str, str]:
    """Reason code and one human line for the serving decision."""
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


@dataclass(frozen=True)
class GpufleetPolicy:
    """The Policy protocol's gpufleet implementation (stateless: memory is passed in and out)."""

    name: str = "gpufleet"

    def decide(
        self,
        *,
        spec: InferenceServiceSpec,
        observation: Observation,
        forecast: ForecastSummary | None,
        fleet: FleetState,
        memory: PolicyMemory,
        now: float,
    ) -> tuple[Plan, PolicyMemory]:
        view = FleetView.of(fleet)
        health = assess(spec, observation, now)
        obs = health.observation
        forecast = forecast if spec.forecast.enabled else None
        # This step uses what was learned before it, so the need is monotone in this sample.
        rps = capacity.rps_per_replica(spec, memory.learned_rps_per_replica)
        seen = capacity.settle(
            view.serving_all, now, memory.serving_seen, memory.serving_seen_since, memory.settled_serving
        )
        needs = capacity.all_needs(spec, obs, forecast, rps, view.serving_all, seen.settled)
        top = capacity.worst(spec, needs)

        current = current_serving(view, memory)
        target, st, recs = serving_target(spec, health, top, current, view.serving, memory, now)
        reason, message = explain(health=health, top=top, st=st, target=target, current=current, spec=spec)

        # A need computed blind (safe mode) is not load: it must not register as a burst, neither
        # when metrics vanish nor when they come back.
        last_need = memory.last_need if health.safe_mode else top.replicas
        jump = top.replicas - memory.last_need if memory.last_need is not None and not health.safe_mode else 0
        burst = warmpool.decay_burst(
            memory.burst_replicas,
            jump,
            now - memory.last_decided_at if memory.last_decided_at is not None else 0.0,
        )
        pool = warmpool.pool_size(spec, serving=target, need=top.replicas, forecast=forecast, rps=rps, burst=burst)
        pool, standby_recs = warmpool.stabilize_pool(
            spec, pool, memory.standby_recommendations, now, max(0, spec.replicas.max - target)
        )
        total = target + pool.standby

        sp = split.make_before_break(spec, split.class_split(spec, total, fleet), view, total)
        if health.safe_mode:
            # Never reduce capacity without metrics: every healthy Ready replica stays.
            sp = split.keep_ready(sp, view, spec.replicas.max)
        od, spot = sp.on_demand, sp.spot

        # Retire first, then promote among the standbys that stay: a standby of a class being
        # shrunk must not be put into the Service only to be drained again.
        retire = split.retirements(fleet, {ON_DEMAND: od, SPOT: spot})
        leaving = frozenset(retire)
        staying = tuple(r for r in fleet.replicas if r.name not in leaving)
        promote = warmpool.promotions(staying, target - view.serving)

        if not health.safe_mode and view.interrupted:
            reason = INTERRUPTION
            message = (
                f"{view.interrupted} replica(s) on interrupted nodes: replacing "
                f"(promote {len(promote)}); {message}"
            )
        elif not health.safe_mode and st.how not in (stabilize.UP, stabilize.DOWN) and sp.note.startswith("spot unavailable"):
            reason = SPOT_UNAVAILABLE
        details = [pool.message, f"{od} on-demand + {spot} spot"]
        if sp.note:
            details.append(sp.note)
        plan = Plan(
            serving=target,
            standby=pool.standby,
            on_demand=od,
            spot=spot,
            reason=reason,
            message=f"{message}; {'; '.join(details)}",
            apply=spec.mode == Mode.active,
            safe_mode=health.safe_mode,
            promote=promote,
            retire=retire,
        )
        new_memory = PolicyMemory(
            recommendations=recs,
            standby_recommendations=standby_recs,
            last_scale_up_at=now if target > current else memory.last_scale_up_at,
            last_scale_down_at=now if target < current else memory.last_scale_down_at,
            learned_rps_per_replica=capacity.learn_rps(
                spec,
                obs,
                view.serving_all,
                memory.learned_rps_per_replica,
                latency_ok=not capacity.latency_needs(spec, obs, view.serving_all),
            ),
            started_at=memory.started_at if memory.started_at is not None else now,
            last_serving=target,
            last_decided_at=now,
            last_need=last_need,
            burst_replicas=burst,
            serving_seen=seen.serving_seen,
            serving_seen_since=seen.since,
            settled_serving=seen.settled,
        )
        return plan, new_memory
