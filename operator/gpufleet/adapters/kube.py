"""Kubernetes adapter: children, pods and the FleetPort the control step drives.

The only module (with kopf_app) that talks to the API server. Writes are skipped when nothing
changed, so a steady fleet causes no API traffic beyond the reads.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from gpufleet.adapters import manifests
from gpufleet.api.models import GROUP, PLURAL, VERSION, InferenceServiceSpec
from gpufleet.core.split import notice_drain_due
from gpufleet.core.types import CAPACITY_CLASSES, ON_DEMAND, SPOT, FleetState, Plan, Replica, ReplicaState

log = logging.getLogger(__name__)

# Node taints that announce an interruption (spot reclaim, scheduled drain).
INTERRUPTION_TAINTS = (
    "karpenter.sh/disrupted",
    "karpenter.sh/disruption",
    "cloud.google.com/impending-node-termination",
    "aws-node-termination-handler/spot-itn",
    "aws-node-termination-handler/rebalance-recommendation",
    "aws-node-termination-handler/scheduled-maintenance",
    "node.kubernetes.io/unschedulable",
)
# Taints whose node goes away at a fixed time after the notice, and that time: AWS spot
# interruption notices give 2 minutes, GCP preemption 30 seconds (../shared/traces/coldstart cites
# both). Karpenter's disruption taint on AWS follows the interruption notice. The other taints
# (rebalance recommendation, maintenance, cordon) set no deadline: those pods drain once covered.
RECLAIM_AFTER_S = {
    "karpenter.sh/disrupted": 120.0,
    "karpenter.sh/disruption": 120.0,
    "aws-node-termination-handler/spot-itn": 120.0,
    "cloud.google.com/impending-node-termination": 30.0,
}
FIELD_MANAGER = "gpufleet"


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _ready_since(pod: dict[str, Any]) -> float | None:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return _ts(cond.get("lastTransitionTime"))
    return None


def replica_from_pod(pod: dict[str, Any], interrupted_nodes: set[str],
                     in_flight: dict[str, float] | None = None) -> Replica:
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    ready_at = _ready_since(pod)
    if meta.get("deletionTimestamp") or manifests.ANNOTATION_DRAINING in annotations:
        state = ReplicaState.draining
    elif ready_at is None:
        state = ReplicaState.starting
    elif labels.get(manifests.LABEL_SERVING) == "true":
        state = ReplicaState.serving
    else:
        state = ReplicaState.standby
    return Replica(
        name=meta["name"],
        capacity_class=labels.get(manifests.LABEL_CLASS, ON_DEMAND),
        state=state,
        created_at=_ts(meta.get("creationTimestamp")) or 0.0,
        ready_at=ready_at,
        in_flight=(in_flight or {}).get(meta["name"]),
        interrupted=pod.get("spec", {}).get("nodeName") in interrupted_nodes,
    )


def pending_since(pod: dict[str, Any]) -> float | None:
    """Creation time of a pod the scheduler has not placed yet, else None."""
    if pod.get("spec", {}).get("nodeName"):
        return None
    return _ts(pod["metadata"].get("creationTimestamp"))


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


# -- what the watches keep (kopf indexes in kopf_app) -------------------------------------------

Notice = tuple[float | None, float | None]  # (taint added at, seconds from then until the node goes)


@dataclass(frozen=True)
class NodeInfo:
    """What the fleet needs of a node: its labels (GPU product, capacity type) and its
    interruption notice, if any."""

    labels: Mapping[str, str]
    notice: Notice | None = None


def node_info(node: Mapping[str, Any]) -> NodeInfo:
    """A node's labels and interruption notice (taint or cordon). A noticed node carries (when its
    reclaim taint was added, when known; seconds from then until it goes), or (None, None) when
    the notice sets no deadline (see RECLAIM_AFTER_S)."""
    spec = node.get("spec") or {}
    taints = spec.get("taints") or []
    notice: Notice | None = None
    if spec.get("unschedulable") or any(t.get("key") in INTERRUPTION_TAINTS for t in taints):
        hard = [t for t in taints if t.get("key") in RECLAIM_AFTER_S]
        after = min((RECLAIM_AFTER_S[t["key"]] for t in hard), default=None)
        added = min((ts for t in hard if (ts := _ts(t.get("timeAdded"))) is not None), default=None)
        notice = (added, after)
    return NodeInfo(labels=dict((node.get("metadata") or {}).get("labels") or {}), notice=notice)


def trim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a pod the fleet reads, so a watch cache of thousands of pods stays small."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    return {
        "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations", "creationTimestamp",
                                          "deletionTimestamp", "resourceVersion") if k in meta},
        "spec": {"nodeName": spec.get("nodeName"),
                 "containers": [{"ports": c.get("ports") or []} for c in spec.get("containers") or []]},
        "status": {"podIP": status.get("podIP"),
                   "conditions": [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]},
    }


@dataclass(frozen=True)
class Snapshot:
    """One service's slice of the watch caches, taken at one moment: no API call behind it."""

    pods: tuple[dict[str, Any], ...] = ()
    nodes: Mapping[str, NodeInfo] = field(default_factory=dict)  # the pods' nodes; absent = node gone
    deployments: Mapping[str, int] = field(default_factory=dict)  # name -> spec.replicas
    node_labels: tuple[Mapping[str, str], ...] = ()  # every GPU node's labels (price lookup); may be empty


