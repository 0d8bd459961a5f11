"""The simulator's fleet drains and promotes as the cluster does (issue 15 item 2): a retired
serving pod leaves the Service, finishes what it runs, is billed meanwhile and goes at the first
decision after it is idle or past drainTimeoutSeconds; a pod that turns Ready serves at once if
the last decision wants it to."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from gpufleet.core.rollout import time_to_ready
from gpufleet.core.split import DRAIN_S
from gpufleet.core.types import ON_DEMAND, Plan, ReplicaState
from gpufleet.sim.fleet import SimFleet
from gpufleet.sim.model import ColdStart

from tests import simdrive

INTERVAL = 10


def plan(serving: int, od: int, retire: tuple[str, ...] = ()) -> Plan:
    return Plan(serving=serving, standby=od - serving, on_demand=od, spot=0, reason="t", message="", retire=retire)


def fleet(serving: int, drain_timeout_s: float = 120.0) -> SimFleet:
    f = SimFleet(cold=ColdStart(fixed_s=30.0), rng=np.random.default_rng(0), drain_timeout_s=drain_timeout_s,
                 interval_s=INTERVAL)
    f.bootstrap(serving)
    f.in_flight_per_serving = 4.0
    return f


def drive(f: SimFleet, start: int, end: int, p: Plan) -> dict[int, tuple[int, int]]:
    """(serving, billed GPUs) per second."""
    return simdrive.drive(f, start, end, p, interval=INTERVAL, read=lambda x: (x.n_serving, sum(x.gpus_running())))


def test_a_retired_serving_pod_drains_is_billed_and_goes_at_the_first_decision_after_it_is_idle() -> None:
    f = fleet(3)
    victim = next(iter(f.replicas))
    seen = drive(f, 0, 100, plan(2, 2, retire=(victim,)))
    assert seen[0] == (2, 3)  # out of the Service at once, still billed
    gone = min(t for t, (_, gpus) in seen.items() if gpus == 2)
    assert gone == INTERVAL * int(np.ceil(DRAIN_S / INTERVAL))  # idle after DRAIN_S, released at the next decision
    assert victim not in f.replicas and len(f.replicas) == 2 and f.size[ON_DEMAND] == 2


def test_a_drain_timeout_shorter_than_the_work_releases_the_pod_at_the_timeout() -> None:
    f = fleet(3, drain_timeout_s=15.0)
    victim = next(iter(f.replicas))
    seen = drive(f, 0, 100, plan(2, 2, retire=(victim,)))
    assert min(t for t, (_, gpus) in seen.items() if gpus == 2) == 20  # the first decision past 15 s
    assert victim not in f.replicas


def test_a_drain_is_cancelled_when_the_capacity_is_wanted_back() -> None:
    f = fleet(3)
    victim = next(iter(f.replicas))
    drive(f, 0, 10, plan(2, 2, retire=(victim,)))
    assert f.replicas[victim].state == ReplicaState.draining
    drive(f, 10, 11, plan(3, 3))
    assert f.last_rollout.cancel == (victim,)
    assert f.replicas[victim].state == ReplicaState.serving and f.n_serving == 3  # cancelled, then promoted
    assert f.created == 3  # no cold start for it


def test_a_pod_turning_ready_stays_a_standby_when_the_last_decision_keeps_one() -> None:
    f = fleet(1)
    drive(f, 0, 45, plan(1, 2))
    assert f.n_serving == 1 and sum(1 for r in f.replicas.values() if r.state == ReplicaState.standby) == 1


def test_a_pod_turning_ready_between_decisions_serves_at_once() -> None:
    f = SimFleet(cold=ColdStart(fixed_s=25.0), rng=np.random.default_rng(0), interval_s=INTERVAL)
    f.bootstrap(1)
    seen = drive(f, 0, 40, plan(2, 2))
    assert seen[24] == (1, 2) and seen[25] == (2, 2)  # Ready at 25 s, serving at 25 s (decisions at 20, 30)


def test_fast_built_pods_equal_the_constructed_ones() -> None:
    """SimFleet builds pods and their snapshots without the dataclass constructors (speed on 2 s
    ticks); each must be the value the constructor gives, and a draining pod's snapshot
    must carry what it took along until it is idle (DRAIN_S after it left)."""
    from gpufleet.core.types import Replica
    from gpufleet.sim.fleet import SimReplica, _starting

    made = _starting("on-demand-7", ON_DEMAND, 12.0)
    assert made == SimReplica(name="on-demand-7", cls=ON_DEMAND, state=ReplicaState.starting, created_at=12.0,
                              ready_at=None)
    f = fleet(3)
    f.apply(plan(2, 2, retire=("on-demand-1",)), now=0.0)  # on-demand-1 drains, carrying 4 in flight
    pods = {p.name: p for p in f.state(now=10.0).replicas}
    gone = pods["on-demand-1"]
    assert gone.state == ReplicaState.draining and gone.in_flight == 4.0
    idle = {p.name: p for p in f.state(now=DRAIN_S).replicas}["on-demand-1"]
    assert idle.state == ReplicaState.draining and idle.in_flight == 0.0
    # A serving pod's own count is unknown in the pooled model (None): the same for every serving pod.
    assert pods["on-demand-2"] == Replica(name="on-demand-2", capacity_class=ON_DEMAND,
                                          state=ReplicaState.serving, created_at=0.0, ready_at=0.0, in_flight=None)


def test_a_drain_turning_idle_changes_that_pod_only() -> None:
    """A drained pod runs what it took along until DRAIN_S after it left, then reads idle: only its
    snapshot changes. The serving pods keep the pool's emptiness read when the state was built; a
    change to the pods (here the idle pod's release) rebuilds it and reads the pool afresh."""
    f = fleet(3)
    f.apply(plan(2, 2, retire=("on-demand-1",)), now=0.0)
    before = {p.name: p for p in f.state(now=1.0).replicas}
    assert before["on-demand-1"].in_flight == 4.0 and before["on-demand-2"].in_flight is None
    f.in_flight_per_serving = 0.0  # the pool empties meanwhile
    after = {p.name: p for p in f.state(now=float(DRAIN_S)).replicas}
    assert after["on-demand-1"].in_flight == 0.0
    assert {n: p for n, p in after.items() if n != "on-demand-1"} == \
        {n: p for n, p in before.items() if n != "on-demand-1"}
    f.apply(plan(2, 2), now=float(DRAIN_S))
    assert [r.name for r in f.last_rollout.release] == ["on-demand-1"]
    assert {p.in_flight for p in f.state(now=float(DRAIN_S)).replicas} == {0.0}


@given(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 6), st.integers(0, 3)), min_size=1, max_size=12))
def test_the_state_lists_every_pod_as_a_fresh_snapshot_would(steps: list[tuple[int, int, int]]) -> None:
    """SimFleet keeps its list of pod snapshots as pods come, change and go (only those touched are
    snapshotted again); at every decision it must be the fleet's pods, in order, as a snapshot of
    each taken now reads them. Each step: a plan of `size` pods, `serving` of them serving, the
    fleet's first `retired` pods retired, carried out over 20 s."""
    f = fleet(3)
    t = 0
    for size, serving, retired in steps:
        names = list(f.replicas)
        p = plan(min(serving, size), size, retire=tuple(names[:retired]) if retired <= len(names) else ())
        for _ in range(2):
            if t >= f.next_due:
                f.advance(float(t))
            f.apply(p, now=float(t))
            assert f.state(now=float(t)).replicas == tuple(r.snapshot() for r in f.replicas.values())
            t += INTERVAL


