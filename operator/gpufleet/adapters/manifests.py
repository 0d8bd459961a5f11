"""Child objects of an InferenceService, rendered as plain dicts (no client calls here).

One Deployment per capacity class built from spec.template plus that class's placement, one
Service that routes only to pods labelled serving, and one PodDisruptionBudget. The operator owns
replica counts (through /scale) and its own labels; everything else comes from the user's spec.
"""

from __future__ import annotations

import copy
from typing import Any

from gpufleet.api.models import ClassPlacement, InferenceServiceSpec
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

_CLASS_SUFFIX = {ON_DEMAND: "ondemand", SPOT: "spot"}


def deployment_name(service: str, capacity_class: str) -> str:
    return f"{service}-{_CLASS_SUFFIX[capacity_class]}"


def selector_labels(service: str, capacity_class: str | None = None) -> dict[str, str]:
    labels = {LABEL_SERVICE: service}
    if capacity_class is not None:
        labels[LABEL_CLASS] = capacity_class
    return labels


def placement(spec: InferenceServiceSpec, capacity_class: str) -> ClassPlacement:
    return spec.capacity.on_demand if capacity_class == ON_DEMAND else spec.capacity.spot


def deployment(name: str, spec: InferenceServiceSpec, capacity_class: str) -> dict[str, Any]:
    """The Deployment for one capacity class, without `replicas` (owned through /scale)."""
    template = copy.deepcopy(spec.template)
    meta = template.setdefault("metadata", {})
    meta.setdefault("labels", {}).update(
        {**selector_labels(name, capacity_class), LABEL_MANAGED: MANAGER}
    )
    pod_spec = template.setdefault("spec", {})
    where = placement(spec, capacity_class)
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
            # New pods must pass readiness (model loaded) before old ones go; never below capacity.
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


def pod_disruption_budget(name: str, spec: InferenceServiceSpec) -> dict[str, Any]:
    # Voluntary evictions (node drains, upgrades) may never take the fleet below its floor.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": {LABEL_SERVICE: name, LABEL_MANAGED: MANAGER}},
        "spec": {
            "minAvailable": spec.replicas.min,
            "selector": {"matchLabels": {LABEL_SERVICE: name, LABEL_SERVING: "true"}},
        },
    }


def children(name: str, spec: InferenceServiceSpec) -> list[dict[str, Any]]:
    return [
        deployment(name, spec, ON_DEMAND),
        deployment(name, spec, SPOT),
        service(name),
        pod_disruption_budget(name, spec),
    ]
