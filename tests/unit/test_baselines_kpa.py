"""Knative-KPA-like baseline: the per-pod concurrency target from a load test at the HPA's
utilisation (the 70 % target percentage applied once), the load test against the simulator's own
reading, scale-down-delay, panic mode and the scale-down rate."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.schedule import Window
from gpufleet.core.types import FleetState, ForecastSummary, Observation, Plan, PolicyMemory
from gpufleet.sim import traces as T
from gpufleet.sim.baselines import KpaLike, _plan
from gpufleet.sim.engine import simulate
from gpufleet.sim.loadtest import LoadTest
from gpufleet.sim.scenarios import Scenario, make_scenario
from tests.unit.test_baselines_hpa import fleet, spec


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    """The spec a user writes for a steady service: targetRpsPerReplica from the load test."""
    return make_scenario("kpa", T.step_load(40.0, 1.0, 600, 0, seed=0))


def with_utilization(s: InferenceServiceSpec, u: float) -> InferenceServiceSpec:
    return s.model_copy(update={"scaling": s.scaling.model_copy(update={"target_utilization": u})})


@dataclasses.dataclass
class Source:
    in_flight: float = 0.0


def run(kpa: KpaLike, s: InferenceServiceSpec, conc: list[float], n: int) -> list[int]:
    """The KPA's decisions on a fleet of `n` ready pods, one 2 s tick per concurrency value."""
    src = Source()
    kpa.concurrency_source = src
    out = []
    f = fleet(n)
    for k, c in enumerate(conc):
        src.in_flight = c
        plan, _ = kpa.decide(spec=s, observation=Observation(), forecast=None, fleet=f, memory=PolicyMemory(),
                             now=2.0 * k)
        out.append(plan.serving)
    return out


@pytest.mark.parametrize("u", [0.55, 0.7, 0.85])
def test_target_is_the_in_flight_measured_at_the_utilisation(scenario: Scenario, u: float) -> None:
    load_test = LoadTest.of(scenario.cfg.model, scenario.trace)
    rps = scenario.rps_per_replica
    assert scenario.spec.scaling.target_rps_per_replica == pytest.approx(rps, rel=1e-3)
    s = with_utilization(scenario.spec, u)
    kpa = KpaLike(load_test=load_test.in_flight)
    measured = load_test.in_flight(s.scaling.target_rps_per_replica * u)
    # Knative keeps target x 70 %: the user writes target = C / 0.7, so the pod keeps C (u once).
    assert kpa.annotation(s) == pytest.approx(measured / 0.70)
    assert kpa.per_pod_target(s) == pytest.approx(measured)
    # the knob overrides the spec's utilisation
    assert KpaLike(load_test=load_test.in_flight, utilization=u).per_pod_target(with_utilization(s, 0.8)) == \
        pytest.approx(measured)
    # the same target written as measured with the percentage at 100 %
    assert KpaLike(target_concurrency=measured, target_percentage=100.0).per_pod_target(s) == pytest.approx(measured)
    # the load test at the capacity rate is the scenario's "in-flight per replica" figure
    at_capacity = load_test.in_flight(s.scaling.target_rps_per_replica)
    assert at_capacity == pytest.approx(scenario.inflight_per_replica, rel=0.01)
    assert kpa.per_pod_target(s) < at_capacity
    # In-flight is convex in the rate: at u of the capacity rate a pod holds less than u of its
    # in-flight at capacity. The old row's target (70 % of the in-flight at capacity) sat at ~90 %
    # of the capacity rate, not at the 70 % it said.
    assert kpa.per_pod_target(s) < u * at_capacity
    old = KpaLike(target_concurrency=scenario.inflight_per_replica).per_pod_target(s)
    assert old == pytest.approx(0.70 * scenario.inflight_per_replica)
    rates = np.linspace(0.0, rps, 401)
    rate_at_old = rates[np.searchsorted([load_test.in_flight(r) for r in rates], old)]
    assert rate_at_old > 0.85 * rps


