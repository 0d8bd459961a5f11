"""Plain values the decision core consumes and produces.

Everything here is immutable and free of I/O: time is a float of seconds passed in by the
caller (wall clock in the operator, simulated time in the simulator).

The dataclasses here, in the rest of the core and in the simulator have slots: without them a
field with a default is also a class attribute, and Python 3.12 and 3.13 do not specialise reads
of an instance attribute that a class attribute shadows (CPython gh-123040, fixed in 3.14): each
such read took ~2.5x as long there, and the simulator reads these fields for every pod on most
of its ticks (tests/unit/test_slots.py keeps every such dataclass slotted).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from gpufleet.core.classes import Availability

_V = TypeVar("_V")


def quick_init(cls: type[_V]) -> type[_V]:
    """Give a frozen, slotted dataclass an __init__ that sets each field through its slot's own
    descriptor: the instance the generated __init__ builds (that one goes through object.__setattr__
    per field, which frozen requires of it), in about half the time. For the values built on every
    decision and rollout: the KPA baseline's 2 s ticks build tens of thousands of each per simulated
    day. Same signature, defaults and default factories; a class with __post_init__ or init=False
    fields is refused."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if "__slots__" not in vars(cls) or hasattr(cls, "__post_init__") or any(not f.init or f.kw_only for f in fields):
        raise TypeError(f"quick_init: {cls.__qualname__} is not a plain slotted dataclass")
    env: dict[str, Any] = {"_MISSING": dataclasses.MISSING}
    params, body = [], []
    for i, f in enumerate(fields):
        env[f"_set{i}"] = vars(cls)[f.name].__set__
        if f.default is not dataclasses.MISSING:
            env[f"_default{i}"] = f.default
            params.append(f"{f.name}=_default{i}")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"_factory{i}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            body.append(f" if {f.name} is _MISSING: {f.name} = _factory{i}()")
        else:
            params.append(f.name)
        body.append(f" _set{i}(self, {f.name})")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body) + "\n", env)  # as dataclasses does
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


class ReplicaState(str, Enum):
    starting = "starting"  # created, not Ready (scheduling, image pull, model load)
    standby = "standby"  # Ready, model loaded, not in the Service (warm pool)
    serving = "serving"  # Ready and in the Service
    draining = "draining"  # out of the Service, finishing in-flight work before it goes


ON_DEMAND = "on-demand"
SPOT = "spot"
CAPACITY_CLASSES = (ON_DEMAND, SPOT)


@quick_init
@dataclass(frozen=True, slots=True)
class Replica:
    name: str
    capacity_class: str  # ON_DEMAND or SPOT
    state: ReplicaState
    created_at: float
    ready_at: float | None = None
    in_flight: float | None = None  # requests pending + executing, when known
    interrupted: bool = False  # its node has an interruption notice (spot reclaim, drain)
    draining_since: float | None = None  # when it left the Service to drain (draining only)
    reclaim_at: float | None = None  # when its node is expected to go (interrupted only; None: unknown)
    deletion_cost: int | None = None  # its pod-deletion-cost mark, if any (core.rollout)


@quick_init
@dataclass(frozen=True, slots=True)
class FleetState:
    replicas: tuple[Replica, ...] = ()
    # True while spot capacity is considered unavailable (pods Pending past the timeout).
    spot_unavailable: bool = False
    # Measured creation-to-Ready seconds per capacity class (robust statistic, e.g. p90).
    time_to_ready_s: dict[str, float] = field(default_factory=dict)
    # spec.capacity.classes: pods of each class Pending past its pendingTimeoutSeconds (stock-out).
    pending_by_class: tuple[tuple[str, int], ...] = ()

    def count(self, state: ReplicaState, capacity_class: str | None = None) -> int:
        return sum(
            1
            for r in self.replicas
            if r.state == state and (capacity_class is None or r.capacity_class == capacity_class)
        )


