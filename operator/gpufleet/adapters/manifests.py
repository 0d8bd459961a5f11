"""Child objects of an InferenceService, rendered as plain dicts (no client calls here).

One Deployment per capacity class built from spec.template plus that class's placement (with
spec.capacity.classes, also its resources as the Triton container's limits), one Service that
routes only to pods labelled serving, and one PodDisruptionBudget. The operator owns
replica counts (through /scale) and its own labels; everything else comes from the user's spec.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from gpufleet.api.models import GPU_RESOURCE, MIG_PREFIX, CapacityClassSpec, ClassPlacement, InferenceServiceSpec
from gpufleet.core.types import ON_DEMAND, SPOT

LABEL_SERVICE = "gpufleet.io/inference-service"
LABEL_CLASS = "gpufleet.io/capacity-class"
LABEL_SERVING = "gpufleet.io/serving"  # "true" on pods in the Service; absent/other on standbys
LABEL_MANAGED = "app.kubernetes.io/managed-by"
MANAGER = "gpufleet"
ANNOTATION_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
ANNOTATION_DRAINING = "gpufleet.io/draining-since"  # unix time the pod left the Service to be removed

# Triton's default ports; the Service exposes them under their usual names.
TRITON_PORTS = (("http", 8000), ("grpc", 8001), ("metrics", 8002))
TRITON_EXIT_TIMEOUT_S = 30  # tritonserver's default --exit-timeout-secs
GRACE_MARGIN_S = 5  # Triton's own timeout ends the shutdown, not the kubelet's SIGKILL

# The two-class form's Deployments keep their names; a listed class's suffix is its name.
_CLASS_SUFFIX = {ON_DEMAND: "ondemand", SPOT: "spot"}


def deployment_name(service: str, capacity_class: str) -> str:
    return f"{service}-{_CLASS_SUFFIX.get(capacity_class, capacity_class)}"


def class_names(spec: InferenceServiceSpec) -> tuple[str, ...]:
    """The service's capacity classes, one Deployment each."""
    return spec.capacity.class_names()


def selector_labels(service: str, capacity_class: str | None = None) -> dict[str, str]:
    labels = {LABEL_SERVICE: service}
    if capacity_class is not None:
        labels[LABEL_CLASS] = capacity_class
    return labels


def placement(spec: InferenceServiceSpec, capacity_class: str) -> ClassPlacement:
    if spec.capacity.classes is not None:
        return next(c for c in spec.capacity.classes if c.name == capacity_class)
    return spec.capacity.on_demand if capacity_class == ON_DEMAND else spec.capacity.spot


def _is_gpu(resource: str) -> bool:
    return resource == GPU_RESOURCE or resource.startswith(MIG_PREFIX)


def set_gpu_resources(pod_spec: dict[str, Any], cls: CapacityClassSpec) -> None:
    """The class's resources as the Triton container's limits (extended resources: requests, if
    the template sets any, must equal the limits), replacing the template's GPUs and MIG slices."""
    container = triton_container(pod_spec)
    if container is None:
        return
    res = container.setdefault("resources", {})
    for part in ("limits", "requests"):
        if part in res or part == "limits":
            kept = {k: v for k, v in (res.get(part) or {}).items() if not _is_gpu(k) and k not in cls.resources}
            res[part] = {**kept, **cls.resources}


def triton_container(pod_spec: dict[str, Any]) -> dict[str, Any] | None:
    """The container that runs Triton: the one named `triton`, else the first whose image, command or
    args name tritonserver, else the first one."""
    containers: list[dict[str, Any]] = pod_spec.get("containers") or []
    for c in containers:
        if c.get("name") == "triton":
            return c
    for c in containers:
        words = [str(c.get("image", "")), *map(str, c.get("command") or []), *map(str, c.get("args") or [])]
        if any("tritonserver" in w for w in words):
            return c
    return containers[0] if containers else None


def exit_timeout_s(container: dict[str, Any]) -> int:
    """Triton's --exit-timeout-secs from the container's command and args (default 30)."""
    words = [str(w) for w in [*(container.get("command") or []), *(container.get("args") or [])]]
    for i, w in enumerate(words):
        value = w.partition("=")[2] if w.startswith("--exit-timeout-secs=") else (
            words[i + 1] if w == "--exit-timeout-secs" and i + 1 < len(words) else None)
        if value is not None and value.strip().isdigit():
            return int(value)
    return TRITON_EXIT_TIMEOUT_S


def http_port(container: dict[str, Any]) -> int | str:
    ports = container.get("ports") or []
    return next((p["containerPort"] for p in ports if p.get("name") == "http"), TRITON_PORTS[0][1])


