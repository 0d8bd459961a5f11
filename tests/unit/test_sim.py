"""Fleet simulator: conservation, determinism, oracle bound, cold-start step, real loaders."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.schedule import Window
from gpufleet.core.types import FleetState, ForecastSummary, Observation, Plan, PolicyMemory, ReplicaState
from gpufleet.sim import traces as T
from gpufleet.sim.baselines import HpaLike, StaticPeak
from gpufleet.sim.engine import simulate
from gpufleet.sim.model import ColdStart, LatencyBook, ReplicaModel, erlang_c
from gpufleet.sim.scenarios import make_scenario
from gpufleet.sim.spot import load_spot

HAVE_TRACES = os.path.isdir(T.SHARED_TRACES)
needs_traces = pytest.mark.skipif(not HAVE_TRACES, reason="../shared/traces not present")


def small_trace(seed: int = 0, seconds: int = 900, rps: float = 20.0) -> T.Trace:
    return T.step_load(rps, 1.0, seconds, 0, seed=seed)


def test_erlang_c_known_values() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)
    assert erlang_c(2, 0.5) == pytest.approx(1 / 3)
    assert erlang_c(10, 0.0) == 0.0


def test_attainment_falls_with_utilisation() -> None:
    book = LatencyBook(ReplicaModel(), np.full(100, 800.0), target_s=1.0)
    vals = [book.attainment(book.key(4, rho, 1.0, 0.0)) for rho in (0.1, 0.5, 0.9, 0.99)]
    assert vals == sorted(vals, reverse=True)
    assert vals[0] > 0.999


def test_runs_of_one_trace_share_latency_states_with_the_same_results() -> None:
    """The engine keeps per-state latency values by LatencyBook inputs (engine._BOOK_MEMOS): a
    second run on the trace evaluates no new state and gets what a fresh process would."""
    from gpufleet.sim import engine

    tr = T.step_load(10.0, 4.0, 300, 600, seed=5)
    sc = make_scenario("m", tr, seed=2)
    engine._BOOK_MEMOS.clear()
    first = sc.run("hpa")
    memo = engine._book_memo(sc.cfg.model, tr.in_sample, sc.cfg.target_ttft_s)
    states = dict(memo.by_state)
    assert states and memo.attain
    again = sc.run("hpa")
    assert memo.by_state == states  # nothing new evaluated
    engine._BOOK_MEMOS.clear()
    fresh = sc.run("hpa")
    for r in (again, fresh):
        assert dataclasses.replace(r, wall_s=0.0).row() == dataclasses.replace(first, wall_s=0.0).row()
        assert np.array_equal(r.hist, first.hist) and np.array_equal(r.viol, first.viol)
    other = LatencyBook(sc.cfg.model, tr.in_sample * 2, sc.cfg.target_ttft_s)  # other inputs, own values
    assert other._attain is not memo.attain


def test_conservation_every_request_served_or_dropped() -> None:
    tr = T.step_load(10.0, 6.0, 300, 600, seed=1)
    sc = make_scenario("c", tr, cold=ColdStart(fixed_s=90.0), max_replicas=12)
    for pol in ("hpa", "keda", "knative-kpa", "static-peak"):
        r = sc.run(pol)
        assert r.arrived == pytest.approx(tr.total_requests)
        assert r.served + r.dropped == pytest.approx(r.arrived, rel=1e-9, abs=1e-6)
        assert 0.0 <= r.attainment <= 1.0


def test_overload_drops_are_counted() -> None:
    tr = small_trace(rps=200.0, seconds=400)
    sc = make_scenario("o", tr, max_replicas=2)
    r = simulate(tr, StaticPeak(1), sc.spec, sc.cfg, forecaster=None)
    assert r.dropped > 0
    assert r.served + r.dropped == pytest.approx(r.arrived, rel=1e-9)
    assert r.attainment < 0.5


def test_deterministic_per_seed() -> None:
    tr = T.step_load(10.0, 4.0, 300, 600, seed=3)
    a = make_scenario("d", tr, seed=7).run("hpa")
    b = make_scenario("d", tr, seed=7).run("hpa")
    c = make_scenario("d", tr, seed=8).run("hpa")
    fields = ("attainment", "gpu_hours", "served", "dropped", "scale_events", "violation_s")
    assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]
    assert np.array_equal(a.serving, b.serving)
    # another seed draws other cold starts
    assert (a.gpu_hours, a.attainment) != (c.gpu_hours, c.attainment)


def test_oracle_never_worse_on_gpu_hours() -> None:
    tr = T.scale_load(T.step_load(8.0, 3.0, 600, 900, seed=2), 1.0)
    sc = make_scenario("o", tr, cold=ColdStart(fixed_s=60.0), max_replicas=16)
    oracle = sc.run_oracle()
    assert oracle.attainment >= 0.999
    for pol in ("static-peak", "hpa", "keda", "knative-kpa"):
        r = sc.run(pol)
        if r.attainment >= oracle.attainment - 1e-9:
            assert oracle.gpu_hours <= r.gpu_hours + 1e-9, pol
        # whatever the attainment, nobody reaches the oracle's at lower cost than the oracle pays
        assert oracle.gpu_hours <= r.gpu_hours or r.attainment < oracle.attainment


@dataclasses.dataclass
class FixedWithStandby:
    """Serves `serving_lo` with `standby` warm; promotes them for good once a queue shows up (or the
    rate passes `switch_rps`): the queue is a snapshot at the last scrape, the rate a 1 min average."""

    serving_lo: int
    serving_hi: int
    standby: int
    switch_rps: float
    name: str = "fixed-standby"
    interval_s: int = 5

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        self.hi = getattr(self, "hi", False) or (observation.request_rate or 0.0) > self.switch_rps \
            or (observation.queue_depth or 0.0) > 20.0
        hi = self.hi
        serving = self.serving_hi if hi else self.serving_lo
        standby_names = tuple(r.name for r in fleet.replicas if r.state == ReplicaState.standby)
        total = max(serving + (0 if hi else self.standby), self.serving_lo + self.standby)
        return Plan(serving=serving, standby=total - serving, on_demand=total, spot=0, reason="t", message="t",
                    promote=standby_names if hi else ()), memory


def test_cold_start_step_violates_for_reactive_policy_not_with_warm_standbys() -> None:
    tr = T.step_load(20.0, 5.0, 900, 900, seed=4)
    sc = make_scenario("step", tr, cold=ColdStart(fixed_s=90.0), step_at_s=900, max_replicas=24)
    need_hi = int(sc.oracle_need()[900:].max())
    need_lo = int(sc.oracle_need()[600:900].max())
    reactive = simulate(tr, HpaLike(), sc.spec, sc.cfg, forecaster=None, step_at_s=900)
    assert reactive.violation_after_step_s is not None and reactive.violation_after_step_s >= 30
    warm = FixedWithStandby(serving_lo=need_lo, serving_hi=need_hi, standby=need_hi - need_lo, switch_rps=40.0)
    cfg = dataclasses.replace(sc.cfg, initial_serving=need_lo + (need_hi - need_lo))
    res = simulate(tr, warm, sc.spec, cfg, forecaster=None, step_at_s=900)
    # Standbys remove the cold start from the outage: what is left is seeing the step (15 s scrape,
    # 30 s rate window) plus one decision interval, the same whatever the cold start.
    assert res.violation_after_step_s is not None and res.violation_after_step_s <= 30
    assert res.violation_after_step_s + 60 <= reactive.violation_after_step_s
    slow = dataclasses.replace(cfg, cold=ColdStart(fixed_s=300.0))
    warm2 = FixedWithStandby(serving_lo=need_lo, serving_hi=need_hi, standby=need_hi - need_lo, switch_rps=40.0)
    res_slow = simulate(tr, warm2, sc.spec, slow, forecaster=None, step_at_s=900)
    assert res_slow.violation_after_step_s == res.violation_after_step_s
    # and with the standbys already serving there is no violation at all
    always = FixedWithStandby(serving_lo=need_hi, serving_hi=need_hi, standby=0, switch_rps=0.0)
    res_hi = simulate(tr, always, sc.spec, cfg, forecaster=None, step_at_s=900)
    assert res_hi.violation_after_step_s == 0


def test_scale_and_splice() -> None:
    tr = small_trace(seconds=300)
    x2 = T.scale_load(tr, 2.0, seed=1)
    assert x2.total_requests == pytest.approx(2 * tr.total_requests)
    x15 = T.scale_load(tr, 1.5, seed=1)
    assert 1.3 * tr.total_requests < x15.total_requests < 1.7 * tr.total_requests
    sp = T.splice(tr, x2)
    assert sp.seconds == 600 and sp.total_requests == pytest.approx(3 * tr.total_requests)


def test_generic_csv(tmp_path) -> None:
    p = tmp_path / "log.csv"
    p.write_text("timestamp,input_tokens,output_tokens\n0.1,100,10\n0.5,200,20\n2.2,300,30\n")
    tr = T.load_generic_csv(str(p))
    assert tr.seconds == 3 and tr.counts.tolist() == [2.0, 0.0, 1.0]
    assert tr.in_tokens.tolist() == [300.0, 0.0, 300.0]


@needs_traces
def test_real_loaders_parse() -> None:
    az = T.load_azure()
    assert az.total_requests == 8819 and 3300 < az.seconds < 3500
    mc = T.load_mooncake()
    assert mc.total_requests == 12031 and mc.in_sample.mean() > 5000
    sg = T.load_servegen_clients(T.servegen_folder("m-small"), scale=0.1)
    assert sg.seconds == 14 * 86400
    assert 50 < sg.counts.mean() < 200
    assert sg.missing.any()  # the all-zero gap windows
    assert sg.counts[sg.missing].mean() > 0.2 * sg.counts.mean()  # filled, not silent
    agg = T.load_trace("servegen-agg:m-mid@0.01")
    assert agg.seconds == 14 * 86400
    spot = load_spot("availability/1-node/aws-02-15-2023/us-east-2a_v100_1.json")
    assert spot.notice_s == 120 and 0.5 < spot.available.mean() < 0.95
    gcp = load_spot("preemption/1-node/gcp-04-30-2023/us-central1-a_c3-88.json")
    assert gcp.notice_s == 30


@needs_traces
def test_spot_reclaim_with_notice_replaces_without_drops() -> None:
    """On a real AWS availability trace (a reclaim 10 min in), gpufleet replaces the reclaimed
    replicas within the notice: nothing dropped, nothing in flight lost; the naive spot split
    of the HPA-like baseline, on the same trace, loses in-flight work."""
    tr = small_trace(seconds=1800, rps=30.0)
    spot = load_spot("availability/1-node/aws-02-15-2023/us-east-2a_v100_1.json")
    from gpufleet.sim.spot import offset_with_preemption

    spot = dataclasses.replace(spot, offset_s=offset_with_preemption(spot, tr.seconds, after_s=600))
    sc = make_scenario("s", tr, spot=spot, spot_enabled=True, max_replicas=12)
    g = sc.run("gpufleet")
    assert g.preemptions > 0 and g.gpu_hours_spot > 0
    # Well under one request (float residue of fractional in-flight shares); the naive split loses ~90.
    assert g.dropped == pytest.approx(0.0, abs=1e-3) and g.lost_in_flight == pytest.approx(0.0, abs=1e-3)
    assert g.served == pytest.approx(g.arrived, rel=1e-9)
    naive = sc.run("hpa")  # scenario with spot: HPA splits naively
    assert naive.preemptions > 0 and naive.lost_in_flight > 1.0
    assert naive.served + naive.dropped == pytest.approx(naive.arrived, rel=1e-9)
