"""The operator's own metrics: record_tick writes what a control step decided and saw."""

from __future__ import annotations

import socket
import urllib.request
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from gpufleet.api.models import InferenceServiceSpec, UsageStatus
from gpufleet.control import metering
from gpufleet.core.types import (
    ON_DEMAND,
    SPOT,
    ClassChoice,
    FleetState,
    ForecastSummary,
    Observation,
    Plan,
    Replica,
    ReplicaState,
)
from gpufleet.telemetry import Telemetry

SPEC = InferenceServiceSpec.model_validate({
    "model": {"name": "chat"},
    "replicas": {"min": 1, "max": 8},
    "capacity": {"spot": {"enabled": True, "maxFraction": 0.5}, "pricePerGpuHour": {"onDemand": 4.0, "spot": 1.5}},
    "template": {"spec": {"containers": [{"name": "triton", "image": "triton"}]}},
})
LABELS = {"gpufleet.io/team": "search", "gpufleet.io/project": "assist", "unrelated": "x"}
SVC = {"namespace": "ns", "name": "chat", "team": "search", "project": "assist"}


@dataclass(frozen=True)
class Result:
    plan: Plan
    observation: Observation
    forecast: ForecastSummary | None
    fleet: FleetState
    applied: bool = True


def fleet() -> FleetState:
    return FleetState(replicas=(
        Replica("a", ON_DEMAND, ReplicaState.serving, created_at=0.0, ready_at=10.0),
        Replica("b", ON_DEMAND, ReplicaState.serving, created_at=0.0, ready_at=10.0),
        Replica("c", SPOT, ReplicaState.standby, created_at=0.0, ready_at=10.0),
        Replica("d", SPOT, ReplicaState.starting, created_at=0.0),
    ))


def result(**kw: object) -> Result:
    base: dict[str, object] = dict(
        plan=Plan(serving=2, standby=1, on_demand=2, spot=2, reason="QueueDepth", message="m"),
        observation=Observation(sampled_at=1.0, queue_depth=7.0, latency_p95_ms=250.0, request_rate=42.0),
        forecast=ForecastSummary(horizon_s=60.0, mean_rps=40.0, upper_rps=55.0, method="holt-winters"),
        fleet=fleet(),
    )
    base.update(kw)
    return Result(**base)  # type: ignore[arg-type]


def value(reg: CollectorRegistry, metric: str, **labels: str) -> float | None:
    return reg.get_sample_value(metric, {**SVC, **labels})


def test_record_tick_writes_every_family() -> None:
    t = Telemetry()
    t.record_tick(namespace="ns", name="chat", labels=LABELS, spec=SPEC, result=result(), duration_s=0.2, now=99.0)
    reg = t.registry
    assert value(reg, "gpufleet_decisions_total", reason="QueueDepth", applied="true") == 1.0
    assert value(reg, "gpufleet_replicas", capacity_class="on-demand", state="serving") == 2.0
    assert value(reg, "gpufleet_replicas", capacity_class="spot", state="standby") == 1.0
    assert value(reg, "gpufleet_replicas", capacity_class="spot", state="starting") == 1.0
    assert value(reg, "gpufleet_replicas", capacity_class="spot", state="serving") == 0.0
    assert value(reg, "gpufleet_desired_replicas", capacity_class="spot") == 2.0
    assert value(reg, "gpufleet_forecast_request_rate", quantile="mean") == 40.0
    assert value(reg, "gpufleet_forecast_request_rate", quantile="upper") == 55.0
    assert value(reg, "gpufleet_observed_request_rate") == 42.0
    assert value(reg, "gpufleet_observed_queue_depth") == 7.0
    assert value(reg, "gpufleet_observed_latency_p95_seconds") == 0.25
    # 2 on-demand at 4.0 + 2 spot at 1.5, one GPU each (the starting pod holds its GPU too).
    assert value(reg, "gpufleet_cost_per_hour") == 11.0
    assert value(reg, "gpufleet_safe_mode") == 0.0
    assert value(reg, "gpufleet_last_tick_timestamp_seconds") == 99.0
    assert value(reg, "gpufleet_loop_duration_seconds_count") == 1.0
    assert value(reg, "gpufleet_loop_duration_seconds_sum") == 0.2


def test_counters_accumulate_and_missing_signals_drop_their_series() -> None:
    t = Telemetry()
    t.record_tick(namespace="ns", name="chat", labels=LABELS, spec=SPEC, result=result(), duration_s=0.1)
    safe = Plan(serving=2, standby=0, on_demand=2, spot=0, reason="SafeMode", message="no data", safe_mode=True)
    t.record_tick(namespace="ns", name="chat", labels=LABELS, spec=SPEC, duration_s=0.1,
                  result=result(plan=safe, observation=Observation(), forecast=None, applied=False))
    reg = t.registry
    assert value(reg, "gpufleet_decisions_total", reason="QueueDepth", applied="true") == 1.0
    assert value(reg, "gpufleet_decisions_total", reason="SafeMode", applied="false") == 1.0
    assert value(reg, "gpufleet_safe_mode") == 1.0
    # Unknown is absent, not zero: a 0 would read as "no load".
    assert value(reg, "gpufleet_observed_request_rate") is None
    assert value(reg, "gpufleet_forecast_request_rate", quantile="upper") is None
    assert value(reg, "gpufleet_loop_duration_seconds_count") == 2.0


