"""Issue 6 item 5: a 1x -> 5x step met from the warm pool (reports/bench/TUNING.md, step section).

Simulator runs of the benchmark's step scenario (seed 0, 20 -> 100 req/s at 30 min, 90 s cold
start), and the core rules behind them: the whole pool is promoted in one tick (the scale-up step
limit paces cold starts, not promotions), the queue need counts the backlog grown since the
scrape, a backlog's latency echo does not ask for more than the queue does, and Ready standbys
count toward the forecast's trusted step.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core import capacity
from gpufleet.core.fleet import FleetView
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.stabilize import max_up_step
from gpufleet.core.types import ON_DEMAND, FleetState, ForecastSummary, Observation, PolicyMemory, Replica, ReplicaState
from gpufleet.sim import traces as T
from gpufleet.sim.engine import SimResult
from gpufleet.sim.model import ColdStart
from gpufleet.sim.scenarios import make_scenario

NOW = 100_000.0
POLICY = GpufleetPolicy()
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def step_run(pool: int | str, interval: int | None = None, scrape_s: int = 15) -> SimResult:
    """The benchmark's step scenario (benchmarks/sim_bench.py, reports/bench/tuning_ab.py)."""
    tr = T.step_load(20.0, 5.0, 1800, 1800, seed=0)
    sc = make_scenario("step", tr, seed=0, cold=ColdStart(fixed_s=90.0), step_at_s=1800, warm_pool=pool)
    sc.cfg = replace(sc.cfg, scrape_s=scrape_s)
    if interval is not None:
        sc.spec = sc.spec.model_copy(update={"scaling": sc.spec.scaling.model_copy(update={"interval_seconds": interval})})
    return sc.run("gpufleet")


# ---------------------------------------------------------------------------------------------
# The step in the simulator.


def test_step_with_a_pool_of_8_is_absorbed_in_one_tick() -> None:
    # Before: the pool joined 4 per tick (the scale-up step limit), 49 s in violation.
    r = step_run(8)
    assert r.violation_after_step_s is not None and r.violation_after_step_s <= 40


def test_step_with_a_pool_of_12() -> None:
    r = step_run(12)  # before: 42 s (the queue need capped the promotion at 15 serving, in 2 ticks)
    assert r.violation_after_step_s is not None and r.violation_after_step_s <= 30


def test_the_first_20_s_after_the_step_are_not_visible_to_any_policy() -> None:
    # The step at t=1800 is first scraped at 1815 (the queue at the end of 1814) and decided on at
    # 1820: even a pool as large as replicas.max leaves 20 s + the backlog's drain in violation.
    # This is why the <= 15 s goal is out of reach with a 15 s scrape and a 10 s loop.
    r = step_run(21)
    assert r.violation_after_step_s is not None and 20 <= r.violation_after_step_s <= 28


def test_step_goal_is_met_with_a_5_s_scrape_and_loop() -> None:
    # The bench's step-1x-5x-cold90s-scrape5s (every policy sees the faster scrape).
    r = step_run(8, interval=5, scrape_s=5)
    assert r.violation_after_step_s is not None and r.violation_after_step_s <= 15


# ---------------------------------------------------------------------------------------------
# Core rules.


def spec_of(**extra: Any) -> InferenceServiceSpec:
    doc: dict[str, Any] = {
        "model": {"name": "m"},
        "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
        "replicas": {"min": 1, "max": 23},
        "slo": {"queueDepthPerReplica": 8, "ttftP95Ms": 1000},
        "scaling": {"intervalSeconds": 10, "targetRpsPerReplica": 13.7},
        "warmPool": {"size": 8},
    }
    doc.update(extra)
    return InferenceServiceSpec.model_validate(doc)


def fleet(serving: int, standby: int, starting: int = 0) -> FleetState:
    reps = [Replica(f"s{i}", ON_DEMAND, ReplicaState.serving, 0.0, 1.0) for i in range(serving)]
    reps += [Replica(f"b{i}", ON_DEMAND, ReplicaState.standby, 0.0, 2.0 + i) for i in range(standby)]
    reps += [Replica(f"c{i}", ON_DEMAND, ReplicaState.starting, NOW - 5, None) for i in range(starting)]
    return FleetState(replicas=tuple(reps), time_to_ready_s={ON_DEMAND: 90.0})


