"""The InferenceService API (gpufleet.io/v1alpha1) as pydantic models.

These models are the source of truth: crds/ is generated from them (see gpufleet.api.crd), and
the operator parses every object it reads through them. Field docstrings become `kubectl explain`
text, so they are written for the platform engineer reading them.
"""

from __future__ import annotations

import zoneinfo
from enum import Enum
from functools import lru_cache
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "gpufleet.io"
VERSION = "v1alpha1"
KIND = "InferenceService"
PLURAL = "inferenceservices"
SINGULAR = "inferenceservice"
SHORT_NAMES = ["gfis", "gfisvc"]  # not "isvc": KServe uses it

DURATION_PATTERN = r"^[0-9]{1,8}(s|m|h|d)$"
# Label syntax, as the API server checks it on the pods and Deployments gpufleet renders (a
# nodeSelector or template label it would refuse is refused at admission instead). Keys: an
# optional DNS-subdomain prefix and a name of at most 63 characters; values: at most 63.
# No backslash: the pattern sits in a CEL string literal, where `\.` is not an escape.
LABEL_KEY_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"


def label_map_schema(what: str, most: int, rules: tuple[dict[str, str], ...] = ()) -> dict[str, Any]:
    """A map of labels: keys checked by CEL (a schema cannot constrain keys), values by pattern."""
    return {
        "type": "object",
        "maxProperties": most,
        "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN},
        "x-kubernetes-validations": [
            {"rule": f"self.all(k, size(k) <= 317 && k.matches('{LABEL_KEY_PATTERN}'))",
             "message": f"{what} keys must be label keys ([prefix/]name, name at most 63 characters)"},
            *rules,
        ],
    }
# Ceilings on the spec's numbers, far above any real fleet, so that nothing derived from them (a
# cost, a rate, a time) can overflow to Infinity, which JSON cannot carry and the API server refuses.
MAX_MS = 86_400_000  # a day, in milliseconds
MAX_PRICE = 1e6  # per GPU-hour
MAX_COST = 1e9  # per hour
# Floors likewise: a per-replica rate of 1e-300 times a utilisation of 1e-5 is 0.0 in floating
# point, and the load divided by it a ZeroDivisionError (found by the spec fuzzer).


class ApiModel(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )


class Backend(str, Enum):
    triton = "triton"
    tensorrtllm = "tensorrtllm"


class Mode(str, Enum):
    active = "active"
    recommend = "recommend"


class CapacityClass(str, Enum):
    on_demand = "on-demand"
    spot = "spot"


class ModelRef(ApiModel):
    name: str = Field(min_length=1, max_length=253)
    """Model name as Triton knows it (the `model` label of nv_inference_* metrics)."""
    backend: Backend = Backend.triton
    """Serving backend: `triton` (any Triton backend) or `tensorrtllm` (adds TensorRT-LLM metrics)."""


class Replicas(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!has(self.min) || !has(self.max) || self.min <= self.max", "message": "replicas.min must be <= replicas.max",
                 "fieldPath": ".min"}
            ]
        }
    )
    min: int = Field(default=1, ge=0, le=10000)
    """Fewest serving replicas, whatever the load (0 allows scale to zero)."""
    max: int = Field(default=8, ge=1, le=10000)
    """Most replicas (serving + standby + starting) the service may ever run."""


class Slo(ApiModel):
    ttft_p95_ms: int | None = Field(default=None, ge=1, le=MAX_MS)
    """Target p95 time to first token (LLM) or first response, in milliseconds: a quantile of
    Triton's first-response histogram (decoupled models, --metrics-config histogram_latencies=true)
    or TensorRT-LLM's trtllm_time_to_first_token_seconds histogram (docs/metrics.md)."""
    latency_p95_ms: int | None = Field(default=None, ge=1, le=MAX_MS)
    """Target p95 end-to-end request latency, in milliseconds: a true 95th percentile, from
    TensorRT-LLM's trtllm_e2e_request_latency_seconds histogram or Triton's request summary
    (--metrics-config summary_latencies=true; the slowest pod's p95). A server that exports
    neither gives no p95: the signal is missing (no scale-down) and status says so; use
    latencyMeanMs for Triton's default counters. (Earlier versions read the mean here: a spec
    that meant the mean sets latencyMeanMs.)"""
    latency_mean_ms: int | None = Field(default=None, ge=1, le=MAX_MS)
    """Target mean end-to-end request latency, in milliseconds, from Triton's cumulative
    duration counters (always exported): rate(nv_inference_request_duration_us) per request."""
    itl_p95_ms: int | None = Field(default=None, ge=1, le=MAX_MS)
    """Target p95 inter-token latency (time per output token), in milliseconds, from TensorRT-LLM's
    trtllm_time_per_output_token_seconds histogram."""
    kv_cache_utilization: float = Field(default=0.85, ge=0.05, le=1.0)
    """TensorRT-LLM only: the fraction of KV-cache blocks in use (averaged over serving pods,
    nv_trt_llm_kv_cache_block_metrics fraction) above which replicas are added in proportion,
    before the cache runs out and requests wait or are evicted. 1.0 turns it off."""
    gpu_utilization_percent: int | None = Field(default=None, ge=1, le=100)
    """Optional: target mean GPU utilisation of the serving pods, in percent, from the DCGM
    exporter's DCGM_FI_DEV_GPU_UTIL (by pod label). Unset (default): not read."""
    queue_depth_per_replica: float = Field(default=8.0, ge=0.01, le=1e6)
    """Target pending requests per serving replica (Triton's nv_inference_pending_request_count)."""
    queue_time_ms: int | None = Field(default=None, ge=1, le=MAX_MS)
    """Target mean time a request waits in Triton's queue, in milliseconds."""


