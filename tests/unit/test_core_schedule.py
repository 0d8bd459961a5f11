"""Planned windows (spec.schedules): the core's arithmetic (tables and hypothesis properties) and
the calendar half in gpufleet.control.schedule (cron, time zones, DST)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given
from hypothesis import strategies as st

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.api.timefmt import iso_seconds
from gpufleet.control import schedule as calendar
from gpufleet.core import schedule
from gpufleet.core.capacity import bounds
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.schedule import SCHEDULE, Window
from gpufleet.core.types import FleetState, ForecastSummary, Observation, Plan, PolicyMemory
from tests.builders import make_spec, obs, serving_fleet
from tests.strategies import SETTINGS, fleets, forecasts, memories, observations, specs

NOW = 10_000.0
POLICY = GpufleetPolicy()
TTR = {"on-demand": 50.0}  # measured time-to-ready; with intervalSeconds 10 the default lead is 70 s


def decide(
    spec: InferenceServiceSpec,
    observation: Observation,
    fleet: FleetState,
    windows: tuple[Window, ...] = (),
    memory: PolicyMemory = PolicyMemory(),
    now: float = NOW,
    forecast: ForecastSummary | None = None,
    fresh: bool = True,
) -> tuple[Plan, PolicyMemory]:
    """`fresh`: the tables' observations were sampled at `now` (not stale, so no safe mode)."""
    if fresh and observation.sampled_at is not None:
        observation = replace(observation, sampled_at=now)
    return POLICY.decide(spec=spec, observation=observation, forecast=forecast, fleet=fleet, memory=memory,
                         now=now, windows=windows)


def fleet_of(n: int) -> FleetState:
    return replace(serving_fleet(n), time_to_ready_s=TTR)


def window(start: float = NOW + 100, end: float = NOW + 3700, **kw: Any) -> Window:
    values: dict[str, Any] = {"name": "launch", "start": start, "end": end, "opens": "14:00 UTC", "closes": "15:00 UTC"}
    values.update(kw)
    return Window(**values)


# ---------------------------------------------------------------------------------------------
# Tables: when a window is in effect, and what it asks.


@pytest.mark.parametrize(
    ("now", "lead", "expected"),
    [
        (NOW + 100 - 71, None, False),  # before start - default lead (50 s ttr + 2 x 10 s interval)
        (NOW + 100 - 70, None, True),  # lead begins
        (NOW + 99, None, True),
        (NOW + 100, None, True),  # opens
        (NOW + 3699, None, True),
        (NOW + 3700, None, False),  # closed: end is exclusive
        (NOW + 100 - 300, 300.0, True),  # explicit leadSeconds
        (NOW + 99, 0.0, False),  # leadSeconds 0: only the window itself
    ],
)
def test_in_effect_from_start_minus_lead_to_end(now: float, lead: float | None, expected: bool) -> None:
    w = window(lead_s=lead)
    assert schedule.default_lead_s(TTR, 10) == 70.0
    assert (schedule.in_effect((w,), now, 70.0) == (w,)) is expected


def test_floor_is_raised_ahead_of_the_window_at_once_and_named() -> None:
    spec = make_spec(replicas={"min": 2, "max": 12})
    fleet = replace(fleet_of(2), time_to_ready_s=TTR)
    plan, _ = decide(spec, obs(request_rate=15), fleet, (window(min_replicas=6),), now=NOW + 100 - 70)
    # No step limit (default +4 per step would give 6 anyway; make it tight to be sure below).
    assert plan.serving == 6
    assert plan.reason == SCHEDULE
    assert plan.message.startswith("schedule 'launch' (opens 14:00 UTC): floor 6; serving 2 -> 6")
    tight = make_spec(replicas={"min": 2, "max": 12}, scaling={"scaleUp": {"maxStepPercent": 1, "maxStepReplicas": 1}})
    plan, _ = decide(tight, obs(request_rate=15), fleet, (window(min_replicas=9),), now=NOW + 50)
    assert plan.serving == 9, "a scheduled floor is a floor, like replicas.min: not step-limited"


def test_message_while_open_says_until_when() -> None:
    spec = make_spec(replicas={"min": 1, "max": 12})
    plan, _ = decide(spec, obs(request_rate=5), fleet_of(6), (window(min_replicas=6),),
                     memory=PolicyMemory(last_serving=6), now=NOW + 200)
    assert (plan.serving, plan.reason) == (6, SCHEDULE)
    assert plan.message.startswith("schedule 'launch' (open until 15:00 UTC): floor 6; holding 6")


