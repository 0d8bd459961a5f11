"""Spot fallback with hysteresis: leave spot at once, come back slowly.

The fleet reports spot unavailable while a spot pod is Pending past its timeout. Falling back
retires those Pending pods, so the raw signal clears a moment later; following it would send the
next replicas straight back to spot, Pending again: ping-pong. So after an outage the plan stays
on on-demand for capacity.spot.returnAfterSeconds, doubling after each outage that follows a
return within the hour (up to 8x), and starting over after an hour without one.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpufleet.api.models import InferenceServiceSpec

MAX_FACTOR = 8.0
QUIET_S = 3600.0  # an hour without an outage: spot is considered back to normal


@dataclass(frozen=True, slots=True)
class SpotBackoff:
    unavailable: bool  # what the plan assumes (raw signal or still backing off)
    retry_at: float | None
    backoff_s: float
    outage_at: float | None
    note: str


def spot_backoff(
    spec: InferenceServiceSpec,
    *,
    raw_unavailable: bool,
    retry_at: float | None,
    backoff_s: float,
    outage_at: float | None,
    now: float,
) -> SpotBackoff:
    return backoff(float(spec.capacity.spot.return_after_seconds), raw_unavailable=raw_unavailable,
                   retry_at=retry_at, backoff_s=backoff_s, outage_at=outage_at, now=now, what="spot")


def backoff(
    base: float,
    *,
    raw_unavailable: bool,
    retry_at: float | None,
    backoff_s: float,
    outage_at: float | None,
    now: float,
    what: str = "spot",
) -> SpotBackoff:
    """The hysteresis of any capacity class (spot, or a GPU type in core.classes): `base` seconds
    after an outage, doubling for an outage within QUIET_S of the last (up to MAX_FACTOR x)."""
    if raw_unavailable:
        backing_off = retry_at is not None and now < retry_at
        if backing_off:
            wait = backoff_s
        else:
            # A new outage: right after a return it means spot is still scarce, so wait longer.
            recent = outage_at is not None and now - outage_at < QUIET_S
            wait = min(max(backoff_s * 2, base), base * MAX_FACTOR) if recent else base
        return SpotBackoff(True, now + wait, wait, now, "")
    if retry_at is not None and now < retry_at:
        return SpotBackoff(
            True, retry_at, backoff_s, outage_at, f"back to {what} in {retry_at - now:.0f}s (backoff {backoff_s:.0f}s)"
        )
    return SpotBackoff(False, retry_at, backoff_s, outage_at, "")
