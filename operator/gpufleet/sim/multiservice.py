"""Several services sharing one GPU quota, simulated together.

Each service is a single-service simulation (sim.engine.simulate, unchanged) on a thread of its
own; the threads meet at a barrier at every policy interval. gpufleet's services run their own
policy wrapped in control.quota.QuotaPolicy, the operator's wrapper: each publishes its need, the
barrier's action runs the operator's arbitration (QuotaBoard.arbitrate -> core.quota.arbitrate)
once over all of them, and each plan is capped at its allocation before the fleet carries it out:
the arbitration of a tick uses the needs of that same tick (the operator's may be one quota
interval older). The baseline is the one a platform team without an arbiter runs: one HPA per
service, each with a static share of the quota as its maxReplicas (the HPA honours
maxReplicas, so the shares add up to at most the quota).

Threads only interleave (the GIL): the point is lockstep, not speed.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gpufleet.api.models import InferenceServiceSpec, QuotaRef
from gpufleet.api.quota import GPUQuotaSpec
from gpufleet.control.ports import Policy
from gpufleet.control.quota import QuotaBoard, QuotaPolicy
from gpufleet.sim.engine import RateForecastPort, SimResult, simulate
from gpufleet.sim.scenarios import Scenario

QUOTA = "shared"
BARRIER_TIMEOUT_S = 900.0


@dataclass(slots=True)
class Service:
    name: str
    tier: str
    scenario: Scenario


def peak_need(sc: Scenario, window_s: int = 60) -> np.ndarray:
    """Replicas needed per minute at the load-test capacity (no headroom): the load, in replicas."""
    return sc.trace.rate_per_window(window_s) / sc.rps_per_replica


def combined_peak_gpus(services: Sequence[Service]) -> float:
    """Peak over minutes of the services' summed need, in GPUs."""
    need = sum(peak_need(s.scenario) * s.scenario.spec.capacity.gpus_per_replica for s in services)
    return float(np.max(need))


def static_shares(services: Sequence[Service], quota_gpus: int) -> dict[str, int]:
    """Each service's maxReplicas out of the quota, in proportion to its own peak need (floors kept)."""
    peaks = {s.name: float(np.max(peak_need(s.scenario))) * s.scenario.spec.capacity.gpus_per_replica
             for s in services}
    total = sum(peaks.values()) or 1.0
    return {s.name: max(s.scenario.spec.replicas.min,
                        math.floor(quota_gpus * peaks[s.name] / total / max(s.scenario.spec.capacity.gpus_per_replica, 1)))
            for s in services}


def _run_threads(jobs: Mapping[str, Callable[[], SimResult]], barrier: threading.Barrier | None) -> dict[str, SimResult]:
    out: dict[str, SimResult] = {}
    errors: list[BaseException] = []

    def run(name: str, job: Callable[[], SimResult]) -> None:
        try:
            out[name] = job()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            errors.append(exc)
            if barrier is not None:
                barrier.abort()  # the others would wait for this one forever

    threads = [threading.Thread(target=run, args=(n, j), name=f"sim-{n}") for n, j in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def _job(sc: Scenario, policy: Policy, spec: InferenceServiceSpec) -> Callable[[], SimResult]:
    return lambda: simulate(sc.trace, policy, spec, sc.cfg, forecaster=RateForecastPort, step_at_s=sc.step_at_s)


def run_quota(services: Sequence[Service], quota: GPUQuotaSpec,
              policy: Callable[[Service], tuple[Policy, InferenceServiceSpec]]) -> tuple[dict[str, SimResult], QuotaBoard]:
    """gpufleet's arbitration: every service's policy (`policy(service)` -> policy and spec) wrapped
    in QuotaPolicy on one board, the arbitration run at each interval in lockstep."""
    board = QuotaBoard(stale_after_s=math.inf)
    board.set_quota(QUOTA, quota)

    def arbitrate() -> None:
        board.arbitrate(QUOTA, now=max(d.at for d in board.demands.values()))

    barrier = threading.Barrier(len(services), action=arbitrate, timeout=BARRIER_TIMEOUT_S)

    def sync() -> None:
        barrier.wait()
    intervals = set()
    jobs: dict[str, Callable[[], SimResult]] = {}
    for s in services:
        inner, spec = policy(s)
        spec = spec.model_copy(update={"quota": QuotaRef(name=QUOTA, tier=s.tier)})
        intervals.add(spec.scaling.interval_seconds)
        wrapped = QuotaPolicy(inner, board, f"sim/{s.name}", sync=sync)
        jobs[s.name] = _job(s.scenario, wrapped, spec)
    lengths = {s.scenario.trace.seconds for s in services}
    if len(intervals) != 1 or len(lengths) != 1:
        raise ValueError("lockstep needs one policy interval and one trace length for every service")
    return _run_threads(jobs, barrier), board


def run_independent(services: Sequence[Service], policy: Callable[[Service], tuple[Policy, InferenceServiceSpec]],
                    max_replicas: Mapping[str, int] | None = None, *, forecast: bool = False) -> dict[str, SimResult]:
    """Each service alone (no arbitration), with replicas.max set to `max_replicas` where given."""
    out: dict[str, SimResult] = {}
    for s in services:
        p, spec = policy(s)
        if max_replicas is not None:
            hi = max_replicas[s.name]
            spec = spec.model_copy(update={"replicas": spec.replicas.model_copy(
                update={"max": hi, "min": min(spec.replicas.min, hi)})})
        sc = s.scenario
        out[s.name] = simulate(sc.trace, p, spec, sc.cfg, forecaster=RateForecastPort if forecast else None,
                               step_at_s=sc.step_at_s)
    return out


@dataclass(frozen=True, slots=True)
class TierSummary:
    tier: str
    services: tuple[str, ...]
    arrived: float
    met: float
    gpu_hours: float

    @property
    def attainment(self) -> float:
        return self.met / self.arrived if self.arrived > 0 else 1.0


def by_tier(services: Sequence[Service], results: Mapping[str, SimResult], tiers: Sequence[str]) -> list[TierSummary]:
    out = []
    for t in tiers:
        names = tuple(s.name for s in services if s.tier == t)
        out.append(TierSummary(t, names, sum(results[n].arrived for n in names),
                               sum(results[n].met_slo for n in names), sum(results[n].gpu_hours for n in names)))
    return out


def gpus_over_time(services: Sequence[Service], results: Mapping[str, SimResult]) -> np.ndarray:
    """GPUs held (every pod: starting, serving, standby, draining) per recorded minute, summed."""
    n = min(len(results[s.name].total) for s in services)
    return np.asarray(sum(results[s.name].total[:n] * s.scenario.spec.capacity.gpus_per_replica for s in services),
                      dtype=float)
