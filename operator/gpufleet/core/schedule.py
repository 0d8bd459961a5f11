"""Planned events: windows that raise the floor or scale the expected load, decided purely.

The calendar work (cron, time zones, DST) happens outside the core, in `gpufleet.control.schedule`,
which resolves `spec.schedules` into plain `Window` values (unix seconds) around `now`: the core
forbids datetime and I/O (zoneinfo reads tz files), and numbers are all a decision needs.

A window is *in effect* from `start - lead` to `end`: the lead (default: measured time-to-ready
plus two intervals) lets the capacity be Ready when the
window opens (see `default_lead_s`). While in effect:
  * `minReplicas` lifts the floor: serving >= max(replicas.min, minReplicas), capped at
    replicas.max, applied at once like replicas.min (a floor is not a load signal to stabilise);
  * `loadMultiplier` provisions for that multiple of the load seen when the window came into
    effect (its *reference*, kept in PolicyMemory). Not of the live load: once the event's
    traffic arrives the live rate already contains it, and multiplying it again would ask for
    mult^2 times the usual fleet. Demand above mult x reference is followed by the usual signals.
Overlapping windows take the highest floor and the highest multiplied need. Nothing here ever
lowers a need: without windows in effect the decision is exactly the unscheduled one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpufleet.core.capacity import MIN_REPLICAS, Need, ceil_replicas

SCHEDULE = "Schedule"

# (window name, occurrence start, reference load in replicas): see `references`.
Reference = tuple[str, float, float]


@dataclass(frozen=True, slots=True)
class Window:
    """One occurrence of a planned window, in unix seconds (resolved by the caller)."""

    name: str
    start: float
    end: float
    min_replicas: int | None = None
    load_multiplier: float | None = None
    lead_s: float | None = None  # None: the default lead (time-to-ready + one interval)
    opens: str = ""  # wall-clock opening for messages, e.g. "14:00 UTC" (the caller has the calendar)
    closes: str = ""  # wall-clock closing, e.g. "16:00 UTC"


def default_lead_s(time_to_ready_s: dict[str, float], interval_s: float) -> float:
    """Time-to-ready (slowest class) plus two intervals. The first decision inside the lead comes
    up to one interval after the lead begins (decisions are discrete), and the Deployment,
    scheduler and kubelet need a moment before a pod exists to start its time-to-ready (measured
    from pod creation): with a single interval, capacity is Ready at the opening only when the
    tick happens to fall early (on the real cluster, one of two runs was seconds late)."""
    return max(time_to_ready_s.values(), default=0.0) + 2.0 * interval_s


def lead_of(window: Window, default_lead_s: float) -> float:
    return max(0.0, window.lead_s if window.lead_s is not None else default_lead_s)


def in_effect(windows: tuple[Window, ...], now: float, default_lead_s: float) -> tuple[Window, ...]:
    """Windows open now or opening within their lead: start - lead <= now < end."""
    return tuple(w for w in windows if w.start - lead_of(w, default_lead_s) <= now < w.end)


def describe(window: Window, now: float) -> str:
    """`schedule 'launch' (opens 14:00 UTC)` before it opens, `(open until 16:00 UTC)` after."""
    if now < window.start:
        when = f"opens {window.opens}" if window.opens else f"opens in {window.start - now:.0f}s"
    else:
        when = f"open until {window.closes}" if window.closes else f"open for {window.end - now:.0f}s more"
    return f"schedule '{window.name}' ({when})"


def load_reference(request_rate: float | None, rps: float | None, needs: list[Need], blind: bool) -> float | None:
    """The usual load, in replicas, that a multiplier scales: request rate over the per-replica
    rate when both are known, else the largest load-based need. None when blind (safe mode): a
    reference is kept for the whole window, so it is not taken from missing metrics."""
    if blind:
        return None
    if request_rate is not None and rps is not None and math.isfinite(request_rate) and rps > 0:
        return max(request_rate, 0.0) / rps
    return float(max((n.replicas for n in needs if n.reason != MIN_REPLICAS), default=0))


def references(
    active: tuple[Window, ...], previous: tuple[Reference, ...], load_replicas: float | None
) -> tuple[Reference, ...]:
    """The reference load of each multiplying window in effect: kept from the first decision
    that saw it (before the event's traffic: the lead), taken now for a window seen for the first
    time (if the operator first sees a window already open, the reference includes the event).
    References of windows no longer in effect are dropped, so memory stays small."""
    kept = {(name, start): ref for name, start, ref in previous}
    out: list[Reference] = []
    for w in active:
        if w.load_multiplier is None:
            continue
        ref = kept.get((w.name, w.start), load_replicas)
        if ref is not None:
            out.append((w.name, w.start, ref))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Scheduled:
    """What the windows in effect ask for: a floor (0 when none) and its explanation."""

    floor: int
    need: Need | None  # the largest scheduled need, with its reason and message
    refs: tuple[Reference, ...]


def scheduled(
    active: tuple[Window, ...], refs: tuple[Reference, ...], *, now: float, hi: int
) -> Scheduled:
    """The highest floor asked by the windows in effect (minReplicas, or multiplier x reference),
    capped at replicas.max (`hi`)."""
    ref_of = {(name, start): ref for name, start, ref in refs}
    best: Need | None = None
    for w in active:
        for n, what in _asks(w, ref_of.get((w.name, w.start))):
            n = min(n, hi)
            if best is None or n > best.replicas:
                best = Need(SCHEDULE, n, f"{describe(w, now)}: {what}")
    return Scheduled(floor=best.replicas if best is not None else 0, need=best, refs=refs)


def _asks(window: Window, ref: float | None) -> list[tuple[int, str]]:
    asks: list[tuple[int, str]] = []
    if window.min_replicas is not None:
        asks.append((window.min_replicas, f"floor {window.min_replicas}"))
    if window.load_multiplier is not None and ref is not None and math.isfinite(ref):
        n = ceil_replicas(window.load_multiplier * ref)
        asks.append((n, f"load x{window.load_multiplier:g} of {ref:.2f} replicas' worth: need {n}"))
    return asks
