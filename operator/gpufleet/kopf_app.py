"""The kopf layer: handlers that wire Kubernetes events to the control step.

- create/update/resume: render and apply the children (Deployments per class, Service, PDB).
- one daemon per InferenceService: every spec.scaling.intervalSeconds run `control.step` with the
  Kubernetes fleet port, the configured metrics port and the gpufleet policy, then write status
  and Events.
The operator never writes `spec` of an InferenceService (GitOps tools own it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from gpufleet import telemetry
from gpufleet.adapters import manifests
from gpufleet.adapters.fallback import FallbackMetrics
from gpufleet.adapters.kube import Kube, KubeFleet, adopt
from gpufleet.adapters.metrics import NoMetrics, PrometheusMetrics, metrics_port
from gpufleet.adapters.triton import TritonStats
from gpufleet.api.models import GROUP, PLURAL, VERSION, Condition, InferenceServiceSpec, InferenceServiceStatus
from gpufleet.control import metering, pricing
from gpufleet.control import schedule as calendar
from gpufleet.control import status as render
from gpufleet.control.accounting import Accounting
from gpufleet.control.forecast import ForecastAdapter
from gpufleet.control.step import StepResult, step
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.schedule import default_lead_s
from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, Observation, PolicyMemory, ReplicaState

log = logging.getLogger("gpufleet")


@dataclass
class Config:
    """Operator-wide settings, set once by the CLI before kopf starts."""

    prometheus_url: str | None = None
    min_interval_seconds: float = 1.0
    backfill_seconds: float = 8 * 86400.0  # request-rate history read from Prometheus at start
    price_table: pricing.PriceTable = field(default_factory=dict)  # --price-table: overrides spec prices
    # --triton-direct: also read Triton's statistics from pod IPs when Prometheus is down. Off by
    # default: it needs network access from the operator to every pod.
    triton_direct: bool = False


CONFIG = Config()
_kube_lock = threading.Lock()
_kube: Kube | None = None


def kube() -> Kube:
    global _kube
    with _kube_lock:
        if _kube is None:
            _kube = Kube()
        return _kube


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations: status is ours and schema-pruned.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="gpufleet.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="gpufleet.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "gpufleet.io/operator"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60


def parse_spec(spec: Mapping[str, Any]) -> InferenceServiceSpec | str:
    """The typed spec, or a one-line error naming the field(s) and reason(s)."""
    try:
        return InferenceServiceSpec.model_validate(dict(spec))
    except ValidationError as exc:
        parts = [f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return "; ".join(parts)


def invalid_spec_status(body: kopf.Body, message: str, now: float) -> dict[str, Any]:
    old = InferenceServiceStatus.model_validate(dict(body.get("status") or {}))
    conditions = render.set_condition(
        old.conditions, type="Ready", status=False, reason="InvalidSpec", message=message,
        now=now, generation=body.metadata.get("generation"),
    )
    return {"conditions": [c.model_dump(by_alias=True, exclude_none=True) for c in conditions]}


def initial_replicas(spec: InferenceServiceSpec, now: float) -> dict[str, int]:
    """Sizes for brand-new Deployments: the floor (a planned window's, if one is open or in its
    lead now), split as the policy would with no load."""
    plan, _ = GpufleetPolicy().decide(
        spec=spec, observation=Observation(), forecast=None, fleet=FleetState(),
        memory=PolicyMemory(), now=now, windows=calendar.windows(spec.schedules, now),
    )
    return {ON_DEMAND: plan.on_demand, SPOT: plan.spot}


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile_children(body: kopf.Body, spec: kopf.Spec, name: str, namespace: str | None,
                       patch: kopf.Patch, **_: Any) -> None:
    assert namespace is not None  # the CRD is namespaced
    parsed = parse_spec(spec)
    if isinstance(parsed, str):
        # Reported, not raised: retrying cannot fix a spec, and existing children stay untouched.
        kopf.warn(body, reason="InvalidSpec", message=parsed)
        patch.status.update(invalid_spec_status(body, parsed, time.time()))
        return
    children = manifests.children(name, parsed)
    adopt(children, body)
    sizes = initial_replicas(parsed, time.time())
    for child in children:
        replicas = sizes.get(child["metadata"]["labels"].get(manifests.LABEL_CLASS, ""))
        result = kube().apply_child(namespace, child, replicas=replicas)
        if result != "unchanged":
            kopf.info(body, reason=result.capitalize(),
                      message=f"{child['kind']} {child['metadata']['name']} {result}")
    patch.status["observedGeneration"] = body.metadata.get("generation")


class ServiceLoop:
    """State one InferenceService's loop keeps between ticks: policy memory, forecaster, ports."""

    def __init__(self, *, namespace: str, name: str) -> None:
        self.namespace = namespace
        self.name = name
        self.policy = GpufleetPolicy()
        self.memory = PolicyMemory()
        self.spec: InferenceServiceSpec | None = None
        self.fleet: KubeFleet | None = None
        self.metrics: PrometheusMetrics | FallbackMetrics | NoMetrics = NoMetrics()
        self.forecaster: ForecastAdapter | None = None
        self.raw_spec: InferenceServiceSpec | None = None
        self.accounting = Accounting()

    def configure(self, spec: InferenceServiceSpec) -> None:
        """(Re)build the ports when the spec changed; keep memory and history across edits."""
        if spec == self.raw_spec:
            return
        self.raw_spec = spec
        # The price table's prices replace the spec's before anything decides or meters.
        spec = pricing.with_prices(spec, pricing.resolve(spec, CONFIG.price_table, self._products(spec))[0])
        old = self.spec
        self.spec = spec
        if self.fleet is None:
            self.fleet = KubeFleet(kube(), namespace=self.namespace, name=self.name, spec=spec)
        self.fleet.spec = spec
        self.metrics = metrics_port(spec, namespace=self.namespace, name=self.name, default_url=CONFIG.prometheus_url)
        if CONFIG.triton_direct and isinstance(self.metrics, PrometheusMetrics):
            self.metrics = FallbackMetrics(primary=self.metrics, secondary=TritonStats(endpoints=[], model=spec.model.name),
                                           endpoints=self.fleet.endpoints)
        self.fleet.in_flight = self.metrics.per_pod if not isinstance(self.metrics, NoMetrics) else dict
        if self.forecaster is None or old is None or old.forecast != spec.forecast:
            self.forecaster = ForecastAdapter(spec.forecast, refit_offset_s=float(hash(self.name) % 86400))
            self._backfill(time.time())

    def _products(self, spec: InferenceServiceSpec) -> dict[str, str]:
        """GPU product per class from the nodes its selector matches, when they all agree (only
        needed with a price table and no product in the selector)."""
        if not CONFIG.price_table:
            return {}
        out: dict[str, str] = {}
        for cls, placement in ((ON_DEMAND, spec.capacity.on_demand), (SPOT, spec.capacity.spot)):
            if pricing.product_of(spec, placement):
                continue
            selector = ",".join(f"{k}={v}" for k, v in placement.node_selector.items())
            try:
                nodes = kube().core.list_node(label_selector=selector or None).items
            except Exception:  # noqa: BLE001 - prices fall back to the table's "*" or the spec
                log.warning("cannot list nodes for GPU product of %s/%s", self.namespace, self.name)
                continue
            products = {((n.metadata and n.metadata.labels) or {}).get(pricing.PRODUCT_LABEL) for n in nodes} - {None}
            if len(products) == 1:
                out[cls] = str(products.pop())
        return out

    def _backfill(self, now: float) -> None:
        """Seed the forecaster with the request-rate history Prometheus already has."""
        if not isinstance(self.metrics, NoMetrics) and self.forecaster is not None:
            for t, rps in self.metrics.history("request_rate", start=now - CONFIG.backfill_seconds, end=now,
                                               step=self.forecaster.rate.step_s):
                self.forecaster.observe(t, rps)

    def tick(self, body: kopf.Body) -> None:
        assert self.spec is not None and self.fleet is not None
        now = time.time()
        forecaster = self.forecaster if self.spec.forecast.enabled else None
        old = InferenceServiceStatus.model_validate(dict(body.get("status") or {}))
        self.accounting.resume(old.usage, old.budget)
        self.memory = self.accounting.seed(self.memory, now)
        result = step(spec=self.spec, policy=self.policy, metrics=self.metrics, fleet=self.fleet,
                      forecaster=forecaster, memory=self.memory, now=now)
        self.memory = result.memory
        if self.forecaster is not None and result.observation.request_rate is not None:
            self.forecaster.observe(now, result.observation.request_rate)
        for reason, message in self.fleet.events if result.applied else []:
            kopf.info(body, reason=reason, message=message)
        if result.plan.safe_mode and self.metrics.available is False:
            kopf.warn(body, reason="MetricsUnavailable", message=self.metrics.summary()[:500])
        delta = self.accounting.meter(self.spec, result.fleet, result.observation.request_rate, now)
        write_status(body, self.spec, result, now, metrics_ok=self.metrics.available,
                     metrics_note=self.metrics.summary(), accounting=self.accounting)
        for event in self.accounting.take_events():
            (kopf.warn if event.warning else kopf.info)(body, reason=event.reason, message=event.message)
        telemetry.record_tick(namespace=self.namespace, name=self.name, labels=body.metadata.labels,
                              spec=self.spec, result=result, duration_s=time.time() - now)
        budget = self.spec.budget
        telemetry.record_usage(namespace=self.namespace, name=self.name, labels=body.metadata.labels,
                               usage=self.accounting.usage or InferenceServiceStatus().usage, delta=delta,
                               budget=result.plan.budget,
                               max_cost_per_day=budget.max_cost_per_day if budget else None,
                               alert_percent=budget.alert_percent if budget else None)


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
def fleet_loop(stopped: kopf.DaemonStopped, body: kopf.Body, name: str, namespace: str | None,
               **_: Any) -> None:
    """One loop per InferenceService: observe, forecast, decide, apply, report."""
    assert namespace is not None  # the CRD is namespaced
    loop = ServiceLoop(namespace=namespace, name=name)
    while not stopped:
        parsed = parse_spec(body.spec)
        interval = CONFIG.min_interval_seconds
        if isinstance(parsed, InferenceServiceSpec):
            interval = max(interval, float(parsed.scaling.interval_seconds))
            try:
                loop.configure(parsed)
                loop.tick(body)
            except Exception as exc:  # noqa: BLE001 - the loop must survive a failing API call
                log.exception("tick failed for %s/%s", namespace, name)
                telemetry.record_error(namespace=namespace, name=name, labels=body.metadata.labels, error=exc)
                kopf.warn(body, reason="TickFailed", message=f"{type(exc).__name__}: {exc}"[:500])
        stopped.wait(interval)
    telemetry.forget(namespace=namespace, name=name)  # deleted, or paused by peering: no stale series


