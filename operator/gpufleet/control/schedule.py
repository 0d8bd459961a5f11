"""Resolve spec.schedules into plain windows (unix seconds) around `now`.

This is the calendar half of planned events: cron expressions (croniter), IANA time zones and
daylight saving time (zoneinfo). It is pure in the sense that matters (same spec and `now`, same
windows; no clock read) but needs datetime and the tz database, which the decision core forbids,
so the core receives `gpufleet.core.schedule.Window` values and does the arithmetic.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from gpufleet.api.models import Schedule
from gpufleet.api.timefmt import duration_seconds, parse_iso
from gpufleet.core.schedule import Window

# croniter's get_prev skips an occurrence exactly at its base time: look back from just after now.
_JUST_AFTER = timedelta(seconds=1)


def parse_start(text: str, zone: ZoneInfo) -> datetime:
    """RFC 3339 (the CRD pattern guarantees the shape); without an offset, read in `zone`."""
    return parse_iso(text, zone)


def occurrences(schedule: Schedule, now: float) -> list[datetime]:
    """Starts (aware, in the schedule's zone) of the window open at `now`, if any, and the next.

    Two are enough: a window ends before the next opens (validated), and if any later occurrence
    were within its lead, the nearer one would be too, with the same floor and multiplier.
    """
    zone = ZoneInfo(schedule.time_zone)
    if schedule.start is not None:
        return [parse_start(schedule.start, zone).astimezone(zone)]
    assert schedule.cron is not None  # the model guarantees exactly one of cron and start
    base = datetime.fromtimestamp(now, tz=zone) + _JUST_AFTER
    prev: datetime = croniter(schedule.cron, base).get_prev(datetime)
    nxt: datetime = croniter(schedule.cron, base).get_next(datetime)
    return [prev, nxt]


def clock(dt: datetime, now: float) -> str:
    """'14:00 CET' on the day of `now` (in dt's zone), else '2026-12-01 14:00 CET'."""
    today = datetime.fromtimestamp(now, tz=dt.tzinfo).date()
    return dt.strftime("%H:%M %Z" if dt.date() == today else "%Y-%m-%d %H:%M %Z")


def windows(schedules: list[Schedule], now: float) -> tuple[Window, ...]:
    """Every occurrence that is open now or still to come (past ones are dropped)."""
    out: list[Window] = []
    for s in schedules:
        length = duration_seconds(s.duration)
        for start in occurrences(s, now):
            # Elapsed time, not wall time: a 2h window across a DST change still lasts 2 hours
            # (aware datetime arithmetic in one zone would add wall-clock hours).
            end_ts = start.timestamp() + length
            if end_ts <= now:
                continue
            out.append(Window(
                name=s.name,
                start=start.timestamp(),
                end=end_ts,
                min_replicas=s.min_replicas,
                load_multiplier=s.load_multiplier,
                lead_s=float(s.lead_seconds) if s.lead_seconds is not None else None,
                opens=clock(start, now),
                closes=clock(datetime.fromtimestamp(end_ts, tz=start.tzinfo), now),
            ))
    return tuple(out)