def test_load_above_the_floor_keeps_its_own_reason() -> None:
    spec = make_spec(replicas={"min": 1, "max": 20})
    plan, _ = decide(spec, obs(request_rate=95), fleet_of(10), (window(min_replicas=4),),
                     memory=PolicyMemory(last_serving=10), now=NOW + 200)
    assert (plan.serving, plan.reason) == (10, "RequestRate")


def test_floor_is_capped_by_max_replicas() -> None:
    spec = make_spec(replicas={"min": 1, "max": 5})
    plan, _ = decide(spec, obs(), fleet_of(1), (window(min_replicas=9),), now=NOW + 200)
    assert plan.serving == 5 and plan.reason == SCHEDULE


def test_outside_the_window_nothing_changes() -> None:
    spec = make_spec(replicas={"min": 2, "max": 12})
    fleet = replace(fleet_of(2), time_to_ready_s=TTR)
    for now in (NOW, NOW + 3700, NOW + 10_000):
        with_w = decide(spec, obs(request_rate=15), fleet, (window(min_replicas=6),), now=now)
        without = decide(spec, obs(request_rate=15), fleet, now=now)
        assert with_w == without


def test_after_the_window_scale_down_is_stabilised_as_usual() -> None:
    spec = make_spec(replicas={"min": 1, "max": 12}, scaling={"scaleDown": {"stabilizationSeconds": 0, "maxStepPercent": 50}})
    memory = PolicyMemory(last_serving=8, started_at=0.0)
    plan, _ = decide(spec, obs(request_rate=5), fleet_of(8), (window(min_replicas=8),), memory=memory,
                     now=NOW + 3700)
    assert plan.serving == 4 and plan.reason == "RequestRate"  # 50 % step, not straight to 1


def test_overlapping_windows_take_the_highest_floor() -> None:
    spec = make_spec(replicas={"min": 1, "max": 30})
    ws = (
        window(name="a", min_replicas=4),
        window(name="b", start=NOW + 150, min_replicas=7, opens="14:05 UTC"),
        window(name="c", min_replicas=5, load_multiplier=2.0),
    )
    plan, _ = decide(spec, obs(request_rate=10), fleet_of(1), ws, now=NOW + 200)
    assert plan.serving == 7 and "schedule 'b'" in plan.message


def test_multiplier_scales_the_load_seen_before_the_event_not_the_event_itself() -> None:
    spec = make_spec(replicas={"min": 1, "max": 40})
    w = (window(load_multiplier=3.0),)
    # Lead: usual load 20 rps = 2 replicas' worth; provision for 3x = 6 before traffic arrives.
    plan, mem = decide(spec, obs(request_rate=20), fleet_of(2), w, now=NOW + 50)
    assert (plan.serving, plan.reason) == (6, SCHEDULE)
    assert mem.schedule_refs == (("launch", NOW + 100, 2.0),)
    assert "load x3 of 2.00 replicas' worth: need 6" in plan.message
    # The event arrives (60 rps): the fleet needs 6, not 3 x 6 = 18.
    plan, mem = decide(spec, obs(request_rate=60), fleet_of(6), w, memory=mem, now=NOW + 200)
    assert plan.serving == 6
    assert mem.schedule_refs == (("launch", NOW + 100, 2.0),)
    # More than expected (90 rps) is followed by the usual signals.
    plan, mem = decide(spec, obs(request_rate=90), fleet_of(6), w, memory=mem, now=NOW + 210)
    assert (plan.serving, plan.reason) == (9, "RequestRate")
    # Closed: the reference is forgotten.
    _, mem = decide(spec, obs(request_rate=20), fleet_of(9), w, memory=mem, now=NOW + 3700)
    assert mem.schedule_refs == ()


def test_multiplier_reference_is_not_taken_blind() -> None:
    spec = make_spec(replicas={"min": 1, "max": 40})
    w = (window(load_multiplier=3.0),)
    blind = Observation(sampled_at=None)
    _, mem = decide(spec, blind, fleet_of(2), w, now=NOW + 50)
    assert mem.schedule_refs == ()
    plan, mem = decide(spec, obs(request_rate=20), fleet_of(2), w, memory=mem, now=NOW + 60)
    assert plan.serving == 6 and mem.schedule_refs == (("launch", NOW + 100, 2.0),)


def test_multiplier_without_a_known_rate_uses_the_load_need() -> None:
    spec = make_spec(replicas={"min": 1, "max": 40}, scaling={"targetRpsPerReplica": None})
    plan, _ = decide(spec, obs(queue_depth=24), fleet_of(3), (window(load_multiplier=2.0),), now=NOW + 50)
    assert plan.serving == 6 and plan.reason == SCHEDULE  # queue 24 / 8 per replica = 3, x2


