"""Baseline autoscalers behind the same Policy protocol, faithful to their documented defaults.

- HPA-like (Kubernetes HorizontalPodAutoscaler, autoscaling/v2; kubernetes.io "Horizontal Pod
  Autoscaling", section "Default Behavior"): sync every 15 s
  (--horizontal-pod-autoscaler-sync-period), desired = ceil(metric / target) for an AverageValue
  Pods metric, 10 % tolerance, scale-up limited to the larger of +100 % and +4 pods per 15 s,
  scale-down to the highest recommendation of the last 300 s (stabilizationWindowSeconds).
  (The API reference comment says "per 60 seconds"; the documented default behaviour and the
  controller use 15 s periods, which is what we model.) Metric: requests/s per pod, target
  `spec.scaling.targetRpsPerReplica` (the same load-test figure gpufleet gets).
- KEDA-like (keda.sh ScaledObject spec): Prometheus trigger on queue depth (Triton's pending
  request count) with threshold `spec.slo.queueDepthPerReplica`, pollingInterval 30 s; KEDA hands
  the metric to an HPA, so scale-up/-down follow the HPA defaults above; cooldownPeriod 300 s only
  governs scaling to zero, which minReplicas >= 1 rules out.
- Knative-KPA-like (knative.dev "Additional autoscaling configuration for Knative Pod Autoscaler",
  config-autoscaler defaults): concurrency metric, stable window 60 s, panic window 10 % of it (6 s),
  panic threshold 200 % (desired in the panic window >= 2x ready pods), no scale-down while in
  panic, leaving panic after a stable window without the condition; target utilisation 70 % of the
  per-pod concurrency target; autoscaler tick 2 s; max scale-up rate 1000x, max scale-down rate 2x.
- Static peak: a fixed fleet sized for the trace's peak minute at targetRpsPerReplica.
- Oracle: knows every second's arrivals and replicas start instantly; runs, each interval, the
  fewest replicas that meet the SLO goal for the coming seconds (a lower bound on GPU-hours).

Baselines keep their own window state on the instance (create one per run), return PolicyMemory
untouched, and never use standbys. With spot enabled they split naively: on-demand base, the
rest up to maxFraction on spot, no fallback when spot is unavailable ("naive spot").
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.schedule import Window
from gpufleet.core.rollout import replicaset_retirements
from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, ForecastSummary, Observation, Plan, PolicyMemory, ReplicaState


def _split(spec: InferenceServiceSpec, total: int, naive_spot: bool) -> tuple[int, int]:
    if not (naive_spot and spec.capacity.spot.enabled):
        return total, 0
    spot = int(math.floor(total * spec.capacity.spot.max_fraction))
    od = total - spot
    if od < spec.capacity.on_demand.base:
        od = min(total, spec.capacity.on_demand.base)
        spot = total - od
    return od, spot


def _plan(spec: InferenceServiceSpec, fleet: FleetState, total: int, reason: str, message: str,
          naive_spot: bool) -> Plan:
    """Every pod serves (a plain Deployment); when a class shrinks, its ReplicaSet picks the pods
    that go, and they leave as a deleted pod does: out of the Endpoints, finishing what they run."""
    total = max(spec.replicas.min, min(spec.replicas.max, total))
    od, spot = _split(spec, total, naive_spot)
    retire = replicaset_retirements(fleet.replicas, {ON_DEMAND: od, SPOT: spot})
    return Plan(serving=total, standby=0, on_demand=od, spot=spot, reason=reason, message=message, retire=retire)


def _current(fleet: FleetState) -> int:
    """The Deployment's spec.replicas: every pod not leaving."""
    return sum(1 for r in fleet.replicas if r.state != ReplicaState.draining and not r.interrupted)


@dataclass
class HpaScaler:
    """The HPA's replica arithmetic: tolerance, scale-up policies, scale-down stabilisation."""

    sync_s: int = 15
    tolerance: float = 0.1
    up_percent: float = 100.0
    up_pods: int = 4
    down_window_s: float = 300.0
    recs: deque[tuple[float, int]] = field(default_factory=deque)

    def desired(self, *, metric_total: float | None, target: float, current: int, now: float,
                lo: int, hi: int) -> int:
        if metric_total is None or not math.isfinite(metric_total):
            raw = current  # missing metric: the HPA keeps the current scale
        else:
            ratio = (metric_total / max(current, 1)) / target
            raw = current if abs(ratio - 1.0) <= self.tolerance else math.ceil(metric_total / target - 1e-9)
        raw = max(lo, min(hi, raw))
        self.recs.append((now, raw))
        while self.recs and self.recs[0][0] < now - self.down_window_s:
            self.recs.popleft()
        if raw < current:  # scale-down: the highest recommendation in the window
            return max(raw, min(current, max(v for _, v in self.recs)))
        limit = max(math.ceil(current * (1 + self.up_percent / 100.0)), current + self.up_pods)
        return min(raw, limit)


