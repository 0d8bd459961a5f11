"""The operator's own Prometheus metrics: what each InferenceService's loop decided and saw.

One function, `record_tick`, turns a control step's values into metrics, so the kopf layer needs a
single call per tick; `record_error` counts failed ticks and `forget` drops a service's series when
its loop stops (deleted, or this replica paused by peering), so dashboards show no phantom fleets.

Every series carries `namespace` and `name` of the InferenceService, plus `team` and `project` from
its labels `gpufleet.io/team` / `gpufleet.io/project` ("" when absent) so that cost can be summed
per owner. Missing signals (no sample, no forecast) remove the series instead of writing 0 or NaN:
in Prometheus an absent series means "unknown", a 0 would read as "no load".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import start_http_server
from prometheus_client.metrics import MetricWrapperBase

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.control.metering import class_names
from gpufleet.control.status import cost_per_hour
from gpufleet.core.types import FleetState, ForecastSummary, Observation, Plan, ReplicaState

LABEL_TEAM = "gpufleet.io/team"
LABEL_PROJECT = "gpufleet.io/project"
SERVICE_LABELS = ("namespace", "name", "team", "project")
# Control loops run every few seconds; a tick is mostly API round trips (tens of ms) but a slow
# API server or Prometheus can stretch it to seconds, which is what an alert should catch.
LOOP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class StepResultLike(Protocol):
    """What record_tick reads from a control step (gpufleet.control.step.StepResult fits)."""

    @property
    def plan(self) -> Plan: ...
    @property
    def observation(self) -> Observation: ...
    @property
    def forecast(self) -> ForecastSummary | None: ...
    @property
    def fleet(self) -> FleetState: ...
    @property
    def applied(self) -> bool: ...


ServiceKey = tuple[str, str]  # (namespace, name)
BUDGET_STATES = ("OK", "Alert", "Capped", "Infeasible")


class UsageLike(Protocol):
    """status.usage (gpufleet.api.models.UsageStatus fits)."""

    @property
    def cost_per_million_requests(self) -> float | None: ...
    @property
    def cost_today(self) -> float: ...


class UsageDeltaLike(Protocol):
    """One tick's metering increments (gpufleet.control.metering.UsageDelta fits)."""

    @property
    def gpu_hours(self) -> Mapping[str, float]: ...
    @property
    def cost(self) -> Mapping[str, float]: ...
    @property
    def requests(self) -> float: ...


class BudgetLike(Protocol):
    """gpufleet.core.types.BudgetCheck fits."""

    @property
    def state(self) -> str: ...
    @property
    def limit_per_hour(self) -> float: ...
    @property
    def wanted_per_hour(self) -> float: ...
    @property
    def planned_per_hour(self) -> float: ...