def test_errors_relabel_and_forget() -> None:
    t = Telemetry()
    t.record_tick(namespace="ns", name="chat", labels=LABELS, spec=SPEC, result=result(), duration_s=0.1)
    t.record_error(namespace="ns", name="chat", labels=LABELS, error=TimeoutError("api"))
    assert value(t.registry, "gpufleet_errors_total", error="TimeoutError") == 1.0
    # The team label changes: the old series go, so sums per team never count the fleet twice.
    t.record_tick(namespace="ns", name="chat", labels={"gpufleet.io/team": "ads"}, spec=SPEC, result=result(),
                  duration_s=0.1)
    assert value(t.registry, "gpufleet_cost_per_hour") is None
    assert t.registry.get_sample_value("gpufleet_cost_per_hour", {**SVC, "team": "ads", "project": ""}) == 11.0
    t.forget(namespace="ns", name="chat")
    names = {s.name for m in t.registry.collect() for s in m.samples if s.labels.get("name") == "chat"}
    assert names == set()


def test_serve_exposes_the_default_registry() -> None:
    from gpufleet import telemetry

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    telemetry.serve(port, host="127.0.0.1")
    telemetry.record_tick(namespace="ns", name="served", labels=None, spec=SPEC, result=result(), duration_s=0.1)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        telemetry.forget(namespace="ns", name="served")
    assert 'gpufleet_cost_per_hour{name="served",namespace="ns",project="",team=""} 11.0' in text


CLASS_SPEC = InferenceServiceSpec.model_validate({
    "model": {"name": "chat"},
    "replicas": {"min": 1, "max": 8},
    "capacity": {"classes": [{"name": "l4", "pricePerReplicaHour": 0.8},
                             {"name": "h100", "pricePerReplicaHour": 4.0, "resources": {"nvidia.com/gpu": 2}}]},
    "template": {"spec": {"containers": [{"name": "triton", "image": "triton"}]}},
})


def class_result() -> Result:
    plan = Plan(serving=3, standby=0, on_demand=0, spot=0, reason="QueueDepth", message="m", classes=(
        ClassChoice("l4", 2, 0.8, 50.0, "available", "cheapest"),
        ClassChoice("h100", 1, 4.0, 200.0, "available", "the rest", gpus=2.0)))
    pods = FleetState(replicas=(
        Replica("l4-a", "l4", ReplicaState.serving, created_at=0.0, ready_at=10.0),
        Replica("l4-b", "l4", ReplicaState.starting, created_at=0.0),
        Replica("h100-a", "h100", ReplicaState.serving, created_at=0.0, ready_at=10.0),
    ))
    return result(plan=plan, fleet=pods)


def test_a_class_list_labels_its_own_classes_and_prices() -> None:
    t = Telemetry()
    t.record_tick(namespace="ns", name="chat", labels=LABELS, spec=CLASS_SPEC, result=class_result(), duration_s=0.1)
    reg = t.registry
    assert value(reg, "gpufleet_replicas", capacity_class="l4", state="serving") == 1.0
    assert value(reg, "gpufleet_replicas", capacity_class="l4", state="starting") == 1.0
    assert value(reg, "gpufleet_replicas", capacity_class="h100", state="serving") == 1.0
    assert value(reg, "gpufleet_desired_replicas", capacity_class="l4") == 2.0
    assert value(reg, "gpufleet_desired_replicas", capacity_class="h100") == 1.0
    assert value(reg, "gpufleet_replicas", capacity_class="on-demand", state="serving") is None
    # Each pod at its class's price (the starting one holds its GPU too): 2 x 0.8 + 4.0.
    assert value(reg, "gpufleet_cost_per_hour") == 5.6
    # Metering: an hour of these pods, per class (h100 holds 2 GPUs per replica).
    prev = metering.accumulate(UsageStatus(), CLASS_SPEC, class_result().fleet, 10.0, 3600.0)[0]
    usage, delta = metering.accumulate(prev, CLASS_SPEC, class_result().fleet, 10.0, 7200.0)
    t.record_usage(namespace="ns", name="chat", labels=LABELS, usage=usage, delta=delta, budget=None)
    assert value(reg, "gpufleet_gpu_hours_total", capacity_class="l4") == 2.0
    assert value(reg, "gpufleet_gpu_hours_total", capacity_class="h100") == 2.0
    assert value(reg, "gpufleet_cost_total", capacity_class="h100") == 4.0
    assert value(reg, "gpufleet_cost_total", capacity_class="spot") is None
    # h100 leaves the list: its gauges go with it.
    one = CLASS_SPEC.model_copy(update={"capacity": CLASS_SPEC.capacity.model_copy(
        update={"classes": CLASS_SPEC.capacity.classes[:1]})})
    t.record_tick(namespace="ns", name="chat", labels=LABELS, spec=one, result=class_result(), duration_s=0.1)
    assert value(reg, "gpufleet_desired_replicas", capacity_class="h100") is None
    assert value(reg, "gpufleet_replicas", capacity_class="h100", state="serving") is None
    assert value(reg, "gpufleet_desired_replicas", capacity_class="l4") == 2.0