class ScaleUp(ApiModel):
    stabilization_seconds: int = Field(default=0, ge=0, le=3600)
    """How long a higher recommendation must persist before scaling up (0: at once)."""
    max_step_percent: int = Field(default=100, ge=1, le=1000)
    """Most replicas added per step, as a percent of current replicas."""
    max_step_replicas: int = Field(default=4, ge=1, le=1000)
    """Most replicas added per step in absolute terms; the larger of the two limits applies."""


class ScaleDown(ApiModel):
    stabilization_seconds: int = Field(default=300, ge=0, le=86400)
    """Scale down only to the highest recommendation seen over this window."""
    max_step_percent: int = Field(default=20, ge=1, le=100)
    """Most replicas removed per step, as a percent of current replicas (at least one)."""
    drain_timeout_seconds: int = Field(default=120, ge=0, le=3600)
    """A serving replica chosen for removal leaves the Service first and is deleted once it reads
    idle, or after this many seconds. Plain Triton exposes no gauge of executing requests: idle means
    nothing queued and no execution finished in the last 30 s (TensorRT-LLM: no active or waiting
    request); a request still executing at deletion finishes within Triton's exit timeout, which the
    pod's grace period outlasts (docs/draining.md)."""


class Scaling(ApiModel):
    interval_seconds: int = Field(default=10, ge=1, le=3600)
    """How often the operator observes and decides for this service."""
    target_rps_per_replica: float | None = Field(default=None, ge=0.001, le=1e6)
    """Requests per second one replica serves within the SLO; learned from metrics when unset."""
    target_utilization: float = Field(default=1.0, ge=0.01, le=1)
    """Share of that per-replica figure to plan for: headroom for bursts shorter than the metrics
    window (a load test at steady Poisson load overstates what a replica sustains under bursty
    arrivals). Knative's equivalent defaults to 0.7; 0.8-0.9 suits most LLM traffic."""
    scale_up: ScaleUp = Field(default_factory=ScaleUp)
    """Scale-up behaviour: fast, bounded steps."""
    scale_down: ScaleDown = Field(default_factory=ScaleDown)
    """Scale-down behaviour: slow, stabilised steps."""


class ForecastMethod(str, Enum):
    auto = "auto"
    seasonal_naive = "seasonal-naive"
    holt_winters = "holt-winters"
    none = "none"


class Forecast(ApiModel):
    enabled: bool = True
    """Provision for forecast load over the time-to-ready horizon, not only current load."""
    method: ForecastMethod = ForecastMethod.auto
    """`auto` picks the method with the best rolling-origin backtest."""
    seasonality: list[str] = Field(
        default_factory=lambda: ["1d", "7d"],
        max_length=4,
        json_schema_extra={"items": {"type": "string", "pattern": DURATION_PATTERN}},
    )
    """Season lengths to model (e.g. 1d, 7d); a season is used once history covers two of it."""
    quantile: float = Field(default=0.9, ge=0.5, le=0.999)
    """Provision for this quantile of forecast load."""


class WarmPool(ApiModel):
    size: Annotated[int, Field(ge=0, le=1000)] | Literal["auto"] = Field(
        default=0,
        json_schema_extra={
            "x-kubernetes-int-or-string": True,
            "x-kubernetes-validations": [
                {"rule": "type(self) == int ? self >= 0 : self == 'auto'",
                 "message": "warmPool.size must be a non-negative integer or 'auto'"}
            ],
        },
    )
    """Ready standby replicas kept out of rotation: an integer, or `auto` to size from forecast uncertainty."""
    max: int = Field(default=4, ge=0, le=1000)
    """Most standbys when size is `auto`."""


# core/v1 Toleration, as the API server checks it on the Deployments gpufleet renders: a toleration
# it would refuse there ({} has no key and operator Equal) is refused at admission instead.
_TOLERATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "key": {"type": "string", "maxLength": 317},
        "operator": {"type": "string", "enum": ["Exists", "Equal"]},
        "value": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN},
        "effect": {"type": "string", "enum": ["", "NoSchedule", "PreferNoSchedule", "NoExecute"]},
        "tolerationSeconds": {"type": "integer"},
    },
    "x-kubernetes-validations": [
        {"rule": "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
         "message": "a toleration without a key must have operator Exists"},
        {"rule": "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
         "message": "a toleration with operator Exists has no value"},
        {"rule": "!has(self.key) || self.key == '' || "
                 f"(size(self.key) <= 317 && self.key.matches('{LABEL_KEY_PATTERN}'))",
         "message": "a toleration's key must be a label key"},
        {"rule": "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
         "message": "tolerationSeconds needs effect NoExecute"},
    ],
}


class ClassPlacement(ApiModel):
    node_selector: dict[str, str] = Field(default_factory=dict,
                                          json_schema_extra=label_map_schema("nodeSelector", 32))
    """Node labels pods of this capacity class must match."""
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={"items": _TOLERATION_SCHEMA},
    )
    """Tolerations added to pods of this capacity class (core/v1 Toleration objects)."""


class OnDemand(ClassPlacement):
    base: int = Field(default=1, ge=0, le=10000)
    """Replicas that always run on on-demand capacity, never on spot."""


class Spot(ClassPlacement):
    enabled: bool = False
    """Run part of the fleet on spot capacity."""
    max_fraction: float = Field(default=0.7, ge=0.0, le=1.0)
    """Largest share of replicas on spot."""
    pending_timeout_seconds: int = Field(default=120, ge=10, le=3600)
    """A spot pod Pending longer than this marks spot capacity unavailable."""
    return_after_seconds: int = Field(default=600, ge=0, le=86400)
    """After spot was found unavailable, stay on on-demand this long before trying spot again; the wait doubles after each failed return (up to 8x) and resets after an hour without an outage."""


class Prices(ApiModel):
    on_demand: float = Field(default=4.10, ge=0, le=MAX_PRICE)
    """Price of one on-demand GPU hour."""
    spot: float = Field(default=1.30, ge=0, le=MAX_PRICE)
    """Price of one spot GPU hour."""


