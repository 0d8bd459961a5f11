"""KEDA-like baseline as an LLM-serving user configures it: a Prometheus request-rate trigger plus
the queue-depth trigger, the larger proposal wins, queried at each 15 s HPA sync. The old row had
the queue trigger alone, which reads zero whenever replicas keep up, and cycled max -> 1 -> max."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.schedule import Window
from gpufleet.core.types import FleetState, ForecastSummary, Observation, Plan, PolicyMemory
from gpufleet.sim import traces as T
from gpufleet.sim.baselines import HpaLike, HpaScaler, KedaLike, _count, _plan
from gpufleet.sim.engine import simulate
from gpufleet.sim.scenarios import make_scenario
from tests.unit.test_baselines_hpa import RPS, fleet, spec


def keda(policy: KedaLike, s: InferenceServiceSpec, rate: float | None, queue: float | None, n: int,
         now: float) -> int:
    obs = Observation(sampled_at=now, request_rate=rate, queue_depth=queue)
    plan, _ = policy.decide(spec=s, observation=obs, forecast=None, fleet=fleet(n), memory=PolicyMemory(), now=now)
    return plan.serving


def test_takes_the_larger_of_its_two_triggers() -> None:
    s = spec()
    q = s.slo.queue_depth_per_replica
    n = 10
    # rate proposes more than the (empty) queue: the rate trigger's count
    rate = 130.0
    assert keda(KedaLike(), s, rate, 0.0, n, 0.0) == math.ceil(rate / (RPS * 0.8))
    # a queue that proposes more than the rate: the queue trigger's count
    queue = 17 * q
    assert keda(KedaLike(), s, 60.0, queue, n, 0.0) == math.ceil(queue / q)
    # the rate trigger is the HPA's: same target, same knob
    for u in (0.55, 0.85):
        assert keda(KedaLike(utilization=u), s, rate, 0.0, n, 0.0) == \
            HpaLike(utilization=u).decide(spec=s, observation=Observation(sampled_at=0.0, request_rate=rate),
                                          forecast=None, fleet=fleet(n), memory=PolicyMemory(), now=0.0)[0].serving


def test_queued_at_zero_with_a_high_rate_does_not_collapse() -> None:
    s = spec()
    pol = KedaLike()
    rate = 400.0
    want = math.ceil(rate / (RPS * 0.8))
    n = want
    counts = []
    for k in range(80):  # 20 min of 15 s syncs, replicas keeping up: the queue reads 0
        n = keda(pol, s, rate, 0.0, n, 15.0 * k)
        counts.append(n)
    assert set(counts) == {want}


def test_is_queried_at_each_hpa_sync() -> None:
    assert KedaLike().interval_s == HpaLike().interval_s == HpaScaler().sync_s == 15


@dataclasses.dataclass
class QueueOnlyKeda:
    """The old configuration, kept here as the control: the queue trigger alone, polled every 30 s."""

    name: str = "keda-queue-only"
    interval_s: int = 30
    hpa: HpaScaler = dataclasses.field(default_factory=HpaScaler)

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        n = self.hpa.desired(metric_total=observation.queue_depth, target=spec.slo.queue_depth_per_replica,
                             current=max(_count(fleet).current, 1), now=now, lo=spec.replicas.min,
                             hi=spec.replicas.max)
        return _plan(spec, fleet, n, "QueueDepth", "", False), memory


def test_steady_load_gives_a_steady_replica_count_where_queue_only_cycles() -> None:
    tr = T.step_load(150.0, 1.0, 3600, 0, seed=5)  # steady Poisson load, 1 h
    sc = make_scenario("steady", tr)
    res = sc.run("keda")
    after = res.serving[10:]  # past the first 10 min
    assert after.max() - after.min() <= 1
    assert res.attainment > 0.99
    control = simulate(tr, QueueOnlyKeda(), sc.spec, sc.cfg, forecaster=None)
    ctl = control.serving[10:]
    # The queue-only trigger empties the fleet whenever it keeps up, then refills it: a cycle
    # (sampled once a minute, so its low point between samples is not seen).
    assert ctl.max() - ctl.min() >= np.median(after)
    assert control.scale_events > 5 * max(res.scale_events, 1)
