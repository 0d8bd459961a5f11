"""Pods and nodes as the fleet sees them: the translation of Kubernetes objects into core values.

No API calls here: kopf's watches keep the objects (trimmed by `trim_pod`), and a tick reads one
service's slice of them as a `Snapshot`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gpufleet.adapters import manifests
from gpufleet.api.timefmt import iso_seconds
from gpufleet.core.types import CAPACITY_CLASSES, ON_DEMAND, Replica, ReplicaState

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

def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return iso_seconds(str(value))


def _ready_since(pod: dict[str, Any]) -> float | None:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return _ts(cond.get("lastTransitionTime"))
    return None


def _ready(pod: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def turned_ready(known: Iterable[Mapping[str, Any]], pod: Mapping[str, Any]) -> bool:
    """`pod` is Ready and its copy among `known` (the watch cache before this event) was not, or
    there was none."""
    if not _ready(pod):
        return False
    name = pod["metadata"]["name"]
    before = next((p for p in known if p["metadata"]["name"] == name), None)
    return before is None or not _ready(before)


def replica_from_pod(pod: dict[str, Any], interrupted_nodes: set[str],
                     in_flight: dict[str, float] | None = None, reclaim_at: float | None = None) -> Replica:
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
        draining_since=_float(annotations.get(manifests.ANNOTATION_DRAINING)),
        reclaim_at=reclaim_at,
        deletion_cost=_int(annotations.get(manifests.ANNOTATION_DELETION_COST)),
    )


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def pending_since(pod: dict[str, Any]) -> float | None:
    """Creation time of a pod the scheduler has not placed yet, else None."""
    if pod.get("spec", {}).get("nodeName"):
        return None
    return _ts(pod["metadata"].get("creationTimestamp"))


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


# A pod-template hash: a uint32 written in Kubernetes' vowel-free "safe" alphabet (1-10 characters).
_TEMPLATE_HASH = re.compile(r"[b-df-hj-np-tv-z0-9]{1,10}")


def owned_by_fleet(pod: Mapping[str, Any], service: str) -> bool:
    """Whether a pod labelled for `service` was made by one of its Deployments: its controller is
    the ReplicaSet `<service>-<class>-<hash>` and its pod-template-hash label is that hash. A pod
    that only carries the label (created by hand, by another controller, or by a look-alike
    Deployment such as `<service>-v2`) is never counted, promoted, drained or deleted. (The
    Deployments themselves are checked for the InferenceService's controller reference.)"""
    meta = pod.get("metadata") or {}
    ref = manifests.controller_of(meta)
    if ref is None or ref.get("kind") != "ReplicaSet" or not str(ref.get("apiVersion", "")).startswith("apps/"):
        return False
    name, hash_label = str(ref.get("name", "")), (meta.get("labels") or {}).get("pod-template-hash")
    own = (meta.get("labels") or {}).get(manifests.LABEL_CLASS)  # spec.capacity.classes: any class name
    for capacity_class in (*CAPACITY_CLASSES, *([str(own)] if own and own not in CAPACITY_CLASSES else [])):
        prefix = manifests.deployment_name(service, capacity_class) + "-"
        tail = name[len(prefix):]
        if name.startswith(prefix) and _TEMPLATE_HASH.fullmatch(tail) and hash_label == tail:
            return True
    return False


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


class TickSnapshots:
    """A tick's snapshots: read once, reused by the tick's later reads while younger than `reuse_s`.

    Each read of the indexes is a round trip through kopf's event loop (the indexes change there):
    five per tick (the tick's own, the metrics' serving pods, the fleet state, its check before
    the rollout, the drain wake-up), 250 a second at N=500 and 10 s intervals, held the tick
    workers on the event loop (make bench-scale). Outside a tick (`clear`), every read is fresh:
    a reroute runs because a pod just turned Ready."""

    def __init__(self, read: Callable[[bool], Snapshot], *, reuse_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read, self.reuse_s, self._clock = read, reuse_s, clock
        self._held: tuple[float, Snapshot] | None = None

    def hold(self, snap: Snapshot) -> None:
        """Start a tick with `snap` (read with other things in one round trip)."""
        self._held = (self._clock(), snap)

    def clear(self) -> None:
        """The tick ended."""
        self._held = None

    def get(self, *, node_labels: bool = False) -> Snapshot:
        """The held snapshot while young; a fresh read otherwise, and always with node labels
        (the price lookup's, read when a spec changes)."""
        held = self._held
        if held is not None and not node_labels and self._clock() - held[0] < self.reuse_s:
            return held[1]
        return self._read(node_labels)
