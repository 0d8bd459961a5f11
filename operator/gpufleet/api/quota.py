"""The GPUQuota API (gpufleet.io/v1alpha1, cluster-scoped): a GPU quota InferenceServices share.

Modelled on Kueue's ClusterQueue (a nominal quota per resource, shared by workloads ordered by
priority; lower priorities preempted to make room) and Karpenter's NodePool `spec.limits` (a cap
on the resources a pool's nodes may hold), for long-running services: an InferenceService names
its quota and tier in `spec.quota`; each interval the operator arbitrates the services' needs
(gpufleet.core.quota) and caps each service's plan at its allocation.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from gpufleet.api.models import MAX_COST, ApiModel, Condition, StatusModel, label_map_schema

KIND = "GPUQuota"
PLURAL = "gpuquotas"
SINGULAR = "gpuquota"
SHORT_NAMES = ["gpuq"]

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Extended resource names: an optional DNS prefix and a name (nvidia.com/gpu, nvidia.com/mig-3g.40gb).
RESOURCE_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
Units = Annotated[int, Field(ge=0, le=1_000_000)]
_LIMITS_SCHEMA: dict[str, Any] = {
    "maxProperties": 16,
    "x-kubernetes-validations": [
        {"rule": f"self.all(k, size(k) <= 253 && k.matches('{RESOURCE_PATTERN}'))",
         "message": "limits keys must be resource names such as nvidia.com/gpu or nvidia.com/mig-3g.40gb"}],
}


class QuotaTier(ApiModel):
    name: str = Field(max_length=63, pattern=NAME_PATTERN)
    """Tier name that InferenceServices give in spec.quota.tier."""
    preemptible: bool = False
    """Whether this tier's services may be taken below their replicas.min when higher tiers need
    the capacity (Kueue: preemption of lower priorities). false: they are held at their floors,
    and those floors are granted even when they exceed the quota (status says so)."""


class NodePoolLimit(ApiModel):
    name: str = Field(max_length=63, pattern=NAME_PATTERN)
    """Name of this pool in status and messages."""
    node_selector: dict[str, str] = Field(min_length=1, json_schema_extra=label_map_schema("nodeSelector", 16))
    """Node labels of the pool (e.g. karpenter.sh/nodepool: h100, or nvidia.com/gpu.product:
    NVIDIA-H100-80GB-HBM3 for a quota per GPU product). A service counts against this pool's limits
    when its pods' nodeSelector (spec.template and its capacity class) carries all of them; with
    capacity.classes each class counts on its own (its nodeSelector, its product as
    nvidia.com/gpu.product), and a class whose pool is full makes the mix use another class."""
    limits: dict[str, Units] = Field(min_length=1, json_schema_extra=_LIMITS_SCHEMA)
    """Most units of each resource the services placed on this pool may hold together."""


class GPUQuotaSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "(has(self.limits) && size(self.limits) > 0) || (has(self.nodePools) && size(self.nodePools) > 0)"
                 " || has(self.maxCostPerHour)",
         "message": "a GPUQuota caps something: set limits, nodePools or maxCostPerHour"}]})
    limits: dict[str, Units] = Field(default_factory=dict, json_schema_extra=_LIMITS_SCHEMA)
    """Most units of each resource (nvidia.com/gpu, nvidia.com/mig-3g.40gb, ...) all services of
    this quota may hold together, counted from each replica's pod template limits, or with
    capacity.classes from each class's resources (Karpenter's NodePool spec.limits; Kueue's
    nominalQuota)."""
    node_pools: list[NodePoolLimit] = Field(
        default_factory=list, max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    """Limits per node pool, for services whose pods are placed on it."""
    max_cost_per_hour: float | None = Field(default=None, ge=0, le=MAX_COST)
    """Most cost per hour all services together may run at, each replica priced at its
    service's on-demand price per GPU-hour times its GPUs (an upper bound where spot is used); with
    capacity.classes each pod at its class's own price."""
    tiers: list[QuotaTier] = Field(
        min_length=1, max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    """Priority tiers, highest first. When the services' needs exceed the quota, higher tiers get
    capacity first; lower tiers are held at their floors (replicas.min) and go below them only
    if their tier is preemptible. Within a tier the capacity is split in proportion to need."""
    interval_seconds: int = Field(default=10, ge=1, le=3600)
    """How often the operator arbitrates the quota (the services' plans follow at their own ticks)."""

    @field_validator("tiers")
    @classmethod
    def _tier_names_unique(cls, value: list[QuotaTier]) -> list[QuotaTier]:
        names = [t.name for t in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tier names must be unique: {', '.join(dupes)} repeated")
        return value

    @model_validator(mode="after")
    def _caps_something(self) -> GPUQuotaSpec:
        # The CRD's CEL rule refuses it at admission; an object stored before it is refused here.
        if not self.limits and not self.node_pools and self.max_cost_per_hour is None:
            raise ValueError("a GPUQuota caps something: set limits, nodePools or maxCostPerHour")
        return self

    def tier_index(self, name: str) -> int | None:
        return next((i for i, t in enumerate(self.tiers) if t.name == name), None)


class QuotaServiceStatus(StatusModel):
    namespace: str
    name: str
    tier: str
    desired: int = 0
    """Replicas the service's own plan wants."""
    floor: int = 0
    allocated: int = 0
    """Replicas the arbitration grants it."""
    running: int = 0
    """Healthy replicas it runs now."""
    reason: str = ""
    """WithinQuota, QuotaLimited, HeldAtFloor, Preempted or FloorOverQuota."""
    message: str = ""


class QuotaTierStatus(StatusModel):
    name: str
    desired: dict[str, float] = Field(default_factory=dict)
    """Units of each capped resource the tier's services want."""
    allocated: dict[str, float] = Field(default_factory=dict)
    used: dict[str, float] = Field(default_factory=dict)
    """Units held by the tier's running replicas."""
    services: int = 0


class GPUQuotaStatus(StatusModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    limits: dict[str, float] = Field(default_factory=dict)
    """The caps, per dimension (resource, pool/resource, costPerHour)."""
    allocated: dict[str, float] = Field(default_factory=dict)
    used: dict[str, float] = Field(default_factory=dict)
    tiers: list[QuotaTierStatus] = Field(default_factory=list)
    services: list[QuotaServiceStatus] = Field(default_factory=list)
    last_arbitration: str | None = None
