"""Kubernetes adapter: children, pods and the FleetPort the control step drives.

The only module (with kopf_app) that talks to the API server. Writes are skipped when nothing
changed, so a steady fleet causes no API traffic beyond the reads.
"""

from __future__ import annotations

import logging
from collections import deque
from datetime import datetime
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from gpufleet.adapters import manifests
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.types import CAPACITY_CLASSES, ON_DEMAND, FleetState, Plan, Replica, ReplicaState

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


def replica_from_pod(pod: dict[str, Any], interrupted_nodes: set[str]) -> Replica:
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    ready_at = _ready_since(pod)
    if meta.get("deletionTimestamp"):
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
        interrupted=pod.get("spec", {}).get("nodeName") in interrupted_nodes,
    )


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


class Kube:
    """Thin wrapper over the typed clients, returning plain dicts."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api = api_client or client.ApiClient()
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
            current = resource.get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            create_body = body
            if replicas is not None:
                create_body = {**body, "spec": {**body["spec"], "replicas": replicas}}
            resource.create(body=create_body, namespace=namespace, field_manager=FIELD_MANAGER)
            return "created"
        after = resource.server_side_apply(
            body=body, name=name, namespace=namespace, field_manager=FIELD_MANAGER, force_conflicts=True
        ).to_dict()
        changed = current["metadata"].get("resourceVersion") != after["metadata"].get("resourceVersion")
        return "updated" if changed else "unchanged"

    def deployment_replicas(self, namespace: str, name: str) -> int | None:
        try:
            scale = self.apps.read_namespaced_deployment_scale(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return int(scale.spec.replicas or 0)

    def scale(self, namespace: str, name: str, replicas: int) -> bool:
        """Set a Deployment's size through its /scale subresource; False when already there
        or when the Deployment does not exist yet (the create/update handler makes it)."""
        current = self.deployment_replicas(namespace, name)
        if current is None or current == replicas:
            return False
        self.apps.patch_namespaced_deployment_scale(
            name, namespace, {"spec": {"replicas": replicas}}, field_manager=FIELD_MANAGER
        )
        return True

    # -- pods and nodes -------------------------------------------------------------------

    def pods(self, namespace: str, service: str) -> list[dict[str, Any]]:
        selector = f"{manifests.LABEL_SERVICE}={service}"
        items = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        return [self.plain(p) for p in items]

    def interrupted_nodes(self) -> set[str]:
        out = set()
        for node in self.core.list_node().items:
            taints = node.spec.taints or []
            if node.spec.unschedulable or any(t.key in INTERRUPTION_TAINTS for t in taints):
                out.add(node.metadata.name)
        return out

    def patch_pod_metadata(self, namespace: str, name: str, *, labels: dict[str, str | None] | None = None,
                           annotations: dict[str, str | None] | None = None) -> None:
        meta: dict[str, Any] = {}
        if labels:
            meta["labels"] = labels
        if annotations:
            meta["annotations"] = annotations
        try:
            self.core.patch_namespaced_pod(name, namespace, {"metadata": meta})
        except ApiException as exc:
            if exc.status != 404:  # gone meanwhile: nothing to do
                raise


class KubeFleet:
    """FleetPort over one InferenceService's pods and Deployments."""

    def __init__(self, kube: Kube, *, namespace: str, name: str, spec: InferenceServiceSpec,
                 history: int = 20) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.spec = spec
        # Recent creation-to-Ready durations per class, remembered across pods that are gone.
        self._starts: dict[str, deque[float]] = {c: deque(maxlen=history) for c in CAPACITY_CLASSES}
        self._seen_ready: set[str] = set()
        self.events: list[tuple[str, str]] = []  # (reason, message) of changes made by apply()

    def state(self, *, now: float) -> FleetState:
        interrupted = self.kube.interrupted_nodes()
        replicas = tuple(replica_from_pod(p, interrupted) for p in self.kube.pods(self.namespace, self.name))
        for r in replicas:
            if r.ready_at is not None and r.name not in self._seen_ready:
                self._seen_ready.add(r.name)
                self._starts[r.capacity_class].append(max(0.0, r.ready_at - r.created_at))
        ttr = {c: p90(list(v)) for c, v in self._starts.items() if v}
        return FleetState(replicas=replicas, time_to_ready_s=ttr)

    def apply(self, plan: Plan, *, now: float) -> None:
        self.events = []
        state = self.state(now=now)
        self._mark_victims(plan)
        self._route(plan, state)
        for capacity_class, count in ((ON_DEMAND, plan.on_demand), ("spot", plan.spot)):
            deployment = manifests.deployment_name(self.name, capacity_class)
            if self.kube.scale(self.namespace, deployment, count):
                self.events.append(("Scaled", f"{deployment} -> {count} replicas ({plan.reason}: {plan.message})"))

    def _mark_victims(self, plan: Plan) -> None:
        # The ReplicaSet controller deletes the lowest pod-deletion-cost first.
        for rank, name in enumerate(plan.retire):
            self.kube.patch_pod_metadata(
                self.namespace, name, annotations={manifests.ANNOTATION_DELETION_COST: str(-1000 + rank)}
            )

    def _route(self, plan: Plan, state: FleetState) -> None:
        """Promote standbys into the Service up to plan.serving; demote surplus serving pods."""
        serving = [r for r in state.replicas if r.state == ReplicaState.serving]
        standby = [r for r in state.replicas if r.state == ReplicaState.standby]
        wanted = set(plan.promote)
        # Fill any remaining gap with the oldest standbys (on-demand first: they stay longest).
        gap = plan.serving - len(serving) - len(wanted)
        for r in sorted(standby, key=lambda r: (r.capacity_class != ON_DEMAND, r.ready_at or 0.0)):
            if gap <= 0:
                break
            if r.name not in wanted:
                wanted.add(r.name)
                gap -= 1
        for name in sorted(wanted):
            self.kube.patch_pod_metadata(self.namespace, name, labels={manifests.LABEL_SERVING: "true"})
            self.events.append(("Promoted", f"pod {name} joined the Service"))
        surplus = len(serving) - plan.serving
        if surplus > 0:
            order = {n: i for i, n in enumerate(plan.retire)}
            victims = sorted(serving, key=lambda r: order.get(r.name, len(order)))[:surplus]
            for r in victims:
                self.kube.patch_pod_metadata(self.namespace, r.name, labels={manifests.LABEL_SERVING: None})
                self.events.append(("Demoted", f"pod {r.name} left the Service"))


def adopt(children: list[dict[str, Any]], owner: dict[str, Any]) -> None:
    """Owner references (so deleting the InferenceService deletes its children) and namespace."""
    kopf.adopt(children, owner=owner)
