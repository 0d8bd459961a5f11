"""Capacity classes as a list (issue 18): the API shape, and how the onDemand/spot form maps onto it.

NOT IN THE CRD YET. The operator's children (one Deployment per class, `<svc>-<class>`), its
status per class and its price-table lookup still know exactly two classes (adapters.kubefleet,
adapters.manifests, control.pricing), so publishing `spec.capacity.classes` now would publish a
field the operator ignores. The model lives here, validated and documented as it will be served,
and the simulator (sim/gputypes.py) runs the decision core (core.classes) from it. Wiring it in is
the remaining step: add `classes: list[CapacityClassSpec]` to api.models.Capacity (with the CEL
rules below on the list), `make crds`, and have the fleet adapters render one Deployment per
class.

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

from pydantic import ConfigDict, Field, field_validator, model_validator

from gpufleet.api.models import (
    LABEL_KEY_PATTERN,
    SCHEDULE_NAME_PATTERN,
    ApiModel,
    ClassPlacement,
    InferenceServiceSpec,
)

GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"

CLASSES_RULES: list[Any] = [
    {"rule": "self.exists(c, !has(c.spot) || !c.spot)",
     "message": "capacity.classes needs at least one class that is not spot (spot can be taken away all at once)"},
    {"rule": "self.all(c, has(c.pricePerReplicaHour) || has(c.product))",
     "message": "each capacity class needs pricePerReplicaHour or a product to look up in the operator's price table"},
]
"""CEL rules on the list (uniqueness of names: x-kubernetes-list-type map keyed by name)."""


class CapacityClassSpec(ClassPlacement):
    """One capacity class: where a replica runs, what it asks for, what it costs and serves."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
                 "message": "a class's min must be <= its max", "fieldPath": ".min"},
            ]
        }
    )
    name: str = Field(min_length=1, max_length=40, pattern=SCHEDULE_NAME_PATTERN)
    """Class name (a DNS label, unique in the list): its Deployment is `<service>-<name>`."""
    resources: dict[str, int] = Field(
        default_factory=lambda: {GPU: 1},
        min_length=1,
        max_length=8,
        json_schema_extra={
            "default": {GPU: 1},  # the server fills it in, as the model does
            "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 64},
            "x-kubernetes-validations": [
                {"rule": f"self.all(k, size(k) <= 317 && k.matches('{LABEL_KEY_PATTERN}'))",
                 "message": "resource names must be qualified names (e.g. nvidia.com/gpu, nvidia.com/mig-3g.40gb)"},
            ],
        },
    )
    """Extended resources one replica asks for, set as the pod's limits: `nvidia.com/gpu: 1`,
    `nvidia.com/gpu: 8`, or a MIG slice such as `nvidia.com/mig-3g.40gb: 1`."""
    spot: bool = False
    """Whether this class runs on spot (interruptible) capacity."""
    price_per_replica_hour: float | None = Field(default=None, ge=0, le=1e6)
    """Price of one replica for one hour (all its GPUs, or its slice). Unset: the operator's price
    table for `product` (per GPU, times the GPUs the resources ask for; a MIG slice is priced as
    its share of the GPU, see sliceOfGpu)."""
    product: str | None = Field(default=None, max_length=63)
    """GPU product (the node label nvidia.com/gpu.product, e.g. NVIDIA-L4) to price from the
    operator's price table, and whose absence from the cluster marks the class unavailable."""
    slice_of_gpu: float = Field(default=1.0, gt=0, le=1)
    """Share of one GPU a replica's resources hold, for pricing from the table: 1 for whole GPUs,
    0.5 for nvidia.com/mig-3g.40gb on an H100 80GB (two such slices per GPU)."""
    target_rps_per_replica: float | None = Field(default=None, ge=0.001, le=1e6)
    """Requests/s one replica of this class serves within the SLO; learned per class from the
    observed rate per ready replica when unset (reported in status)."""
    min: int = Field(default=0, ge=0, le=10000)
    """Fewest replicas of this class whatever the mix (while the class can be had)."""
    max: int = Field(default=10000, ge=0, le=10000)
    """Most replicas of this class."""
    max_share: float = Field(default=1.0, gt=0, le=1)
    """Largest share of the fleet's planned capacity (requests/s) on this class."""
    pending_timeout_seconds: int = Field(default=120, ge=10, le=3600)
    """A pod of this class Pending longer than this marks the class unavailable: new capacity goes
    to the next-cheapest class."""
    return_after_seconds: int = Field(default=600, ge=0, le=86400)
    """After the class was found unavailable, wait this long before using it again; doubles after
    each outage that follows a return within the hour (up to 8x)."""

    @model_validator(mode="after")
    def _priced_and_bounded(self) -> CapacityClassSpec:
        if self.price_per_replica_hour is None and self.product is None:
            raise ValueError(f"class {self.name!r} needs pricePerReplicaHour or product")
        if self.min > self.max:
            raise ValueError(f"class {self.name!r}: min {self.min} > max {self.max}")
        return self

    def gpus(self) -> float:
        """GPUs (or GPU share) one replica holds, for metering and the price table."""
        whole = sum(v for k, v in self.resources.items() if k == GPU)
        sliced = sum(v for k, v in self.resources.items() if k.startswith(MIG_PREFIX))
        return float(whole) + float(sliced) * self.slice_of_gpu


class CapacityClasses(ApiModel):
    """`spec.capacity.classes` as it will be served (see the module's note: not in the CRD yet)."""

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
        names = [c.name for c in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"capacity class names must be unique: {', '.join(dupes)} repeated")
        if all(c.spot for c in value):
            raise ValueError("capacity.classes needs at least one class that is not spot")
        return value


def classes_of(spec: InferenceServiceSpec) -> list[CapacityClassSpec]:
    """The onDemand/spot form as classes (the table in the module docstring)."""
    cap = spec.capacity
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


def replica_price(cls: CapacityClassSpec, table: Mapping[str, Mapping[str, float]] | None = None) -> float:
    """Price of one replica-hour: the class's own, else the table's per-GPU price for its product
    and capacity type (`*` the fallback) times the GPUs it holds. Raises naming the class if none."""
    if cls.price_per_replica_hour is not None:
        return cls.price_per_replica_hour
    kind = "spot" if cls.spot else "on-demand"
    for key in (cls.product, "*"):
        row = (table or {}).get(key or "")
        if row is not None and kind in row:
            return float(row[kind]) * cls.gpus()
    raise ValueError(f"capacity class {cls.name!r}: no price (no pricePerReplicaHour, and the price table "
                     f"has no {kind} price for product {cls.product!r} or '*')")


def to_core_fields(cls: CapacityClassSpec, utilization: float, learned: float | None,
                   table: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, Any]:
    """Keyword arguments for core.classes.GpuClass (kept as a dict: api sits below core)."""
    rps = cls.target_rps_per_replica if cls.target_rps_per_replica is not None else learned
    planned = rps * utilization if rps is not None and math.isfinite(rps) else 0.0
    return {"name": cls.name, "price_per_hour": replica_price(cls, table), "rps_per_replica": planned,
            "spot": cls.spot, "min": cls.min, "max": cls.max, "max_share": cls.max_share,
            "pending_timeout_s": float(cls.pending_timeout_seconds), "return_after_s": float(cls.return_after_seconds),
            "resources": dict(cls.resources)}