GPU_RESOURCE = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
CLASS_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

CLASSES_RULES: list[Any] = [
    {"rule": "self.exists(c, !has(c.spot) || !c.spot)",
     "message": "capacity.classes needs at least one class that is not spot (spot can be taken away all at once)"},
    {"rule": "self.all(c, has(c.pricePerReplicaHour) || has(c.product))",
     "message": "each capacity class needs pricePerReplicaHour or a product to look up in the operator's price table"},
]
"""CEL rules on the class list (uniqueness of names: x-kubernetes-list-type map keyed by name)."""


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
    name: str = Field(min_length=1, max_length=40, pattern=CLASS_NAME_PATTERN)
    """Class name (a DNS label, unique in the list): its Deployment is `<service>-<name>` and its
    pods carry the label gpufleet.io/capacity-class=<name>."""
    resources: dict[str, int] = Field(
        default_factory=lambda: {GPU_RESOURCE: 1},
        min_length=1,
        max_length=8,
        json_schema_extra={
            "default": {GPU_RESOURCE: 1},  # the server fills it in, as the model does
            "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 64},
            "x-kubernetes-validations": [
                {"rule": f"self.all(k, size(k) <= 317 && k.matches('{LABEL_KEY_PATTERN}'))",
                 "message": "resource names must be qualified names (e.g. nvidia.com/gpu, nvidia.com/mig-3g.40gb)"},
            ],
        },
    )
    """Extended resources one replica asks for, set as the Triton container's limits (replacing
    any nvidia.com/gpu or nvidia.com/mig-* of the template): `nvidia.com/gpu: 1`,
    `nvidia.com/gpu: 8`, or a MIG slice such as `nvidia.com/mig-3g.40gb: 1`."""
    spot: bool = False
    """Whether this class runs on spot (interruptible) capacity."""
    price_per_replica_hour: float | None = Field(default=None, ge=0, le=1e6)
    """Price of one replica for one hour (all its GPUs, or its slice). Unset: the operator's price
    table for `product` (per GPU, times the GPUs the resources ask for; a MIG slice is priced as
    its share of the GPU, see sliceOfGpu), else capacity.pricePerGpuHour times those GPUs."""
    product: str | None = Field(default=None, max_length=63)
    """GPU product (the node label nvidia.com/gpu.product, e.g. NVIDIA-L4) to price from the
    operator's price table."""
    slice_of_gpu: float = Field(default=1.0, gt=0, le=1)
    """Share of one GPU a replica's MIG resources hold, for pricing and GPU-hours: 1 for whole
    GPUs, 0.5 for nvidia.com/mig-3g.40gb on an H100 80GB (two such slices per GPU)."""
    target_rps_per_replica: float | None = Field(default=None, ge=0.001, le=1e6)
    """Requests/s one replica of this class serves within the SLO. Unset: the rate learned for
    this class (status.replicas.classes[].learnedRpsPerReplica), until then the service's
    scaling.targetRpsPerReplica (or the rate it learned)."""
    min: int = Field(default=0, ge=0, le=10000)
    """Fewest replicas of this class whatever the mix (while the class can be had)."""
    max: int = Field(default=10000, ge=0, le=10000)
    """Most replicas of this class."""
    max_share: float = Field(default=1.0, gt=0, le=1)
    """Largest share of the fleet's planned capacity (requests/s) on this class."""
    pending_timeout_seconds: int = Field(default=120, ge=10, le=3600)
    """A pod of this class Pending longer than this marks the class unavailable (stocked out):
    new capacity goes to the next-cheapest class."""
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
        whole = sum(v for k, v in self.resources.items() if k == GPU_RESOURCE)
        sliced = sum(v for k, v in self.resources.items() if k.startswith(MIG_PREFIX))
        return float(whole) + float(sliced) * self.slice_of_gpu


def check_class_list(value: list[CapacityClassSpec]) -> list[CapacityClassSpec]:
    """What CLASSES_RULES and the list-map keys refuse, as a pydantic error naming the field."""
    names = [c.name for c in value]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"capacity class names must be unique: {', '.join(dupes)} repeated")
    if all(c.spot for c in value):
        raise ValueError("capacity.classes needs at least one class that is not spot")
    return value


_CLASS_LIST_SCHEMA: dict[str, Any] = {
    "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
    "x-kubernetes-validations": CLASSES_RULES,
}

_CLASSES_VS_LEGACY = "capacity.classes replaces the onDemand/spot placement: "


