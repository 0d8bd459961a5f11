"""Baseline autoscalers behind the same Policy protocol, each configured as its own users configure
it for LLM serving, with the documented defaults (cited below, quoted from the projects' docs).

The same per-replica figure for everyone: `spec.scaling.targetRpsPerReplica`, the scenario's load
test of one replica (the steady Poisson rate it serves within the SLO). Each of the HPA, KEDA and
KPA plans at a utilisation target u of it (headroom for bursts shorter than the metrics window):
u is the baseline's knob, the constructor field `utilization` (None: the spec's
`scaling.targetUtilization`, the value gpufleet plans at), so that a benchmark sweeps it (0.55-0.85)
for each baseline instead of comparing against one hand-picked setting.

HPA-like: Kubernetes HorizontalPodAutoscaler (autoscaling/v2) on requests/s per pod, an AverageValue
  target of targetRpsPerReplica x u. kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale:
  - sync: "The interval is set by the --horizontal-pod-autoscaler-sync-period parameter ... (and the
    default interval is 15 seconds)";
  - desiredReplicas = ceil[currentReplicas x currentMetricValue / desiredMetricValue], skipped when
    "the ratio is sufficiently close to 1.0 (within a globally-configurable tolerance, 0.1 by
    default)"; for an AverageValue target that is ceil(total / target);
  - "Default Behavior": scaleDown stabilizationWindowSeconds 300 with one policy Percent 100 per
    15 s; scaleUp stabilizationWindowSeconds 0 with Percent 100 and Pods 4 per 15 s, selectPolicy
    Max ("4 pods or a 100% of the currently running replicas will be added every 15 seconds");
  - stabilisation: "When the metrics indicate that the target should be scaled down the algorithm
    looks into previously computed desired states, and uses the highest value from the specified
    interval" (the controller keeps recommendations strictly newer than now - 300 s);
  - several metrics: "this calculation is done for each metric, and then the largest of the desired
    replica counts is chosen"; if a metric cannot be fetched and the others suggest a scale-down,
    "scaling is skipped".
  (The API reference comment says "per 60 seconds"; the documented default behaviour and the
  controller's defaulting use 15 s periods, which is what we model.)

KEDA-like: a ScaledObject with the two triggers an LLM-serving user writes, both metricType
  AverageValue (keda.sh/docs/2.15/reference/scaledobject-spec: "metricType ... Default: AverageValue";
  with AverageValue "HPA will scale the deployment to 20 / 5 = 4 replicas"):
  - a Prometheus request-rate trigger (keda.sh/docs/2.15/scalers/prometheus: `query`, `threshold`),
    query sum(rate(<requests>[1m])) (the same 1-min rate the HPA reads), threshold = the HPA's
    per-replica target, targetRpsPerReplica x u;
  - a Prometheus queue-depth trigger on Triton's pending-request count, threshold
    `spec.slo.queueDepthPerReplica`.
  The queue trigger alone reads zero whenever replicas are not saturated, so a queue-only KEDA
  scales to its floor and back (the old strawman); the rate trigger holds the count. KEDA hands
  both metrics to the HPA it creates, which takes the larger: keda.sh/faq ("Horizontal Pod
  Autoscaler (HPA) will calculate metrics for every scaler and use the highest desired replica
  count to scale the workload to") and the HPA's several-metrics rule above. Evaluated every 15 s,
  the HPA's sync: "Kubernetes (HPA controller) asks for a metric every few seconds (as defined by
  --horizontal-pod-autoscaler-sync-period, usually 15s), then this request is routed to KEDA
  Metrics Server, that by default queries the scaler" (keda.sh/docs/2.15/concepts/scaling-deployments,
  "Caching Metrics"; useCachedMetrics defaults to false). pollingInterval (30 s) is the KEDA
  operator's own check, the activation phase, which "only applies to 0<->1 scaling"; "This phase
  [scaling] applies the to 1<->N scaling" (same page, "Activating and Scaling thresholds"), and
  cooldownPeriod "only applies when scaling to 0" (scaledobject-spec). With minReplicas >= 1 the
  workload is never at 0, so neither plays a part. Behaviour: the HPA defaults above (KEDA passes
  `advanced.horizontalPodAutoscalerConfig.behavior` through only when set). Knob: u, as the HPA.

Knative-KPA-like: the Knative Pod Autoscaler on concurrency (requests in flight at the pod, as the
  queue-proxy reports them), the algorithm of knative/serving pkg/autoscaler/scaling/autoscaler.go:
  - defaults, knative.dev/docs/serving/autoscaling/kpa-specific and config-autoscaler: stable-window
    "Default: 60s"; panic-window-percentage "Default: 10.0" (6 s); panic-threshold-percentage
    "Default: 200.0" ("panic mode will be start if traffic is twice as high as the current replica
    population can handle"); "When using panic mode, the Revision will not scale down"; it leaves
    panic "if there has been no reason to react quickly during the stable window timeframe";
    max-scale-up-rate "Default: 1000.0", max-scale-down-rate "Default: 2.0" (bounds relative to the
    ready pods); tick-interval "2s" ("the time between autoscaling calculations");
  - scale-down-delay, knative.dev/docs/serving/autoscaling/scale-bounds: "a time window which must
    pass at reduced concurrency before a scale-down decision is applied", "Default: 0s (no delay)";
    the autoscaler applies the highest desired count of the last `scale-down-delay`. A knob to sweep.
  - the per-pod target: autoscaling.knative.dev/target ("Default: 100") times
    container-concurrency-target-percentage ("Default: 70", knative.dev/docs/serving/autoscaling/
    concurrency, "Target utilization"): the autoscaler keeps target x 70 % in flight per pod.
    A user sets the target from a load test (sim.loadtest): one replica driven at the rate it should
    carry, targetRpsPerReplica x u, the same per-replica rate the HPA targets, and the requests in
    flight it then holds, C = in_flight(targetRpsPerReplica x u). They want C per pod, so with the
    percentage left at its default they write target = C / 0.70, and Knative's effective target is
    C. The headroom is u, applied once, to the rate. (The old row took C at 100 % of the capacity
    rate and let the 70 % apply to in-flight; in-flight is strongly convex in the rate, so 70 % of
    the in-flight at capacity is reached at about 90 % of the capacity rate: "70 %" was ~90 %.)
    The load test is the scenario's (`load_test`: per-replica rps -> in-flight per replica);
    `target_concurrency` sets the annotation by hand instead; `target_percentage` is
    container-concurrency-target-percentage (70). Knobs: u (`utilization`) and
    `scale_down_delay_s`.
  - observed concurrency: the simulator's live in-flight (queued + executing, SimMetrics.in_flight,
    wired by the engine through `concurrency_source`), sampled at each 2 s tick; the stable and
    panic values are the means of the samples in the windows (O(1) running sums). A new
    autoscaler starts in panic holding the ready count when more than one pod is ready (as
    Knative's does, so that a restart does not scale down on an empty history).
- Static peak: a fixed fleet sized for the trace's peak minute at targetRpsPerReplica.
- Oracle (clairvoyant): knows the coming seconds' arrivals and replicas start instantly; runs, each
  interval, the fewest replicas that meet the SLO goal for those seconds (a reference point, not a
  proven lower bound on GPU-hours).

All of them scale plain Deployments: every pod serves, and when a class shrinks its ReplicaSet picks
the pods that go (core.rollout.replicaset_retirements). Baselines keep their own window state on
the instance (create one per run), return PolicyMemory untouched, and never use standbys. With spot
enabled they split naively: on-demand base, the rest up to maxFraction on spot, no fallback when
spot is unavailable ("naive spot").
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.rollout import replicaset_retirements
from gpufleet.core.schedule import Window
from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, ForecastSummary, Observation, Plan, PolicyMemory, ReplicaState

KNATIVE_TARGET_DEFAULT = 100.0  # container-concurrency-target-default
KNATIVE_TARGET_PERCENTAGE = 70.0  # container-concurrency-target-percentage


def _split(spec: InferenceServiceSpec, total: int, naive_spot: bool) -> tuple[int, int]:
    if not (naive_spot and spec.capacity.spot.enabled):
        return total, 0
    spot = int(math.floor(total * spec.capacity.spot.max_fraction))
    od = total - spot
    if od < spec.capacity.on_demand.base:
        od = min(total, spec.capacity.on_demand.base)
        spot = total - od
    return od, spot


class _Counts(NamedTuple):
    """What a baseline reads off one fleet snapshot, counted once per snapshot: the simulator hands
    back the same FleetState object while nothing changed, so on 2 s ticks this is a cache hit.
    (A tuple: built on most of the KPA's 2 s ticks, half the cost of a frozen dataclass.)"""

    fleet: FleetState  # the snapshot counted (held, so that identity is a safe cache key)
    ready: int  # serving pods: the Service's ready endpoints
    current: int  # the Deployments' spec.replicas: every pod not leaving (not draining, not noticed)
    kept_od: int  # pods each class's ReplicaSet still counts (not draining)
    kept_spot: int


# The simulator's counts of its current state, kept as its pods change (SimFleet.counts): (serving,
# neither draining nor noticed, not draining per class), or None where it does not know `fleet`.
FleetCounts = Callable[[FleetState], "tuple[int, int, dict[str, int]] | None"]


def _count(fleet: FleetState, last: _Counts | None = None, source: FleetCounts | None = None) -> _Counts:
    if last is not None and last.fleet is fleet:
        return last
    known = source(fleet) if source is not None else None
    if known is not None:  # no pass over the pods (a new snapshot on most of the KPA's 2 s ticks)
        ready, current, kept = known
        sp = kept.get(SPOT, 0)
        return _Counts(fleet=fleet, ready=ready, current=current, kept_od=sum(kept.values()) - sp, kept_spot=sp)
    ready = current = od = sp = 0
    draining, serving = ReplicaState.draining, ReplicaState.serving
    for r in fleet.replicas:
        state = r.state
        if state == draining:
            continue
        if r.capacity_class == SPOT:
            sp += 1
        else:
            od += 1
        if not r.interrupted:
            current += 1
        if state == serving:
            ready += 1
    return _Counts(fleet=fleet, ready=ready, current=current, kept_od=od, kept_spot=sp)


def _serving_in_flight(fleet: FleetState) -> float:
    """In-flight requests summed over the serving pods (the fleet's own view, where no live
    concurrency is wired: a pod whose count is unknown adds none)."""
    serving = ReplicaState.serving
    return sum(r.in_flight or 0.0 for r in fleet.replicas if r.state == serving)


def _plan(spec: InferenceServiceSpec, fleet: FleetState, total: int, reason: str, message: str,
          naive_spot: bool, counts: _Counts | None = None, last: Plan | None = None) -> Plan:
    """Every pod serves (a plain Deployment); when a class shrinks, its ReplicaSet picks the pods
    that go, and they leave as a deleted pod does: out of the Endpoints, finishing what they run.
    `last` (the caller's previous plan) is returned itself when this one would equal it."""
    total = max(spec.replicas.min, min(spec.replicas.max, total))
    od, spot = _split(spec, total, naive_spot)
    c = _count(fleet, counts)
    retire: tuple[str, ...] = ()
    shrinking = {cls: n for cls, n, kept in ((ON_DEMAND, od, c.kept_od), (SPOT, spot, c.kept_spot)) if kept > n}
    if shrinking:  # only a shrinking class has victims (and only its pods are ranked)
        retire = replicaset_retirements(fleet.replicas, shrinking)
    if (last is not None and last.serving == total and last.on_demand == od and last.spot == spot
            and last.retire == retire and last.reason == reason and last.message == message):
        return last  # the same decision as the last tick's (most of the KPA's 2 s ticks)
    return Plan(serving=total, standby=0, on_demand=od, spot=spot, reason=reason, message=message, retire=retire)


def _current(fleet: FleetState) -> int:
    """The Deployment's spec.replicas: every pod not leaving."""
    return _count(fleet).current


def _utilization(knob: float | None, spec: InferenceServiceSpec) -> float:
    u = spec.scaling.target_utilization if knob is None else knob
    if not 0.0 < u <= 1.0:
        raise ValueError(f"utilization must be in (0, 1], got {u}")
    return u


def _rps_target(spec: InferenceServiceSpec, knob: float | None) -> float:
    """The per-replica requests/s every baseline targets: targetRpsPerReplica x u."""
    return (spec.scaling.target_rps_per_replica or 1.0) * _utilization(knob, spec)


@dataclass(slots=True)
class HpaScaler:
    """The HPA's replica arithmetic (autoscaling/v2, default behaviour): per metric an AverageValue
    proposal with the tolerance, the largest proposal, scale-down stabilisation (the highest
    recommendation of the window), scale-up limited to max(+100 %, +4 pods) per 15 s period."""

    sync_s: int = 15
    tolerance: float = 0.1
    up_percent: float = 100.0
    up_pods: int = 4
    down_window_s: float = 300.0
    # Recommendations newer than now - down_window_s, as a monotone deque (values decreasing from
    # the front): the front is the window's highest, in O(1) amortised.
    recs: deque[tuple[float, int]] = field(default_factory=deque)

    def proposal(self, metric_total: float | None, target: float, current: int) -> int | None:
        """One AverageValue metric's desired replicas; None when the metric is missing."""
        if metric_total is None or not math.isfinite(metric_total):
            return None
        ratio = (metric_total / max(current, 1)) / target
        if abs(ratio - 1.0) <= self.tolerance:
            return current
        return math.ceil(metric_total / target - 1e-9)

    def desired(self, *, metric_total: float | None, target: float, current: int, now: float,
                lo: int, hi: int) -> int:
        return self.desired_of(((metric_total, target),), current=current, now=now, lo=lo, hi=hi)

    def desired_of(self, metrics: Sequence[tuple[float | None, float]], *, current: int, now: float,
                   lo: int, hi: int) -> int:
        """The HPA's decision over several metrics ((total, per-pod target) each)."""
        props = [self.proposal(m, t, current) for m, t in metrics]
        have = [p for p in props if p is not None]
        if not have:
            raw = current  # no metric at all: the HPA keeps the current scale
        else:
            raw = max(have)
            if len(have) < len(props) and raw < current:
                raw = current  # a metric missing and the others suggest a scale-down: skipped
        raw = max(lo, min(hi, raw))
        recs = self.recs
        while recs and recs[-1][1] <= raw:
            recs.pop()
        recs.append((now, raw))
        cutoff = now - self.down_window_s
        while recs[0][0] <= cutoff:
            recs.popleft()
        if raw < current:  # scale-down: the highest recommendation in the window
            return max(raw, min(current, recs[0][1]))
        limit = max(math.ceil(current * (1 + self.up_percent / 100.0)), current + self.up_pods)
        return min(raw, limit)


@dataclass(slots=True)
class HpaLike:
    """HPA on requests/s per pod, AverageValue target targetRpsPerReplica x utilization."""

    utilization: float | None = None  # the knob; None: spec.scaling.targetUtilization
    name: str = "hpa"
    naive_spot: bool = False
    interval_s: int = 15  # --horizontal-pod-autoscaler-sync-period
    hpa: HpaScaler = field(default_factory=HpaScaler)
    fleet_counts: FleetCounts | None = None  # set by the simulator: SimFleet.counts
    _counts: _Counts | None = field(default=None, repr=False)

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        c = self._counts = _count(fleet, self._counts, self.fleet_counts)
        target = _rps_target(spec, self.utilization)
        cur = max(c.current, 1)
        n = self.hpa.desired(metric_total=observation.request_rate, target=target, current=cur, now=now,
                             lo=spec.replicas.min, hi=spec.replicas.max)
        return _plan(spec, fleet, n, "RequestRate", f"rps {observation.request_rate} / {target:.2f}: {n}",
                     self.naive_spot, c), memory


@dataclass(slots=True)
class KedaLike:
    """KEDA ScaledObject with a Prometheus request-rate trigger (threshold targetRpsPerReplica x
    utilization) and a queue-depth trigger (threshold queueDepthPerReplica), both AverageValue,
    on the HPA KEDA creates: the larger proposal wins, default HPA behaviour, 15 s sync."""

    utilization: float | None = None  # the knob; None: spec.scaling.targetUtilization
    name: str = "keda"
    naive_spot: bool = False
    interval_s: int = 15  # the HPA's sync: KEDA's metrics server queries the scaler on each one
    hpa: HpaScaler = field(default_factory=HpaScaler)
    fleet_counts: FleetCounts | None = None  # set by the simulator: SimFleet.counts
    _counts: _Counts | None = field(default=None, repr=False)

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        c = self._counts = _count(fleet, self._counts, self.fleet_counts)
        rate_t = _rps_target(spec, self.utilization)
        queue_t = spec.slo.queue_depth_per_replica
        cur = max(c.current, 1)
        rate, queue = observation.request_rate, observation.queue_depth
        n = self.hpa.desired_of(((rate, rate_t), (queue, queue_t)), current=cur, now=now,
                                lo=spec.replicas.min, hi=spec.replicas.max)
        by_rate = self.hpa.proposal(rate, rate_t, cur) or 0
        by_queue = self.hpa.proposal(queue, queue_t, cur) or 0
        reason = "QueueDepth" if by_queue > by_rate else "RequestRate"
        return _plan(spec, fleet, n, reason,
                     f"rps {rate} / {rate_t:.2f}: {by_rate}; queue {queue} / {queue_t:g}: {by_queue}; {n}",
                     self.naive_spot, c), memory


class _WindowMean:
    """Mean of the samples newer than now - span: a deque with a running sum (O(1) per sample)."""

    __slots__ = ("span", "items", "total", "_adds")

    def __init__(self, span: float) -> None:
        self.span = span
        self.items: deque[tuple[float, float]] = deque()
        self.total = 0.0
        self._adds = 0

    def add(self, now: float, value: float) -> float:
        items = self.items
        items.append((now, value))
        self.total += value
        cutoff = now - self.span
        while items[0][0] <= cutoff:
            self.total -= items.popleft()[1]
        self._adds += 1
        if self._adds >= 4096:  # re-sum now and then: no drift from a long run of +/- updates
            self._adds = 0
            self.total = math.fsum(v for _, v in items)
        return max(self.total, 0.0) / len(items)


class _WindowMax:
    """Highest value recorded in the last `span` seconds (monotone deque, O(1) amortised)."""

    __slots__ = ("span", "items")

    def __init__(self, span: float) -> None:
        self.span = span
        self.items: deque[tuple[float, int]] = deque()

    def add(self, now: float, value: int) -> int:
        items = self.items
        while items and items[-1][1] <= value:
            items.pop()
        items.append((now, value))
        cutoff = now - self.span
        while items[0][0] <= cutoff:
            items.popleft()
        return items[0][1]


@dataclass(slots=True)
class KpaLike:
    """Knative KPA on concurrency (in-flight requests per pod, as the queue-proxy reports them).

    The per-pod target Knative keeps (its TargetValue) is `target x target_percentage / 100`,
    target being autoscaling.knative.dev/target and target_percentage Knative's "target
    utilization" (container-concurrency-target-percentage, default 70):
    - with `load_test` (per-replica rps -> steady in-flight per replica, the scenario's
      sim.loadtest.LoadTest.in_flight): the user's load test at targetRpsPerReplica x utilization
      (the HPA's per-replica rate) reads C in flight; they want C per pod, so with the percentage
      at its default they write target = C / 0.70 and TargetValue = C. The headroom u is applied
      once, to the rate; applying the 70 % to C as well would keep pods at 0.7 C, a far lower
      rate than the HPA's u (in-flight is convex in the rate);
    - with `target_concurrency`: that annotation, set by hand (TargetValue = it x 70 %; a user who
      measured C can equally write target C with target_percentage 100);
    - with neither: container-concurrency-target-default, 100.
    Knobs: utilization (None: the spec's targetUtilization) and scale_down_delay_s.
    """

    load_test: Callable[[float], float] | None = None
    utilization: float | None = None  # the knob; None: spec.scaling.targetUtilization
    target_concurrency: float | None = None  # autoscaling.knative.dev/target set by hand
    target_percentage: float = KNATIVE_TARGET_PERCENTAGE  # container-concurrency-target-percentage
    scale_down_delay_s: float = 0.0  # scale-down-delay, a knob (Knative default 0s)
    name: str = "knative-kpa"
    naive_spot: bool = False
    interval_s: int = 2  # tick-interval
    stable_s: float = 60.0  # stable-window
    panic_pct: float = 10.0  # panic-window-percentage
    panic_threshold: float = 2.0  # panic-threshold-percentage 200
    max_up_rate: float = 1000.0  # max-scale-up-rate
    max_down_rate: float = 2.0  # max-scale-down-rate
    concurrency_source: object | None = None  # set by the simulator: has `.in_flight`
    panic_since: float | None = None
    max_panic_pods: int = 0
    _started: bool = field(default=False, repr=False)
    _stable: _WindowMean | None = field(default=None, repr=False)
    _panic: _WindowMean | None = field(default=None, repr=False)
    _delay: _WindowMax | None = field(default=None, repr=False)
    _tv: tuple[tuple[object, ...], float] | None = field(default=None, repr=False)
    fleet_counts: FleetCounts | None = None  # set by the simulator: SimFleet.counts
    _counts: _Counts | None = field(default=None, repr=False)
    _last: Plan | None = field(default=None, repr=False)

    def annotation(self, spec: InferenceServiceSpec) -> float:
        """autoscaling.knative.dev/target as the user writes it."""
        if self.target_concurrency is not None:
            return self.target_concurrency
        if self.load_test is not None and spec.scaling.target_rps_per_replica:
            measured = self.load_test(_rps_target(spec, self.utilization))
            return measured / (self.target_percentage / 100.0)
        return KNATIVE_TARGET_DEFAULT

    def per_pod_target(self, spec: InferenceServiceSpec) -> float:
        """Knative's TargetValue: the in-flight requests per pod the autoscaler keeps."""
        key = (spec.scaling.target_rps_per_replica, spec.scaling.target_utilization, self.utilization,
               self.target_concurrency, self.target_percentage, self.load_test)
        if self._tv is None or self._tv[0] != key:
            _utilization(self.utilization, spec)  # validates the knob
            self._tv = (key, self.annotation(spec) * self.target_percentage / 100.0)
        return self._tv[1]

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        c = self._counts = _count(fleet, self._counts, self.fleet_counts)
        src = self.concurrency_source
        conc = float(getattr(src, "in_flight")) if src is not None else _serving_in_flight(fleet)
        tv = self.per_pod_target(spec)
        if not self._started:
            self._started = True
            self._stable = _WindowMean(self.stable_s)
            self._panic = _WindowMean(self.stable_s * self.panic_pct / 100.0)
            self._delay = _WindowMax(self.scale_down_delay_s) if self.scale_down_delay_s > 0 else None
            if c.ready > 1:  # a new autoscaler starts in panic, holding what is there
                self.panic_since, self.max_panic_pods = now, c.ready
        assert self._stable is not None and self._panic is not None
        stable = self._stable.add(now, conc)
        panic = self._panic.add(now, conc)
        ready = max(c.ready, 1)
        max_up = math.ceil(self.max_up_rate * ready)
        max_down = math.floor(ready / self.max_down_rate)
        dspc = math.ceil(stable / tv)
        dppc = math.ceil(panic / tv)
        want_stable = min(max(dspc, max_down), max_up)
        want_panic = min(max(dppc, max_down), max_up)
        if dppc / ready >= self.panic_threshold:
            self.panic_since = now  # enter panic, or stay in it
        elif self.panic_since is not None and now - self.panic_since > self.stable_s:
            self.panic_since, self.max_panic_pods = None, 0
        want = want_stable
        if self.panic_since is not None:  # never scale down in panic
            self.max_panic_pods = max(self.max_panic_pods, want_stable, want_panic)
            want = self.max_panic_pods
        if self._delay is not None:  # scale-down-delay: the highest count of the delay window
            want = self._delay.add(now, want)
        mode = "Panic" if self.panic_since is not None else "Concurrency"
        # The message names the target, not the windows' readings (those change every tick, and a
        # plan equal to the last one is the last one: no new Plan on most ticks).
        self._last = _plan(spec, fleet, want, mode, f"{want} pods at {tv:.1f} in flight each", self.naive_spot, c,
                           self._last)
        return self._last, memory


@dataclass(slots=True)
class StaticPeak:
    replicas: int
    name: str = "static-peak"
    naive_spot: bool = False
    interval_s: int = 60

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        return _plan(spec, fleet, self.replicas, "Static", f"static {self.replicas}", self.naive_spot), memory


@dataclass(slots=True)
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
