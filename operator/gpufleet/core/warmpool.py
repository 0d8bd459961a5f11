"""Warm standbys: how many Ready, model-loaded replicas to hold out of rotation.

A standby joins the Service with a label flip (seconds) instead of a cold start (minutes), so the
pool should cover what the forecast cannot promise over the time-to-ready horizon (the spread
between its upper quantile and its mean) and the bursts seen recently. Serving always has
priority: the pool only gets what replicas.max leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.capacity import ceil_replicas
from gpufleet.core.types import ForecastSummary

# Recent rises in need are remembered with this half-life: about the next cold start or two.
# Longer memory pays for standbys through quiet periods without helping the SLO (measured on
# the Azure and Mooncake replays: 1800 s cost +23 % GPU-hours over 300 s at equal attainment).
BURST_HALF_LIFE_S = 300.0


# Rises in sustained need are also remembered relative to the need before them, with a half-life
# of a day: load steps recur (ServeGen's client windows jump +50-80 % several times an evening),
# and a pool that forgot yesterday's steps within minutes met every one of them with one standby.
JUMP_HALF_LIFE_S = 86400.0
# A rise is remembered as at most a doubling: beyond that the pool would be a second fleet.
MAX_JUMP_FRACTION = 1.0


@dataclass(frozen=True, slots=True)
class PoolSize:
    standby: int
    message: str


def horizon_s(spec: InferenceServiceSpec, time_to_ready_s: dict[str, float]) -> float:
    """A new replica's lead time: measured time-to-ready (slowest class) plus one interval.
    Need that rises faster than this can only be met from the pool."""
    return max(time_to_ready_s.values(), default=0.0) + spec.scaling.interval_seconds


def recent_rise(need: int, recs: tuple[tuple[float, int], ...], now: float, horizon: float, last: int | None) -> int:
    """How much the need rose within one lead time: now minus the lowest need seen since."""
    since = now - horizon
    seen = [v for t, v in recs if since <= t < now]
    if seen:
        return need - min(seen)
    return need - last if last is not None else 0


def decay_burst(burst: float, jump: int, dt: float) -> float:
    """Decaying maximum of recent rises in raw need (see `recent_rise`)."""
    decayed = burst * math.exp(-math.log(2.0) * max(dt, 0.0) / BURST_HALF_LIFE_S)
    return max(float(max(jump, 0)), decayed)


def rise_fraction(need: int, recs: tuple[tuple[float, int], ...], now: float, horizon: float) -> float:
    """How much the need rose within one lead time, relative to the lowest need seen since."""
    since = now - horizon
    seen = [v for t, v in recs if since <= t < now]
    if not seen:
        return 0.0
    base = min(seen)
    return min(max(need - base, 0) / max(base, 1), MAX_JUMP_FRACTION)


def decay_jump_fraction(fraction: float, rise: float, dt: float) -> float:
    """Decaying maximum of relative rises, with the long half-life (see JUMP_HALF_LIFE_S)."""
    decayed = fraction * math.exp(-math.log(2.0) * max(dt, 0.0) / JUMP_HALF_LIFE_S)
    return min(max(rise, decayed, 0.0), MAX_JUMP_FRACTION)


def forecast_spread(forecast: ForecastSummary | None, rps: float | None) -> float:
    """Replicas between the forecast's upper quantile and its mean over the horizon."""
    if forecast is None or rps is None:
        return 0.0
    spread = forecast.upper_rps - forecast.mean_rps
    return max(spread, 0.0) / rps if math.isfinite(spread) else 0.0


def pool_size(
    spec: InferenceServiceSpec,
    *,
    serving: int,
    need: int,
    forecast: ForecastSummary | None,
    rps: float | None,
    burst: float,
    jump: float = 0.0,
) -> PoolSize:
    """Standbys wanted. With `auto`, serving replicas held above the current need (scale-down
    stabilisation, forecast) already absorb that much surprise, so they count against the pool."""
    room = max(0, spec.replicas.max - serving)
    size = spec.warm_pool.size
    if size != "auto":
        n = min(size, room)
        note = "" if n == size else f" (capped by max replicas {spec.replicas.max})"
        return PoolSize(n, f"standby {n}{note}")
    spread = forecast_spread(forecast if spec.forecast.enabled else None, rps)
    headroom = max(0, serving - need)
    # The recurring step: the largest remembered relative rise, at today's fleet size.
    recurring = jump * need
    # At least one standby: 'auto' means the user wants a pool; its size follows uncertainty.
    wanted = max(1, ceil_replicas(max(spread, burst, recurring) - headroom))
    n = min(wanted, spec.warm_pool.max, room)
    return PoolSize(
        n,
        f"standby {n} (auto: forecast spread {spread:.1f}, burst {burst:.1f}, recurring step {recurring:.1f}, "
        f"headroom {headroom}, max {spec.warm_pool.max})",
    )


def stabilize_pool(
    spec: InferenceServiceSpec, pool: PoolSize, recs: tuple[tuple[float, int], ...], now: float, room: int
) -> tuple[PoolSize, tuple[tuple[float, int], ...]]:
    """Grow the pool at once, shrink it only to the largest size wanted over the scale-down
    window: a pool that follows every wiggle of the need destroys and re-creates warm replicas."""
    since = now - float(spec.scaling.scale_down.stabilization_seconds)
    kept = [tv for tv in recs if since <= tv[0] < now]  # (this runs at every decision)
    kept.append((now, pool.standby))
    recs = tuple(kept)
    held = min(max([v for _, v in kept]), room)
    if held > pool.standby:
        return PoolSize(held, f"{pool.message}, holding {held} (scale-down window)"), recs
    return pool, recs
