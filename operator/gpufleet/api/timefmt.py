"""The one parser of the API's durations and timestamps, and its inverse.

Durations are the CRD's `90s` / `15m` / `2h` / `1d`; times are RFC 3339 as Kubernetes writes them
(`2026-12-01T14:00:00Z`). Everything that reads or writes them (the schedule calendar, metering,
status, the Kubernetes adapter, benchmarks and tests) goes through here, so a `Z` or a missing
offset is read the same way everywhere. `duration_seconds` is defined in gpufleet.api.models (the
decision core imports that module and may not reach `datetime`) and re-exported here.
"""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo

from gpufleet.api.models import duration_seconds

__all__ = ["duration_seconds", "iso", "iso_seconds", "parse_iso"]


def parse_iso(text: str, default_zone: tzinfo = timezone.utc) -> datetime:
    """RFC 3339 -> aware datetime; a time without an offset is read in `default_zone` (never in
    the machine's local zone). Raises ValueError if malformed."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt.replace(tzinfo=default_zone) if dt.tzinfo is None else dt


def iso_seconds(text: str) -> float:
    """RFC 3339 -> unix seconds (UTC when the text has no offset). Raises ValueError if malformed."""
    return parse_iso(text).timestamp()


def iso(ts: float, *, ms: bool = False) -> str:
    """Unix seconds -> RFC 3339 in UTC with `Z`, to the second (status) or millisecond (`ms`)."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    if ms:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