def test_serving_pods_read_idle_only_while_the_pool_is_empty() -> None:
    """Under load a serving pod's in-flight is unknown, so one drained now waits for its count
    (the draining pod's, next decision); with the pool empty every serving pod is idle (0): one
    drained now is released by the same rollout."""
    busy, empty = fleet(3), fleet(3)
    empty.in_flight_per_serving = 0.0
    for f in (busy, empty):
        assert {p.in_flight for p in f.state(now=0.0).replicas} == ({None} if f is busy else {0.0})
        f.apply(plan(2, 2, retire=("on-demand-1",)), now=0.0)
    assert busy.last_rollout.drain == ("on-demand-1",) and busy.last_rollout.release == ()
    assert [(r.name, r.why) for r in empty.last_rollout.release] == [("on-demand-1", "idle")]


@pytest.mark.parametrize("busy_later", [False, True])
def test_a_consolidated_node_changes_billing_not_the_fleet_state(busy_later: bool) -> None:
    """A free node going (Karpenter's consolidation) changes what is billed, not the pods: the
    fleet state stands, unless the request pool's emptiness, read when the state was built, has
    changed since (then it is rebuilt and reads it afresh, as any rebuild would)."""
    f = SimFleet(cold=ColdStart(fixed_s=30.0, consolidate_after_s=60.0), rng=np.random.default_rng(0),
                 interval_s=INTERVAL)
    f.bootstrap(3)
    f.in_flight_per_serving = 0.0  # idle: the retired pod is released by the same rollout
    f.apply(plan(2, 2, retire=("on-demand-1",)), now=0.0)
    assert "on-demand-1" not in f.replicas and sum(f.gpus_running()) == 3  # its free node is billed
    before, billed = f.state(now=10.0), f.billing_version
    if busy_later:
        f.in_flight_per_serving = 4.0
    f.advance(61.0)
    assert sum(f.gpus_running()) == 2 and f.billing_version != billed
    after = f.state(now=61.0)
    if busy_later:
        assert after is not before and {p.in_flight for p in after.replicas} == {None}
    else:
        assert after is before and {p.in_flight for p in after.replicas} == {0.0}


def test_the_time_to_ready_follows_every_start_seen() -> None:
    # The fleet keeps its time_to_ready() between starts; a pod turning Ready is a start.
    f = SimFleet(cold=ColdStart(median_s=48.0, p90_s=79.0), rng=np.random.default_rng(3), interval_s=INTERVAL)
    f.bootstrap(2)
    before = f.time_to_ready()[ON_DEMAND]
    f.apply(plan(3, 3), now=0.0)
    drive(f, 0, 400, plan(3, 3))
    assert len(f.starts[ON_DEMAND]) == 3 and f.n_serving == 3
    after = f.state(now=400.0).time_to_ready_s[ON_DEMAND]
    assert after == time_to_ready(f.starts[ON_DEMAND]) != before
