"""gpufleet.api.timefmt: the one reader of the API's durations and RFC 3339 times."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from gpufleet.api.timefmt import duration_seconds, iso, iso_seconds, parse_iso


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("0s", 0)])
def test_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


def test_z_and_offsets_are_the_same_instant() -> None:
    assert iso_seconds("1970-01-01T00:01:00Z") == 60.0
    assert iso_seconds("1970-01-01T01:01:00+01:00") == 60.0
    assert iso_seconds("1970-01-01T00:01:00.250Z") == 60.25


def test_a_time_without_offset_is_utc_or_the_zone_given_never_local() -> None:
    assert iso_seconds("1970-01-01T00:01:00") == 60.0
    berlin = parse_iso("2026-12-01T14:00", ZoneInfo("Europe/Berlin"))
    assert berlin.timestamp() == iso_seconds("2026-12-01T13:00:00Z")


def test_iso_is_the_inverse() -> None:
    assert iso(60.0) == "1970-01-01T00:01:00Z"
    assert iso(60.25, ms=True) == "1970-01-01T00:01:00.250Z"
    for ts in (0.0, 1_764_597_600.0, 1_764_597_600.123):
        assert iso_seconds(iso(ts, ms=True)) == pytest.approx(ts, abs=1e-3)


def test_malformed_raises() -> None:
    with pytest.raises(ValueError):
        iso_seconds("yesterday")