class Capacity(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!has(self.classes) || !has(self.spot) || !has(self.spot.enabled) || !self.spot.enabled",
                 "message": _CLASSES_VS_LEGACY + "set spot.enabled false (or leave spot out) and list a class "
                            "with spot: true instead", "fieldPath": ".classes"},
                {"rule": "!has(self.classes) || !has(self.onDemand) || ((!has(self.onDemand.nodeSelector)"
                         " || size(self.onDemand.nodeSelector) == 0) && (!has(self.onDemand.tolerations)"
                         " || size(self.onDemand.tolerations) == 0))",
                 "message": _CLASSES_VS_LEGACY + "put nodeSelector and tolerations on each class, not on onDemand",
                 "fieldPath": ".classes"},
            ]
        }
    )
    gpus_per_replica: int = Field(default=1, ge=0, le=64)
    """GPUs one replica uses (for cost); the pod template's nvidia.com/gpu limit should match.
    Ignored with classes (each class's resources say it)."""
    on_demand: OnDemand = Field(default_factory=OnDemand)
    """On-demand placement and base (the two-class form; with classes use each class's min)."""
    spot: Spot = Field(default_factory=Spot)
    """Spot placement and share (the two-class form; with classes list a class with spot: true)."""
    price_per_gpu_hour: Prices = Field(default_factory=Prices)
    """Prices used for cost reporting and the spot/on-demand split; with classes, the fallback
    price of a class that has no pricePerReplicaHour and no price-table entry."""
    classes: list[CapacityClassSpec] | None = Field(default=None, min_length=1, max_length=16,
                                                     json_schema_extra=_CLASS_LIST_SCHEMA)
    """Capacity classes (GPU types, MIG slices, spot or not): one Deployment each,
    `<service>-<name>`; every interval the operator runs the cheapest mix whose capacity meets the
    load, and moves new capacity to the next-cheapest class when one stocks out (pods Pending
    past its pendingTimeoutSeconds, interruption notices). Unset: the onDemand/spot form, which
    means the two classes on-demand and spot."""

    @field_validator("classes")
    @classmethod
    def _valid_classes(cls, value: list[CapacityClassSpec] | None) -> list[CapacityClassSpec] | None:
        return None if value is None else check_class_list(value)

    @model_validator(mode="after")
    def _classes_alone(self) -> Capacity:
        if self.classes is not None:
            if self.spot.enabled:
                raise ValueError(_CLASSES_VS_LEGACY + "spot.enabled must be false with classes")
            if self.on_demand.node_selector or self.on_demand.tolerations:
                raise ValueError(_CLASSES_VS_LEGACY + "onDemand.nodeSelector/tolerations must be empty with classes")
        return self

    def class_names(self) -> tuple[str, ...]:
        """The classes' names (their Deployments' suffixes): the two legacy ones without a list."""
        return tuple(c.name for c in self.classes) if self.classes is not None else ("on-demand", "spot")



class Budget(ApiModel):
    """Spend limits in the unit of the prices (capacity.pricePerGpuHour or the operator's price table;
    with capacity.classes each class's pods at that class's own price)."""

    max_cost_per_hour: float | None = Field(default=None, gt=0, le=MAX_COST)
    """Most the fleet may cost per hour. Above it the operator caps non-essential capacity:
    standbys first, then spot instead of on-demand, then serving replicas, never below replicas.min.
    With capacity.classes the cost is the mix's (replicas x each class's price) and the cut is
    standbys, then serving capacity."""
    max_cost_per_day: float | None = Field(default=None, gt=0, le=24 * MAX_COST)
    """Most the fleet may cost per UTC day. The day's remainder is paced over its remaining hours:
    what is left divided by the hours left is the highest cost per hour allowed now."""
    alert_percent: int = Field(default=80, ge=1, le=100)
    """Warn (condition, Event, metric) when the planned spend reaches this percent of a limit."""


class Queries(ApiModel):
    queue_depth: str | None = None
    """PromQL for pending requests per pod; must return one series per pod with a `pod` label."""
    queue_time_ms: str | None = None
    """PromQL for mean queue time in ms."""
    ttft_p95_ms: str | None = None
    """PromQL for p95 time to first token in ms."""
    latency_p95_ms: str | None = None
    """PromQL for p95 request latency in ms."""
    latency_mean_ms: str | None = None
    """PromQL for mean request latency in ms."""
    itl_p95_ms: str | None = None
    """PromQL for p95 inter-token latency in ms."""
    kv_cache_utilization: str | None = None
    """PromQL for the fraction (0-1) of KV-cache blocks in use."""
    gpu_utilization: str | None = None
    """PromQL for the mean GPU utilisation of the service's pods, in percent."""
    request_rate: str | None = None
    """PromQL for requests per second across the service."""


class Metrics(ApiModel):
    prometheus_url: str | None = None
    """Prometheus base URL; defaults to the operator's --prometheus-url."""
    queries: Queries = Field(default_factory=Queries)
    """Overrides of the built-in Triton / TensorRT-LLM queries; `$namespace` and `$service` are substituted."""
    stale_after_seconds: int = Field(default=60, ge=5, le=3600)
    """Samples older than this count as missing (safe mode: no scale-down)."""


# A Deployment name: a DNS subdomain (RFC 1123), as the API server checks it.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class TargetRef(ApiModel):
    """An existing workload gpufleet watches in shadow mode (mode: recommend), without changing it."""

    api_version: Literal["apps/v1"] = "apps/v1"
    """API version of the target (apps/v1)."""
    kind: Literal["Deployment"] = "Deployment"
    """Kind of the target: a Deployment (one an HPA scales, or a KServe predictor's)."""
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """Name of the Deployment, in the InferenceService's namespace."""


# ---------------------------------------------------------------------------------------------
# Planned events. Cron expressions and time zones are checked here (croniter, zoneinfo) so the
# operator reports a bad one as InvalidSpec naming the field; the CRD's patterns and CEL rules
# catch the obvious mistakes at admission. Occurrences are resolved outside the pure core (in
# gpufleet.control.schedule), because that needs the calendar (datetime, time zones).

SCHEDULE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Five whitespace-separated fields (minute hour day-of-month month day-of-week); croniter checks
# the values. Six-field (seconds) and @-macros are refused: windows are minutes apart at best.
CRON_PATTERN = r"^\s*\S+(\s+\S+){4}\s*$"
# RFC 3339 date-time; without an offset the time is read in the schedule's timeZone.
START_PATTERN = (
    r"^(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]"
    r"(:[0-5][0-9](\.[0-9]+)?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?$"
)
POSITIVE_DURATION_PATTERN = r"^0*[1-9][0-9]{0,7}(s|m|h|d)$"
# A window lasts at most a leap year: from the latest start the schema admits (2999) its end stays
# within the calendar (Python's datetime ends at 9999, and a window's end is rendered as a date).
MAX_WINDOW_S = 366 * 86400
# The same bound at admission. The pattern keeps the number to 8 digits, so the product fits CEL's int.
_DURATION_CEL = ("int(self.substring(0, self.size() - 1)) * {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}"
                 f"[self.substring(self.size() - 1)] <= {MAX_WINDOW_S}")
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Occurrences of one cron schedule sampled to check that a window ends before the next opens.
_CRON_GAP_SAMPLES = 400


