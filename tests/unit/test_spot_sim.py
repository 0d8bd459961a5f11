"""Spot interruptions in the simulator: what is lost at a reclaim, and that gpufleet loses nothing
at a 120 s notice (issue 7 item 5). Synthetic spot traces: no shared data needed."""

from __future__ import annotations

import numpy as np
import pytest

from gpufleet.core.rollout import Rollout
from gpufleet.core.split import DRAIN_S
from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, Plan, ReplicaState
from gpufleet.sim import traces as T
from gpufleet.sim.fleet import SimFleet
from gpufleet.sim.model import ColdStart
from gpufleet.sim.scenarios import make_scenario
from gpufleet.sim.spot import SpotTrace

NOTICE = 120.0
RECLAIM_NOTICE_AT = 600.0  # the trace turns 0 at tick 10 (60 s ticks)
INTERVAL = 10  # seconds between decisions


def spot_trace(notice_s: float = NOTICE, ones: int = 10, zeros: int = 10, ticks: int = 60) -> SpotTrace:
    """Available for `ones` minutes, gone for `zeros`, back for the rest of `ticks` minutes."""
    avail = np.array([1] * ones + [0] * zeros + [1] * (ticks - ones - zeros), dtype=np.int8)
    return SpotTrace(name="synthetic", available=avail, gap_s=60.0, notice_s=notice_s)


def plan(serving: int, od: int, spot: int, retire: tuple[str, ...] = ()) -> Plan:
    """A plan as the core makes it: retired pods are the interrupted ones its counts include."""
    return Plan(serving=serving, standby=0, on_demand=od, spot=spot, reason="t", message="", retire=retire,
                interrupted=((ON_DEMAND, 0), (SPOT, len(retire))) if retire else None)


class Run:
    """A SimFleet driven second by second, as the engine drives it, recording serving counts."""

    def __init__(self, cold_s: float, notice_s: float = NOTICE) -> None:
        self.fleet = SimFleet(cold=ColdStart(fixed_s=cold_s), rng=np.random.default_rng(0),
                              spot=spot_trace(notice_s), interval_s=INTERVAL)
        self.fleet.in_flight_per_serving = 4.0  # under load: a drained pod takes DRAIN_S to finish
        self.fleet.bootstrap(1)
        self.fleet.schedule_preemptions(3600.0)
        self.t = 0
        self.lost = 0.0  # share of in-flight requests lost, composed over reclaims
        self.serving: dict[int, int] = {}

    def until(self, end: int, apply: Plan | None = None, every: int = INTERVAL) -> None:
        while self.t < end:
            if self.t >= self.fleet.next_due:
                self.fleet.advance(float(self.t))
            if self.fleet.lost_in_flight_share > 0:
                self.lost = 1 - (1 - self.lost) * (1 - self.fleet.lost_in_flight_share)
                self.fleet.lost_in_flight_share = 0.0
            if apply is not None and self.t % every == 0:
                self.fleet.apply(apply, now=float(self.t))
            self.serving[self.t] = self.fleet.n_serving
            self.t += 1

    def names(self, cls: str, **kw: object) -> list[str]:
        return [r.name for r in self.fleet.replicas.values() if r.cls == cls
                and all(getattr(r, k) == v for k, v in kw.items())]

    def with_spot(self) -> list[str]:
        """1 on-demand + 3 spot serving, all Ready before the notice."""
        self.until(300, plan(4, 1, 3))
        spot = self.names(SPOT, state=ReplicaState.serving)
        assert len(spot) == 3 and self.fleet.n_serving == 4
        self.until(int(RECLAIM_NOTICE_AT) + 1, plan(4, 1, 3))
        assert all(self.fleet.replicas[n].interrupted for n in spot)
        return spot


def test_interrupted_replicas_drain_once_replacements_serve() -> None:
    """The core's plan at a notice: 3 replacements on on-demand, the interrupted pods retired.
    The Ready replacements are promoted past the interrupted pods, which then drain: nothing lost,
    and serving never falls below 4 (the sim used to count the interrupted pods as serving, so the
    Ready replacements waited as standbys and the interrupted pods served until reclaimed)."""
    run = Run(cold_s=30.0)
    spot = run.with_spot()
    run.until(900, plan(4, 4, 3, retire=tuple(spot)))
    assert run.lost == 0.0
    assert min(v for t, v in run.serving.items() if t > 100) >= 4
    # drained well before the reclaim at 720 s, then released
    assert not any(n in run.fleet.replicas for n in spot)
    assert len(run.names(ON_DEMAND, state=ReplicaState.serving)) == 4


def test_interrupted_replicas_drain_at_the_deadline_without_replacements() -> None:
    """Replacements slower than the notice: the interrupted pods leave the Service at the last
    decision that leaves them DRAIN_S before their node goes, whether or not replacements are
    Ready, and finish what they run."""
    run = Run(cold_s=300.0)
    run.fleet.cold = ColdStart(fixed_s=30.0)
    spot = run.with_spot()
    run.fleet.cold = ColdStart(fixed_s=300.0)
    reclaim = RECLAIM_NOTICE_AT + NOTICE
    last = int(reclaim - DRAIN_S - INTERVAL)  # the last decision with DRAIN_S to spare
    run.until(last, plan(4, 4, 3, retire=tuple(spot)))
    assert all(run.fleet.replicas[n].state == ReplicaState.serving for n in spot)  # still carrying load
    run.until(last + 1, plan(4, 4, 3, retire=tuple(spot)))
    assert all(run.fleet.replicas[n].state == ReplicaState.draining for n in spot)
    run.until(int(reclaim) - 1, plan(4, 4, 3, retire=tuple(spot)))
    assert not any(n in run.fleet.replicas for n in spot)  # idle and released before the node went
    run.until(int(reclaim) + 5, plan(4, 4, 0))
    assert run.lost == 0.0


