"""core.split at an interruption notice: replacements on on-demand at once, standbys first,
interrupted replicas out of the Service before their node goes (issue 7 items 2 and 5)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.fleet import FleetView, is_healthy
from gpufleet.core.split import DRAIN_S, interrupted_by_class, notice_drain_due
from gpufleet.core.types import (
    ON_DEMAND,
    SPOT,
    FleetState,
    ForecastSummary,
    Observation,
    PolicyMemory,
    Replica,
    ReplicaState,
)
from tests.strategies import SETTINGS, decide, fleets, forecasts, memories, observations, specs


def test_notice_drain_due() -> None:
    reclaim = 1000.0
    assert not notice_drain_due(reclaim, reclaim - DRAIN_S - 1)
    assert notice_drain_due(reclaim, reclaim - DRAIN_S)
    # the next look is an interval away: drain at the last one that leaves DRAIN_S
    assert not notice_drain_due(reclaim, reclaim - DRAIN_S - 11, interval_s=10)
    assert notice_drain_due(reclaim, reclaim - DRAIN_S - 10, interval_s=10)
    assert notice_drain_due(reclaim, reclaim + 5)
    assert not notice_drain_due(None, 1e9)  # a notice without a deadline (cordon): once covered


@st.composite
def noticed_fleets(draw: st.DrawFn) -> FleetState:
    """Any fleet, plus at least one spot replica on a node with a notice."""
    fleet = draw(fleets())
    extra = tuple(
        Replica(name=f"noticed{i}", capacity_class=SPOT,
                state=draw(st.sampled_from([ReplicaState.serving, ReplicaState.standby, ReplicaState.starting])),
                created_at=10.0, ready_at=40.0, in_flight=draw(st.one_of(st.none(), st.floats(0, 50))),
                interrupted=True)
        for i in range(draw(st.integers(1, 6)))
    )
    extra = tuple(r if r.state != ReplicaState.starting else replace(r, ready_at=None) for r in extra)
    return FleetState(replicas=fleet.replicas + extra, spot_unavailable=fleet.spot_unavailable,
                      time_to_ready_s=fleet.time_to_ready_s)


@SETTINGS
@given(spec=specs(), observation=observations(), fleet=noticed_fleets(), memory=memories(), forecast=forecasts())
def test_a_notice_replaces_on_on_demand_and_promotes_standbys_first(
    spec: InferenceServiceSpec, observation: Observation, fleet: FleetState, memory: PolicyMemory,
    forecast: ForecastSummary | None,
) -> None:
    plan, _ = decide(spec, observation, fleet, memory, forecast)
    view = FleetView.of(fleet)
    noticed = interrupted_by_class(fleet)
    od, spot = plan.on_demand - noticed[ON_DEMAND], plan.spot - noticed[SPOT]
    # No new spot capacity while a reclaim notice is out: at most the healthy Ready spot stays.
    assert spot <= view.ready_by_class[SPOT]
    # The interrupted replicas are not counted on: healthy replicas wanted cover serving + standby
    # (the rest starts on on-demand now), and the interrupted ones stay in their Deployment until
    # drained or reclaimed, first in line to retire.
    assert od + spot >= plan.serving + plan.standby
    interrupted = {r.name for r in fleet.replicas if r.interrupted and r.state != ReplicaState.draining}
    assert set(plan.retire[: len(interrupted)]) == interrupted
    # Standbys first: every healthy standby that stays is promoted before anything waits for a
    # cold start, as far as the serving target is short.
    short = max(0, plan.serving - view.serving)
    standbys = [r for r in fleet.replicas
                if r.state == ReplicaState.standby and is_healthy(r) and r.name not in set(plan.retire)]
    assert len(plan.promote) == min(short, len(standbys))