def duration_seconds(text: str) -> int:
    """'90s', '15m', '2h', '1d' -> seconds (the CRD pattern guarantees the shape).

    Defined here, not in gpufleet.api.timefmt (which re-exports it): the decision core imports
    this module and may not reach `datetime`."""
    return int(text[:-1]) * _UNIT_SECONDS[text[-1]]


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


@lru_cache(maxsize=256)  # parse_spec runs every interval: sample each expression once
def _min_cron_gap_s(expr: str) -> float:
    """Shortest time between consecutive occurrences, sampled in UTC from a fixed origin (so
    validation is deterministic; a DST shift can shorten a local-time gap by an hour more)."""
    it = croniter(expr, 0.0)
    prev = it.get_next(float)
    gap = float("inf")
    for _ in range(_CRON_GAP_SAMPLES):
        nxt = it.get_next(float)
        gap = min(gap, nxt - prev)
        prev = nxt
    return gap


class Schedule(ApiModel):
    """A planned event: a window (one-off `start`, or recurring `cron`) during which the fleet
    keeps a higher floor and/or provisions for a multiple of its usual load."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "has(self.cron) != has(self.start)",
                 "message": "a schedule needs exactly one of cron (recurring) or start (one-off)"},
                {"rule": "has(self.minReplicas) || has(self.loadMultiplier)",
                 "message": "a schedule needs minReplicas and/or loadMultiplier"},
            ]
        }
    )
    name: str = Field(min_length=1, max_length=63, pattern=SCHEDULE_NAME_PATTERN)
    """Unique name of the window (DNS label); it appears in decision reasons and Events."""
    cron: str | None = Field(default=None, max_length=200, pattern=CRON_PATTERN)
    """Recurring windows: a 5-field cron expression (minute hour day-of-month month day-of-week) in
    timeZone, each match opening a window, e.g. `0 9 * * 1-5`. Exactly one of cron and start."""
    start: str | None = Field(default=None, max_length=64, pattern=START_PATTERN)
    """A one-off window opening at this RFC 3339 time, e.g. `2026-12-01T14:00:00Z`; without an
    offset it is read in timeZone. Exactly one of cron and start."""
    duration: str = Field(
        pattern=POSITIVE_DURATION_PATTERN, max_length=16,
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": _DURATION_CEL, "message": "duration must be at most 366d"}]},
    )
    """How long each window stays open: a positive number with s, m, h or d (e.g. 90m, 2h), at
    most 366d."""
    time_zone: str = Field(default="UTC", max_length=64, pattern=TIME_ZONE_PATTERN)
    """IANA time zone the cron expression (and an offset-less start) is read in, e.g.
    Europe/Berlin; daylight saving time is followed."""
    min_replicas: int | None = Field(default=None, ge=0, le=10000)
    """Fewest serving replicas while the window is open (raises replicas.min, never lowers it)."""
    load_multiplier: float | None = Field(default=None, ge=1.0, le=100.0)
    """Provision for this multiple of the load seen just before the window (its lead), e.g. 3 for
    a launch expected to triple traffic; demand above it is followed as usual."""
    lead_seconds: int | None = Field(default=None, ge=0, le=86400)
    """Start provisioning this long before the window opens. Default: the measured time-to-ready
    plus two scaling intervals (decision timing and the Deployment's own reaction), so the
    capacity is Ready when the window opens."""

    @field_validator("cron")
    @classmethod
    def _cron_valid(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if len(value.split()) != 5:
            raise ValueError("cron must have 5 fields: minute hour day-of-month month day-of-week")
        if not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r}")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone_known(cls, value: str) -> str:
        # The tz database is files: "America" is a directory (IsADirectoryError), "zone.tab" is
        # not a zone (ValueError); no CEL rule can tell, so every failure is an unknown zone here.
        try:
            zoneinfo.ZoneInfo(value)
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError, UnicodeDecodeError, ...
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("duration")
    @classmethod
    def _duration_bounded(cls, value: str) -> str:
        if duration_seconds(value) > MAX_WINDOW_S:
            raise ValueError(f"duration {value} is longer than 366d")
        return value

    @field_validator("start")
    @classmethod
    def _start_date_exists(cls, value: str | None) -> str | None:
        if value is None:
            return value
        year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
        if not 1970 <= year <= 2999:
            raise ValueError(f"year {year} is outside 1970-2999")
        if day > _days_in_month(year, month):
            raise ValueError(f"{value[:10]} is not a calendar date")
        return value

    @model_validator(mode="after")
    def _one_window_kind(self) -> Schedule:
        if (self.cron is None) == (self.start is None):
            raise ValueError("a schedule needs exactly one of cron (recurring) or start (one-off)")
        if self.min_replicas is None and self.load_multiplier is None:
            raise ValueError("a schedule needs minReplicas and/or loadMultiplier")
        if self.cron is not None:
            gap = _min_cron_gap_s(self.cron)
            if duration_seconds(self.duration) > gap:
                raise ValueError(
                    f"duration {self.duration} is longer than the {gap:g}s between occurrences of cron "
                    f"{self.cron!r}: windows of schedule {self.name!r} would overlap"
                )
        return self


# Labels and annotations the operator sets on the fleet's pods (gpufleet.adapters.manifests): the
# serving label decides who is in the Service, the deletion cost which pod a shrink removes. A pod
# template that set them would start pods in the Service, or pick scale-in victims. Reserved: every
# key under gpufleet.io/ (kwok.gpufleet.io/ and other subdomains are not) and the deletion cost.
RESERVED_PREFIX = "gpufleet.io/"
RESERVED_KEYS = ("controller.kubernetes.io/pod-deletion-cost",)
_RESERVED_CEL = (f"self.all(k, !k.startsWith('{RESERVED_PREFIX}')"
                 + "".join(f" && k != '{k}'" for k in RESERVED_KEYS) + ")")


def _reserved_map(what: str, most: int) -> dict[str, Any]:
    reserved = {
        "rule": _RESERVED_CEL,
        "message": f"{what} under {RESERVED_PREFIX} and {', '.join(RESERVED_KEYS)} are set by the gpufleet "
                   "operator and may not be set in the pod template",
    }
    if what == "labels":
        return label_map_schema("labels", most, (reserved,))
    return {
        "type": "object",
        "maxProperties": most,
        "additionalProperties": {"type": "string"},
        "x-kubernetes-validations": [
            {"rule": f"self.all(k, size(k) <= 317 && k.matches('{LABEL_KEY_PATTERN}'))",
             "message": "annotation keys must be qualified names ([prefix/]name, name at most 63 characters)"},
            reserved,
        ],
    }


def reserved_keys(template: Mapping[str, Any]) -> list[str]:
    """The template's labels and annotations that gpufleet reserves, as 'labels[gpufleet.io/serving]'."""
    meta = template.get("metadata") or {}
    out = []
    for what in ("labels", "annotations"):
        keys = meta.get(what) or {} if isinstance(meta, Mapping) else {}
        out += [f"{what}[{k}]" for k in keys if str(k).startswith(RESERVED_PREFIX) or k in RESERVED_KEYS]
    return out


_TEMPLATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "metadata": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"labels": _reserved_map("labels", 64), "annotations": _reserved_map("annotations", 256)},
        },
        "spec": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "required": ["containers"],
            "properties": {
                "containers": {
                    "type": "array",
                    "minItems": 1,
                    # A map keyed by name: the API server refuses a duplicate name at admission
                    # ("Duplicate value", naming the entry) instead of refusing every Deployment.
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {
                        "type": "object",
                        "required": ["name", "image"],
                        "x-kubernetes-preserve-unknown-fields": True,
                        "properties": {"name": {"type": "string"}, "image": {"type": "string"}},
                    },
                }
            },
        },
    },
}


