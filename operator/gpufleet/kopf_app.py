"""The kopf layer: handlers that wire Kubernetes events to the control layer, and nothing more.

- create/update/resume: render and apply the children (Deployments per class, Service, PDB);
  none in mode: recommend (shadow mode reads spec.targetRef instead: adapters.shadow).
- indexes: kopf keeps the pods, GPU nodes and Deployments the fleet needs in memory, fed by one
  watch per kind, so a tick reads no list from the API server. A pod that turns Ready wakes its
  service's loop.
- one async daemon per InferenceService: it sleeps until its (jittered) tick is due and runs the
  tick on the operator's bounded worker pool (gpufleet.ticks), so threads do not grow with the
  number of services. The tick is `control.service.ServiceLoop.tick` on the cluster's ports
  (adapters.wiring); it returns what to do, and this layer does it: post the Events, patch
  status (only when it changed), record telemetry. Woken by a pod turning Ready, the loop runs
  `ServiceLoop.reroute` instead: the last applied plan carried out again, its Events posted.
- what the policy learned is persisted in status.memory and restored when a loop starts (after a
  restart or a peering failover).
The operator never writes `spec` of an InferenceService (GitOps tools own it).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter
from pydantic import ValidationError

from gpufleet import quota_app, telemetry, ticks
from gpufleet.adapters import manifests
from gpufleet.adapters.fleet_metrics import FleetQueries
from gpufleet.adapters.kubefleet import KubeFleet
from gpufleet.adapters.kube import Kube, NotOwned, ServiceGone, adopt
from gpufleet.adapters.quota import patch_quota_status
from gpufleet.adapters.pods import (NodeInfo, Snapshot, TickSnapshots, node_info, owned_by_fleet, replica_from_pod,
                                   trim_pod, turned_ready)
from gpufleet.adapters.wiring import ClusterWiring
from gpufleet.api.models import GROUP, PLURAL, VERSION, InferenceServiceSpec, Mode, read_status
from gpufleet.control import pricing
from gpufleet.control import status as render
from gpufleet.control.quota import QuotaPolicy
from gpufleet.control.service import Causes, Event, ServiceLoop, Settings, TickTelemetry
from gpufleet.control.step import initial_decision
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.rollout import drain_deadline
from gpufleet.core.types import ON_DEMAND, SPOT

log = logging.getLogger("gpufleet")


@dataclass
class Config:
    """Operator-wide settings, set once by the CLI before kopf starts."""

    prometheus_url: str | None = None
    # --prometheus-url-allow: URL prefixes / hosts a spec.metrics.prometheusUrl may name (besides
    # prometheus_url itself); empty: none.
    prometheus_allow: tuple[str, ...] = ()
    prometheus_ca_bundle: str | None = None  # --prometheus-ca-bundle: CA certificates for Prometheus' TLS
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
# The generation whose children reconcile_children last applied, per service: what a tick may
# write as status.observedGeneration (never the spec's generation while its children lag).
# Keyed by uid: a service deleted and created again under its name starts from nothing.
RECONCILED: dict[str, int | None] = {}
# Objects of a child's name that a service does not control, per uid (apply_children): its loop
# reports them (Ready=False, Conflict) and applies the children again every CONFLICT_RETRY_S.
CONFLICTS: dict[str, tuple[str, ...]] = {}
# Children the API server refused as invalid, per uid: reported as InvalidSpec, tried again likewise.
REJECTED: dict[str, tuple[str, ...]] = {}
CONFLICT_RETRY_S = 30.0
# Services resumed by a restarted operator whose children were already applied for their
# generation (status.observedGeneration): their loop applies the children again (a new
# operator version may render them differently, one may have been deleted meanwhile) after its
# second tick, not the resume handler at once: every service's resume applies at once held the
# API server while the first decisions waited on it (make chaos: kill -9 of the operator).
RESUMED: set[str] = set()
RESUME_APPLY_AFTER_TICKS = 2
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
    # The Kubernetes client now, before any handler or loop runs: building it imports the client's
    # API modules (seconds on a busy machine), and lazily every first tick and handler queued
    # behind that import (make chaos: a restarted operator's first decisions came 4 s late).
    kube()


# The GPUQuota arbitration (quota_app): its stop signal, and its task (held: the event loop keeps
# only a weak reference to a task).
QUOTA_STOP: list[asyncio.Event] = []
QUOTA_TASKS: list[asyncio.Task[None]] = []


@kopf.on.startup()
async def start_quotas(**_: Any) -> None:
    stop = asyncio.Event()
    QUOTA_STOP.append(stop)
    QUOTA_TASKS.append(asyncio.get_running_loop().create_task(
        quota_app.arbitrate_forever(lambda name, status: patch_quota_status(kube(), name, status), stop)))


@kopf.on.cleanup()
def stop_pool(**_: Any) -> None:
    POOL.shutdown()
    for stop in QUOTA_STOP:
        stop.set()


# -- watch caches: one stream per kind for the whole fleet ---------------------------------------

# Each service loop's wake-up, set when one of its pods turns Ready: the loop carries out its last
# plan again now instead of at its next tick (gpufleet.ticks.run_loop, docs/rollout.md).
WAKES: dict[tuple[str | None, str], asyncio.Event] = {}


@kopf.index("pods", labels={manifests.LABEL_SERVICE: kopf.PRESENT})
async def gpufleet_pods(body: kopf.Body, namespace: str | None, labels: kopf.Labels,
                        **kwargs: Any) -> dict[tuple[str | None, str], dict[str, Any]]:
    key = (namespace, labels[manifests.LABEL_SERVICE])
    if not owned_by_fleet(body, key[1]):
        return {}  # the label alone: not one of the service's Deployments' pods, never counted
    pod = trim_pod(copy.deepcopy(dict(body)))
    # The index still holds this pod as the previous event left it (kopf passes every index,
    # this one too, and replaces the entry after this handler returns).
    if turned_ready(kwargs["gpufleet_pods"].get(key) or (), pod) and (wake := WAKES.get(key)) is not None:
        wake.set()
    return {key: pod}


@kopf.index("nodes")
async def gpufleet_nodes(body: kopf.Body, name: str, **_: Any) -> dict[str, NodeInfo]:
    return {name: node_info(copy.deepcopy(dict(body)))}


@kopf.index("apps", "v1", "deployments", labels={manifests.LABEL_SERVICE: kopf.PRESENT})
async def gpufleet_deployments(namespace: str | None, name: str, spec: kopf.Spec, meta: kopf.Meta,
                               labels: kopf.Labels, **_: Any) -> dict[tuple[str | None, str], int]:
    # Only Deployments an InferenceService of that name controls: a look-alike someone else made
    # (same name and labels) is never scaled.
    if not manifests.controlled_by_service(meta, labels[manifests.LABEL_SERVICE]):
        return {}
    return {(namespace, name): int(spec.get("replicas") or 0)}


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers")
async def gpufleet_hpas(namespace: str | None, name: str, spec: kopf.Spec, meta: kopf.Meta,
                        **_: Any) -> dict[tuple[str | None, str], str]:
    """Every HPA by the Deployment it targets (a few bytes each): one aimed at a gpufleet
    Deployment fights the operator over its replicas, and is reported (AutoscalerConflict)."""
    ref = spec.get("scaleTargetRef") or {}
    if ref.get("kind") != "Deployment" or any(o.get("kind") == "ScaledObject" for o in meta.get("ownerReferences") or ()):
        return {}  # KEDA's own HPA is reported as its ScaledObject
    return {(namespace, str(ref.get("name", ""))): f"HorizontalPodAutoscaler {name}"}


# KEDA may not be installed: kopf watches its CRD appear and only then serves this index.
@kopf.index("keda.sh", "v1alpha1", "scaledobjects")
async def gpufleet_scaledobjects(namespace: str | None, name: str, spec: kopf.Spec,
                                 **_: Any) -> dict[tuple[str | None, str], str]:
    ref = spec.get("scaleTargetRef") or {}
    if ref.get("kind", "Deployment") != "Deployment":
        return {}
    return {(namespace, str(ref.get("name", ""))): f"ScaledObject {name}"}


def aimed_at(namespace: str, deployment: str, *indexes: kopf.Index[Any, Any] | None) -> list[str]:
    """The HPAs and ScaledObjects aimed at one Deployment, as 'HorizontalPodAutoscaler x'."""
    out: list[str] = []
    for index in indexes:
        store = index.get((namespace, deployment)) if index is not None else None
        out += sorted(store or ())
    return out


def autoscalers_of(namespace: str, name: str, *indexes: kopf.Index[Any, Any] | None,
                   classes: Sequence[str] = (ON_DEMAND, SPOT)) -> list[str]:
    """The HPAs and ScaledObjects aimed at this service's Deployments, as 'HorizontalPodAutoscaler
    x targets Deployment chat-ondemand'."""
    out = []
    for capacity_class in classes:
        deployment = manifests.deployment_name(name, capacity_class)
        out += [f"{what} targets Deployment {deployment}" for what in aimed_at(namespace, deployment, *indexes)]
    return out