def serving_defaults(pod_spec: dict[str, Any], model: str) -> None:
    """What makes the operator's rules true on a real cluster, unless the template says otherwise:

    - a readinessProbe on Triton's model-ready endpoint, so pod Ready (all that promotion of a
      standby checks) means the model is loaded and ready, not only that the container started;
    - terminationGracePeriodSeconds beyond Triton's exit timeout: on SIGTERM Triton refuses new
      requests and waits up to --exit-timeout-secs for the ones in flight, and the kubelet must not
      kill it before (a released pod may still execute a request no metric shows, docs/draining.md).
    """
    container = triton_container(pod_spec)
    if container is None:
        return
    if "readinessProbe" not in container:
        container["readinessProbe"] = {"httpGet": {"path": f"/v2/models/{model}/ready", "port": http_port(container)},
                                       "periodSeconds": 5, "failureThreshold": 3}
    if "terminationGracePeriodSeconds" not in pod_spec:
        pod_spec["terminationGracePeriodSeconds"] = exit_timeout_s(container) + GRACE_MARGIN_S


def deployment(name: str, spec: InferenceServiceSpec, capacity_class: str) -> dict[str, Any]:
    """The Deployment for one capacity class, without `replicas` (owned through /scale)."""
    template = copy.deepcopy(spec.template)
    meta = template.setdefault("metadata", {})
    meta.setdefault("labels", {}).update(
        {**selector_labels(name, capacity_class), LABEL_MANAGED: MANAGER}
    )
    pod_spec = template.setdefault("spec", {})
    serving_defaults(pod_spec, spec.model.name)
    where = placement(spec, capacity_class)
    if isinstance(where, CapacityClassSpec):
        set_gpu_resources(pod_spec, where)
    if where.node_selector:
        pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}), **where.node_selector}
    if where.tolerations:
        pod_spec["tolerations"] = [*pod_spec.get("tolerations", []), *where.tolerations]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(name, capacity_class),
            "labels": {**selector_labels(name, capacity_class), LABEL_MANAGED: MANAGER},
        },
        "spec": {
            "selector": {"matchLabels": selector_labels(name, capacity_class)},
            # New pods must pass readiness (model ready, serving_defaults) before old ones go.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": template,
        },
    }


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {LABEL_SERVICE: name, LABEL_MANAGED: MANAGER}},
        "spec": {
            "selector": {LABEL_SERVICE: name, LABEL_SERVING: "true"},
            "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in TRITON_PORTS],
        },
    }


def floor_pods(spec: InferenceServiceSpec) -> int:
    """Serving pods the floor needs: replicas.min; with spec.capacity.classes the fewest pods whose
    capacity carries replicas.min reference replicas (a 40-rps H100 pod carries four 10-rps ones),
    1 when the reference capacity is not set (learned)."""
    low = spec.replicas.min
    ref = spec.scaling.target_rps_per_replica
    if spec.capacity.classes is None or low == 0:
        return low
    if ref is None:
        return 1
    biggest = max(c.target_rps_per_replica or ref for c in spec.capacity.classes)
    return max(1, min(low, math.ceil(low * ref / biggest - 1e-9)))


def pod_disruption_budget(name: str, spec: InferenceServiceSpec) -> dict[str, Any]:
    # Voluntary evictions (node drains, upgrades) may never take the fleet below its floor.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": {LABEL_SERVICE: name, LABEL_MANAGED: MANAGER}},
        "spec": {
            "minAvailable": floor_pods(spec),
            "selector": {"matchLabels": {LABEL_SERVICE: name, LABEL_SERVING: "true"}},
        },
    }


# -- ownership: gpufleet writes only into objects its InferenceService controls --------------------


def controller_of(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference with controller=true in an object's metadata, if any."""
    return next((r for r in meta.get("ownerReferences") or () if r.get("controller")), None)


def owned_by(meta: Mapping[str, Any], owner_uid: str | None) -> bool:
    """Whether the object is controlled by the owner with this uid (an InferenceService)."""
    ref = controller_of(meta)
    return ref is not None and owner_uid is not None and ref.get("uid") == owner_uid


def controlled_by_service(meta: Mapping[str, Any], service: str) -> bool:
    """Whether the object is controlled by an InferenceService named `service` (what the watch
    caches check: a look-alike with gpufleet's labels but another owner is never scaled)."""
    ref = controller_of(meta)
    return ref is not None and ref.get("kind") == "InferenceService" and ref.get("name") == service \
        and str(ref.get("apiVersion", "")).startswith("gpufleet.io/")


def describe_owner(meta: Mapping[str, Any]) -> str:
    """Who holds an object gpufleet does not own, for the Conflict message: its controller and
    the field managers that wrote it."""
    ref = controller_of(meta)
    owner = f"controlled by {ref.get('kind')} {ref.get('name')}" if ref else "not controlled by this InferenceService"
    managers = sorted({str(m.get("manager")) for m in meta.get("managedFields") or () if m.get("manager")})
    return owner + (f", written by {', '.join(managers)}" if managers else "")


def children(name: str, spec: InferenceServiceSpec) -> list[dict[str, Any]]:
    return [
        *(deployment(name, spec, c) for c in class_names(spec)),
        service(name),
        pod_disruption_budget(name, spec),
    ]