class QuotaRef(ApiModel):
    """A GPUQuota this service shares with others, and its priority tier in it (docs/quotas.md)."""

    name: str = Field(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    """Name of the cluster-scoped GPUQuota. A quota that does not exist caps nothing: the service
    scales alone and reports QuotaLimited=Unknown, reason QuotaNotFound."""
    tier: str = Field(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """One of the quota's spec.tiers[].name. When the services' needs exceed the quota, higher
    tiers get capacity first and this service may be held at replicas.min (or below it, if its tier
    is preemptible). An unknown tier caps nothing: QuotaLimited=Unknown, reason TierNotFound."""


TARGET_NEEDS_RECOMMEND = (
    "targetRef (shadow mode) needs mode: recommend: gpufleet watches that Deployment and changes nothing. "
    "To let gpufleet run the service, remove targetRef and set mode: active (docs/migration.md)")


class InferenceServiceSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!has(self.capacity) || !has(self.capacity.onDemand) || !has(self.capacity.onDemand.base)"
                         " || !has(self.replicas) || !has(self.replicas.max)"
                         " || self.capacity.onDemand.base <= self.replicas.max",
                 "message": "capacity.onDemand.base must be <= replicas.max", "fieldPath": ".capacity.onDemand.base"},
                {"rule": "!has(self.warmPool) || !has(self.warmPool.max) || !has(self.replicas) || !has(self.replicas.max)"
                         " || self.warmPool.max <= self.replicas.max",
                 "message": "warmPool.max must be <= replicas.max", "fieldPath": ".warmPool.max"},
                {"rule": "!has(self.schedules) || !has(self.replicas) || !has(self.replicas.max)"
                         " || self.schedules.all(s, !has(s.minReplicas) || s.minReplicas <= self.replicas.max)",
                 "message": "schedules[].minReplicas must be <= replicas.max", "fieldPath": ".schedules"},
                {"rule": "!has(self.targetRef) || (has(self.mode) && self.mode == 'recommend')",
                 "message": TARGET_NEEDS_RECOMMEND, "fieldPath": ".targetRef"},
            ]
        }
    )
    model: ModelRef
    """The model this service serves."""
    template: dict[str, Any] = Field(json_schema_extra=_TEMPLATE_SCHEMA)
    """Pod template (core/v1 PodTemplateSpec) of one Triton replica: image, args, nvidia.com/gpu limits."""
    replicas: Replicas = Field(default_factory=Replicas)
    """Bounds on the replica count."""
    slo: Slo = Field(default_factory=Slo)
    """Latency and queue targets the fleet is scaled to meet."""
    scaling: Scaling = Field(default_factory=Scaling)
    """How fast to scale up and down."""
    forecast: Forecast = Field(default_factory=Forecast)
    """Load forecasting used to provision ahead of demand."""
    schedules: list[Schedule] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Planned events the forecast cannot know (a launch, a batch job, business hours): windows
    that raise the floor or scale the expected load, provisioned ahead so capacity is Ready when
    each opens. Names are unique; overlapping windows of different names take the highest floor
    and multiplier."""

    @field_validator("template")
    @classmethod
    def _template_leaves_reserved_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The CRD's CEL rules refuse these at admission; an object stored before them is refused here.
        if reserved := reserved_keys(value):
            raise ValueError(f"metadata.{', metadata.'.join(reserved)} reserved: set by the gpufleet operator")
        return value

    @model_validator(mode="after")
    def _target_only_in_recommend(self) -> InferenceServiceSpec:
        # The CRD's CEL rule refuses it at admission; an object stored before it is refused here.
        if self.target_ref is not None and self.mode != Mode.recommend:
            raise ValueError(TARGET_NEEDS_RECOMMEND)
        return self

    @field_validator("schedules")
    @classmethod
    def _schedule_names_unique(cls, value: list[Schedule]) -> list[Schedule]:
        names = [s.name for s in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"schedule names must be unique: {', '.join(dupes)} repeated")
        return value
    warm_pool: WarmPool = Field(default_factory=WarmPool)
    """Ready standbys that join the Service in seconds instead of a cold start."""
    capacity: Capacity = Field(default_factory=Capacity)
    """On-demand and spot capacity classes and their prices."""
    metrics: Metrics = Field(default_factory=Metrics)
    """Where and how to read the fleet's metrics."""
    mode: Mode = Mode.active
    """`active` runs the fleet: gpufleet creates its Deployments, Service and PDB and applies its
    decisions. `recommend` decides and reports (status, Events, metrics) but creates and changes
    nothing: with targetRef it watches that existing Deployment (shadow mode); without, it leaves
    whatever children exist as they are (none for a new service). docs/migration.md."""
    target_ref: TargetRef | None = None
    """Shadow mode: an existing Deployment in this namespace (one an HPA scales, or a KServe
    predictor's) whose pods and metrics gpufleet reads, deciding as it would and reporting
    recommended against actual replicas in status.shadow, without touching it. Needs mode:
    recommend. spec.template is not used while targetRef is set."""
    budget: Budget | None = None
    """Spend limits; when the plan would exceed them, non-essential capacity is capped (reason Budget)."""
    quota: QuotaRef | None = None
    """A shared GPUQuota and this service's tier in it: its plan is capped at what the quota's
    arbitration allocates (reason QuotaLimited), shown in the QuotaLimited condition."""