@dataclass
class Telemetry:
    """The metric families on one registry (the default one in production, a fresh one in tests)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r, s = self.registry, SERVICE_LABELS
        self.decisions = Counter("gpufleet_decisions", "Scaling decisions by reason code; applied=false in "
                                 "recommend mode", [*s, "reason", "applied"], registry=r)
        self.errors = Counter("gpufleet_errors", "Control-loop ticks that failed, by exception type",
                              [*s, "error"], registry=r)
        self.replicas = Gauge("gpufleet_replicas", "Pods by capacity class and state "
                              "(starting, standby, serving, draining)", [*s, "capacity_class", "state"], registry=r)
        self.desired = Gauge("gpufleet_desired_replicas", "Deployment size the last plan asked for, by class",
                             [*s, "capacity_class"], registry=r)
        self.recommended = Gauge("gpufleet_recommended_replicas", "Replicas the last decision wants (serving + "
                                 "standby), applied or not (recommend mode, shadow mode)", s, registry=r)
        self.actual = Gauge("gpufleet_actual_replicas", "Replicas the workload runs: in shadow mode the target "
                            "Deployment's spec.replicas, else the fleet's pods not draining", s, registry=r)
        self.forecast = Gauge("gpufleet_forecast_request_rate", "Forecast requests/s over the cold-start "
                              "horizon; quantile=mean or upper (the spec's quantile)", [*s, "quantile"], registry=r)
        self.observed_rate = Gauge("gpufleet_observed_request_rate", "Observed requests/s across the service",
                                   s, registry=r)
        self.observed_queue = Gauge("gpufleet_observed_queue_depth", "Pending requests summed over serving "
                                    "replicas", s, registry=r)
        self.observed_latency = Gauge("gpufleet_observed_latency_p95_seconds", "Observed p95 request latency "
                                      "(a histogram or summary quantile; absent where the server exports none)",
                                      s, registry=r)
        self.observed_latency_mean = Gauge("gpufleet_observed_latency_mean_seconds", "Observed mean request "
                                           "latency (Triton's counters)", s, registry=r)
        self.observed_ttft = Gauge("gpufleet_observed_ttft_p95_seconds", "Observed p95 time to first token",
                                   s, registry=r)
        self.observed_itl = Gauge("gpufleet_observed_itl_p95_seconds", "Observed p95 inter-token latency",
                                  s, registry=r)
        self.observed_kv_cache = Gauge("gpufleet_observed_kv_cache_utilization", "Fraction of KV-cache blocks in "
                                       "use, mean over pods (TensorRT-LLM)", s, registry=r)
        self.observed_gpu = Gauge("gpufleet_observed_gpu_utilization_percent", "Mean GPU utilisation of the "
                                  "pods (DCGM), when a target is set", s, registry=r)
        self.cost = Gauge("gpufleet_cost_per_hour", "GPU cost per hour of every pod holding a GPU, in the "
                          "spec's price unit", s, registry=r)
        self.safe_mode = Gauge("gpufleet_safe_mode", "1 while the policy holds the fleet because metrics "
                               "are missing", s, registry=r)
        self.last_tick = Gauge("gpufleet_last_tick_timestamp_seconds", "Unix time of the last successful "
                               "tick (alert when it stops moving)", s, registry=r)
        self.loop = Histogram("gpufleet_loop_duration_seconds", "Wall time of one control-loop tick "
                              "(observe, forecast, decide, apply, status)", s, buckets=LOOP_BUCKETS, registry=r)
        # Metering (issue 9): counters so that increase()/rate() sum cost by namespace, team, project.
        c = [*s, "capacity_class"]
        self.gpu_hours = Counter("gpufleet_gpu_hours", "GPU-hours metered, by capacity class", c, registry=r)
        self.cost_total = Counter("gpufleet_cost", "Cost metered (price unit of the spec or price table), by "
                                  "capacity class", c, registry=r)
        self.requests = Counter("gpufleet_requests", "Requests metered (observed request rate integrated)",
                                s, registry=r)
        self.cost_per_1m = Gauge("gpufleet_cost_per_million_requests", "Metered cost per 1M requests since "
                                 "status.usage.since", s, registry=r)
        self.cost_today = Gauge("gpufleet_cost_today", "Cost metered since 00:00 UTC", s, registry=r)
        # Budgets: the limits and where the plan stands, for Alertmanager rules (docs/budgets.md).
        self.budget_limit = Gauge("gpufleet_budget_limit_per_hour", "Highest cost per hour spec.budget allows "
                                  "now (maxCostPerHour or the paced daily remainder)", s, registry=r)
        self.budget_max_day = Gauge("gpufleet_budget_max_cost_per_day", "spec.budget.maxCostPerDay", s, registry=r)
        self.budget_wanted = Gauge("gpufleet_budget_wanted_cost_per_hour", "Cost per hour of the plan before "
                                   "the budget", s, registry=r)
        self.budget_planned = Gauge("gpufleet_budget_planned_cost_per_hour", "Cost per hour of the plan after "
                                    "the budget", s, registry=r)
        self.budget_alert_ratio = Gauge("gpufleet_budget_alert_ratio", "spec.budget.alertPercent / 100", s,
                                        registry=r)
        self.budget_state = Gauge("gpufleet_budget_state", "1 for the current budget state (OK, Alert, Capped, "
                                  "Infeasible), 0 for the others", [*s, "state"], registry=r)
        self._lock = threading.Lock()  # daemons run in threads, one per InferenceService
        # Every label tuple written per service, so forget() can remove exactly those series.
        self._written: dict[ServiceKey, set[tuple[MetricWrapperBase, tuple[str, ...]]]] = {}

    # -- writing ------------------------------------------------------------------------------

    def _set(self, key: ServiceKey, gauge: Gauge, labels: tuple[str, ...], value: float | None) -> None:
        if value is None:
            self._remove(key, gauge, labels)
            return
        gauge.labels(*labels).set(value)
        self._written.setdefault(key, set()).add((gauge, labels))

    def _inc(self, key: ServiceKey, counter: Counter, labels: tuple[str, ...]) -> None:
        counter.labels(*labels).inc()
        self._written.setdefault(key, set()).add((counter, labels))

    def _remove(self, key: ServiceKey, metric: MetricWrapperBase, labels: tuple[str, ...]) -> None:
        if (metric, labels) in self._written.get(key, set()):
            self._written[key].discard((metric, labels))
            metric.remove(*labels)

    def record_tick(self, *, namespace: str, name: str, labels: Mapping[str, str] | None,
                    spec: InferenceServiceSpec, result: StepResultLike, duration_s: float,
                    now: float | None = None, actual_replicas: int | None = None) -> None:
        """`actual_replicas`: shadow mode's target size (None: the fleet's own pods count)."""
        key = (namespace, name)
        svc = service_labels(namespace, name, labels)
        with self._lock:
            self._drop_other_owners(key, svc)
            plan, fleet, obs = result.plan, result.fleet, result.observation
            self._inc(key, self.decisions, (*svc, plan.reason, "true" if result.applied else "false"))
            # One series per class the spec sizes: on-demand and spot, or spec.capacity.classes'
            # names; a class taken out of the list loses its series.
            classes = class_names(spec)
            self._drop_classes(key, (self.replicas, self.desired), len(svc), classes)
            for capacity_class in classes:
                for state in ReplicaState:
                    self._set(key, self.replicas, (*svc, capacity_class, state.value),
                              float(fleet.count(state, capacity_class)))
                self._set(key, self.desired, (*svc, capacity_class), float(plan.by_class(capacity_class)))
            self._set(key, self.recommended, svc, float(plan.total))
            live = sum(1 for r in fleet.replicas if r.state != ReplicaState.draining)
            self._set(key, self.actual, svc, float(actual_replicas if actual_replicas is not None else live))
            forecast = result.forecast
            self._set(key, self.forecast, (*svc, "mean"), forecast.mean_rps if forecast else None)
            self._set(key, self.forecast, (*svc, "upper"), forecast.upper_rps if forecast else None)
            self._set(key, self.observed_rate, svc, obs.request_rate)
            self._set(key, self.observed_queue, svc, obs.queue_depth)
            for gauge, ms in ((self.observed_latency, obs.latency_p95_ms), (self.observed_latency_mean, obs.latency_mean_ms),
                              (self.observed_ttft, obs.ttft_p95_ms), (self.observed_itl, obs.itl_p95_ms)):
                self._set(key, gauge, svc, ms / 1000.0 if ms is not None else None)
            self._set(key, self.observed_kv_cache, svc, obs.kv_cache_utilization)
            self._set(key, self.observed_gpu, svc, obs.gpu_utilization)
            self._set(key, self.cost, svc, cost_per_hour(spec, fleet))
            self._set(key, self.safe_mode, svc, 1.0 if plan.safe_mode else 0.0)
            self._set(key, self.last_tick, svc, time.time() if now is None else now)
            self.loop.labels(*svc).observe(max(0.0, duration_s))
            self._written[key].add((self.loop, svc))

    def record_usage(self, *, namespace: str, name: str, labels: Mapping[str, str] | None,
                     usage: UsageLike, delta: UsageDeltaLike, budget: BudgetLike | None,
                     max_cost_per_day: float | None = None, alert_percent: int | None = None) -> None:
        """Metering increments and the budget's standing, once per tick after record_tick."""
        key = (namespace, name)
        svc = service_labels(namespace, name, labels)
        with self._lock:
            self._drop_other_owners(key, svc)
            for capacity_class in delta.gpu_hours:
                labels_c = (*svc, capacity_class)
                self._add(key, self.gpu_hours, labels_c, delta.gpu_hours.get(capacity_class, 0.0))
                self._add(key, self.cost_total, labels_c, delta.cost.get(capacity_class, 0.0))
            self._add(key, self.requests, svc, delta.requests)
            self._set(key, self.cost_per_1m, svc, usage.cost_per_million_requests)
            self._set(key, self.cost_today, svc, usage.cost_today)
            self._set(key, self.budget_limit, svc, budget.limit_per_hour if budget else None)
            self._set(key, self.budget_wanted, svc, budget.wanted_per_hour if budget else None)
            self._set(key, self.budget_planned, svc, budget.planned_per_hour if budget else None)
            self._set(key, self.budget_max_day, svc, max_cost_per_day)
            self._set(key, self.budget_alert_ratio, svc,
                      alert_percent / 100.0 if budget is not None and alert_percent is not None else None)
            for state in BUDGET_STATES:
                value = None if budget is None else (1.0 if budget.state == state else 0.0)
                self._set(key, self.budget_state, (*svc, state), value)

    def _add(self, key: ServiceKey, counter: Counter, labels: tuple[str, ...], amount: float) -> None:
        # Counters exist from the first tick (at 0), so increase() sees the first increment.
        counter.labels(*labels).inc(max(0.0, amount))
        self._written.setdefault(key, set()).add((counter, labels))

    def record_error(self, *, namespace: str, name: str, labels: Mapping[str, str] | None,
                     error: BaseException) -> None:
        key = (namespace, name)
        svc = service_labels(namespace, name, labels)
        with self._lock:
            self._drop_other_owners(key, svc)
            self._inc(key, self.errors, (*svc, type(error).__name__))

    def forget(self, *, namespace: str, name: str) -> None:
        """Remove every series of one service (its loop stopped)."""
        with self._lock:
            for metric, labels in self._written.pop((namespace, name), set()):
                metric.remove(*labels)

    def _drop_classes(self, key: ServiceKey, metrics: tuple[MetricWrapperBase, ...], at: int,
                      keep: tuple[str, ...]) -> None:
        stale = {(m, lv) for m, lv in self._written.get(key, set()) if m in metrics and lv[at] not in keep}
        for metric, labels in stale:
            self._remove(key, metric, labels)

    def _drop_other_owners(self, key: ServiceKey, svc: tuple[str, ...]) -> None:
        # A relabelled service (new team/project) must not keep its old series alive as a second fleet.
        stale = {(m, lv) for m, lv in self._written.get(key, set()) if lv[: len(svc)] != svc}
        for metric, labels in stale:
            self._remove(key, metric, labels)


