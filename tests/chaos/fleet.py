"""What the chaos suite reads off the cluster: one snapshot of a namespace (pods, Deployments,
ReplicaSets, EndpointSlices, InferenceServices) and, per service, whether its fleet has converged
and what is lost (orphaned, duplicated or out-of-Service pods)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from gpufleet.adapters.manifests import ANNOTATION_DRAINING, LABEL_SERVICE, LABEL_SERVING
from gpufleet.api.timefmt import iso_seconds

Obj = dict[str, Any]
_READERS = ThreadPoolExecutor(max_workers=5, thread_name_prefix="snapshot")


def _items(resp: Any) -> list[Obj]:
    items: list[Obj] = json.loads(resp.data)["items"]
    return items


@dataclass(frozen=True)
class Snapshot:
    pods: list[Obj]
    deployments: list[Obj]
    replicasets: list[Obj]
    slices: list[Obj]
    services: dict[str, Obj]  # InferenceServices by name

    @staticmethod
    def read(api: client.ApiClient, namespace: str) -> Snapshot:
        """One LIST per kind (raw JSON: cheap on a 2-core machine), the five at once: one after the
        other they took ~2 s on a loaded machine, and a trial's convergence was seen that late;
        raises while the API is down."""
        kw: dict[str, Any] = {"_preload_content": False, "_request_timeout": 5}
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        custom, disc = client.CustomObjectsApi(api), client.DiscoveryV1Api(api)
        calls: dict[str, Callable[[], Any]] = {
            "isvcs": lambda: custom.list_namespaced_custom_object("gpufleet.io", "v1alpha1", namespace,
                                                                  "inferenceservices", **kw),
            "pods": lambda: core.list_namespaced_pod(namespace, **kw),
            "deployments": lambda: apps.list_namespaced_deployment(namespace, **kw),
            "replicasets": lambda: apps.list_namespaced_replica_set(namespace, **kw),
            "slices": lambda: disc.list_namespaced_endpoint_slice(namespace, **kw),
        }
        futures = {k: _READERS.submit(call) for k, call in calls.items()}
        got = {k: _items(f.result()) for k, f in futures.items()}
        return Snapshot(pods=got["pods"], deployments=got["deployments"], replicasets=got["replicasets"],
                        slices=got["slices"], services={o["metadata"]["name"]: o for o in got["isvcs"]})


def _controller(obj: Obj) -> str | None:
    return next((r["name"] for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)


def ready(pod: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or [])


@dataclass(frozen=True)
class Judgement:
    """One service at one moment. `converged`: a decision made at or after `since` that the fleet
    matches (serving and standby pods Ready in the numbers decided, nothing starting, no drain past
    its timeout, every serving pod in the Service's endpoints, every pod under its own Deployments,
    no pod on a node going away) and enough serving pods for the offered load."""

    converged: bool
    serving: int
    decided_serving: int
    orphaned: int  # live pods not controlled through the service's own Deployments, or drains never finished
    duplicated: int  # live pods beyond their Deployment's replicas
    left_out: int  # serving pods missing from the endpoints, Ready idle pods beyond the standbys
    new_pods: bool  # a pod of the final fleet was created at or after `since` (a cold start was needed)
    why: str
    on_leaving: int = 0  # live pods on nodes going away: each must drain before it goes


def judge(snap: Snapshot, name: str, *, since: float, need_serving: int, drain_limit_s: float,
          leaving_nodes: frozenset[str] = frozenset(), now: float | None = None) -> Judgement:
    """`drain_limit_s`: how long a pod may stay draining (its drain timeout and a few ticks)."""
    isvc = snap.services.get(name)
    if isvc is None:
        return Judgement(False, 0, 0, 0, 0, 0, False, "no InferenceService")
    uid = isvc["metadata"]["uid"]
    decision = (isvc.get("status") or {}).get("lastDecision") or {}
    fresh = bool(decision.get("time")) and iso_seconds(decision["time"]) >= math.floor(since)  # to the second
    deps = {d["metadata"]["name"]: d for d in snap.deployments
            if any(r.get("uid") == uid and r.get("controller") for r in d["metadata"].get("ownerReferences") or [])}
    rs_dep = {rs["metadata"]["name"]: _controller(rs) for rs in snap.replicasets}
    live = [p for p in snap.pods if (p["metadata"].get("labels") or {}).get(LABEL_SERVICE) == name
            and not p["metadata"].get("deletionTimestamp")]
    orphaned = [p for p in live if rs_dep.get(_controller(p) or "") not in deps]
    per_dep: dict[str, int] = {}
    for p in live:
        dep = rs_dep.get(_controller(p) or "")
        if dep is not None and dep in deps:
            per_dep[dep] = per_dep.get(dep, 0) + 1
    duplicated = sum(max(0, n - int(deps[d]["spec"].get("replicas") or 0)) for d, n in per_dep.items())
    labels = [(p["metadata"].get("labels") or {}) for p in live]
    draining = [p for p in live if ANNOTATION_DRAINING in (p["metadata"].get("annotations") or {})]
    now = time.time() if now is None else now
    stuck = [p for p in draining if now - float(p["metadata"]["annotations"][ANNOTATION_DRAINING]) > drain_limit_s]
    serving = [p for p, lb in zip(live, labels) if ready(p) and lb.get(LABEL_SERVING) == "true" and p not in draining]
    idle = [p for p, lb in zip(live, labels) if ready(p) and lb.get(LABEL_SERVING) != "true" and p not in draining]
    starting = [p for p in live if not ready(p)]
    in_slices = {ip for s in snap.slices if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == name
                 for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")
                 for ip in e.get("addresses") or []}
    missing = [p for p in serving if (p.get("status") or {}).get("podIP") not in in_slices]
    want_serving, want_standby = int(decision.get("desired", 0)), int(decision.get("standby", 0))
    leaving = [p for p in live if (p.get("spec") or {}).get("nodeName") in leaving_nodes]
    new_pods = any(iso_seconds(p["metadata"]["creationTimestamp"]) >= math.floor(since) for p in live)
    checks = {
        "no fresh decision": not fresh,
        f"serving {len(serving)} != decided {want_serving}": len(serving) != want_serving,
        f"standby {len(idle)} != decided {want_standby}": len(idle) != want_standby,
        f"{len(starting)} starting": bool(starting),
        f"{len(stuck)} draining past the timeout": bool(stuck),
        f"{len(orphaned)} orphaned": bool(orphaned),
        f"{duplicated} duplicated": duplicated > 0,
        f"{len(missing)} serving pods not in the endpoints": bool(missing),
        f"{len(leaving)} on leaving nodes": bool(leaving),
        f"serving {len(serving)} < needed {need_serving}": len(serving) < need_serving,
    }
    why = "; ".join(k for k, bad in checks.items() if bad)
    return Judgement(converged=not why, serving=len(serving), decided_serving=want_serving, orphaned=len(orphaned) + len(stuck),
                     duplicated=duplicated, left_out=len(missing) + max(0, len(idle) - want_standby),
                     new_pods=new_pods, why=why or "converged", on_leaving=len(leaving))