# ---------------------------------------------------------------------------------------------
# Status: written only by the operator. Read back leniently: a field or value that a newer operator
# (and its newer CRD) wrote is ignored rather than failing every tick (see read_status), and never
# written back.


class StatusModel(ApiModel):
    model_config = ConfigDict(extra="ignore")


class Condition(StatusModel):
    type: str
    """Condition type: Ready, Scaling, MetricsAvailable, Degraded."""
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class ClassCounts(StatusModel):
    desired: int = 0
    """Replicas the Deployment of this class is asked for."""
    ready: int = 0
    """Pods Ready."""
    starting: int = 0
    """Pods created but not Ready (scheduling, pulling, loading the model)."""


class ClassStatus(ClassCounts):
    """One class of spec.capacity.classes as last decided."""

    name: str = ""
    """The class (its Deployment is `<service>-<name>`)."""
    spot: bool = False
    """Whether it runs on spot capacity (its pods count in replicas.spot)."""
    price_per_replica_hour: float | None = None
    """Price of one replica-hour the mix was chosen with."""
    rps_per_replica: float | None = None
    """Requests/s one replica is planned to serve (its own figure, its learned one, or the
    service's reference one)."""
    learned_rps_per_replica: float | None = None
    """Requests/s one serving replica of this class was seen to carry while busy (queue per replica
    near queueDepthPerReplica, latency SLO met), learned from the request rate of the class's pods;
    planned (times targetUtilization) when the class sets no targetRpsPerReplica."""
    state: str = ""
    """available, stocked-out (pods Pending past its timeout, interruption notices) or backing-off."""
    reason: str = ""
    """Why it has what it has."""


class ReplicaStatus(StatusModel):
    desired: int = 0
    """Total replicas asked for."""
    serving: int = 0
    """Ready pods receiving traffic (labelled serving)."""
    standby: int = 0
    """Ready pods held warm, out of rotation."""
    starting: int = 0
    """Pods not Ready yet."""
    on_demand: ClassCounts = Field(default_factory=ClassCounts)
    """Pods of the on-demand class (with spec.capacity.classes: of every class that is not spot)."""
    spot: ClassCounts = Field(default_factory=ClassCounts)
    """Pods of the spot class (with spec.capacity.classes: of every spot class)."""
    classes: list[ClassStatus] | None = None
    """spec.capacity.classes: pods, price, capacity, availability and reason per class."""


class ObservedStatus(StatusModel):
    queue_depth: float | None = None
    queue_time_ms: float | None = None
    """Mean queue wait per request."""
    ttft_p95_ms: float | None = None
    """p95 time to first token (a histogram quantile)."""
    latency_p95_ms: float | None = None
    """p95 end-to-end latency (a histogram or summary quantile, never a mean)."""
    latency_mean_ms: float | None = None
    """Mean end-to-end latency per request (Triton's counters)."""
    itl_p95_ms: float | None = None
    """p95 inter-token latency (a histogram quantile)."""
    kv_cache_utilization: float | None = None
    """Fraction of KV-cache blocks in use, mean over pods (TensorRT-LLM)."""
    gpu_utilization: float | None = None
    """Mean GPU utilisation of the pods, percent (DCGM)."""
    request_rate: float | None = None
    time: str | None = None


class ForecastStatus(StatusModel):
    method: str | None = None
    horizon_seconds: float | None = None
    mean_rps: float | None = None
    upper_rps: float | None = None
    note: str | None = None


class DecisionStatus(StatusModel):
    time: str | None = None
    desired: int = 0
    standby: int = 0
    on_demand: int = 0
    spot: int = 0
    reason: str = ""
    message: str = ""
    applied: bool = False


class ClassUsage(StatusModel):
    gpu_hours: float = 0.0
    """GPU-hours of pods of this class (starting, standby, serving, draining) since usage.since."""
    cost: float = 0.0
    """Their cost at the prices in force when each hour was metered."""