def service_labels(namespace: str, name: str, labels: Mapping[str, str] | None) -> tuple[str, str, str, str]:
    labels = labels or {}
    return namespace, name, str(labels.get(LABEL_TEAM, "")), str(labels.get(LABEL_PROJECT, ""))


# The process-wide instance, on prometheus_client's default registry (which also carries the
# process_* and python_* collectors: memory and CPU of the operator itself).
TELEMETRY = Telemetry(registry=DEFAULT_REGISTRY)


def record_tick(*, namespace: str, name: str, labels: Mapping[str, str] | None, spec: InferenceServiceSpec,
                result: StepResultLike, duration_s: float, actual_replicas: int | None = None) -> None:
    TELEMETRY.record_tick(namespace=namespace, name=name, labels=labels, spec=spec, result=result,
                          duration_s=duration_s, actual_replicas=actual_replicas)


def record_usage(*, namespace: str, name: str, labels: Mapping[str, str] | None, usage: UsageLike,
                 delta: UsageDeltaLike, budget: BudgetLike | None, max_cost_per_day: float | None = None,
                 alert_percent: int | None = None) -> None:
    TELEMETRY.record_usage(namespace=namespace, name=name, labels=labels, usage=usage, delta=delta, budget=budget,
                           max_cost_per_day=max_cost_per_day, alert_percent=alert_percent)


def record_error(*, namespace: str, name: str, labels: Mapping[str, str] | None, error: BaseException) -> None:
    TELEMETRY.record_error(namespace=namespace, name=name, labels=labels, error=error)


def forget(*, namespace: str, name: str) -> None:
    TELEMETRY.forget(namespace=namespace, name=name)


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Serve /metrics of the default registry from a daemon thread (kopf owns the main loop)."""
    start_http_server(port, addr=host, registry=DEFAULT_REGISTRY)
