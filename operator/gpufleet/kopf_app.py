"""The kopf layer: handlers that wire Kubernetes events to the control step.

- create/update/resume: render and apply the children (Deployments per class, Service, PDB).
- indexes: kopf keeps the pods, GPU nodes and Deployments the fleet needs in memory, fed by one
  watch per kind, so a tick reads no list from the API server.
- one async daemon per InferenceService: it sleeps until its (jittered) tick is due and runs the
  tick on the operator's bounded worker pool (gpufleet.ticks), so threads do not grow with the
  number of services; the tick runs `control.step` with the Kubernetes fleet port, the metrics
  port and the gpufleet policy, then writes status (only when it changed) and Events.
- what the policy learned is persisted in status.memory and restored when a loop starts (after a
  restart or a peering failover).
The operator never writes `spec` of an InferenceService (GitOps tools own it).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from prometheus_client import Counter
from pydantic import ValidationError

from gpufleet import telemetry, ticks
from gpufleet.adapters import manifests
from gpufleet.adapters.fallback import FallbackMetrics
from gpufleet.adapters.kube import Kube, adopt
from gpufleet.adapters.kubefleet import KubeFleet
from gpufleet.adapters.pods import NodeInfo, Snapshot, node_info, trim_pod
from gpufleet.adapters.fleet_metrics import FleetQueries, ServiceMetrics, fleet_metrics_port
from gpufleet.adapters.metrics import NoMetrics, PrometheusMetrics
from gpufleet.adapters.triton import TritonStats
from gpufleet.api.models import GROUP, PLURAL, VERSION, Condition, InferenceServiceSpec, InferenceServiceStatus
from gpufleet.control import metering, pricing
from gpufleet.control import status as render
from gpufleet.control.accounting import Accounting
from gpufleet.control.forecast import ForecastAdapter
from gpufleet.control.step import StepResult, initial_decision, step
from gpufleet.control.memory import MemoryFormatError
from gpufleet.control.memory import decode as decode_memory
from gpufleet.control.memory import encode as encode_memory
from gpufleet.control.memory import fingerprint as memory_fingerprint
from gpufleet.core import stabilize, warmpool
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.schedule import default_lead_s
from gpufleet.core.types import ON_DEMAND, SPOT, PolicyMemory, ReplicaState

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
    workers: int = 8  # --workers: threads shared by all services' ticks
    kube_timeout_s: float = 10.0  # every Kubernetes request (connect and read)
    heartbeat_s: float = 60.0  # status fields that change every tick are written at most this often
    peering_lifetime_s: int = 15  # a dead peer is replaced after at most this long
    # --selector: this instance's shard of the InferenceServices (equality-based label selector
    # terms: k=v, k!=v, k, !k). Several instances with disjoint selectors split a fleet.
    selector: tuple[tuple[str, str, str | None], ...] = ()

    def selects(self, labels: Mapping[str, str]) -> bool:
        for key, op, value in self.selector:
            have = labels.get(key)
            if (op == "=" and have != value) or (op == "!=" and have == value) \
                    or (op == "exists" and have is None) or (op == "!" and have is not None):
                return False
        return True


def parse_selector(text: str) -> tuple[tuple[str, str, str | None], ...]:
    """'team=a,tier!=free,!gpufleet.io/shard' -> terms; ValueError on what it does not support."""
    terms: list[tuple[str, str, str | None]] = []
    for raw in filter(None, (t.strip() for t in text.split(","))):
        if "!=" in raw:
            key, value = raw.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "=" in raw:
            key, value = raw.split("=", 1)
            terms.append((key.strip(), "=", value.strip().lstrip("=")))
        elif raw.startswith("!"):
            terms.append((raw[1:].strip(), "!", None))
        else:
            terms.append((raw, "exists", None))
        if not terms[-1][0] or any(c in raw for c in " ()"):
            raise ValueError(f"unsupported selector term {raw!r} (use k=v, k!=v, k or !k)")
    return tuple(terms)


def in_shard(labels: kopf.Labels, **_: Any) -> bool:
    return CONFIG.selects(labels)


CONFIG = Config()
STATUS_WRITES = Counter("gpufleet_status_writes_total",
                        "Status patches per tick result: written, or skipped because nothing material changed",
                        ["result"])
POOL = ticks.TickPool()
# One set of batched PromQL queries per Prometheus URL, shared by every service that uses the
# built-in queries (gpufleet.adapters.fleet_metrics).
SHARED_METRICS: dict[str, FleetQueries] = {}
_kube_lock = threading.Lock()
_kube: Kube | None = None


def kube() -> Kube:
    global _kube
    with _kube_lock:
        if _kube is None:
            _kube = Kube(timeout_s=CONFIG.kube_timeout_s)
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
    # Every call kopf makes has a deadline too; a watch that hears nothing is re-established.
    settings.networking.request_timeout = 30.0
    settings.networking.connect_timeout = 10.0
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.watching.connect_timeout = 10.0
    settings.peering.lifetime = CONFIG.peering_lifetime_s
    settings.peering.stealth = True
    POOL.workers = CONFIG.workers


@kopf.on.cleanup()
def stop_pool(**_: Any) -> None:
    POOL.shutdown()


# -- watch caches: one stream per kind for the whole fleet ---------------------------------------

@kopf.index("pods", labels={manifests.LABEL_SERVICE: kopf.PRESENT})
async def gpufleet_pods(body: kopf.Body, namespace: str | None, labels: kopf.Labels,
                        **_: Any) -> dict[tuple[str | None, str], dict[str, Any]]:
    return {(namespace, labels[manifests.LABEL_SERVICE]): trim_pod(copy.deepcopy(dict(body)))}


@kopf.index("nodes")
async def gpufleet_nodes(body: kopf.Body, name: str, **_: Any) -> dict[str, NodeInfo]:
    return {name: node_info(copy.deepcopy(dict(body)))}


@kopf.index("apps", "v1", "deployments", labels={manifests.LABEL_SERVICE: kopf.PRESENT})
async def gpufleet_deployments(namespace: str | None, name: str, spec: kopf.Spec,
                               **_: Any) -> dict[tuple[str | None, str], int]:
    return {(namespace, name): int(spec.get("replicas") or 0)}


def _one(index: kopf.Index[Any, Any], key: Any) -> Any:
    store = index.get(key)
    return next(iter(store), None) if store is not None else None


def take_snapshot(namespace: str, name: str, *, pods: kopf.Index[Any, Any], nodes: kopf.Index[Any, Any],
                  deployments: kopf.Index[Any, Any], node_labels: bool = False) -> Snapshot:
    """This service's slice of the indexes. Call it on kopf's event loop (the indexes change there)."""
    mine = tuple(pods.get((namespace, name)) or ())
    infos = {}
    for pod in mine:
        node = pod["spec"].get("nodeName")
        if node and (info := _one(nodes, node)) is not None:
            infos[node] = info
    sizes = {}
    for capacity_class in (ON_DEMAND, SPOT):
        deployment = manifests.deployment_name(name, capacity_class)
        if (replicas := _one(deployments, (namespace, deployment))) is not None:
            sizes[deployment] = replicas
    labels = tuple(info.labels for store in nodes.values() for info in store) if node_labels else ()
    return Snapshot(pods=mine, nodes=infos, deployments=sizes, node_labels=labels)


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
    """Sizes for brand-new Deployments (see control.step.initial_decision)."""
    plan, _ = initial_decision(spec, GpufleetPolicy(), now=now)
    return {ON_DEMAND: plan.on_demand, SPOT: plan.spot}


@kopf.on.resume(GROUP, VERSION, PLURAL, when=in_shard)
@kopf.on.create(GROUP, VERSION, PLURAL, when=in_shard)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", when=in_shard)
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
    """State one InferenceService's loop keeps between ticks: policy memory, forecaster, ports,
    and what it last wrote to status."""

    def __init__(self, *, namespace: str, name: str, snapshot: Callable[..., Snapshot]) -> None:
        self.namespace = namespace
        self.name = name
        self.snapshot = snapshot  # this service's slice of the watch caches (thread-safe)
        self.policy = GpufleetPolicy()
        self.memory = PolicyMemory()
        self.spec: InferenceServiceSpec | None = None
        self.fleet: KubeFleet | None = None
        self.metrics: ServiceMetrics | PrometheusMetrics | FallbackMetrics | NoMetrics = NoMetrics()
        self.forecaster: ForecastAdapter | None = None
        self.raw_spec: InferenceServiceSpec | None = None
        self.accounting = Accounting()
        self.restored = False  # status.memory is read back on the first tick
        self.backfill_due: float | None = None  # when to (re)try reading history from Prometheus
        self.written: dict[str, Any] | None = None  # the last status this loop wrote
        self.written_at = 0.0
        self.memory_fp = ""
        self.metrics_warned = False

    def configure(self, spec: InferenceServiceSpec, now: float) -> None:
        """(Re)build the ports when the spec changed; keep memory and history across edits."""
        if spec == self.raw_spec:
            return
        self.raw_spec = spec
        # The price table's prices replace the spec's before anything decides or meters.
        spec = pricing.with_prices(spec, pricing.resolve(spec, CONFIG.price_table, self._products(spec))[0])
        old = self.spec
        self.spec = spec
        if self.fleet is None:
            self.fleet = KubeFleet(kube(), namespace=self.namespace, name=self.name, spec=spec,
                                   snapshot=self.snapshot)
        self.fleet.spec = spec
        self.close()
        self.metrics = fleet_metrics_port(spec, namespace=self.namespace, name=self.name,
                                          default_url=CONFIG.prometheus_url, shared=SHARED_METRICS)
        if CONFIG.triton_direct and isinstance(self.metrics, (PrometheusMetrics, ServiceMetrics)):
            self.metrics = FallbackMetrics(primary=self.metrics, secondary=TritonStats(endpoints=[], model=spec.model.name),
                                           endpoints=self.fleet.endpoints)
        self.fleet.in_flight = self.metrics.per_pod if not isinstance(self.metrics, NoMetrics) else dict
        if self.forecaster is None or old is None or old.forecast != spec.forecast:
            self.forecaster = ForecastAdapter(spec.forecast, refit_offset_s=float(hash(self.name) % 86400))
            self.backfill_due = now

    def close(self) -> None:
        """Leave the shared metric queries (the service is gone, or its metrics port changes)."""
        if isinstance(self.metrics, ServiceMetrics):
            self.metrics.close()
        elif isinstance(self.metrics, FallbackMetrics) and isinstance(self.metrics.primary, ServiceMetrics):
            self.metrics.primary.close()

    def _products(self, spec: InferenceServiceSpec) -> dict[str, str]:
        """GPU product per class from the nodes its selector matches, when they all agree (only
        needed with a price table and no product in the selector)."""
        if not CONFIG.price_table:
            return {}
        wanted = [(cls, p) for cls, p in ((ON_DEMAND, spec.capacity.on_demand), (SPOT, spec.capacity.spot))
                  if not pricing.product_of(spec, p)]
        if not wanted:
            return {}
        nodes = self.snapshot(node_labels=True).node_labels
        out: dict[str, str] = {}
        for cls, placement in wanted:
            products = {labels.get(pricing.PRODUCT_LABEL) for labels in nodes
                        if all(labels.get(k) == v for k, v in placement.node_selector.items())} - {None}
            if len(products) == 1:
                out[cls] = str(products.pop())
        return out

    def _backfill(self, now: float) -> None:
        """Seed the forecaster with the request-rate history Prometheus already has; retried
        every minute until Prometheus answers (it may be down when the operator starts)."""
        if self.backfill_due is None or now < self.backfill_due or self.forecaster is None:
            return
        if isinstance(self.metrics, NoMetrics) or not self.metrics.available:
            self.backfill_due = now + 60.0
            return
        history = self.metrics.history("request_rate", start=now - CONFIG.backfill_seconds, end=now,
                                       step=self.forecaster.rate.step_s)
        for t, rps in history:
            self.forecaster.observe(t, rps)
        failed = self.metrics.history_error
        self.backfill_due = now + 60.0 if failed else None

    def restore(self, status: Mapping[str, Any], now: float) -> str | None:
        """Take back what an earlier operator process persisted in status.memory; the reason it
        was discarded, if it was."""
        text = status.get("memory")
        if not text and not status.get("lastDecision") and self.spec is not None:
            # Never decided on: start from the decision its new Deployments were sized from.
            self.memory = initial_decision(self.spec, self.policy, now=now)[1]
            return None
        if not text or self.fleet is None:
            return None
        try:
            memory, samples = decode_memory(str(text), now=now)
        except MemoryFormatError as exc:
            return str(exc)
        self.memory = memory
        self.fleet.restore_samples(samples)
        self.memory_fp = memory_fingerprint(memory, samples)
        return None

    def tick(self, body: kopf.Body) -> None:
        assert self.spec is not None and self.fleet is not None
        now = time.time()
        status = body.get("status") or {}
        if not self.restored:
            self.restored = True
            discarded = self.restore(status, now)
            if discarded:
                kopf.warn(body, reason="MemoryDiscarded", message=f"status.memory not restored: {discarded}"[:500])
        forecaster = self.forecaster if self.spec.forecast.enabled else None
        old = InferenceServiceStatus.model_validate(dict(status))
        self.accounting.resume(old.usage, old.budget)
        self.memory = self.accounting.seed(self.memory, now)
        result = step(spec=self.spec, policy=self.policy, metrics=self.metrics, fleet=self.fleet,
                      forecaster=forecaster, memory=self.memory, now=now)
        self.memory = result.memory
        self._backfill(now)
        if self.forecaster is not None and result.observation.request_rate is not None:
            self.forecaster.observe(now, result.observation.request_rate)
        for reason, message in self.fleet.events if result.applied else []:
            (kopf.warn if reason == "RolloutFailed" else kopf.info)(body, reason=reason, message=message)
        self._warn_metrics(body, result)
        delta = self.accounting.meter(self.spec, result.fleet, result.observation.request_rate, now)
        # What this loop wrote last is newer than the body, whose watch event may still be on its way.
        previous = self.written if self.written is not None else status
        new = render_status(previous, (body.get("metadata") or {}).get("generation"), self.spec, result, now,
                            metrics_ok=self.metrics.available, metrics_note=self.metrics.summary(),
                            accounting=self.accounting)
        self._write(body, new, now)
        for event in self.accounting.take_events():
            (kopf.warn if event.warning else kopf.info)(body, reason=event.reason, message=event.message)
        labels = (body.get("metadata") or {}).get("labels")
        telemetry.record_tick(namespace=self.namespace, name=self.name, labels=labels,
                              spec=self.spec, result=result, duration_s=time.time() - now)
        budget = self.spec.budget
        telemetry.record_usage(namespace=self.namespace, name=self.name, labels=labels,
                               usage=self.accounting.usage or InferenceServiceStatus().usage, delta=delta,
                               budget=result.plan.budget,
                               max_cost_per_day=budget.max_cost_per_day if budget else None,
                               alert_percent=budget.alert_percent if budget else None)

    def _warn_metrics(self, body: kopf.Body, result: StepResult) -> None:
        """One Warning when the metrics go away (not one per tick), one Normal when they return."""
        blind = result.plan.safe_mode and self.metrics.available is False
        if blind and not self.metrics_warned:
            kopf.warn(body, reason="MetricsUnavailable", message=self.metrics.summary()[:500])
        elif not blind and self.metrics_warned:
            kopf.info(body, reason="MetricsAvailable", message="metrics are back")
        self.metrics_warned = blind

    def _write(self, body: kopf.Body, new: dict[str, Any], now: float) -> None:
        """Patch status only when something a reader acts on changed, when the learned memory
        changed, or once per heartbeat for the fields that move every tick."""
        assert self.spec is not None and self.fleet is not None
        samples = self.fleet.start_samples()
        fp = memory_fingerprint(self.memory, samples)
        heartbeat = now - self.written_at >= CONFIG.heartbeat_s
        if self.written is not None and not heartbeat and fp == self.memory_fp \
                and material(new) == material(self.written):
            STATUS_WRITES.labels(result="skipped").inc()
            return
        keep = stabilize.retention_s(self.spec, warmpool.horizon_s(self.spec, self.fleet.time_to_ready()))
        new["memory"] = encode_memory(self.memory, samples, now=now, keep_s=keep)
        patch = dict(new)
        old_budget = ((self.written or body.get("status") or {}).get("budget"))
        if "budget" not in patch and old_budget is not None:
            patch["budget"] = None  # budget removed from spec: drop its status (merge patch deletes nulls)
        kube().patch_status(self.namespace, self.name, patch)
        STATUS_WRITES.labels(result="written").inc()
        self.written, self.written_at, self.memory_fp = new, now, fp


# Status fields that change on every tick without meaning a change: written with the next
# material change or once per heartbeat.
VOLATILE = ("observed", "forecast", "usage", "memory")
# Which signal is the binding one (QueueDepth, RequestRate, ForecastLoad, ...) and the one-line
# explanation with its numbers move while the fleet holds still; the sizes decided do not.
DECISION_COUNTS = ("desired", "standby", "onDemand", "spot", "applied")


def material(status: Mapping[str, Any]) -> dict[str, Any]:
    """What a reader acts on: sizes, conditions' states and reasons (the Scaling condition's
    reason is the decision's, so only its state counts), windows, budget, generation."""
    out = {k: v for k, v in status.items() if k not in VOLATILE}
    if "lastDecision" in out:
        out["lastDecision"] = {k: v for k, v in out["lastDecision"].items() if k in DECISION_COUNTS}
    if "conditions" in out:
        out["conditions"] = [
            {"type": c.get("type"), "status": c.get("status"),
             **({} if c.get("type") == "Scaling" else {"reason": c.get("reason")})}
            for c in out["conditions"]]
    return out


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5.0, when=in_shard)
async def fleet_loop(stopped: kopf.DaemonStopped, body: kopf.Body, name: str, namespace: str | None,
                     **kwargs: Any) -> None:
    """One loop per InferenceService: a coroutine that schedules its ticks on the shared pool.
    kwargs carry the indexes above (kopf passes each under its function's name)."""
    assert namespace is not None  # the CRD is namespaced
    event_loop = asyncio.get_running_loop()

    async def read(node_labels: bool) -> Snapshot:
        return take_snapshot(namespace, name, pods=kwargs["gpufleet_pods"], nodes=kwargs["gpufleet_nodes"],
                             deployments=kwargs["gpufleet_deployments"], node_labels=node_labels)

    def snapshot(*, node_labels: bool = False) -> Snapshot:
        # Called from a worker thread: the indexes are read on the event loop that updates them.
        return asyncio.run_coroutine_threadsafe(read(node_labels), event_loop).result(timeout=CONFIG.kube_timeout_s)

    loop = ServiceLoop(namespace=namespace, name=name, snapshot=snapshot)

    def interval() -> float:
        parsed = parse_spec(body.spec)
        seconds = float(parsed.scaling.interval_seconds) if isinstance(parsed, InferenceServiceSpec) else 10.0
        return max(CONFIG.min_interval_seconds, seconds)

    def tick() -> None:
        raw = kopf.Body(cast(kopf.RawBody, copy.deepcopy(dict(body))))  # one consistent view for this tick
        parsed = parse_spec(raw.spec)
        if not isinstance(parsed, InferenceServiceSpec):
            return  # reported by reconcile_children
        try:
            loop.configure(parsed, time.time())
            loop.tick(raw)
        except Exception as exc:  # noqa: BLE001 - the loop must survive a failing API call
            log.exception("tick failed for %s/%s", namespace, name)
            telemetry.record_error(namespace=namespace, name=name, labels=body.metadata.labels, error=exc)
            kopf.warn(raw, reason="TickFailed", message=f"{type(exc).__name__}: {exc}"[:500])

    try:
        await ticks.run_loop(POOL, name=f"{namespace}/{name}", tick=tick, interval=interval,
                             sleep=stopped.wait, stopped=lambda: bool(stopped))
    finally:
        loop.close()
    telemetry.forget(namespace=namespace, name=name)  # deleted, or paused by peering: no stale series


def render_status(status: Mapping[str, Any], generation: int | None, spec: InferenceServiceSpec,
                  result: StepResult, now: float, *, metrics_ok: bool, metrics_note: str,
                  accounting: Accounting | None = None) -> dict[str, Any]:
    """The status this tick's result calls for (from the previous one), as the API server stores it."""
    old = InferenceServiceStatus.model_validate(dict(status))
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
    return new.model_dump(by_alias=True, exclude_none=True)
