"""Scale up fast, scale down slowly: stabilisation windows, step limits and the down cooldown.

The algorithm is the HPA v2 behaviour, on the serving count:
  * every raw recommendation is remembered with its time;
  * scaling up goes to the *lowest* recommendation over the scale-up window (0 s: at once), so a
    higher need must persist that long; the step is bounded by max(percent, replicas);
  * scaling down goes to the *highest* recommendation over the scale-down window, so one quiet
    sample among busy ones changes nothing, and removes at most maxStepPercent (>= 1) per step;
  * two scale-downs are at least one interval apart, however often the policy is called;
  * no scale-down before the policy has a full scale-down window of history (after a restart).
Under noise around a level, the up path follows the peaks and the down path waits for the whole
window to be quiet: the count moves up at most once per new peak and never oscillates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpufleet.api.models import InferenceServiceSpec

Recommendations = tuple[tuple[float, int], ...]

UP = "up"
DOWN = "down"
HOLD = "hold"  # raw need equals current
HOLD_UP_WINDOW = "hold-up-window"  # a higher need has not persisted for the scale-up window yet
HOLD_DOWN_WINDOW = "hold-down-window"  # a higher need was seen within the scale-down window
HOLD_COOLDOWN = "hold-cooldown"  # scaled down less than one interval ago
HOLD_HISTORY = "hold-history"  # less history than the scale-down window (e.g. just restarted)


@dataclass(frozen=True, slots=True)
class Stabilized:
    target: int
    how: str  # UP, DOWN or one of the HOLD_* values
    window_value: int  # the recommendation the window produced (before the step limit)


# After a backlog the scale-down window is at least this long: the request rate is a 1-minute
# rate, so for a minute after a surge it still averages the load before it, and a shorter window
# let it retire replicas the load still needed (a 20 s window took 8 serving to 3 at 400 rps; see
# the warm-pool test). core.capacity.LATENCY_SETTLE_S is the same minute for the percentiles.
AFTER_BACKLOG_S = 60.0


def retention_s(spec: InferenceServiceSpec, also_s: float = 0.0) -> float:
    """How long recommendations are kept: the longest window (AFTER_BACKLOG_S at least), or
    `also_s` (the burst window)."""
    up = spec.scaling.scale_up.stabilization_seconds
    down = spec.scaling.scale_down.stabilization_seconds
    return float(max(up, down, also_s, AFTER_BACKLOG_S))


def record(recs: Recommendations, now: float, value: int, keep_s: float) -> Recommendations:
    """Append (now, value) and forget what no window can see any more.

    Entries from the future (a caller's clock went back) are dropped so they cannot pin the fleet.
    """
    # Entries are kept as they are (no re-packing): this runs twice per decision.
    oldest = now - keep_s
    kept = [tv for tv in recs if oldest <= tv[0] < now]
    kept.append((now, value))
    return tuple(kept)


def window(recs: Recommendations, now: float, seconds: float) -> list[int]:
    since = now - seconds
    return [v for t, v in recs if since <= t <= now]


def max_up_step(spec: InferenceServiceSpec, current: int) -> int:
    up = spec.scaling.scale_up
    return max(math.ceil(current * up.max_step_percent / 100), up.max_step_replicas)


def max_down_step(spec: InferenceServiceSpec, current: int) -> int:
    return max(1, math.floor(current * spec.scaling.scale_down.max_step_percent / 100))


def stabilize(
    spec: InferenceServiceSpec,
    *,
    current: int,
    raw: int,
    recs: Recommendations,
    now: float,
    last_scale_down_at: float | None,
    history_since: float,
    promotable: int = 0,
    backlog_recent: bool = False,
) -> Stabilized:
    """The serving target for this step. `recs` already holds (now, raw-or-held).

    `promotable` Ready standbys may join in this one step whatever the step limit says: the limit
    paces cold starts (capacity bought on a guess), while a standby is already paid for and its
    promotion is undone by a demotion, not by a drain. A step that needs the whole pool gets it
    in one tick, not one max-step per tick. `backlog_recent`: a backlog was seen within
    AFTER_BACKLOG_S, so the scale-down window spans that much at least."""
    down_s = float(spec.scaling.scale_down.stabilization_seconds)
    if backlog_recent:
        down_s = max(down_s, AFTER_BACKLOG_S)
    up_vals = window(recs, now, spec.scaling.scale_up.stabilization_seconds) or [raw]
    down_vals = window(recs, now, down_s) or [raw]
    up_rec = min(up_vals)
    down_rec = max(down_vals)
    if up_rec > current:
        step = max(max_up_step(spec, current), max(promotable, 0))
        return Stabilized(min(up_rec, current + step), UP, up_rec)
    if raw > current:
        return Stabilized(current, HOLD_UP_WINDOW, up_rec)
    if down_rec < current:
        if now - history_since < spec.scaling.scale_down.stabilization_seconds:
            return Stabilized(current, HOLD_HISTORY, down_rec)
        if last_scale_down_at is not None and now - last_scale_down_at < spec.scaling.interval_seconds:
            return Stabilized(current, HOLD_COOLDOWN, down_rec)
        return Stabilized(max(down_rec, current - max_down_step(spec, current)), DOWN, down_rec)
    if raw < current:
        return Stabilized(current, HOLD_DOWN_WINDOW, down_rec)
    return Stabilized(current, HOLD, raw)