def test_whole_pool_promoted_in_one_tick_on_a_step() -> None:
    # The sample the core saw 20 s after the step: 1,024 queued at 2 serving, 15 s after 1 queued.
    obs = Observation(sampled_at=NOW - 5, queue_depth=1024.0, ttft_p95_ms=2032.0, request_rate=41.0)
    memory = PolicyMemory(last_serving=2, last_queue=(1.0, NOW - 20), started_at=NOW - 3600)
    plan, _ = POLICY.decide(spec=spec_of(), observation=obs, forecast=None, fleet=fleet(2, 8), memory=memory, now=NOW)
    assert plan.serving == 10 and len(plan.promote) == 8  # before: 6 (2 + max step 4), promote 4
    assert "1365 queued by now" in plan.message  # 1,024 + 68/s x 5 s since the scrape


def test_promotion_still_bounded_by_the_step_limit_for_cold_starts() -> None:
    obs = Observation(sampled_at=NOW, queue_depth=1024.0, ttft_p95_ms=2032.0, request_rate=41.0)
    plan, _ = POLICY.decide(spec=spec_of(), observation=obs, forecast=None, fleet=fleet(2, 1),
                            memory=PolicyMemory(last_serving=2), now=NOW)
    assert plan.serving == 6 and len(plan.promote) == 1  # 2 + max(4, 1 standby); the rest cold


def test_backlog_grows_while_the_sample_ages() -> None:
    obs = Observation(sampled_at=NOW - 5, queue_depth=1000.0)
    assert capacity.backlog_now(obs, (100.0, NOW - 20), NOW) == pytest.approx(1000 + 60 * 5)
    assert capacity.backlog_now(obs, (2000.0, NOW - 20), NOW) == 1000.0  # shrinking: as sampled
    assert capacity.backlog_now(obs, None, NOW) == 1000.0
    assert capacity.backlog_now(obs, (100.0, NOW - 5), NOW) == 1000.0  # same sample: no growth known
    old = Observation(sampled_at=NOW - 500, queue_depth=1000.0)
    assert capacity.backlog_now(old, (100.0, NOW - 515), NOW) == pytest.approx(1000 + 60 * capacity.MAX_EXTRAPOLATE_S)


def test_latency_echo_of_a_backlog_asks_no_more_than_the_queue() -> None:
    spec = spec_of()
    # 30 s after the step: 10 serving (pool promoted), the 1-min p95 still shows the backlog's wait.
    obs = Observation(sampled_at=NOW, queue_depth=831.0, ttft_p95_ms=6255.0, request_rate=61.1)
    prev = (1024.0, NOW - 15)  # draining since the previous scrape
    plain = capacity.all_needs(spec, obs, None, 13.7, 10, 2, prev, now=NOW)
    echo = capacity.all_needs(spec, obs, None, 13.7, 10, 2, prev, now=NOW, backlog_recent=True)
    lat = [n for n in plain if n.reason == capacity.LATENCY][0]
    q = [n for n in echo if n.reason == capacity.QUEUE_DEPTH][0]
    capped = [n for n in echo if n.reason == capacity.LATENCY][0]
    assert lat.replicas == 13 and q.replicas == 11 and capped.replicas == 11
    assert "backlog's wait" in capped.message


def fneed(spec: InferenceServiceSpec, fc: ForecastSummary, load: int, standby: int = 0) -> int:
    n = capacity.forecast_need(spec, fc, 13.7, load, standby)
    assert n is not None
    return n.replicas


def test_standbys_count_toward_the_forecasts_trusted_step() -> None:
    spec = spec_of()
    # After the level shift: a flat 100 rps (load needs 8), the forecast band still reads 245.
    fc = ForecastSummary(horizon_s=100, mean_rps=100.0, upper_rps=245.0, method="hw")
    assert fneed(spec, fc, 8) == 16  # 8 + one step of 8
    assert fneed(spec, fc, 8, standby=8) == 9  # the pool is the step
    assert fneed(spec, fc, 8, standby=4) == 12
    calm = ForecastSummary(horizon_s=100, mean_rps=100.0, upper_rps=110.0, method="hw")
    assert fneed(spec, calm, 8, standby=8) == 9  # within the cap: unchanged


# ---------------------------------------------------------------------------------------------
# Properties.


