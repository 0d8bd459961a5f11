"""A planned 3x event in the simulator (public API: traces, make_scenario, simulate): with a
schedule (loadMultiplier 3, default lead) the fleet is Ready when the event starts and the SLO
holds; without it the reactive scale-up pays a cold start in violation. And the forecaster learns
from demand, never from the extra supply a window adds."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from gpufleet.api.models import InferenceServiceSpec, Schedule
from gpufleet.core.types import ForecastSummary
from gpufleet.sim import traces as T
from gpufleet.sim.engine import RateForecastPort, SimResult, simulate
from gpufleet.sim.model import ColdStart
from gpufleet.sim.scenarios import Scenario, make_scenario

EVENT_AT_S = 1800  # simulated time starts at the unix epoch: the event opens 1970-01-01T00:30:00Z
EVENT_S = 1200
BASE_RPS = 12.0


def event_trace(seed: int = 0) -> T.Trace:
    """Steady load, a 3x event for 20 minutes, steady again (Poisson)."""
    before = T.step_load(BASE_RPS, 3.0, EVENT_AT_S, EVENT_S, seed=seed)
    after = T.step_load(BASE_RPS, 1.0, 600, 0, seed=seed + 1)
    return T.splice(before, after, name="planned-3x")


def with_schedules(spec: InferenceServiceSpec, *schedules: dict[str, Any]) -> InferenceServiceSpec:
    return spec.model_copy(update={"schedules": [Schedule.model_validate(s) for s in schedules]})


LAUNCH = {"name": "launch", "start": "1970-01-01T00:30:00Z", "duration": f"{EVENT_S // 60}m", "loadMultiplier": 3}


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return make_scenario("planned-3x", event_trace(), cold=ColdStart(fixed_s=60.0), step_at_s=EVENT_AT_S)


@pytest.fixture(scope="module")
def runs(scenario: Scenario) -> dict[str, SimResult]:
    scheduled = dataclasses.replace(scenario, spec=with_schedules(scenario.spec, LAUNCH))
    return {"reactive": scenario.run("gpufleet"), "scheduled": scheduled.run("gpufleet")}


def test_schedule_prevents_the_violation_the_reactive_fleet_has(runs: dict[str, SimResult]) -> None:
    reactive, scheduled = runs["reactive"], runs["scheduled"]
    # Without the schedule the reactive fleet pays part of a cold start in violation (22 s with the
    # old one-replica-per-8-queued need, 18 s since the queue need drains the backlog).
    assert reactive.violation_after_step_s is not None and reactive.violation_after_step_s >= 10, reactive.row()
    assert scheduled.violation_after_step_s == 0, scheduled.row()
    assert scheduled.violation_s == 0 and scheduled.attainment >= 0.999, scheduled.row()
    assert scheduled.attainment > reactive.attainment


def test_capacity_is_there_before_the_event_and_not_far_beyond_it(
    runs: dict[str, SimResult], scenario: Scenario
) -> None:
    scheduled, reactive = runs["scheduled"], runs["reactive"]
    i = EVENT_AT_S // 60
    need = int(np.ceil(3 * BASE_RPS / scenario.rps_per_replica))
    assert scheduled.serving[i] >= need > reactive.serving[i]
    # The extra capacity is paid for the event, not for the day: under 30 % more GPU-hours.
    assert scheduled.gpu_hours <= reactive.gpu_hours * 1.3


class RecordingForecaster(RateForecastPort):
    """The operator's forecast port, recording what it is fed (the observed request rate)."""

    fed: list[tuple[float, float]]

    def __init__(self, spec: InferenceServiceSpec) -> None:
        super().__init__(spec)
        self.fed = []

    def observe(self, t: float, rps: float) -> None:
        self.fed.append((t, rps))
        super().observe(t, rps)

    def forecast(self, *, now: float, horizon_s: float, quantile: float) -> ForecastSummary | None:
        return super().forecast(now=now, horizon_s=horizon_s, quantile=quantile)


def fed(scenario: Scenario, spec: InferenceServiceSpec) -> tuple[list[tuple[float, float]], RecordingForecaster]:
    made: list[RecordingForecaster] = []

    def factory(s: InferenceServiceSpec) -> RecordingForecaster:
        made.append(RecordingForecaster(s))
        return made[0]

    simulate(scenario.trace, scenario.policy("gpufleet"), spec, scenario.cfg, forecaster=factory,
             step_at_s=scenario.step_at_s)
    return made[0].fed, made[0]


def test_forecaster_learns_demand_not_the_supply_a_window_adds() -> None:
    # Steady load the fleet always serves: a window doubling the floor for half an hour changes
    # the capacity, never the request rate the forecaster is fed, hence never its forecasts.
    sc = make_scenario("flat", T.step_load(BASE_RPS, 1.0, 3600, 0, seed=5), cold=ColdStart(fixed_s=60.0))
    floor = {"name": "drill", "start": "1970-01-01T00:20:00Z", "duration": "30m", "minReplicas": 12}
    plain, f_plain = fed(sc, sc.spec)
    extra, f_extra = fed(sc, with_schedules(sc.spec, floor))
    assert len(plain) > 300 and plain == extra
    for now in (1800.0, 3590.0):
        assert f_plain.forecast(now=now, horizon_s=70, quantile=0.9) == f_extra.forecast(now=now, horizon_s=70,
                                                                                          quantile=0.9)


def test_during_the_event_the_forecaster_is_fed_the_demand(scenario: Scenario) -> None:
    # With the schedule nothing is rejected, so what the forecaster sees is the trace's demand
    # (the 60 s rate at the last 15 s scrape), event included, not the fleet's size.
    feed, _ = fed(scenario, with_schedules(scenario.spec, LAUNCH))
    counts = scenario.trace.counts
    for t, rps in feed:
        ts = int(t // 15) * 15
        lo = max(0, ts - 60)
        if ts > 0:
            assert rps == pytest.approx(counts[lo:ts].sum() / (ts - lo)), t