class Kube:
    """Thin wrapper over the typed clients, returning plain dicts. Every call has a request
    timeout, so a hung API server fails a tick instead of blocking a worker forever."""

    def __init__(self, api_client: client.ApiClient | None = None, *, timeout_s: float = 10.0) -> None:
        self.api = api_client or client.ApiClient()
        self.timeout = (min(timeout_s, 5.0), timeout_s)  # (connect, read)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.policy = client.PolicyV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self._dynamic: DynamicClient | None = None

    def plain(self, obj: Any) -> Any:
        return self.api.sanitize_for_serialization(obj)

    # -- children -------------------------------------------------------------------------

    @property
    def dynamic(self) -> DynamicClient:
        # Raw dicts through the dynamic client: the typed client's models reject valid user
        # templates (e.g. an integer `nvidia.com/gpu: 1` where its model wants a string).
        if self._dynamic is None:
            self._dynamic = DynamicClient(self.api)
        return self._dynamic

    def apply_child(self, namespace: str, body: dict[str, Any], *, replicas: int | None = None) -> str:
        """Create the child, or server-side apply it. Returns "created", "updated" or "unchanged".

        Deployments are applied without `replicas`: that field is written only through /scale,
        so a template change never resets the fleet size.
        """
        resource = self.dynamic.resources.get(api_version=body["apiVersion"], kind=body["kind"])
        name = body["metadata"]["name"]
        try:
            current = resource.get(name=name, namespace=namespace, _request_timeout=self.timeout).to_dict()
        except NotFoundError:
            create_body = body
            if replicas is not None:
                create_body = {**body, "spec": {**body["spec"], "replicas": replicas}}
            resource.create(body=create_body, namespace=namespace, field_manager=FIELD_MANAGER,
                            _request_timeout=self.timeout)
            return "created"
        after = resource.server_side_apply(
            body=body, name=name, namespace=namespace, field_manager=FIELD_MANAGER, force_conflicts=True,
            _request_timeout=self.timeout,
        ).to_dict()
        changed = current["metadata"].get("resourceVersion") != after["metadata"].get("resourceVersion")
        return "updated" if changed else "unchanged"

    def scale(self, namespace: str, name: str, replicas: int, *, current: int | None) -> bool:
        """Set a Deployment's size through its /scale subresource; False when the watch cache
        says it is already there (`current`) or the Deployment does not exist yet (None: the
        create/update handler makes it)."""
        if current is None or current == replicas:
            return False
        try:
            self.apps.patch_namespaced_deployment_scale(
                name, namespace, {"spec": {"replicas": replicas}}, field_manager=FIELD_MANAGER,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status == 404:  # deleted meanwhile (the service is going away)
                return False
            raise
        return True

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}, field_manager=FIELD_MANAGER,
            _request_timeout=self.timeout,
        )

    # -- pods -----------------------------------------------------------------------------

    def patch_pod_metadata(self, namespace: str, name: str, *, labels: dict[str, str | None] | None = None,
                           annotations: dict[str, str | None] | None = None) -> dict[str, Any] | None:
        """Patch a pod's labels/annotations; the pod after the patch, or None when it is gone."""
        meta: dict[str, Any] = {}
        if labels:
            meta["labels"] = labels
        if annotations:
            meta["annotations"] = annotations
        try:
            pod = self.core.patch_namespaced_pod(name, namespace, {"metadata": meta}, field_manager=FIELD_MANAGER,
                                                 _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:  # gone meanwhile: nothing to do
                return None
            raise
        return trim_pod(self.plain(pod))


class KubeFleet:
    """FleetPort over one InferenceService's pods and Deployments.

    Scale-in drains: a serving replica chosen for removal first leaves the Service (label removed,
    `gpufleet.io/draining-since` set), stays alive while its in-flight requests finish, and only
    then is released: its pod-deletion-cost drops to the minimum and its Deployment shrinks by one,
    so the ReplicaSet deletes exactly that pod.
    """

    def __init__(self, kube: Kube, *, namespace: str, name: str, spec: InferenceServiceSpec,
                 snapshot: Callable[[], Snapshot], in_flight: Callable[[], dict[str, float]] = dict,
                 history: int = 20) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.spec = spec
        self.snapshot = snapshot  # this service's pods, their nodes and its Deployments, from watches
        self.in_flight = in_flight  # per-pod in-flight requests, from metrics; {} when unknown
        # Recent creation-to-Ready durations per class, remembered across pods that are gone.
        self._starts: dict[str, deque[float]] = {c: deque(maxlen=history) for c in CAPACITY_CLASSES}
        self._seen_ready: set[str] = set()
        self._pods: dict[str, dict[str, Any]] = {}
        self._snap = Snapshot()
        self._noticed_at: dict[str, float] = {}  # node -> when this loop first saw its notice
        self._reclaim_at: dict[str, float | None] = {}  # pod -> when its node goes (None: no deadline)
        self.events: list[tuple[str, str]] = []  # (reason, message) of changes made by apply()

    def start_samples(self) -> dict[str, list[float]]:
        """The creation-to-Ready durations kept per class (persisted with the policy's memory)."""
        return {c: list(v) for c, v in self._starts.items() if v}

    def time_to_ready(self) -> dict[str, float]:
        return {c: p90(list(v)) for c, v in self._starts.items() if v}

    def restore_samples(self, samples: Mapping[str, list[float]]) -> None:
        for capacity_class, values in samples.items():
            if capacity_class in self._starts:
                self._starts[capacity_class].extend(values)

    def state(self, *, now: float) -> FleetState:
        """Fleet state from a fresh snapshot of the watch caches (no API call)."""
        self._snap = self.snapshot()
        # Pods already terminating are gone as far as the Deployment is concerned.
        self._pods = {p["metadata"]["name"]: p for p in self._snap.pods
                      if not p["metadata"].get("deletionTimestamp")}
        return self._state(now)

    def _state(self, now: float) -> FleetState:
        """Fleet state of the pods as last read or patched by this loop."""
        notices = {n: info.notice for n, info in self._snap.nodes.items() if info.notice is not None}
        self._noticed_at = {n: self._noticed_at.get(n, now) for n in notices}
        in_flight = self.in_flight()
        # A pod whose node object is gone (spot reclaim without notice) is as good as lost.
        lost = {p["spec"]["nodeName"] for p in self._pods.values()
                if p.get("spec", {}).get("nodeName") and p["spec"]["nodeName"] not in self._snap.nodes}
        replicas = tuple(replica_from_pod(p, set(notices) | lost, in_flight) for p in self._pods.values())
        self._reclaim_at = {}
        for p in self._pods.values():
            node = p.get("spec", {}).get("nodeName")
            if node in lost:
                self._reclaim_at[p["metadata"]["name"]] = now
            elif node in notices:
                added, after = notices[node]
                # Taints without timeAdded (NoSchedule ones) count from when this loop saw them.
                since = added if added is not None else self._noticed_at[node]
                self._reclaim_at[p["metadata"]["name"]] = since + after if after is not None else None
        for r in replicas:
            if r.ready_at is not None and r.name not in self._seen_ready:
                self._seen_ready.add(r.name)
                self._starts[r.capacity_class].append(max(0.0, r.ready_at - r.created_at))
        self._seen_ready &= set(self._pods)  # forget pods that are gone (bounded memory)
        return FleetState(replicas=replicas, time_to_ready_s=self.time_to_ready(), spot_unavailable=self._spot_stuck(now))

    def endpoints(self) -> list[str]:
        """host:port of Triton's HTTP endpoint on each serving pod (from the last state read)."""
        out = []
        for pod in self._pods.values():
            ip = pod.get("status", {}).get("podIP")
            if ip and (pod["metadata"].get("labels") or {}).get(manifests.LABEL_SERVING) == "true":
                ports = [p for c in pod["spec"].get("containers", []) for p in c.get("ports") or []]
                port = next((p["containerPort"] for p in ports if p.get("name") == "http"), 8000)
                out.append(f"{ip}:{port}")
        return out

    def _spot_stuck(self, now: float) -> bool:
        """Spot capacity is unavailable while a spot pod stays unscheduled past the timeout."""
        timeout = self.spec.capacity.spot.pending_timeout_seconds
        for pod in self._pods.values():
            since = pending_since(pod)
            if (since is not None and now - since > timeout
                    and (pod["metadata"].get("labels") or {}).get(manifests.LABEL_CLASS) == SPOT):
                return True
        return False

    def apply(self, plan: Plan, *, now: float) -> None:
        self.events = []
        leaving = set(plan.retire)
        self._route(plan, self._state(now), leaving)
        state = self._state(now)  # with this tick's own label patches (the watch may lag)
        # Replicas with an interruption notice keep serving until their replacements serve.
        covered = sum(1 for r in state.replicas
                      if r.state == ReplicaState.serving and not r.interrupted and r.name not in leaving) >= plan.serving
        for capacity_class, target in ((ON_DEMAND, plan.on_demand), (SPOT, plan.spot)):
            mine = [r for r in state.replicas if r.capacity_class == capacity_class]
            replicas = self._scale_in(mine, target, leaving, now, covered=covered)
            deployment = manifests.deployment_name(self.name, capacity_class)
            if self.kube.scale(self.namespace, deployment, replicas, current=self._snap.deployments.get(deployment)):
                self.events.append(("Scaled", f"{deployment} -> {replicas} replicas ({plan.reason}: {plan.message})"))

    def _scale_in(self, mine: list[Replica], target: int, leaving: set[str], now: float, *, covered: bool) -> int:
        """Start, cancel and finish drains for one class; return its Deployment's size.

        `target` counts the healthy replicas wanted plus the interrupted ones still present (the
        core's convention), so the Deployment grows for replacements as soon as a notice lands.
        """
        draining = [r for r in mine if r.state == ReplicaState.draining]
        noticed = [r for r in mine if r.interrupted and r.state != ReplicaState.draining]
        healthy_target = max(target - len(noticed), 0)
        staying = [r for r in mine if r.state != ReplicaState.draining and not r.interrupted and r.name not in leaving]
        # Capacity wanted back: a healthy draining replica still has its model loaded; keep it.
        for r in [r for r in draining if not r.interrupted][: max(0, healthy_target - len(staying))]:
            self._set(r.name, annotations={manifests.ANNOTATION_DRAINING: None,
                                           manifests.ANNOTATION_DELETION_COST: None})
            self.events.append(("DrainCancelled", f"pod {r.name} kept: capacity is needed again"))
            draining.remove(r)
            staying.append(r)
        deferred = 0
        for r in mine:
            if (r.name in leaving and r.state == ReplicaState.serving and r.interrupted and not covered
                    and not self._drain_due(r.name, now)):
                deferred += 1  # still carries load; drained once the replacements serve
            elif r.name in leaving and r.state == ReplicaState.serving:
                # Out of the Service first; deleted once its in-flight work is done.
                self._set(r.name, labels={manifests.LABEL_SERVING: None},
                          annotations={manifests.ANNOTATION_DRAINING: str(now),
                                       manifests.ANNOTATION_DELETION_COST: "1000"})
                self.events.append(("Draining", f"pod {r.name} left the Service; deleted when idle"))
                draining.append(r)
            elif r.name in leaving and r.state == ReplicaState.standby:
                # No traffic: it may go at once, and before anyone else.
                self._set(r.name, annotations={manifests.ANNOTATION_DELETION_COST: "-1000"})
        held = [r for r in draining if not self._release(r, mine, now)]
        # With named victims, keep exactly the others; without, let the ReplicaSet choose.
        base = max(healthy_target, len(staying)) if any(r.name in leaving for r in mine) else healthy_target
        return base + len(held) + deferred

    def _drain_due(self, pod: str, now: float) -> bool:
        """An interrupted pod leaves the Service before its node goes, covered or not: in-flight
        requests on a reclaimed node are lost (core.split.notice_drain_due sets the margin)."""
        return notice_drain_due(self._reclaim_at.get(pod), now)

    def _release(self, r: Replica, mine: list[Replica], now: float) -> bool:
        """A draining replica may go when idle or past the drain timeout, and only when no pod of
        its class is still starting (the ReplicaSet would delete a not-Ready pod first)."""
        if r.name not in self._pods or any(o.state == ReplicaState.starting for o in mine):
            return False
        since = float((self._pods[r.name]["metadata"].get("annotations") or {})
                      .get(manifests.ANNOTATION_DRAINING, now))
        timeout = self.spec.scaling.scale_down.drain_timeout_seconds
        idle = r.in_flight is not None and r.in_flight <= 0
        if not idle and now - since < timeout:
            return False
        self._set(r.name, annotations={manifests.ANNOTATION_DELETION_COST: "-1000"})
        why = "idle" if idle else f"drain timeout {timeout}s (in flight: {r.in_flight})"
        self.events.append(("Drained", f"pod {r.name} released after {now - since:.0f}s: {why}"))
        return True

    def _set(self, pod: str, *, labels: dict[str, str | None] | None = None,
             annotations: dict[str, str | None] | None = None) -> None:
        after = self.kube.patch_pod_metadata(self.namespace, pod, labels=labels, annotations=annotations)
        if after is not None:
            self._pods[pod] = after

    def _route(self, plan: Plan, state: FleetState, leaving: set[str]) -> None:
        """Promote standbys into the Service up to plan.serving; demote surplus serving pods."""
        # Interrupted serving replicas are left to the drain logic; they are not capacity here.
        serving = [r for r in state.replicas if r.state == ReplicaState.serving and not r.interrupted]
        standby = [r for r in state.replicas
                   if r.state == ReplicaState.standby and r.name not in leaving and not r.interrupted]
        # Replicas leaving the fleet are drained by _scale_in; only the others count or may demote.
        kept = [r for r in serving if r.name not in leaving]
        wanted = {n for n in plan.promote if n not in leaving}
        # Fill any remaining gap with the oldest standbys (on-demand first: they stay longest).
        gap = plan.serving - len(kept) - len(wanted)
        for r in sorted(standby, key=lambda r: (r.capacity_class != ON_DEMAND, r.ready_at or 0.0)):
            if gap <= 0:
                break
            if r.name not in wanted:
                wanted.add(r.name)
                gap -= 1
        for name in sorted(wanted):
            self._set(name, labels={manifests.LABEL_SERVING: "true"})
            self.events.append(("Promoted", f"pod {name} joined the Service"))
        surplus = len(kept) - plan.serving
        if surplus > 0:
            # Demotion to standby: out of the Service, still loaded; requests in flight finish.
            for r in sorted(kept, key=lambda r: (r.in_flight or 0.0, -(r.ready_at or 0.0)))[:surplus]:
                self._set(r.name, labels={manifests.LABEL_SERVING: None})
                self.events.append(("Demoted", f"pod {r.name} left the Service (standby)"))


def adopt(children: list[dict[str, Any]], owner: kopf.Body) -> None:
    """Owner references (so deleting the InferenceService deletes its children) and namespace."""
    kopf.adopt(children, owner=owner)