def write_status(body: kopf.Body, spec: InferenceServiceSpec, result: StepResult, now: float,
                 *, metrics_ok: bool, metrics_note: str, accounting: Accounting | None = None) -> None:
    old = InferenceServiceStatus.model_validate(dict(body.get("status") or {}))
    generation = body.metadata.get("generation")
    fresh = result.fleet
    desired = {ON_DEMAND: result.plan.on_demand, SPOT: result.plan.spot}
    conditions: list[Condition] = old.conditions
    ready, reason, message = render.ready_condition(fresh, spec)
    conditions = render.set_condition(conditions, type="Ready", status=ready, reason=reason,
                                      message=message, now=now, generation=generation)
    conditions = render.set_condition(
        conditions, type="MetricsAvailable", status=metrics_ok,
        reason="MetricsOK" if metrics_ok else "MetricsUnavailable",
        message=metrics_note[:1000],
        now=now, generation=generation)
    live = [r for r in fresh.replicas if r.state != ReplicaState.draining]
    scaling = result.plan.total != len(live) or fresh.count(ReplicaState.starting) > 0
    conditions = render.set_condition(
        conditions, type="Scaling", status=scaling, reason=result.plan.reason, message=result.plan.message,
        now=now, generation=generation)
    degraded, reason, message = render.degraded_condition(result.plan, fresh)
    conditions = render.set_condition(conditions, type="Degraded", status=degraded, reason=reason,
                                      message=message, now=now, generation=generation)
    budget_status, budget_condition = accounting.judge(spec, result.plan) if accounting else (None, None)
    if budget_condition is not None:
        conditions = render.set_condition(
            conditions, type="BudgetExceeded", status=budget_condition.status, reason=budget_condition.reason,
            message=budget_condition.message[:1000], now=now, generation=generation)
    else:
        conditions = [c for c in conditions if c.type != "BudgetExceeded"]
    new = InferenceServiceStatus(
        observed_generation=generation,
        conditions=conditions,
        replicas=render.replica_status(fresh, desired),
        observed=render.observed_status(result.observation),
        forecast=render.forecast_status(result.forecast),
        last_decision=render.decision_status(result.plan, now, result.applied),
        time_to_ready_seconds={k: round(v, 1) for k, v in fresh.time_to_ready_s.items()},
        cost_per_hour=render.cost_per_hour(spec, fresh),
        usage=metering.rounded(accounting.usage) if accounting and accounting.usage else old.usage,
        budget=budget_status,
        schedules=render.schedule_status(
            result.windows, now, default_lead_s(fresh.time_to_ready_s, spec.scaling.interval_seconds)),
    )
    patch = new.model_dump(by_alias=True, exclude_none=True)
    if budget_status is None and old.budget is not None:
        patch["budget"] = None  # budget removed from spec: drop its status (merge patch deletes nulls)
    kube().custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, str(body.metadata.namespace), PLURAL, str(body.metadata.name), {"status": patch},
        field_manager="gpufleet",
    )
