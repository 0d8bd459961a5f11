"""What the engine takes from a trace: bursts counted once (the sub-second M/G/c term gets the
within-second variability, never the per-second dispersion the counts already carry), and the
request rate the policies read counts every arrival, rejected ones included."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.schedule import Window
from gpufleet.core.types import FleetState, ForecastSummary, Observation, Plan, PolicyMemory
from gpufleet.sim import traces as T
from gpufleet.sim.baselines import StaticPeak
from gpufleet.sim.engine import SimConfig, simulate
from gpufleet.sim.model import LatencyBook
from tests.builders import make_spec

BURSTY = T.BurstModel(dispersion=20.0, weight_fast=0.8, phi_fast=0.8, phi_slow=0.98, ca2=1.7, source="test")


@dataclasses.dataclass
class Recording:
    """A fixed fleet that writes down every observation it is given."""

    replicas: int
    name: str = "recording"
    interval_s: int = 10
    seen: list[Observation] = dataclasses.field(default_factory=list)

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        self.seen.append(observation)
        return StaticPeak(self.replicas, interval_s=self.interval_s).decide(
            spec=spec, observation=observation, forecast=forecast, fleet=fleet, memory=memory, now=now,
            windows=windows)


def test_trace_ca2_is_within_second_only() -> None:
    rates = np.full(6, 80.0)
    smooth = T.from_window_rates("p", rates, burst=dataclasses.replace(BURSTY, dispersion=1.0), seed=1)
    bursty = T.from_window_rates("b", rates, burst=BURSTY, seed=1)
    assert bursty.expected is not None
    assert T.idc_around(bursty.counts, bursty.expected, 1) > 5.0  # the counts carry the bursts ...
    np.testing.assert_array_equal(bursty.ca2, smooth.ca2)  # ... and ca2 does not see them
    assert np.all(bursty.ca2 == BURSTY.ca2)


def test_engine_queues_with_the_trace_ca2(monkeypatch: pytest.MonkeyPatch) -> None:
    tr = T.from_window_rates("b", np.full(3, 60.0), burst=BURSTY, seed=2)
    seen: list[float] = []
    key = LatencyBook.key

    def recording_key(c: int, rho: float, ca2: float, fw: float) -> tuple[int, int, int, int]:
        seen.append(ca2)
        return key(c, rho, ca2, fw)

    monkeypatch.setattr(LatencyBook, "key", staticmethod(recording_key))
    spec = make_spec(scaling={"targetRpsPerReplica": 20})
    simulate(tr, StaticPeak(4), spec, SimConfig(), forecaster=None)
    assert seen and set(seen) == {BURSTY.ca2}


def test_observed_rate_counts_rejected_arrivals() -> None:
    """Far more load than one replica serves, a short timeout: most requests are turned away, and
    the rate every policy reads is still what arrived (a gateway's count), not what was admitted."""
    tr = T.step_load(20.0, 10.0, 300, 900, seed=3)
    spec = make_spec(scaling={"targetRpsPerReplica": 20})
    policy = Recording(replicas=1)
    res = simulate(tr, policy, spec, SimConfig(timeout_s=5.0), forecaster=None)
    assert res.rejected > 0.5 * res.arrived
    checked = 0
    for obs in policy.seen:
        if obs.sampled_at is None:
            continue
        hi = int(obs.sampled_at)
        lo = max(0, hi - 60)
        assert obs.request_rate == pytest.approx(float(tr.counts[lo:hi].sum()) / (hi - lo), rel=1e-12)
        checked += 1
    assert checked >= 100
    late = [o.request_rate for o in policy.seen if o.sampled_at is not None and o.sampled_at >= 400]
    assert min(late) > 150.0  # ~200 req/s arriving, ~30 admitted