@quick_init
@dataclass(frozen=True, slots=True)
class Observation:
    """Service-wide signals; None means missing (no data, NaN, or the source is down)."""

    sampled_at: float | None = None  # when the newest sample was taken; None = no sample at all
    queue_depth: float | None = None  # pending requests summed over serving replicas
    queue_time_ms: float | None = None  # mean queue wait per request
    ttft_p95_ms: float | None = None  # a histogram quantile (time to first token / response)
    latency_p95_ms: float | None = None  # a true p95 (histogram or summary quantile), never a mean
    request_rate: float | None = None  # requests per second across the service
    latency_mean_ms: float | None = None  # mean end-to-end latency per request (counters)
    itl_p95_ms: float | None = None  # p95 inter-token latency (TensorRT-LLM histogram)
    kv_cache_utilization: float | None = None  # fraction of KV-cache blocks in use, mean over pods
    gpu_utilization: float | None = None  # mean GPU utilisation of the pods, percent (DCGM)
    # spec.capacity.classes: (class, requests/s its serving pods carried); None where a serving pod
    # of the class is missing from the scrape (never a smaller sum). Empty: not read.
    class_request_rate: tuple[tuple[str, float | None], ...] = ()


@dataclass(frozen=True, slots=True)
class ForecastSummary:
    """Load expected over the horizon (the time a new replica needs to become Ready)."""

    horizon_s: float
    mean_rps: float
    upper_rps: float  # the configured quantile
    method: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class PolicyMemory:
    """What a policy remembers between steps. The caller stores it and passes it back."""

    # (time, recommended serving replicas) within the longest stabilisation window.
    recommendations: tuple[tuple[float, int], ...] = ()
    # (time, recommended standbys) within the scale-down window: the pool shrinks only when
    # no larger pool was wanted over that window (a standby is a cold start to replace).
    standby_recommendations: tuple[tuple[float, int], ...] = ()
    last_scale_up_at: float | None = None
    last_scale_down_at: float | None = None
    # Requests/s one replica was seen to serve at the queue target (learned when spec omits it).
    learned_rps_per_replica: float | None = None
    # spec.capacity.classes: the same figure per class, (class, requests/s per serving replica)
    # (core.classes.learn_class_rps).
    learned_class_rps: tuple[tuple[str, float], ...] = ()
    # When this memory began (first decision): a scale-down needs a full window of history, so
    # an operator restart never shrinks the fleet on its first sample.
    started_at: float | None = None
    # The serving target of the previous plan: the "current" size scaling steps are measured
    # from (like a Deployment's spec.replicas), so pods still starting are not planned twice.
    last_serving: int | None = None
    # When the previous decision was taken, and the raw need it computed (before stabilisation):
    # together they give the recent burstiness that sizes an automatic warm pool.
    last_decided_at: float | None = None
    last_need: int | None = None
    # Largest recent jump in raw need, in replicas, decaying with time (warmPool.size: auto).
    burst_replicas: float = 0.0
    # The same (time, need) series as `recommendations` but without what a transient backlog adds
    # (queue need, latency within a minute of the queue being above target): the warm pool learns
    # recurring load steps from it, so draining a backlog does not read as a step in load.
    sustained_recommendations: tuple[tuple[float, int], ...] = ()
    # The previous queue sample (depth, sampled_at): its growth estimates arrivals that the
    # windowed request rate does not show yet after a step.
    last_queue: tuple[float, float] | None = None
    # Long memory of how much the sustained need rose within one lead time, as a fraction of the
    # need before the rise: a decaying maximum with a half-life of hours (warmPool.size: auto), so a
    # pool sized for the evening's recurring jumps is still there the next evening, and scales with
    # the fleet (a +70 % jump at 13 serving needs more standbys than at 3).
    jump_fraction: float = 0.0
    # When the queue was last above its target (see capacity.sustained_need).
    backlog_at: float | None = None
    # The serving count and since when it has been unchanged; a count unchanged for a latency
    # window is "settled": latency percentiles (windowed, lagging) describe it, so a latency
    # breach is scaled from it and not from replicas promoted a moment ago (no compounding).
    # Spot fallback with hysteresis: on-demand only until `spot_retry_at`; the wait doubles after
    # a failed return and resets after a quiet hour (see core.spotback).
    spot_retry_at: float | None = None
    spot_backoff_s: float = 0.0
    spot_outage_at: float | None = None
    serving_seen: int | None = None
    serving_seen_since: float | None = None
    settled_serving: int | None = None
    # Planned windows with a loadMultiplier: (name, occurrence start, usual load in replicas) taken
    # when each came into effect, so the multiplier scales the load before the event, not the
    # event's own traffic (see core.schedule).
    schedule_refs: tuple[tuple[str, float, float], ...] = ()
    # Spend of the current UTC day (day number = now // 86400) at the spec's prices, integrated
    # over the fleet between decisions: what spec.budget.maxCostPerDay paces against. The operator
    # seeds it from status.usage.costToday after a restart.
    spend_day: int | None = None
    spent_today: float = 0.0
    # spec.capacity.classes: each class's availability and back-off (core.classes.track). Not in
    # status.memory: after a restart a stock-out is found again after the class's timeout.
    class_availability: tuple[tuple[str, Availability], ...] = ()


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """The plan against spec.budget, in the unit of the prices, per hour."""

    state: str  # OK, Alert (at alertPercent of a limit), Capped, Infeasible (the floor costs more)
    limit_per_hour: float  # highest cost per hour allowed now
    wanted_per_hour: float  # the plan before the budget
    planned_per_hour: float  # the plan after it
    spent_today: float
    message: str


