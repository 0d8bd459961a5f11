"""Spot over several zones of a region (issue 7 item 5): a spot class filled in whichever zone has
capacity. New pods go to an available zone (spread over the fleet's pods), a zone's reclaim notices
that zone's pods only, and while every zone is out new spot pods stay Pending. Synthetic traces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gpufleet.core.types import SPOT, Plan, ReplicaState
from gpufleet.sim import traces as T
from gpufleet.sim.fleet import SimFleet, SimReplica
from gpufleet.sim.model import ColdStart
from gpufleet.sim.scenarios import make_scenario
from gpufleet.sim.spot import SpotTrace, load_spot_zones, offset_with_preemption

from tests import simdrive

GAP = 60.0


def zoned(*rows: list[int], notice_s: float = 120.0) -> SpotTrace:
    z = np.array(rows, dtype=np.int8)
    return SpotTrace(name="zones", available=z.max(axis=0), gap_s=GAP, notice_s=notice_s, zones=z,
                     zone_names=tuple(f"z{i}" for i in range(len(rows))))


def plan(serving: int, od: int, spot: int, retire: tuple[str, ...] = ()) -> Plan:
    return Plan(serving=serving, standby=0, on_demand=od, spot=spot, reason="t", message="", retire=retire)


def fleet(trace: SpotTrace, cold_s: float = 30.0) -> SimFleet:
    f = SimFleet(cold=ColdStart(fixed_s=cold_s), rng=np.random.default_rng(0), spot=trace)
    f.bootstrap(1)
    f.schedule_preemptions(3600.0)
    return f


def drive(f: SimFleet, start: int, end: int, p: Plan) -> None:
    simdrive.drive(f, start, end, p)


def spot_pods(f: SimFleet) -> list[SimReplica]:
    return [r for r in f.replicas.values() if r.cls == SPOT]


def test_new_spot_pods_go_to_an_available_zone_when_one_is_out() -> None:
    f = fleet(zoned([0] * 60, [1] * 60, [1] * 60))  # zone 0 out from the start
    drive(f, 0, 100, plan(5, 1, 4))
    pods = spot_pods(f)
    assert len(pods) == 4 and not any(r.pending for r in pods)
    assert sorted(r.zone for r in pods) == [1, 1, 2, 2]  # spread over the available zones
    assert all(r.state == ReplicaState.serving for r in pods)


def test_a_zone_reclaim_notices_only_that_zones_pods_and_replacements_go_elsewhere() -> None:
    # zone 0 goes at tick 10 (600 s), zone 1 stays
    f = fleet(zoned([1] * 10 + [0] * 50, [1] * 60))
    drive(f, 0, 601, plan(5, 1, 4))
    pods = spot_pods(f)
    assert sum(r.interrupted for r in pods) == 2 and f.preemptions == 2  # of 4, though spot is not out
    assert sorted(r.zone for r in pods) == [0, 0, 1, 1]
    assert {r.zone for r in pods if r.interrupted} == {0}
    drive(f, 601, 800, plan(5, 1, 4))  # reclaimed at 720 s; the ReplicaSet replaces them
    pods = spot_pods(f)
    assert len(pods) == 4 and all(r.zone == 1 and not r.pending and not r.interrupted for r in pods)


def test_all_zones_out_keeps_new_spot_pods_pending_until_one_returns() -> None:
    f = fleet(zoned([0] * 10 + [1] * 50, [0] * 20 + [1] * 40))  # zone 0 back at 600 s, zone 1 at 1200 s
    drive(f, 0, 300, plan(3, 1, 2))
    pods = spot_pods(f)
    assert len(pods) == 2 and all(r.pending for r in pods)
    assert f.gpus_running() == (1, 0)
    assert f.state(now=300.0).spot_unavailable  # past the 120 s pending timeout: the core falls back
    drive(f, 300, 700, plan(3, 1, 2))
    pods = spot_pods(f)
    assert all(not r.pending and r.zone == 0 for r in pods)
    assert f.gpus_running() == (1, 2)


def test_single_zone_trace_is_zone_zero() -> None:
    tr = SpotTrace(name="one", available=np.array([1] * 10 + [0] * 10 + [1] * 40, dtype=np.int8), gap_s=GAP,
                   notice_s=120.0)
    assert tr.available_zones(0.0) == [0] and tr.available_zones(700.0) == []
    assert tr.preemption_events(3600.0) == [(600.0, 0)]


def test_union_events_and_offset_use_every_zone(tmp_path: Path) -> None:
    rows = ([1] * 30 + [0] * 10 + [1] * 20, [1] * 20 + [0] * 5 + [1] * 35)
    paths = []
    for i, row in enumerate(rows):
        p = tmp_path / f"z{i}.json"
        p.write_text(json.dumps({"metadata": {"gap_seconds": GAP}, "data": row}))
        paths.append(str(p))
    tr = load_spot_zones(paths)
    assert tr.zones is not None and tr.zones.shape == (2, 60)
    assert tr.is_available(1250.0)  # zone 1 out, zone 0 in
    assert tr.available_zones(1250.0) == [0]
    assert tr.availability_share(3600.0) == pytest.approx(1.0)  # never both out
    assert tr.preemption_events(3600.0) == [(1200.0, 1), (1800.0, 0)]
    # the first reclaim of any zone (zone 1 at tick 20) comes 10 min in
    assert offset_with_preemption(tr, 3600.0) == pytest.approx(20 * GAP - 600.0)


def test_gpufleet_over_zones_drops_nothing_and_keeps_spot_through_a_zone_reclaim() -> None:
    """Zone 0 goes at 1200 s, zone 1 stays: gpufleet loses nothing, and spot still runs after."""
    tr = T.step_load(40.0, 1.0, 2400, 0, seed=0)
    spot = zoned([1] * 20 + [0] * 20, [1] * 40)
    sc = make_scenario("spot-zones", tr, spot=spot, spot_enabled=True, max_replicas=16)
    g = sc.run("gpufleet")
    assert g.preemptions > 0 and g.gpu_hours_spot > 0
    assert g.dropped == pytest.approx(0.0, abs=1e-6)
    assert g.served == pytest.approx(g.arrived, rel=1e-9)