def _one(index: kopf.Index[Any, Any], key: Any) -> Any:
    store = index.get(key)
    return next(iter(store), None) if store is not None else None


def class_names(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The capacity classes a raw spec names (spec.capacity.classes), else on-demand and spot."""
    listed = ((spec.get("capacity") or {}).get("classes")) or ()
    names = tuple(str(c.get("name")) for c in listed if isinstance(c, Mapping) and c.get("name"))
    return names or (ON_DEMAND, SPOT)


def take_snapshot(namespace: str, name: str, *, pods: kopf.Index[Any, Any], nodes: kopf.Index[Any, Any],
                  deployments: kopf.Index[Any, Any], node_labels: bool = False,
                  classes: Sequence[str] = (ON_DEMAND, SPOT)) -> Snapshot:
    """This service's slice of the indexes. Call it on kopf's event loop (the indexes change there).
    `classes`: its capacity classes (class_names), one Deployment each."""
    mine = tuple(pods.get((namespace, name)) or ())
    infos = {}
    for pod in mine:
        node = pod["spec"].get("nodeName")
        if node and (info := _one(nodes, node)) is not None:
            infos[node] = info
    sizes = {}
    # Its classes, the two-class form's, and any class a pod of it still carries (a class removed
    # from the list, or the onDemand/spot form replaced by a list: drained and scaled to 0).
    seen = [str((p["metadata"].get("labels") or {}).get(manifests.LABEL_CLASS) or "") for p in mine]
    for capacity_class in dict.fromkeys([*classes, ON_DEMAND, SPOT, *filter(None, seen)]):
        deployment = manifests.deployment_name(name, capacity_class)
        if (replicas := _one(deployments, (namespace, deployment))) is not None:
            sizes[deployment] = replicas
    labels = tuple(info.labels for store in nodes.values() for info in store) if node_labels else ()
    return Snapshot(pods=mine, nodes=infos, deployments=sizes, node_labels=labels)


def parse_spec(spec: Mapping[str, Any]) -> InferenceServiceSpec | str:
    """The typed spec, or a one-line error naming the field(s) and reason(s). Never raises: a
    validator that fails some other way (the tz database is files) is an invalid spec too, not a
    crash of the service's loop."""
    try:
        return InferenceServiceSpec.model_validate(dict(spec))
    except ValidationError as exc:
        parts = [f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return "; ".join(parts)[:1000]
    except Exception as exc:  # noqa: BLE001 - reported as InvalidSpec, never raised into a loop
        return f"spec: {type(exc).__name__}: {exc}"[:1000]


def invalid_spec_status(body: kopf.Body, message: str, now: float) -> dict[str, Any]:
    """Ready=False, InvalidSpec naming the field; the generation counts as handled (rejected: its
    children are left as they were), so GitOps health checks see the failure, not a wait."""
    old = read_status(body.get("status"))
    generation = body.metadata.get("generation")
    conditions = render.set_condition(
        old.conditions, type="Ready", status=False, reason="InvalidSpec", message=message,
        now=now, generation=generation,
    )
    return {"conditions": [c.model_dump(by_alias=True, exclude_none=True) for c in conditions],
            "observedGeneration": generation}


def initial_replicas(spec: InferenceServiceSpec, now: float) -> dict[str, int]:
    """Sizes for brand-new Deployments (see control.step.initial_decision)."""
    plan, _ = initial_decision(spec, GpufleetPolicy(), now=now)
    return {c: plan.by_class(c) for c in plan.class_names()}


def apply_children(body: kopf.Body, parsed: InferenceServiceSpec, namespace: str,
                   name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Apply the children (creating the missing ones); the conflicts (objects of a child's name
    the service does not control, left untouched: never adopted, never overwritten) and the
    refusals (children the API server refused as invalid, 400/422: the spec renders something it
    cannot store). Without either the generation counts as reconciled (RECONCILED); with some, they
    are recorded (CONFLICTS, REJECTED) for the service's loop to report and to try again."""
    children = manifests.children(name, parsed)
    adopt(children, body)
    sizes = initial_replicas(parsed, time.time())
    conflicts: list[str] = []
    rejected: list[str] = []  # children the API server refused as invalid: the spec's doing
    for child in children:
        replicas = sizes.get(child["metadata"]["labels"].get(manifests.LABEL_CLASS, ""))
        try:
            result = kube().apply_child(namespace, child, replicas=replicas)
        except NotOwned as exc:
            conflicts.append(str(exc))
            continue
        except ApiException as exc:
            if exc.status not in (400, 422):
                raise
            rejected.append(refusal(child, exc))
            continue
        if result != "unchanged":
            kopf.info(body, reason=result.capitalize(),
                      message=f"{child['kind']} {child['metadata']['name']} {result}")
    uid = body.metadata.uid or ""
    if conflicts or rejected:
        CONFLICTS[uid] = tuple(conflicts)
        REJECTED[uid] = tuple(rejected)
    else:
        CONFLICTS.pop(uid, None)
        REJECTED.pop(uid, None)
        RECONCILED[uid] = body.metadata.get("generation")
    return tuple(conflicts), tuple(rejected)


def refusal(child: Mapping[str, Any], exc: ApiException) -> str:
    """'spec.template: the API server refused Deployment chat-ondemand: <its message>' (a child is
    rendered from spec.template and the capacity class's placement)."""
    try:
        message = str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (TypeError, ValueError):
        message = str(exc.reason)
    field = "spec.template"
    capacity_class = (child.get("metadata", {}).get("labels") or {}).get(manifests.LABEL_CLASS)
    if capacity_class and ("tolerations" in message or "nodeSelector" in message):
        field += f" or spec.capacity.{'spot' if capacity_class == SPOT else 'onDemand'}"
    return (f"{field}: the API server refused {child['kind']} {child['metadata']['name']} rendered from it: "
            f"{message}")[:1000]


def conflict_status(body: kopf.Body, conflicts: Sequence[str], rejected: Sequence[str],
                    now: float) -> dict[str, Any]:
    """Ready=False naming the children refused (InvalidSpec) or the objects held by another owner
    (Conflict), written at once; the loop keeps it so (control.status.render_status)."""
    reason, what = ("InvalidSpec", rejected) if rejected else ("Conflict", conflicts)
    conditions = render.set_condition(
        read_status(body.get("status")).conditions, type="Ready", status=False, reason=reason,
        message="; ".join(what)[:1000], now=now, generation=body.metadata.get("generation"))
    return {"conditions": [c.model_dump(by_alias=True, exclude_none=True) for c in conditions]}


@kopf.on.resume(GROUP, VERSION, PLURAL, when=in_shard)
@kopf.on.create(GROUP, VERSION, PLURAL, when=in_shard)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", when=in_shard)
def reconcile_children(body: kopf.Body, spec: kopf.Spec, name: str, namespace: str | None,
                       patch: kopf.Patch, reason: str | None = None, **_: Any) -> None:
    assert namespace is not None  # the CRD is namespaced
    parsed = parse_spec(spec)
    uid = body.metadata.uid or ""
    if reason == kopf.Reason.RESUME and isinstance(parsed, InferenceServiceSpec) and parsed.mode == Mode.active \
            and (body.get("status") or {}).get("observedGeneration") == body.metadata.get("generation") \
            and uid not in CONFLICTS and uid not in REJECTED:
        RECONCILED[uid] = body.metadata.get("generation")
        RESUMED.add(uid)  # applied again by its loop, after its first decisions (RESUMED)
        return
    if isinstance(parsed, str):
        # Reported, not raised: retrying cannot fix a spec, and existing children stay untouched.
        kopf.warn(body, reason="InvalidSpec", message=parsed)
        patch.status.update(invalid_spec_status(body, parsed, time.time()))
        return
    if parsed.mode == Mode.recommend:
        # recommend creates and changes nothing: no children (shadow mode watches spec.targetRef
        # instead); children of an earlier mode: active are left as they are.
        RECONCILED[body.metadata.uid or ""] = body.metadata.get("generation")
        CONFLICTS.pop(body.metadata.uid or "", None)
        REJECTED.pop(body.metadata.uid or "", None)
        patch.status["observedGeneration"] = body.metadata.get("generation")
        return
    conflicts, rejected = apply_children(body, parsed, namespace, name)
    if conflicts or rejected:
        # Not raised either: the loop reports them (one Event per cause) and tries again.
        patch.status.update(conflict_status(body, conflicts, rejected, time.time()))
        return
    patch.status["observedGeneration"] = body.metadata.get("generation")


def failure_cause(exc: BaseException) -> tuple[str, object]:
    """What makes two failures the same cause: the exception's type and, for API errors, the
    HTTP status (messages carry request ids and times)."""
    return type(exc).__name__, getattr(exc, "status", None)


def report_failure(causes: Causes, body: kopf.Body, reason: str, exc: BaseException) -> bool:
    """A Warning for a failed tick or reroute when its cause is new (True), none while the same
    cause repeats (False)."""
    if not causes.changed(reason, failure_cause(exc)):
        return False
    kopf.warn(body, reason=reason, message=f"{type(exc).__name__}: {exc}"[:500])
    return True


def report_recovery(causes: Causes, body: kopf.Body, reason: str) -> None:
    """One Normal event when a call that had failed (`reason`) succeeds again."""
    if causes.active(reason):
        causes.changed(reason, None)
        kopf.info(body, reason=reason.replace("Failed", "Recovered"), message="it succeeds again")


def post(body: kopf.Body, events: Sequence[Event]) -> None:
    for event in events:
        (kopf.warn if event.type == "Warning" else kopf.info)(body, reason=event.reason, message=event.message)


def record(namespace: str, name: str, labels: Mapping[str, str] | None, data: TickTelemetry,
           duration_s: float) -> None:
    telemetry.record_tick(namespace=namespace, name=name, labels=labels, spec=data.spec, result=data.result,
                          duration_s=duration_s, actual_replicas=data.actual_replicas)
    telemetry.record_usage(namespace=namespace, name=name, labels=labels, usage=data.usage, delta=data.delta,
                           budget=data.budget, max_cost_per_day=data.max_cost_per_day,
                           alert_percent=data.alert_percent)


# backoff: should anything escape the loop's supervisor (its setup), kopf restarts the daemon after
# 10 s rather than its default 60 s.
@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5.0, backoff=10.0, when=in_shard)
async def fleet_loop(stopped: kopf.DaemonStopped, body: kopf.Body, name: str, namespace: str | None,
                     **kwargs: Any) -> None:
    """One loop per InferenceService: a coroutine that schedules its ticks (and the reroutes a
    pod turning Ready wakes it for) on the shared pool. kwargs carry the indexes above (kopf
    passes each under its function's name)."""
    assert namespace is not None  # the CRD is namespaced
    event_loop = asyncio.get_running_loop()

    async def read(node_labels: bool) -> Snapshot:
        return take_snapshot(namespace, name, pods=kwargs["gpufleet_pods"], nodes=kwargs["gpufleet_nodes"],
                             deployments=kwargs["gpufleet_deployments"], node_labels=node_labels,
                             classes=class_names(body.spec))

    async def read_autoscalers() -> list[str]:
        return autoscalers_of(namespace, name, kwargs.get("gpufleet_hpas"), kwargs.get("gpufleet_scaledobjects"),
                              classes=class_names(body.spec))

    def read_now(node_labels: bool) -> Snapshot:
        # Called from a worker thread: the indexes are read on the event loop that updates them.
        return asyncio.run_coroutine_threadsafe(read(node_labels), event_loop).result(timeout=CONFIG.kube_timeout_s)

    held = TickSnapshots(read_now)  # a tick's later reads reuse the snapshot it starts with

    def snapshot(*, node_labels: bool = False) -> Snapshot:
        return held.get(node_labels=node_labels)

    async def read_tick(autoscalers: bool) -> tuple[Snapshot, list[str]]:
        return await read(False), (await read_autoscalers() if autoscalers else [])

    # Shadow mode (spec.targetRef): the target's pods' nodes and the autoscalers aimed at it.
    async def read_nodes(names: Collection[str]) -> dict[str, NodeInfo]:
        return {n: info for n in names if (info := _one(kwargs["gpufleet_nodes"], n)) is not None}

    async def read_aimed_at(deployment: str) -> list[str]:
        return aimed_at(namespace, deployment, kwargs.get("gpufleet_hpas"), kwargs.get("gpufleet_scaledobjects"))

    def nodes_of(names: Collection[str]) -> dict[str, NodeInfo]:
        return asyncio.run_coroutine_threadsafe(read_nodes(names), event_loop).result(timeout=CONFIG.kube_timeout_s)

    def autoscalers_at(deployment: str) -> list[str]:
        return asyncio.run_coroutine_threadsafe(read_aimed_at(deployment), event_loop).result(
            timeout=CONFIG.kube_timeout_s)

    wiring = ClusterWiring(kube=kube, namespace=namespace, name=name, snapshot=snapshot,
                           prometheus_url=CONFIG.prometheus_url, prometheus_allow=CONFIG.prometheus_allow,
                           prometheus_ca_bundle=CONFIG.prometheus_ca_bundle, triton_direct=CONFIG.triton_direct,
                           shared=SHARED_METRICS, nodes=nodes_of, autoscalers=autoscalers_at)
    # spec.quota: the plan is capped at the GPUQuota's allocation (quota_app arbitrates).
    policy = QuotaPolicy(GpufleetPolicy(), quota_app.QUOTAS, f"{namespace}/{name}")
    loop = ServiceLoop(name=name, wiring=wiring, policy=policy, settings=Settings(
        heartbeat_s=CONFIG.heartbeat_s, backfill_s=CONFIG.backfill_seconds, price_table=CONFIG.price_table))

    def interval() -> float:
        parsed = parse_spec(body.spec)
        seconds = float(parsed.scaling.interval_seconds) if isinstance(parsed, InferenceServiceSpec) else 10.0
        return max(CONFIG.min_interval_seconds, seconds)

    failures = Causes()  # TickFailed / RerouteFailed: one Warning per cause until a call succeeds

    def failed(raw: kopf.Body, reason: str, exc: Exception) -> None:
        telemetry.record_error(namespace=namespace, name=name, labels=body.metadata.labels, error=exc)
        if report_failure(failures, raw, reason, exc):
            log.exception("%s: %s/%s", reason, namespace, name)
        else:
            log.warning("%s again: %s/%s: %s", reason, namespace, name, f"{type(exc).__name__}: {exc}"[:300])

    retried = [time.time()]  # when the children were last applied again after a conflict
    ticked = [0]  # ticks this loop has run (RESUMED)
    gone: list[bool] = []  # the InferenceService was found deleted (ServiceGone): stop ticking

    def ended() -> bool:
        return bool(stopped) or bool(gone)

    def tick() -> None:
        raw = kopf.Body(cast(kopf.RawBody, copy.deepcopy(dict(body))))  # one consistent view for this tick
        parsed = parse_spec(raw.spec)
        if not isinstance(parsed, InferenceServiceSpec):
            return  # reported by reconcile_children
        now = time.time()
        uid = raw.metadata.uid or ""
        try:
            if (uid in CONFLICTS or uid in REJECTED) and now - retried[0] >= CONFLICT_RETRY_S \
                    and parsed.mode == Mode.active:
                retried[0] = now  # the clash may be gone: apply the children again
                apply_children(raw, parsed, namespace, name)
            # In shadow mode the target's own autoscaler is expected (reported in status.shadow).
            snap, autoscalers = asyncio.run_coroutine_threadsafe(
                read_tick(parsed.target_ref is None), event_loop).result(timeout=CONFIG.kube_timeout_s)
            held.hold(snap)
            loop.configure(parsed, now)
            outcome = loop.tick(raw.get("status") or {}, raw.metadata.get("generation"), now=now,
                                reconciled=RECONCILED.get(uid), conflicts=CONFLICTS.get(uid, ()),
                                rejected=REJECTED.get(uid, ()), autoscalers=autoscalers,
                                write_ahead=lambda patch: kube().patch_status(namespace, name, patch))
            post(raw, outcome.events)
            if outcome.status is not None:
                kube().patch_status(namespace, name, outcome.status)
                loop.confirm(outcome)
            wrote = outcome.status is not None or outcome.written_ahead
            STATUS_WRITES.labels(result="written" if wrote else "skipped").inc()
            if outcome.telemetry is not None:
                record(namespace, name, raw.metadata.labels, outcome.telemetry, time.time() - now)
            ticked[0] += 1
            wake_at_drain_end(parsed)
            if uid in RESUMED and ticked[0] >= RESUME_APPLY_AFTER_TICKS and parsed.mode == Mode.active:
                apply_children(raw, parsed, namespace, name)  # after this tick's decision is out
                RESUMED.discard(uid)  # only once it went through: a failure is tried next tick
        except ServiceGone as exc:
            # Deleted without this daemon being stopped (seen in a local run of the suite: a
            # namespace deleted while the loop's Prometheus was down; it ticked on 404s for minutes
            # and held up the operator's shutdown). Nothing is left to decide for: the loop ends.
            log.warning("%s; its loop ends", exc)
            gone.append(True)
        except Exception as exc:  # noqa: BLE001 - the loop must survive a failing API call
            failed(raw, "TickFailed", exc)
        else:
            report_recovery(failures, raw, "TickFailed")
        finally:
            held.clear()  # reroutes (a pod turned Ready) and the next tick read afresh

    def wake_at_drain_end(parsed: InferenceServiceSpec) -> None:
        """Wake the loop when its first drain reaches its timeout, when that comes before the next
        tick: the pod goes then (the reroute carries out the plan again), not up to an interval
        later (make chaos: a spot notice's drained pods left their node a tick late)."""
        fleet = loop.fleet
        if not isinstance(fleet, KubeFleet):
            return  # shadow mode: nothing drains
        try:
            # The pods as this tick read or patched them: a drain it started is in them.
            end = drain_deadline((replica_from_pod(p, set()) for p in fleet.pods()),
                                 drain_timeout_s=float(parsed.scaling.scale_down.drain_timeout_seconds))
        except Exception as exc:  # noqa: BLE001 - the next tick covers it as before
            log.debug("no drain wake-up for %s/%s: %s", namespace, name, exc)
            return
        delay = None if end is None else end - time.time() + 0.05
        if delay is not None and 0 < delay < interval():
            event_loop.call_soon_threadsafe(lambda: event_loop.call_later(delay, wake.set))

    def reroute() -> None:
        raw = kopf.Body(cast(kopf.RawBody, copy.deepcopy(dict(body))))
        parsed = parse_spec(raw.spec)
        if not isinstance(parsed, InferenceServiceSpec):
            return
        try:
            outcome = loop.reroute(parsed, now=time.time())
            if outcome is not None:
                post(raw, outcome.events)
        except Exception as exc:  # noqa: BLE001 - as a tick: reported, and the next tick retries
            failed(raw, "RerouteFailed", exc)
        else:
            report_recovery(failures, raw, "RerouteFailed")

    key = (namespace, name)
    wake = WAKES[key] = asyncio.Event()
    try:
        # A loop that dies is started again (ticks.supervise), keeping the call it left on the pool.
        state = ticks.LoopState()
        await ticks.supervise(
            lambda: ticks.run_loop(POOL, name=f"{namespace}/{name}", tick=tick, interval=interval,
                                   sleep=stopped.wait, stopped=ended, wake=wake, reroute=reroute,
                                   state=state),
            name=f"{namespace}/{name}", stopped=ended, sleep=stopped.wait)
    finally:
        if WAKES.get(key) is wake:
            del WAKES[key]
        loop.close()
        quota_app.QUOTAS.withdraw(f"{namespace}/{name}")  # its need leaves the arbitration with it
        if gone or (stopped.reason is not None and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED):
            RECONCILED.pop(body.metadata.uid or "", None)
            RESUMED.discard(body.metadata.uid or "")
            CONFLICTS.pop(body.metadata.uid or "", None)
            REJECTED.pop(body.metadata.uid or "", None)
    telemetry.forget(namespace=namespace, name=name)  # deleted, or paused by peering: no stale series