def test_safe_mode_still_honours_the_floor() -> None:
    spec = make_spec(replicas={"min": 1, "max": 12})
    plan, _ = decide(spec, Observation(sampled_at=None), fleet_of(2), (window(min_replicas=5),), now=NOW + 200)
    assert plan.serving == 5 and plan.safe_mode


# ---------------------------------------------------------------------------------------------
# Properties of the core.


@st.composite
def windows(draw: st.DrawFn) -> tuple[Window, ...]:
    out = []
    for i in range(draw(st.integers(1, 3))):
        start = NOW + draw(st.floats(-4000, 4000))
        out.append(Window(
            name=f"w{i}",
            start=start,
            end=start + draw(st.floats(1, 7200)),
            min_replicas=draw(st.one_of(st.none(), st.integers(0, 50))),
            load_multiplier=draw(st.one_of(st.none(), st.floats(1, 10))),
            lead_s=draw(st.one_of(st.none(), st.floats(0, 600))),
        ))
    return tuple(out)


def _ttr(fleet: FleetState, ttr: float) -> FleetState:
    return replace(fleet, time_to_ready_s={"on-demand": ttr})


@SETTINGS
@given(spec=specs(), observation=observations(), fleet=fleets(), memory=memories(), forecast=forecasts(),
       ws=windows(), ttr=st.floats(0, 600))
def test_a_window_lifts_the_floor_during_span_plus_lead_and_never_lowers(
    spec: InferenceServiceSpec, observation: Observation, fleet: FleetState, memory: PolicyMemory,
    forecast: ForecastSummary | None, ws: tuple[Window, ...], ttr: float,
) -> None:
    fleet = _ttr(fleet, ttr)
    with_w, _ = decide(spec, observation, fleet, ws, memory, NOW, forecast, fresh=False)
    without, _ = decide(spec, observation, fleet, (), memory, NOW, forecast, fresh=False)
    lo, hi = bounds(spec)
    assert lo <= with_w.serving <= hi
    assert with_w.serving >= without.serving, "a window never lowers the serving target"
    assert with_w.serving + with_w.standby >= without.serving + without.standby
    default_lead = ttr + 2 * spec.scaling.interval_seconds
    for w in ws:
        lead = w.lead_s if w.lead_s is not None else default_lead
        if w.start - lead <= NOW < w.end and w.min_replicas is not None:
            assert with_w.serving >= min(w.min_replicas, hi), "in effect: the floor holds"


@SETTINGS
@given(spec=specs(), observation=observations(), fleet=fleets(), memory=memories(), forecast=forecasts(),
       ws=windows(), ttr=st.floats(0, 600))
def test_outside_every_window_the_decision_is_the_unscheduled_one(
    spec: InferenceServiceSpec, observation: Observation, fleet: FleetState, memory: PolicyMemory,
    forecast: ForecastSummary | None, ws: tuple[Window, ...], ttr: float,
) -> None:
    fleet = _ttr(fleet, ttr)
    default_lead = ttr + 2 * spec.scaling.interval_seconds
    idle = tuple(w for w in ws if not (w.start - (w.lead_s if w.lead_s is not None else default_lead) <= NOW < w.end))
    assert decide(spec, observation, fleet, idle, memory, NOW, forecast, fresh=False) == decide(
        spec, observation, fleet, (), memory, NOW, forecast, fresh=False
    )


@SETTINGS
@given(floors=st.lists(st.integers(0, 60), min_size=1, max_size=5), hi=st.integers(1, 40))
def test_overlapping_windows_take_the_max(floors: list[int], hi: int) -> None:
    ws = tuple(window(name=f"w{i}", min_replicas=f) for i, f in enumerate(floors))
    got = schedule.scheduled(schedule.in_effect(ws, NOW + 200, 60.0), (), now=NOW + 200, hi=hi)
    assert got.floor == min(max(floors), hi)


# ---------------------------------------------------------------------------------------------
# The calendar: cron, start, time zones, DST (gpufleet.control.schedule).


def spec_with(*schedules: dict[str, Any]) -> InferenceServiceSpec:
    return make_spec(schedules=list(schedules))


def test_one_off_start_with_offset_and_without() -> None:
    spec = spec_with(
        {"name": "utc", "start": "2026-12-01T14:00:00Z", "duration": "2h", "minReplicas": 3},
        {"name": "local", "start": "2026-12-01T14:00", "timeZone": "Europe/Berlin", "duration": "30m", "minReplicas": 3},
    )
    now = iso_seconds("2026-12-01T12:00:00+00:00")
    utc, local = calendar.windows(spec.schedules, now)
    assert (utc.start, utc.end) == (iso_seconds("2026-12-01T14:00:00+00:00"), iso_seconds("2026-12-01T16:00:00+00:00"))
    assert local.start == iso_seconds("2026-12-01T13:00:00+00:00")  # 14:00 CET is 13:00 UTC
    assert (utc.opens, local.opens, local.closes) == ("14:00 UTC", "14:00 CET", "14:30 CET")
    assert calendar.windows(spec.schedules, iso_seconds("2026-12-01T16:00:00+00:00")) == ()  # past: dropped