def test_load_test_reads_what_the_simulator_shows_at_a_steady_rate() -> None:
    """The load test's in-flight is what the simulator's queue-proxy view (SimMetrics.in_flight)
    reads under a steady Poisson load at that per-replica rate."""

    @dataclasses.dataclass
    class Probe:
        n: int
        name: str = "probe"
        interval_s: int = 1
        concurrency_source: object = None
        seen: list[float] = dataclasses.field(default_factory=list)

        def decide(self, *, spec: InferenceServiceSpec, observation: Observation,
                   forecast: ForecastSummary | None, fleet: FleetState, memory: PolicyMemory, now: float,
                   windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
            self.seen.append(float(getattr(self.concurrency_source, "in_flight")))
            return _plan(spec, fleet, self.n, "Probe", "", False), memory

    n = 4
    probe_sc = make_scenario("probe", T.step_load(40.0, 1.0, 60, 0, seed=0))
    lt = LoadTest.of(probe_sc.cfg.model, probe_sc.trace)
    for u in (0.6, 0.8):
        rate = u * probe_sc.rps_per_replica
        tr = T.step_load(rate * n, 1.0, 1800, 0, seed=2)
        p = Probe(n)
        simulate(tr, p, probe_sc.spec, dataclasses.replace(probe_sc.cfg, initial_serving=n, drain_tail_s=0),
                 forecaster=None)
        measured = float(np.mean(p.seen[300:])) / n
        assert measured == pytest.approx(LoadTest.of(probe_sc.cfg.model, tr).in_flight(rate), rel=0.05)
        assert measured == pytest.approx(lt.in_flight(rate), rel=0.08)


def test_scale_down_delay_holds_the_count_for_that_long_after_a_drop() -> None:
    s = spec()
    n = 10
    tv = 7.0  # annotation 10 x 70 %
    conc = [n * tv] * 60 + [tv] * 150  # 2 min at 10 pods' worth, then 1 pod's worth
    plain = run(KpaLike(target_concurrency=10.0), s, conc, n)
    assert KpaLike().scale_down_delay_s == 0.0  # Knative's default: no delay
    drop = next(k for k, c in enumerate(plain) if k >= 60 and c < n)
    for delay in (30.0, 120.0):
        held = run(KpaLike(target_concurrency=10.0, scale_down_delay_s=delay), s, conc, n)
        ticks = int(delay / 2)
        # the highest count of the last `delay` seconds: the count before the drop holds that long
        assert all(c == n for c in held[:drop + ticks - 1])
        assert held[drop + ticks - 1] < n
        assert held == [max(plain[max(0, k - ticks + 1): k + 1]) for k in range(len(plain))]


def test_scale_down_is_at_most_halving_per_tick_and_never_in_panic() -> None:
    s = spec()
    n = 10
    tv = 7.0
    # Load vanishes after 2 min at 10 pods' worth: the stable mean decays, each tick's count is
    # bounded below by half the ready pods.
    out = run(KpaLike(target_concurrency=10.0), s, [n * tv] * 60 + [0.0] * 60, n)
    assert min(out) == math.floor(n / 2)
    # A burst: in the 6 s panic window it reads 3x the ready pods' worth (over the 200 % threshold),
    # so the KPA scales to the panic count at once, then holds it (no scale-down in panic) until a
    # stable window has passed without the condition.
    conc = [n * tv] * 60 + [3 * n * tv] * 5 + [n * tv] * 60
    out = run(KpaLike(target_concurrency=10.0), s, conc, n)
    burst = 60
    assert out[burst - 1] == n
    first = next(k for k in range(burst, burst + 5) if out[k] >= 2 * n)
    # the panic count, not the stable window's (its 60 s mean is still near n pods' worth)
    assert math.ceil(float(np.mean(conc[first - 29: first + 1])) / tv) < 2 * n
    top = out.index(max(out))
    panic_end = next(k for k in range(top, len(out)) if out[k] < out[top])
    window = out[first:panic_end]
    assert window == sorted(window)  # no scale-down in panic
    assert (panic_end - top) * 2.0 > 60.0  # held for more than a stable window after the peak


def test_a_new_autoscaler_starts_in_panic_holding_what_is_ready() -> None:
    s = spec()
    out = run(KpaLike(target_concurrency=10.0), s, [0.0] * 40, 12)
    assert out[:30] == [12] * 30  # the stable window's length
    assert out[-1] < 12
