"""Shadow mode on an existing workload (spec.targetRef with mode: recommend).

gpufleet reads a Deployment it does not own (one an HPA scales, or a KServe predictor's) and its
pods, decides as it would, and reports; it creates and changes nothing. ShadowFleet is the fleet
port for that: the target's pods as the core's replicas (every Ready pod serves: a plain
Deployment's Service routes to all of them), and an apply() that does nothing.

The target is read with the API, not from the watch caches (those hold only the pods and
Deployments of gpufleet's own fleets): a GET of the Deployment and a LIST of its pods by its
selector, at most once per `max_age_s` (a tick reads it for the metrics' partial-scrape check and
for the fleet state). Nodes (interruption notices, the spot class) and the autoscalers aimed at the
Deployment come from the operator's watches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gpufleet.adapters.kube import KubeAPI
from gpufleet.adapters.kubefleet import KubeFleet
from gpufleet.adapters.pods import NodeInfo, Snapshot, replica_from_pod
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.control.status import TargetReading
from gpufleet.core.rollout import Rollout
from gpufleet.core.types import ON_DEMAND, SPOT, Plan, Replica, ReplicaState

log = logging.getLogger(__name__)


def label_selector(selector: Mapping[str, Any] | None) -> str:
    """A Deployment's spec.selector (matchLabels, matchExpressions) as a label-selector string.
    ValueError when it is empty (it would select every pod of the namespace)."""
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key"), expr.get("operator"), sorted(expr.get("values") or ())
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            raise ValueError(f"unknown selector operator {op!r}")
    if not parts:
        raise ValueError("spec.selector selects nothing")
    return ",".join(parts)


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def shadow_replica(pod: dict[str, Any], interrupted: set[str], in_flight: dict[str, float],
                   reclaim_at: float | None, *, spot: bool) -> Replica:
    """A pod of the target as the core sees it: Ready is serving (no gpufleet label decides it),
    terminating is draining, and its class is spot when its node is (`spot`)."""
    replica = replica_from_pod(pod, interrupted, in_flight, reclaim_at)
    state = ReplicaState.serving if replica.state == ReplicaState.standby else replica.state
    return replace(replica, state=state, capacity_class=SPOT if spot else ON_DEMAND)


@dataclass(frozen=True)
class TargetView:
    """One read of the target: what status reports, and its pods as a Snapshot."""

    reading: TargetReading
    snapshot: Snapshot


Nodes = Callable[[Collection[str]], Mapping[str, NodeInfo]]  # node name -> info, from the watch
Autoscalers = Callable[[str], Sequence[str]]  # Deployment name -> the HPAs / ScaledObjects aiming at it


class TargetReader:
    """Reads one target Deployment and its pods (API calls), its pods' nodes and autoscalers (watches)."""

    def __init__(self, kube: Any, *, namespace: str, deployment: str, nodes: Nodes | None = None,
                 autoscalers: Autoscalers | None = None) -> None:
        self.kube = kube  # adapters.kube.Kube: read_deployment, list_pods
        self.namespace = namespace
        self.deployment = deployment
        self.nodes = nodes
        self.autoscalers = autoscalers

    def __call__(self) -> TargetView:
        target = f"Deployment/{self.deployment}"
        found = self.kube.read_deployment(self.namespace, self.deployment)
        if found is None:
            return TargetView(TargetReading(target, False, message=(
                f"spec.targetRef: Deployment {self.deployment} not found in namespace {self.namespace}")), Snapshot())
        spec = found.get("spec") or {}
        try:
            selector = label_selector(spec.get("selector"))
        except ValueError as exc:
            return TargetView(TargetReading(target, False, message=f"spec.targetRef: {target}: {exc}"), Snapshot())
        pods = tuple(self.kube.list_pods(self.namespace, selector))
        names = {p["spec"]["nodeName"] for p in pods if p.get("spec", {}).get("nodeName")}
        nodes = dict(self.nodes(names)) if self.nodes is not None else {}
        replicas = spec.get("replicas")
        autoscalers = tuple(self.autoscalers(self.deployment)) if self.autoscalers is not None else ()
        reading = TargetReading(target, True, replicas=int(replicas) if replicas is not None else 1,
                                autoscalers=autoscalers)
        return TargetView(reading, Snapshot(pods=pods, nodes=nodes, deployments={self.deployment: reading.replicas or 0}))


class ShadowFleet(KubeFleet):
    """The fleet port of a service in shadow mode: state from the target, apply() a no-op."""

    def __init__(self, kube: KubeAPI, *, namespace: str, name: str, spec: InferenceServiceSpec,
                 read: Callable[[], TargetView], target: str, max_age_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(kube, namespace=namespace, name=name, spec=spec, snapshot=self._snapshot)
        self.read = read
        self.target = target  # the Deployment's name
        self.max_age_s = max_age_s
        self.clock = clock
        self.reading: TargetReading | None = None  # what the last state() read (control.service.Shadowing)
        self._view: TargetView | None = None
        self._read_at = -float("inf")

    def view(self) -> TargetView:
        """The target as last read, read again when older than max_age_s."""
        if self._view is None or self.clock() - self._read_at >= self.max_age_s:
            self._view = self.read()
            self._read_at = self.clock()
        return self._view

    def _snapshot(self) -> Snapshot:
        view = self.view()
        self.reading = view.reading
        return view.snapshot

    def _replica(self, pod: dict[str, Any], interrupted: set[str], in_flight: dict[str, float],
                 reclaim_at: float | None) -> Replica:
        node = self._snap.nodes.get(pod.get("spec", {}).get("nodeName") or "")
        spot = self.spec.capacity.spot.enabled and node is not None \
            and matches(node.labels, self.spec.capacity.spot.node_selector)
        return shadow_replica(pod, interrupted, in_flight, reclaim_at, spot=spot)

    def serving(self) -> dict[str, float]:
        """The target's Ready pods and since when: the pods its metric sums must include."""
        out = {}
        for pod in self.view().snapshot.pods:
            replica = shadow_replica(pod, set(), {}, None, spot=False)
            if replica.state == ReplicaState.serving and replica.ready_at is not None:
                out[replica.name] = replica.ready_at
        return out

    def endpoints(self) -> list[str]:
        """host:port of Triton's HTTP endpoint on each Ready pod of the target (--triton-direct)."""
        out = []
        for pod in self._pods.values():
            ip = pod.get("status", {}).get("podIP")
            if ip and shadow_replica(pod, set(), {}, None, spot=False).state == ReplicaState.serving:
                ports = [p for c in pod["spec"].get("containers", []) for p in c.get("ports") or []]
                port = next((p["containerPort"] for p in ports if p.get("name") == "http"), 8000)
                out.append(f"{ip}:{port}")
        return out

    # Shadow mode creates and changes nothing. A plan reaches here only in mode: active, which the
    # CRD refuses with a targetRef; should one arrive anyway, it is dropped, not carried out.
    def apply(self, plan: Plan, *, now: float) -> None:
        self.events, self.errors = [], []
        if plan.apply:
            log.warning("%s/%s: shadow mode (spec.targetRef) never applies a plan", self.namespace, self.name)

    def execute(self, ro: Rollout, *, now: float, reason: str = "") -> None:
        self.events, self.errors = [], []