def test_cron_gives_the_open_occurrence_and_the_next() -> None:
    spec = spec_with({"name": "batch", "cron": "0 2 * * *", "duration": "1h", "minReplicas": 4})
    now = iso_seconds("2026-12-01T02:30:00+00:00")
    open_, nxt = calendar.windows(spec.schedules, now)
    assert open_.start == iso_seconds("2026-12-01T02:00:00+00:00") and nxt.start == iso_seconds("2026-12-02T02:00:00+00:00")
    assert nxt.opens == "2026-12-02 02:00 UTC"
    # Exactly at an occurrence the window is open (croniter's get_prev would skip it).
    (at,) = [w for w in calendar.windows(spec.schedules, iso_seconds("2026-12-02T02:00:00+00:00")) if w.start <= iso_seconds("2026-12-02T02:00:00+00:00")]
    assert at.start == iso_seconds("2026-12-02T02:00:00+00:00")


@pytest.mark.parametrize(
    ("day", "utc_start"),
    [
        ("2026-03-27", "2026-03-27T08:00:00+00:00"),  # CET (UTC+1): 09:00 local
        ("2026-03-30", "2026-03-30T07:00:00+00:00"),  # CEST (UTC+2) after the spring change
        ("2026-10-26", "2026-10-26T08:00:00+00:00"),  # back to CET
    ],
)
def test_cron_follows_daylight_saving_time(day: str, utc_start: str) -> None:
    spec = spec_with({"name": "office", "cron": "0 9 * * 1-5", "timeZone": "Europe/Berlin", "duration": "8h",
                      "minReplicas": 4})
    now = iso_seconds(f"{day}T06:00:00+00:00")
    first = calendar.windows(spec.schedules, now)[0]
    assert first.start == iso_seconds(utc_start) and first.opens == "09:00 " + ("CEST" if "-30" in day else "CET")


def test_duration_is_elapsed_time_across_a_dst_change() -> None:
    # 01:00 CET on the spring-forward night, 3h long: ends 05:00 CEST (04:00 CET + 1 h skipped).
    spec = spec_with({"name": "night", "start": "2026-03-29T01:00", "timeZone": "Europe/Berlin", "duration": "3h",
                      "minReplicas": 2})
    (w,) = calendar.windows(spec.schedules, iso_seconds("2026-03-28T12:00:00+00:00"))
    assert w.end - w.start == 3 * 3600
    assert w.closes == "2026-03-29 05:00 CEST"


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "America/Sao_Paulo"]


@SETTINGS
@given(
    zone=st.sampled_from(ZONES),
    minute=st.integers(0, 59),
    hour=st.integers(0, 23),
    now=st.floats(iso_seconds("2025-01-01T00:00:00+00:00"), iso_seconds("2028-01-01T00:00:00+00:00")),
    hours=st.integers(1, 20),
)
def test_cron_windows_in_any_zone_bracket_now(zone: str, minute: int, hour: int, now: float, hours: int) -> None:
    cron = f"{minute} {hour} * * *"
    spec = spec_with({"name": "d", "cron": cron, "timeZone": zone, "duration": f"{hours}h", "minReplicas": 1})
    ws = calendar.windows(spec.schedules, now)
    assert 1 <= len(ws) <= 2
    assert all(w.end > now and w.end - w.start == hours * 3600 for w in ws)
    upcoming = [w for w in ws if w.start > now + 1]
    assert len(upcoming) == 1, "always the next occurrence"
    nxt = upcoming[0]
    # It is the first match after now in the zone: none between now and it.
    local_now = datetime.fromtimestamp(now, tz=ZoneInfo(zone)) + timedelta(seconds=1)
    assert croniter(cron, local_now).get_next(datetime).timestamp() == nxt.start
    local = datetime.fromtimestamp(nxt.start, tz=ZoneInfo(zone))
    # Local wall time matches the cron fields, except when DST skipped that time (then later).
    assert (local.hour, local.minute) == (hour, minute) or local.utcoffset() != (local - timedelta(hours=3)).utcoffset()
    # An open window contains now, and began at the previous match.
    for w in ws:
        if w.start <= now + 1:
            assert w.start <= now + 1 and now < w.end
            assert datetime.fromtimestamp(w.start, tz=timezone.utc) < datetime.fromtimestamp(nxt.start, tz=timezone.utc)