class UsageStatus(StatusModel):
    since: str | None = None
    """When metering began for this service."""
    updated_at: str | None = None
    """Time of the last accumulation (millisecond precision; the next one integrates from here)."""
    on_demand: ClassUsage = Field(default_factory=ClassUsage)
    spot: ClassUsage = Field(default_factory=ClassUsage)
    gpu_hours: float = 0.0
    """All classes."""
    cost: float = 0.0
    """All classes."""
    requests: float = 0.0
    """Requests served since usage.since (observed request rate integrated over time)."""
    cost_per_million_requests: float | None = None
    """cost / requests x 1e6; absent until requests were seen."""
    day: str | None = None
    """UTC date that costToday belongs to."""
    cost_today: float = 0.0
    """Cost metered since 00:00 UTC (what spec.budget.maxCostPerDay is checked against)."""


class BudgetStatus(StatusModel):
    state: Literal["OK", "Alert", "Capped", "Infeasible"] = "OK"
    """OK; Alert (plan at alertPercent of a limit); Capped (capacity cut to the limit);
    Infeasible (even the floor, replicas.min, costs more than the limit)."""
    limit_per_hour: float | None = None
    """Highest cost per hour allowed now (maxCostPerHour, or the paced daily remainder if lower)."""
    wanted_per_hour: float | None = None
    """Cost per hour of the plan before the budget."""
    planned_per_hour: float | None = None
    """Cost per hour of the plan after the budget."""
    message: str = ""


class ScheduleStatus(StatusModel):
    name: str
    """The schedule (spec.schedules[].name)."""
    state: Literal["Open", "Provisioning", "Upcoming"]
    """Open (the window is open now); Provisioning (within its lead: capacity is being started);
    Upcoming (the next window of this schedule)."""
    opens: str
    """When the window opens (RFC 3339, UTC)."""
    closes: str
    """When it closes (RFC 3339, UTC)."""
    provision_from: str
    """When provisioning for it starts: opens minus the lead (spec.schedules[].lead, else the
    measured time-to-ready plus two intervals)."""


class ShadowStatus(StatusModel):
    target: str = ""
    """The workload watched (spec.targetRef): `Deployment/<name>`."""
    found: bool = False
    """Whether the target could be read this tick (see message when not)."""
    actual_replicas: int | None = None
    """The target Deployment's spec.replicas: what its own autoscaler (an HPA, KServe) set."""
    ready_replicas: int = 0
    """The target's pods Ready now."""
    recommended_replicas: int = 0
    """Replicas gpufleet would run (serving + warm standby), after its stabilisation and budget."""
    recommended_serving: int = 0
    """Of them, serving."""
    recommended_standby: int = 0
    """Of them, warm standbys (spec.warmPool)."""
    actual_cost_per_hour: float | None = None
    """Cost per hour of the target's pods at the spec's prices."""
    recommended_cost_per_hour: float | None = None
    """Cost per hour of what gpufleet would run."""
    autoscalers: list[str] = Field(default_factory=list)
    """HPAs and ScaledObjects that target the Deployment (expected in shadow mode: they scale it)."""
    message: str = ""
    """One line: recommended against actual, or why the target could not be read."""


class InferenceServiceStatus(StatusModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    replicas: ReplicaStatus = Field(default_factory=ReplicaStatus)
    observed: ObservedStatus = Field(default_factory=ObservedStatus)
    forecast: ForecastStatus = Field(default_factory=ForecastStatus)
    last_decision: DecisionStatus = Field(default_factory=DecisionStatus)
    time_to_ready_seconds: dict[str, float] = Field(default_factory=dict)
    schedules: list[ScheduleStatus] = Field(default_factory=list)
    """Planned windows open now or next, one or two per schedule (absent without spec.schedules)."""
    """Measured p90 pod creation-to-Ready time per capacity class."""
    cost_per_hour: float | None = None
    """Current spend rate of the fleet (serving + standby + starting)."""
    usage: UsageStatus = Field(default_factory=UsageStatus)
    """Metered GPU-hours, cost and requests, per capacity class; survives operator restarts."""
    budget: BudgetStatus | None = None
    """Where the fleet stands against spec.budget (absent without a budget)."""
    shadow: ShadowStatus | None = None
    """Shadow mode (spec.targetRef): the target's actual replicas against gpufleet's recommendation
    (absent without targetRef)."""
    memory: str | None = Field(default=None, max_length=65536)
    """The operator's learned state: stabilisation windows, the learned requests/s per replica,
    the warm pool's memory of load steps, the spot back-off and the measured time-to-ready.
    Opaque and versioned (compact JSON, `{"v":1,...}`), restored when the operator restarts or
    fails over so that it does not start from scratch. Safe to delete: the operator then relearns
    from an empty memory (and holds scale-downs for one stabilisation window)."""



_READ_ATTEMPTS = 8
_DROPPED = object()


def read_status(raw: Mapping[str, Any] | None) -> InferenceServiceStatus:
    """The status as last read, for a loop to continue from. Never raises: unknown fields are
    ignored, and a value this version cannot read (a newer operator's condition status, schedule
    state, budget state, a field's new type) is dropped with the smallest part that holds it (a
    list's item, else the top-level field), so the rest of the status still counts."""
    # Lists copied: items are marked in place before they are dropped.
    data: dict[str, Any] = {k: list(v) if isinstance(v, list) else v
                            for k, v in (raw.items() if isinstance(raw, Mapping) else ())}
    for _ in range(_READ_ATTEMPTS):
        try:
            return InferenceServiceStatus.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                loc = error["loc"]
                if not loc or loc[0] not in data:
                    continue
                value = data[loc[0]]
                if len(loc) > 1 and isinstance(loc[1], int) and isinstance(value, list) and loc[1] < len(value):
                    value[loc[1]] = _DROPPED
                else:
                    del data[loc[0]]
            data = {k: [i for i in v if i is not _DROPPED] if isinstance(v, list) else v for k, v in data.items()}
    return InferenceServiceStatus()
