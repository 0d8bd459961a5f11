"""KubeFleet: the FleetPort of one InferenceService on a cluster.

It reads the service's pods, their nodes and its Deployments from the watch caches (a Snapshot:
no API call), and carries out the core's rollout (core.rollout) with the Kubernetes API: labels
for the Service, annotations for drains and pod-deletion-cost, evictions, and /scale. Which pod
moves is never decided here.

A pod that vanished meanwhile is skipped. A patch or eviction that fails leaves its class's
Deployment at least at its current size this tick (shrinking then could take a pod whose move
failed), and is reported in `errors` and as a RolloutFailed event; the next tick retries.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from gpufleet.adapters import manifests
from gpufleet.adapters.kube import KubeAPI
from gpufleet.adapters.pods import Snapshot, pending_since, replica_from_pod
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.rollout import TTR_SAMPLES, Rollout, rollout, time_to_ready
from gpufleet.core.types import CAPACITY_CLASSES, SPOT, FleetState, Plan, Replica

log = logging.getLogger(__name__)

Patch = tuple[dict[str, str | None], dict[str, str | None]]  # (labels, annotations)


class KubeFleet:
    def __init__(self, kube: KubeAPI, *, namespace: str, name: str, spec: InferenceServiceSpec,
                 snapshot: Callable[[], Snapshot], in_flight: Callable[[], dict[str, float]] = dict) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.spec = spec
        self.snapshot = snapshot  # this service's pods, their nodes and its Deployments, from watches
        self.in_flight = in_flight  # per-pod in-flight requests, from metrics; {} when unknown
        # Recent creation-to-Ready durations per class, remembered across pods that are gone.
        self._starts: dict[str, deque[float]] = {c: deque(maxlen=TTR_SAMPLES) for c in CAPACITY_CLASSES}
        self._mix: tuple[tuple[str, bool, str], ...] | None = None  # the class mix last carried out
        self._seen_ready: set[str] = set()
        self._restored = False  # samples were just restored: the pods Ready now are in them
        self._pods: dict[str, dict[str, Any]] = {}
        self._snap = Snapshot()
        self._noticed_at: dict[str, float] = {}  # node -> when this loop first saw its notice
        self.events: list[tuple[str, str]] = []  # (reason, message) of changes made by apply()
        self.errors: list[str] = []  # what failed in the last apply()
        self.last_rollout = Rollout()

    # -- time to Ready ------------------------------------------------------------------------

    def start_samples(self) -> dict[str, list[float]]:
        """The creation-to-Ready durations kept per class (persisted with the policy's memory)."""
        return {c: list(v) for c, v in self._starts.items() if v}

    def _starts_of(self, capacity_class: str) -> deque[float]:
        return self._starts.setdefault(capacity_class, deque(maxlen=TTR_SAMPLES))

    def time_to_ready(self) -> dict[str, float]:
        out = {c: time_to_ready(list(v)) for c, v in self._starts.items()}
        return {c: v for c, v in out.items() if v is not None}

    def restore_samples(self, samples: Mapping[str, list[float]]) -> None:
        """Take back persisted samples. They already hold the starts of the pods Ready now, so
        those are not sampled again (a start between the last write and now is lost, not doubled)."""
        for capacity_class, values in samples.items():
            self._starts_of(capacity_class).extend(values)
        self._restored = True

    # -- state --------------------------------------------------------------------------------

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
        replicas = []
        for p in self._pods.values():
            node = p.get("spec", {}).get("nodeName")
            reclaim_at: float | None = None
            if node in lost:
                reclaim_at = now
            elif node in notices:
                added, after = notices[node]
                # Taints without timeAdded (NoSchedule ones) count from when this loop saw them.
                since = added if added is not None else self._noticed_at[node]
                reclaim_at = since + after if after is not None else None
            replicas.append(self._replica(p, set(notices) | lost, in_flight, reclaim_at))
        for r in replicas:
            if r.ready_at is not None and r.name not in self._seen_ready:
                self._seen_ready.add(r.name)
                if not self._restored:
                    self._starts_of(r.capacity_class).append(max(0.0, r.ready_at - r.created_at))
        self._restored = False
        self._seen_ready &= set(self._pods)  # forget pods that are gone (bounded memory)
        return FleetState(replicas=tuple(replicas), time_to_ready_s=self.time_to_ready(),
                          spot_unavailable=self._spot_stuck(now), pending_by_class=self._pending_by_class(now))

    def _replica(self, pod: dict[str, Any], interrupted: set[str], in_flight: dict[str, float],
                 reclaim_at: float | None) -> Replica:
        """A pod as the core sees it (adapters.shadow reads another Deployment's pods otherwise)."""
        return replica_from_pod(pod, interrupted, in_flight, reclaim_at)

    def pods(self) -> tuple[dict[str, Any], ...]:
        """The pods as last read (`state`) or patched by this loop, terminating ones left out."""
        return tuple(self._pods.values())

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

    def _pending_by_class(self, now: float) -> tuple[tuple[str, int], ...]:
        """spec.capacity.classes: pods of each class Pending past its pendingTimeoutSeconds."""
        timeouts = {c.name: c.pending_timeout_seconds for c in self.spec.capacity.classes or ()}
        out: dict[str, int] = {}
        for pod in self._pods.values():
            cls = (pod["metadata"].get("labels") or {}).get(manifests.LABEL_CLASS)
            since = pending_since(pod)
            if cls in timeouts and since is not None and now - since > timeouts[cls]:
                out[cls] = out.get(cls, 0) + 1
        return tuple(sorted(out.items()))

    # -- apply --------------------------------------------------------------------------------

    def apply(self, plan: Plan, *, now: float) -> None:
        state = self._state(now)
        drain_timeout = float(self.spec.scaling.scale_down.drain_timeout_seconds)
        self.execute(rollout(plan, state.replicas, now=now, drain_timeout_s=drain_timeout,
                             interval_s=float(self.spec.scaling.interval_seconds)),
                     now=now, reason=f"{plan.reason}: {plan.message}")
        self._mix_event(plan)

    def _mix_event(self, plan: Plan) -> None:
        """spec.capacity.classes: one CapacityMix Event each time the chosen mix changes (a class
        taken into use or out of it, or its availability), with why; not on every resize."""
        if plan.classes is None:
            return
        mix = tuple((c.name, c.replicas > 0, c.state) for c in plan.classes)
        if mix != self._mix:
            self._mix = mix
            self.events.append(("CapacityMix", plan.mix_note[:500]))

    def execute(self, ro: Rollout, *, now: float, reason: str = "") -> None:
        """Carry out a rollout: one metadata patch per pod that moves, evictions, then sizes."""
        self.events, self.errors, self.last_rollout = [], [], ro
        failed: set[str] = set()  # classes with a failed move: not shrunk this tick
        for pod, (labels, annotations) in pod_patches(ro, now).items():
            if not self._patch(pod, labels, annotations):
                failed.add(self._class_of(pod))
        for release in ro.release:
            if release.evict and release.name in self._pods and not self._evict(release.name):
                failed.add(self._class_of(release.name))
        self.events += ro.notes()
        for capacity_class, size in ro.sizes:
            deployment = manifests.deployment_name(self.name, capacity_class)
            current = self._snap.deployments.get(deployment)
            if capacity_class in failed and current is not None:
                size = max(size, current)
            try:
                if self.kube.scale(self.namespace, deployment, size, current=current):
                    self.events.append(("Scaled", f"{deployment} -> {size} replicas ({reason})"))
            except ApiException as exc:
                self.errors.append(f"scale {deployment} to {size}: {exc.status} {exc.reason}")
        if self.errors:
            self.events.append(("RolloutFailed", "; ".join(self.errors)[:500]))

    def _class_of(self, pod: str) -> str:
        labels = (self._pods.get(pod, {}).get("metadata") or {}).get("labels") or {}
        return str(labels.get(manifests.LABEL_CLASS, CAPACITY_CLASSES[0]))

    def _patch(self, pod: str, labels: dict[str, str | None], annotations: dict[str, str | None]) -> bool:
        """Patch one pod; False when the patch failed (a vanished pod is no failure)."""
        try:
            after = self.kube.patch_pod_metadata(self.namespace, pod, labels=labels or None,
                                                 annotations=annotations or None)
        except ApiException as exc:
            self.errors.append(f"patch pod {pod}: {exc.status} {exc.reason}")
            return False
        if after is None:
            self._pods.pop(pod, None)
        else:
            self._pods[pod] = after
        return True

    def _evict(self, pod: str) -> bool:
        try:
            self.kube.evict_pod(self.namespace, pod)
        except ApiException as exc:
            self.errors.append(f"evict pod {pod}: {exc.status} {exc.reason}")
            return False
        self._pods.pop(pod, None)
        return True


def pod_patches(ro: Rollout, now: float) -> dict[str, Patch]:
    """The label and annotation changes of a rollout, merged into one patch per pod."""
    out: dict[str, Patch] = {}

    def at(pod: str) -> Patch:
        return out.setdefault(pod, ({}, {}))

    for pod in ro.promote:
        at(pod)[0][manifests.LABEL_SERVING] = "true"
    for pod in ro.demote:
        at(pod)[0][manifests.LABEL_SERVING] = None
    for pod in ro.drain:
        at(pod)[0][manifests.LABEL_SERVING] = None  # out of the Service first
        at(pod)[1][manifests.ANNOTATION_DRAINING] = str(now)
    for pod in ro.cancel:
        at(pod)[1][manifests.ANNOTATION_DRAINING] = None
    for pod, cost in ro.costs:
        at(pod)[1][manifests.ANNOTATION_DELETION_COST] = None if cost is None else str(cost)
    return out