@st.composite
def step_cases(draw: st.DrawFn) -> tuple[InferenceServiceSpec, FleetState, Observation, PolicyMemory]:
    hi = draw(st.integers(2, 40))
    size = draw(st.one_of(st.integers(0, 30), st.just("auto")))
    spec = spec_of(replicas={"min": 1, "max": hi}, warmPool={"size": size, "max": draw(st.integers(0, 30))})
    serving = draw(st.integers(1, hi))
    standby = draw(st.integers(0, hi - serving))
    starting = draw(st.integers(0, max(0, hi - serving - standby)))
    q = draw(st.floats(0, 5000))
    obs = Observation(sampled_at=NOW - draw(st.sampled_from([0.0, 5.0, 10.0])), queue_depth=q,
                      queue_time_ms=0.0, ttft_p95_ms=draw(st.floats(0, 20_000)), request_rate=draw(st.floats(0, 400)))
    prev = draw(st.one_of(st.none(), st.tuples(st.floats(0, 5000), st.just(NOW - 25.0))))
    memory = PolicyMemory(last_serving=serving + starting, last_queue=prev, started_at=NOW - 3600,
                          backlog_at=draw(st.one_of(st.none(), st.just(NOW - 10.0))))
    return spec, fleet(serving, standby, starting), obs, memory


@SETTINGS
@given(case=step_cases())
def test_promotion_never_exceeds_the_pool_nor_max(case: tuple[InferenceServiceSpec, FleetState, Observation, PolicyMemory]) -> None:
    spec, fl, obs, memory = case
    plan, new = POLICY.decide(spec=spec, observation=obs, forecast=None, fleet=fl, memory=memory, now=NOW)
    view = FleetView.of(fl)
    assert len(plan.promote) <= view.standby
    assert len(plan.promote) <= max(0, plan.serving - view.serving)
    assert plan.serving + plan.standby <= spec.replicas.max
    # The pool is not held back by the step limit: what the need asks for, the pool gives at once.
    current = memory.last_serving or 0
    assert new.last_need is not None
    if new.last_need > current:
        assert plan.serving >= min(new.last_need, current + view.standby, spec.replicas.max)
        assert len(plan.promote) == min(view.standby, max(0, plan.serving - view.serving))


@SETTINGS
@given(case=step_cases(), a=st.floats(0, 5000), b=st.floats(0, 5000))
def test_serving_monotone_in_queue_with_growth_history(
    case: tuple[InferenceServiceSpec, FleetState, Observation, PolicyMemory], a: float, b: float
) -> None:
    spec, fl, obs, memory = case
    lo_q, hi_q = sorted((a, b))
    low, _ = POLICY.decide(spec=spec, observation=replace(obs, queue_depth=lo_q), forecast=None, fleet=fl,
                           memory=memory, now=NOW)
    high, _ = POLICY.decide(spec=spec, observation=replace(obs, queue_depth=hi_q), forecast=None, fleet=fl,
                            memory=memory, now=NOW)
    assert low.serving <= high.serving
    assert len(low.promote) <= len(high.promote)


@SETTINGS
@given(q=st.floats(0, 5000), q2=st.floats(0, 5000), prev=st.floats(0, 5000), age=st.floats(0, 120),
       rate=st.floats(0, 400), serving=st.integers(1, 40))
def test_queue_need_monotone_and_bounded(q: float, q2: float, prev: float, age: float, rate: float, serving: int) -> None:
    spec = spec_of(replicas={"min": 1, "max": 1000})
    lo_q, hi_q = sorted((q, q2))
    needs = []
    for depth in (lo_q, hi_q):
        obs = Observation(sampled_at=NOW - age, queue_depth=depth, request_rate=rate)
        n = capacity.queue_need(spec, obs, serving, 13.7, (prev, NOW - age - 15), NOW)
        assert n is not None
        assert n.replicas <= capacity.ceil_replicas(depth / spec.slo.queue_depth_per_replica)  # the old figure
        needs.append(n.replicas)
    assert needs[0] <= needs[1]


@SETTINGS
@given(upper=st.floats(0, 1000), upper2=st.floats(0, 1000), mean=st.floats(0, 1000), load=st.integers(0, 40),
       standby=st.integers(0, 30))
def test_forecast_need_monotone_in_upper_and_never_below_load_plus_one(
    upper: float, upper2: float, mean: float, load: int, standby: int
) -> None:
    spec = spec_of()
    lo_u, hi_u = sorted((upper, upper2))
    a = capacity.forecast_need(spec, ForecastSummary(90, mean, lo_u, "hw"), 13.7, load, standby)
    b = capacity.forecast_need(spec, ForecastSummary(90, mean, hi_u, "hw"), 13.7, load, standby)
    assert a is not None and b is not None
    assert a.replicas <= b.replicas
    assert b.replicas <= load + max(max_up_step(spec, load) - standby, 1)
    assert b.replicas >= min(capacity.ceil_replicas(hi_u / 13.7), load + 1)
    assert not math.isnan(b.replicas)