def test_naive_spot_loses_what_runs_on_a_reclaimed_node() -> None:
    """A policy that does not retire interrupted pods keeps them serving until their node goes:
    3 of 4 serving pods reclaimed together lose 3/4 of the in-flight requests (not 1/4+1/3+1/2)."""
    run = Run(cold_s=30.0)
    run.with_spot()
    run.until(int(RECLAIM_NOTICE_AT + NOTICE) + 1, plan(4, 1, 3))
    assert run.lost == pytest.approx(0.75)


@pytest.mark.parametrize("left_before_s", [0.0, DRAIN_S / 2, DRAIN_S + 1])
def test_a_late_drain_loses_the_unfinished_part(left_before_s: float) -> None:
    """A pod that left the Service d seconds before its node went loses its share x (1 - d/DRAIN_S)."""
    run = Run(cold_s=30.0)
    spot = run.with_spot()
    reclaim = int(RECLAIM_NOTICE_AT + NOTICE)
    run.until(reclaim - int(left_before_s), plan(4, 1, 3))
    victim = run.fleet.replicas[spot[0]]
    run.fleet.execute(Rollout(drain=(victim.name,)), float(run.t))  # the naive plan never asks
    assert victim.share == pytest.approx(0.25)
    run.until(reclaim + 1, plan(4, 1, 3))
    others = 1 - (1 - 1 / 3) * (1 - 1 / 2)  # the two still serving
    mine = 0.25 * max(0.0, 1 - int(left_before_s) / DRAIN_S)
    assert run.lost == pytest.approx(1 - (1 - others) * (1 - mine))


def _spot_scenario(cold: ColdStart | None = None, notice_s: float = NOTICE) -> object:
    tr = T.step_load(40.0, 1.0, 2400, 0, seed=0)
    # Spot from the start, reclaimed at 1200 s, back at 1800 s.
    return make_scenario("spot", tr, spot=spot_trace(notice_s, ones=20, zeros=10, ticks=40), spot_enabled=True,
                         max_replicas=16, cold=cold)


def test_gpufleet_drops_nothing_at_a_two_minute_notice() -> None:
    sc = _spot_scenario()
    g = sc.run("gpufleet")  # type: ignore[attr-defined]
    assert g.preemptions > 0 and g.gpu_hours_spot > 0
    assert g.dropped == pytest.approx(0.0, abs=1e-6)
    assert g.served == pytest.approx(g.arrived, rel=1e-9)
    naive = sc.run("hpa")  # type: ignore[attr-defined]  # with spot enabled: naive split, no notice handling
    assert naive.preemptions > 0 and naive.lost_in_flight > 1.0


def test_gpufleet_loses_nothing_in_flight_even_when_replacements_are_slower_than_the_notice() -> None:
    sc = _spot_scenario(cold=ColdStart(fixed_s=200.0))
    g = sc.run("gpufleet")  # type: ignore[attr-defined]
    assert g.preemptions > 0
    assert g.lost_in_flight == pytest.approx(0.0, abs=1e-6)


def test_the_fleets_kept_counts_equal_a_count_of_its_pods() -> None:
    """SimFleet.counts (kept as pods change state: the baselines read it on every 2 s tick instead
    of counting the pods) equals a count of the pods in state(), and so do the pods it keeps as
    draining or noticed, second by second through starts, notices, drains of noticed pods,
    reclaims and Pending replacements."""
    run = Run(cold_s=30.0)
    seen: set[str] = set()
    for end, p in ((300, plan(4, 1, 3)), (601, plan(4, 1, 3)), (1500, None)):
        while run.t < end:
            if p is None:  # after the notice: the core's plan retires the noticed pods
                p = plan(4, 1, 3, retire=tuple(run.names(SPOT, interrupted=True)))
            run.until(run.t + 1, p, every=INTERVAL)
            fs = run.fleet.state(now=float(run.t))
            live = [r for r in fs.replicas if r.state != ReplicaState.draining]
            want = (sum(r.state == ReplicaState.serving for r in live), sum(not r.interrupted for r in live),
                    {c: sum(r.capacity_class == c for r in live) for c in (ON_DEMAND, SPOT)})
            assert run.fleet.counts(fs) == want, run.t
            # the pods whose state() follows the clock, kept likewise
            assert set(run.fleet._clocking) == {r.name for r in fs.replicas
                                                if r.interrupted or r.state == ReplicaState.draining}, run.t
            seen |= {r.state.value + ("-noticed" if r.interrupted else "") for r in fs.replicas}
    assert {"draining-noticed", "serving-noticed", "starting", "serving"} <= seen  # the paths it went through
    assert run.fleet.counts(FleetState()) is None  # not its state: the caller counts