@quick_init
@dataclass(frozen=True, slots=True)
class Plan:
    serving: int  # healthy replicas that should be in the Service
    standby: int  # warm replicas out of rotation
    # Deployment sizes per class: healthy replicas wanted (serving + standby, including those
    # still starting) PLUS the interrupted ones still present, so that their replacements start
    # at once; the interrupted ones lead `retire` and leave when drained or reclaimed.
    on_demand: int
    spot: int
    reason: str  # short machine-readable code, e.g. QueueDepth, ForecastLoad, SafeMode
    message: str  # one human line: why
    apply: bool = True  # False in recommend mode: decide and report only
    safe_mode: bool = False
    promote: tuple[str, ...] = ()  # standby replica names to move into the Service now
    retire: tuple[str, ...] = ()  # replica names in the order they should go
    budget: BudgetCheck | None = None  # where the plan stands against spec.budget (None without one)
    # The interrupted replicas per class that `on_demand`/`spot` include, as counted when deciding
    # (None: whatever interrupted pods are present, as for a plain Deployment). Kept with the plan
    # so that carrying it out again after those pods drained does not read them as capacity wanted.
    interrupted: tuple[tuple[str, int], ...] | None = None
    # spec.capacity.classes: the Deployment size and the why of every class (core.mix); None for
    # the onDemand/spot form, whose sizes are `on_demand` and `spot`.
    classes: tuple[ClassChoice, ...] | None = None
    mix_note: str = ""  # the chosen mix and its reason (status, the CapacityMix Event)

    @property
    def total(self) -> int:
        if self.classes is not None:
            return sum(c.replicas for c in self.classes)
        return self.on_demand + self.spot

    def by_class(self, capacity_class: str) -> int:
        if self.classes is not None:
            return next((c.replicas for c in self.classes if c.name == capacity_class), 0)
        return self.on_demand if capacity_class == ON_DEMAND else self.spot

    def class_names(self) -> tuple[str, ...]:
        """The classes this plan sizes (each one Deployment)."""
        return CAPACITY_CLASSES if self.classes is None else tuple(c.name for c in self.classes)


@dataclass(frozen=True, slots=True)
class ClassChoice:
    """One capacity class in a plan (spec.capacity.classes)."""

    name: str
    replicas: int  # its Deployment's size: healthy wanted + interrupted still present
    price_per_hour: float  # one replica-hour
    rps_per_replica: float  # requests/s one replica is planned to serve
    state: str  # core.classes.State: available, stocked-out, backing-off
    reason: str  # why it has what it has
    spot: bool = False
    gpus: float = 1.0  # GPUs (or GPU share) one replica holds, for metering
    learned_rps_per_replica: float | None = None  # requests/s per serving replica learned for it