@dataclass
class HpaLike:
    name: str = "hpa"
    naive_spot: bool = False
    interval_s: int = 15
    hpa: HpaScaler = field(default_factory=HpaScaler)

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        # The HPA's target value is what the user sets: the same utilisation target as gpufleet's.
        target = (spec.scaling.target_rps_per_replica or 1.0) * spec.scaling.target_utilization
        cur = max(_current(fleet), 1)
        n = self.hpa.desired(metric_total=observation.request_rate, target=target, current=cur, now=now,
                             lo=spec.replicas.min, hi=spec.replicas.max)
        return _plan(spec, fleet, n, "RequestRate", f"rps {observation.request_rate} / {target:.2f}: {n}",
                     self.naive_spot), memory


@dataclass
class KedaLike:
    name: str = "keda"
    naive_spot: bool = False
    interval_s: int = 30  # pollingInterval
    hpa: HpaScaler = field(default_factory=HpaScaler)

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        threshold = spec.slo.queue_depth_per_replica
        cur = max(_current(fleet), 1)
        n = self.hpa.desired(metric_total=observation.queue_depth, target=threshold, current=cur, now=now,
                             lo=spec.replicas.min, hi=spec.replicas.max)
        return _plan(spec, fleet, n, "QueueDepth", f"queue {observation.queue_depth} / {threshold:g}: {n}",
                     self.naive_spot), memory


@dataclass
class KpaLike:
    """Knative KPA on concurrency (in-flight requests per pod, as the queue-proxy reports it)."""

    target_concurrency: float = 100.0  # container-concurrency-target-default
    utilization: float = 0.70  # container-concurrency-target-percentage
    name: str = "knative-kpa"
    naive_spot: bool = False
    interval_s: int = 2  # autoscaler tick
    stable_s: float = 60.0
    panic_pct: float = 10.0
    panic_threshold: float = 2.0
    max_up_rate: float = 1000.0
    max_down_rate: float = 2.0
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    panic_since: float | None = None
    panic_peak: int = 0
    concurrency_source: object | None = None  # set by the simulator: has `.in_flight`

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        serving = [r for r in fleet.replicas if r.state == ReplicaState.serving]
        src = self.concurrency_source
        conc = float(getattr(src, "in_flight")) if src is not None else sum(r.in_flight or 0.0 for r in serving)
        ready = max(len(serving), 1)
        self.samples.append((now, conc))
        while self.samples and self.samples[0][0] <= now - self.stable_s:
            self.samples.popleft()
        panic_s = self.stable_s * self.panic_pct / 100.0
        stable_avg = sum(c for _, c in self.samples) / len(self.samples)
        recent = [c for t, c in self.samples if t > now - panic_s]
        panic_avg = sum(recent) / len(recent)
        per_pod = self.target_concurrency * self.utilization
        want_stable = math.ceil(stable_avg / per_pod - 1e-9)
        want_panic = math.ceil(panic_avg / per_pod - 1e-9)
        cur = max(_current(fleet), 1)
        if want_panic / ready >= self.panic_threshold:
            if self.panic_since is None:
                self.panic_peak = cur
            self.panic_since = now
        elif self.panic_since is not None and now - self.panic_since >= self.stable_s:
            self.panic_since = None
        if self.panic_since is not None:
            self.panic_peak = max(self.panic_peak, want_panic, cur)  # never scale down in panic
            want = self.panic_peak
        else:
            want = want_stable
        want = min(want, math.ceil(ready * self.max_up_rate))
        want = max(want, math.floor(ready / self.max_down_rate))
        return _plan(spec, fleet, want, "Concurrency", f"concurrency {stable_avg:.1f}/{panic_avg:.1f}: {want}",
                     self.naive_spot), memory


@dataclass
class StaticPeak:
    replicas: int
    name: str = "static-peak"
    naive_spot: bool = False
    interval_s: int = 60

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        return _plan(spec, fleet, self.replicas, "Static", f"static {self.replicas}", self.naive_spot), memory


@dataclass
class Oracle:
    """Perfect knowledge of the next interval's arrivals, instant starts (run with instant_start=True)."""

    need: np.ndarray  # fewest replicas meeting the goal, per second
    name: str = "oracle"
    interval_s: int = 5

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        t = int(now)
        # A replica asked for now is Ready at the next tick, and this decision holds one interval.
        window = self.need[t + 1: t + 1 + self.interval_s]
        n = int(window.max()) if window.size else int(self.need[-1])
        return _plan(spec, fleet, n, "Oracle", f"oracle {n}", False), memory
