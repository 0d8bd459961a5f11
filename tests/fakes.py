"""A recording fake of adapters.kube.KubeAPI for unit tests of the rollout's execution, and fakes
of the other ports a service's loop (control.service) is wired to.

RecordingKube keeps pods (trimmed, as the watches keep them) and Deployment sizes, records every call, can
fail a call with an ApiException (error injection) or lose a pod before a call reaches it, and
shrinks a Deployment the way a ReplicaSet does (core.rollout.replicaset_victims), so a test sees
which pods a rollout really removes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from gpufleet.adapters import manifests
from gpufleet.adapters.kubefleet import KubeFleet
from gpufleet.adapters.pods import NodeInfo, Snapshot, replica_from_pod
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.rollout import replicaset_victims
from gpufleet.core.types import Observation


def pod(name: str, capacity_class: str = "on-demand", *, ready_at: str | None = "2026-01-01T00:01:00Z",
        serving: bool = False, annotations: dict[str, str] | None = None, node: str = "n1",
        created_at: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    """A trimmed pod as the watch cache keeps it."""
    labels = {manifests.LABEL_CLASS: capacity_class, manifests.LABEL_SERVICE: "chat"}
    if serving:
        labels[manifests.LABEL_SERVING] = "true"
    conditions = [{"type": "Ready", "status": "True", "lastTransitionTime": ready_at}] if ready_at else []
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels, "annotations": dict(annotations or {}),
                         "creationTimestamp": created_at},
            "spec": {"nodeName": node, "containers": []}, "status": {"conditions": conditions}}


@dataclass
class RecordingKube:
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (verb, object name)
    fail: dict[tuple[str, str], int] = field(default_factory=dict)  # (verb, name) -> HTTP status to fail with
    vanish: set[str] = field(default_factory=set)  # pods deleted by someone else before the next call

    def _check(self, verb: str, name: str) -> None:
        self.calls.append((verb, name))
        for gone in self.vanish:
            self.pods.pop(gone, None)
        self.vanish = set()
        status = self.fail.get((verb, name))
        if status is not None:
            raise ApiException(status=status, reason="injected")

    # -- KubeAPI --------------------------------------------------------------------------------

    def scale(self, namespace: str, name: str, replicas: int, *, current: int | None) -> bool:
        if current is None or current == replicas:
            return False
        self._check("scale", name)
        self.deployments[name] = replicas
        capacity_class = name.rsplit("-", 1)[-1].replace("ondemand", "on-demand")
        mine = [p for p in self.pods.values()
                if p["metadata"]["labels"].get(manifests.LABEL_CLASS) == capacity_class]
        if len(mine) > replicas:
            as_replicas = [replica_from_pod(p, set()) for p in mine]
            for victim in replicaset_victims(as_replicas, len(mine) - replicas):
                del self.pods[victim.name]
        return True

    def patch_pod_metadata(self, namespace: str, name: str, *, labels: dict[str, str | None] | None = None,
                           annotations: dict[str, str | None] | None = None) -> dict[str, Any] | None:
        self._check("patch", name)
        current = self.pods.get(name)
        if current is None:
            return None
        meta = current["metadata"]
        for key, changes in (("labels", labels), ("annotations", annotations)):
            for k, v in (changes or {}).items():
                if v is None:
                    meta[key].pop(k, None)
                else:
                    meta[key][k] = v
        return copy.deepcopy(current)

    def evict_pod(self, namespace: str, name: str) -> bool:
        self._check("evict", name)
        return self.pods.pop(name, None) is not None

    # -- what the watches would show ------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot(pods=tuple(copy.deepcopy(p) for p in self.pods.values()),
                        nodes={p["spec"]["nodeName"]: NodeInfo(labels={}) for p in self.pods.values()},
                        deployments=dict(self.deployments))



@dataclass
class FakeMetrics:
    """A service's metrics port (control.service.ServiceMetrics): a fixed request rate, fresh at
    every read, or nothing at all while `available` is False (an outage)."""

    request_rate: float = 0.0
    available: bool = True
    history_error: str | None = None
    reads: int = 0

    def observe(self, *, now: float) -> Observation:
        self.reads += 1
        if not self.available:
            return Observation()
        return Observation(sampled_at=now, queue_depth=0.0, request_rate=self.request_rate)

    def summary(self) -> str:
        return "all signals read" if self.available else "request_rate: connection refused"

    def history(self, key: str, *, start: float, end: float, step: float) -> list[tuple[float, float]]:
        return []


@dataclass
class FakeWiring:
    """The I/O behind one service's loop (control.service.Wiring): the real KubeFleet on a
    RecordingKube, and one FakeMetrics whatever the spec."""

    kube: RecordingKube
    metrics_port: FakeMetrics = field(default_factory=FakeMetrics)
    released: int = 0

    def fleet(self, spec: InferenceServiceSpec) -> KubeFleet:
        return KubeFleet(self.kube, namespace="ns", name="chat", spec=spec, snapshot=self.kube.snapshot)

    def metrics(self, spec: InferenceServiceSpec) -> FakeMetrics:
        return self.metrics_port

    def release(self, metrics: object) -> None:
        self.released += 1

    def node_labels(self) -> Sequence[Mapping[str, str]]:
        return []
