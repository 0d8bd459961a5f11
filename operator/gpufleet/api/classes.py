"""Capacity classes as a list (issue 18): how the onDemand/spot form maps onto the list, prices,
and the core's view of a class.

The API model itself (`CapacityClassSpec`, `spec.capacity.classes`, its CEL rules) lives in
api.models beside Capacity and is served by the CRD; it is re-exported here. How the operator
runs the list: docs/gpu-types.md ("How the operator runs classes").

Mapping of the existing form (`classes_of`): `capacity.onDemand` and `capacity.spot` mean two
classes, `on-demand` and (when spot.enabled) `spot`, on the same GPU:

| onDemand/spot form                         | class `on-demand`        | class `spot`                     |
|--------------------------------------------|--------------------------|----------------------------------|
| onDemand/spot .nodeSelector, .tolerations  | nodeSelector, tolerations| nodeSelector, tolerations        |
| gpusPerReplica                             | resources nvidia.com/gpu | resources nvidia.com/gpu         |
| pricePerGpuHour.onDemand / .spot x GPUs    | pricePerReplicaHour      | pricePerReplicaHour              |
| onDemand.base                              | min                      | -                                |
| replicas.max                               | max                      | max                              |
| spot.maxFraction                           | -                        | maxShare                         |
| spot.pendingTimeoutSeconds, returnAfter... | (defaults)               | pendingTimeoutSeconds, returnAfterSeconds |
| scaling.targetRpsPerReplica                | targetRpsPerReplica      | targetRpsPerReplica              |

With the two classes on the same GPU (equal capacity per replica) the cheapest mix is the
replica split of core.split (base on on-demand, spot up to maxFraction of the fleet, spot only
while it is cheaper) for every fleet of at least `base` replicas (tests/unit/test_api_classes.py
checks it). One difference below that: onDemand.base is capped at the fleet (a fleet of 2 with
base 3 runs 2 on-demand), a class's min is a floor (3 run): replicas.min is the floor there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from gpufleet.api.models import (
    CLASSES_RULES,
    GPU_RESOURCE,
    MIG_PREFIX,
    ApiModel,
    CapacityClassSpec,
    InferenceServiceSpec,
    check_class_list,
)

GPU = GPU_RESOURCE
__all__ = ["CLASSES_RULES", "GPU", "MIG_PREFIX", "CapacityClassSpec", "CapacityClasses", "classes_of",
           "replica_price", "to_core_fields"]


class CapacityClasses(ApiModel):
    """The class list alone (the schema probe of tests/integration/test_capacity_classes_schema.py)."""

    classes: list[CapacityClassSpec] = Field(
        min_length=1,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                           "x-kubernetes-validations": CLASSES_RULES},
    )
    """Capacity classes; the operator runs the cheapest mix that meets the load."""

    @field_validator("classes")
    @classmethod
    def _valid_list(cls, value: list[CapacityClassSpec]) -> list[CapacityClassSpec]:
        return check_class_list(value)


def classes_of(spec: InferenceServiceSpec) -> list[CapacityClassSpec]:
    """The service's classes: its list, else the onDemand/spot form as classes (the table in the
    module docstring)."""
    cap = spec.capacity
    if cap.classes is not None:
        return list(cap.classes)
    gpus = cap.gpus_per_replica
    resources = {GPU: gpus} if gpus > 0 else {GPU: 1}
    rps = spec.scaling.target_rps_per_replica
    hi = spec.replicas.max
    out = [CapacityClassSpec(
        name="on-demand", node_selector=dict(cap.on_demand.node_selector), tolerations=list(cap.on_demand.tolerations),
        resources=resources, spot=False, price_per_replica_hour=cap.price_per_gpu_hour.on_demand * gpus,
        target_rps_per_replica=rps, min=min(cap.on_demand.base, hi), max=hi,
    )]
    if cap.spot.enabled:
        out.append(CapacityClassSpec(
            name="spot", node_selector=dict(cap.spot.node_selector), tolerations=list(cap.spot.tolerations),
            resources=resources, spot=True, price_per_replica_hour=cap.price_per_gpu_hour.spot * gpus,
            target_rps_per_replica=rps, min=0, max=hi, max_share=max(cap.spot.max_fraction, 1e-9),
            pending_timeout_seconds=cap.spot.pending_timeout_seconds,
            return_after_seconds=cap.spot.return_after_seconds,
        ))
    return out


def replica_price(cls: CapacityClassSpec, table: Mapping[str, Mapping[str, float]] | None = None,
                  fallback: Mapping[str, float] | None = None) -> float:
    """Price of one replica-hour: the class's own, else the table's per-GPU price for its product
    and capacity type (`*` the fallback product), else `fallback`'s per-GPU price for its capacity
    type ({"on-demand": .., "spot": ..}: capacity.pricePerGpuHour), times the GPUs it holds.
    Raises naming the class if none."""
    if cls.price_per_replica_hour is not None:
        return cls.price_per_replica_hour
    kind = "spot" if cls.spot else "on-demand"
    for row in [(table or {}).get(key or "") for key in (cls.product, "*")] + [fallback]:
        if row is not None and kind in row:
            return float(row[kind]) * cls.gpus()
    raise ValueError(f"capacity class {cls.name!r}: no price (no pricePerReplicaHour, and the price table "
                     f"has no {kind} price for product {cls.product!r} or '*')")


def to_core_fields(cls: CapacityClassSpec, utilization: float, learned: float | None,
                   table: Mapping[str, Mapping[str, float]] | None = None,
                   fallback: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Keyword arguments for core.classes.GpuClass (kept as a dict: api sits below core)."""
    rps = cls.target_rps_per_replica if cls.target_rps_per_replica is not None else learned
    planned = rps * utilization if rps is not None and math.isfinite(rps) else 0.0
    return {"name": cls.name, "price_per_hour": replica_price(cls, table, fallback), "rps_per_replica": planned,
            "spot": cls.spot, "min": cls.min, "max": cls.max, "max_share": cls.max_share,
            "pending_timeout_s": float(cls.pending_timeout_seconds), "return_after_s": float(cls.return_after_seconds),
            "resources": dict(cls.resources)}
