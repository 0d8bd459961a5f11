"""spec.capacity.classes in the operator's parts: the decision (core.mix through the policy), the
children (adapters.manifests), the executor (adapters.kubefleet on a recording fake), status,
metering and prices. The two-class form is covered, unchanged, by the rest of the suite."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gpufleet.adapters import manifests
from gpufleet.adapters.kubefleet import KubeFleet
from gpufleet.api.models import InferenceServiceSpec, UsageStatus
from gpufleet.api.timefmt import iso
from gpufleet.control import metering, pricing
from gpufleet.control.status import replica_status
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.rollout import rollout
from gpufleet.core.types import FleetState, Observation, PolicyMemory, Replica, ReplicaState
from tests.fakes import RecordingKube, pod

NOW = 1_767_225_600.0
L4 = {"name": "l4", "pricePerReplicaHour": 1.0, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
      "pendingTimeoutSeconds": 60}
MIG = {"name": "mig", "pricePerReplicaHour": 1.9, "resources": {"nvidia.com/mig-3g.40gb": 1},
       "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
       "tolerations": [{"key": "mig", "operator": "Exists", "effect": "NoSchedule"}]}


def spec(*classes: dict[str, Any], **capacity: Any) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": "m"},
        "template": {"spec": {"containers": [{"name": "triton", "image": "t",
                                              "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "8Gi"}}}]}},
        "replicas": {"min": 2, "max": 10}, "scaling": {"targetRpsPerReplica": 10, "targetUtilization": 1.0},
        "capacity": {"classes": list(classes or (L4, MIG)), **capacity}})


def decide(s: InferenceServiceSpec, fleet: FleetState, memory: PolicyMemory = PolicyMemory(),
           now: float = NOW, rps: float | None = None) -> Any:
    """Without `rps`: no metrics sample (safe mode, the floor); with it, a fresh sample at that load."""
    obs = Observation() if rps is None else Observation(sampled_at=now, queue_depth=0.0, request_rate=rps,
                                                        latency_p95_ms=100.0, queue_time_ms=1.0)
    return GpufleetPolicy().decide(spec=s, observation=obs, forecast=None, fleet=fleet, memory=memory, now=now)


def rep(name: str, cls: str, state: ReplicaState = ReplicaState.serving, ready: bool = True) -> Replica:
    return Replica(name, cls, state, NOW - 600, NOW - 500 if ready else None)


# -- the API ---------------------------------------------------------------------------------------


def test_classes_exclude_the_legacy_spot_and_on_demand_placement() -> None:
    with pytest.raises(ValidationError, match="capacity.classes replaces the onDemand/spot placement"):
        spec(spot={"enabled": True})
    with pytest.raises(ValidationError, match="capacity.classes replaces the onDemand/spot placement"):
        spec(onDemand={"nodeSelector": {"a": "b"}})
    with pytest.raises(ValidationError, match="unique"):
        spec(L4, L4)
    assert spec().capacity.class_names() == ("l4", "mig")
    assert InferenceServiceSpec.model_validate({"model": {"name": "m"}, "template": {}}).capacity.class_names() \
        == ("on-demand", "spot")


# -- the decision ----------------------------------------------------------------------------------


def test_the_cheapest_class_takes_the_fleet() -> None:
    plan, memory = decide(spec(), FleetState())
    assert plan.classes is not None
    assert {c.name: c.replicas for c in plan.classes} == {"l4": 2, "mig": 0}
    assert plan.total == 2 and plan.serving + plan.standby == 2
    assert dict(memory.class_availability)["l4"].usable


def test_a_stock_out_moves_new_capacity_to_the_next_class_with_its_reason() -> None:
    pending = FleetState(replicas=(rep("a", "l4", ReplicaState.starting, ready=False),
                                   rep("b", "l4", ReplicaState.starting, ready=False)),
                         pending_by_class=(("l4", 2),))
    plan, memory = decide(spec(), pending)
    sizes = {c.name: c.replicas for c in plan.classes}
    assert sizes == {"l4": 0, "mig": 2}
    assert "l4 stocked out (2 pod(s) Pending past 60s), serving on mig at 1.9x the cost per request" in plan.mix_note
    assert {c.name: c.state for c in plan.classes}["l4"] == "stocked-out"
    assert set(plan.retire) == {"a", "b"}  # the Pending pods go; their class's Deployment shrinks
    # The signal cleared (its pods are gone): the class stays out for its returnAfterSeconds.
    plan2, memory2 = decide(spec(), FleetState(), memory, now=NOW + 30)
    assert {c.name: c.replicas for c in plan2.classes} == {"l4": 0, "mig": 2}
    assert {c.name: c.state for c in plan2.classes}["l4"] == "backing-off"
    plan3, _ = decide(spec(), FleetState(), memory2, now=NOW + 30 + 601)
    assert {c.name: c.replicas for c in plan3.classes} == {"l4": 2, "mig": 0}


def test_ready_replicas_of_a_shrinking_class_stay_until_the_new_class_is_ready() -> None:
    # Back from a stock-out: the mix wants l4 again, the mig pods keep serving until l4 is Ready.
    fleet = FleetState(replicas=(rep("m1", "mig"), rep("m2", "mig")))
    plan, _ = decide(spec(), fleet, rps=20.0)
    sizes = {c.name: c.replicas for c in plan.classes}
    assert sizes == {"l4": 2, "mig": 2}
    assert plan.retire == ()
    assert "keeping 2 mig until replacements are Ready" in plan.mix_note
    ready = FleetState(replicas=(rep("m1", "mig"), rep("m2", "mig"), rep("l1", "l4", ReplicaState.standby),
                                 rep("l2", "l4", ReplicaState.standby)))
    plan, _ = decide(spec(), ready, rps=20.0)
    assert {c.name: c.replicas for c in plan.classes} == {"l4": 2, "mig": 0}
    assert set(plan.retire) == {"m1", "m2"}
    ro = rollout(plan, ready.replicas, now=NOW, drain_timeout_s=30)
    assert set(ro.promote) == {"l1", "l2"} and set(ro.drain) == {"m1", "m2"}
    assert dict(ro.sizes) == {"l4": 2, "mig": 2}  # the draining pods stay until released
    # Without metrics (safe mode) every Ready replica stays, whatever the mix.
    plan, _ = decide(spec(), fleet)
    assert {c.name: c.replicas for c in plan.classes} == {"l4": 2, "mig": 2}
    assert "keeping 2 mig Ready (no metrics)" in plan.mix_note


def test_a_class_with_more_capacity_per_replica_needs_fewer_pods() -> None:
    big = {"name": "h100", "pricePerReplicaHour": 2.5, "targetRpsPerReplica": 40}
    plan, _ = decide(spec(big, {**L4, "max": 1}), FleetState())
    # 2 reference replicas (20 rps): one h100 (40 rps, 2.5/h) beats l4 (max 1) + another h100.
    assert {c.name: c.replicas for c in plan.classes} == {"h100": 1, "l4": 0}
    assert plan.serving + plan.standby == 1


# -- the children ----------------------------------------------------------------------------------


def test_one_deployment_per_class_placed_by_the_class() -> None:
    kids = manifests.children("chat", spec())
    deployments = {d["metadata"]["name"]: d for d in kids if d["kind"] == "Deployment"}
    assert set(deployments) == {"chat-l4", "chat-mig"}
    mig = deployments["chat-mig"]["spec"]["template"]
    assert mig["metadata"]["labels"][manifests.LABEL_CLASS] == "mig"
    assert deployments["chat-mig"]["spec"]["selector"]["matchLabels"][manifests.LABEL_CLASS] == "mig"
    assert mig["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert mig["spec"]["tolerations"] == MIG["tolerations"]
    # The slice replaces the template's whole GPU; other limits stay.
    assert mig["spec"]["containers"][0]["resources"]["limits"] == {"memory": "8Gi", "nvidia.com/mig-3g.40gb": 1}
    l4 = deployments["chat-l4"]["spec"]["template"]
    assert l4["spec"]["containers"][0]["resources"]["limits"] == {"memory": "8Gi", "nvidia.com/gpu": 1}


def test_the_two_class_form_keeps_its_deployment_names() -> None:
    legacy = InferenceServiceSpec.model_validate({"model": {"name": "m"}, "template": {}})
    names = [d["metadata"]["name"] for d in manifests.children("chat", legacy) if d["kind"] == "Deployment"]
    assert names == ["chat-ondemand", "chat-spot"]


# -- the executor ----------------------------------------------------------------------------------


def test_the_executor_counts_pending_pods_per_class_and_posts_the_mix_once() -> None:
    s = spec()
    pending = {**pod("a", "l4", ready_at=None, created_at=iso(NOW - 90)), "spec": {"nodeName": None, "containers": []}}
    young = {**pod("b", "l4", ready_at=None, created_at=iso(NOW - 30)), "spec": {"nodeName": None, "containers": []}}
    api = RecordingKube(pods={"a": pending, "b": young}, deployments={"chat-l4": 2, "chat-mig": 0})
    fleet = KubeFleet(api, namespace="ns", name="chat", spec=s, snapshot=api.snapshot)
    state = fleet.state(now=NOW)
    assert state.pending_by_class == (("l4", 1),)  # only the one Pending past the class's 60 s
    plan, _ = decide(s, state)
    fleet.apply(plan, now=NOW)
    mixes = [m for r, m in fleet.events if r == "CapacityMix"]
    assert len(mixes) == 1 and "l4 stocked out" in mixes[0]
    assert api.deployments["chat-mig"] == 2 and api.deployments["chat-l4"] == 0
    fleet.apply(plan, now=NOW + 1)  # the same mix again: no second Event
    assert not [m for r, m in fleet.events if r == "CapacityMix"]


# -- status, metering, prices ----------------------------------------------------------------------


def test_status_lists_each_class() -> None:
    fleet = FleetState(replicas=(rep("l1", "l4"), rep("m1", "mig", ReplicaState.starting, ready=False)))
    plan, _ = decide(spec(), fleet)
    status = replica_status(fleet, {c: plan.by_class(c) for c in plan.class_names()}, plan)
    assert status.classes is not None
    by_name = {c.name: c for c in status.classes}
    assert by_name["l4"].ready == 1 and by_name["mig"].starting == 1
    assert by_name["mig"].price_per_replica_hour == 1.9 and by_name["l4"].state == "available"
    assert status.on_demand.ready == 1 and status.on_demand.starting == 1  # both classes are not spot


def test_metering_uses_each_classes_price_and_gpus() -> None:
    s = spec(L4, {**MIG, "spot": True, "sliceOfGpu": 0.5}, {"name": "od", "pricePerReplicaHour": 3.0})
    prev = UsageStatus(updated_at=iso(NOW - 3600))
    fleet = FleetState(replicas=(Replica("l1", "l4", ReplicaState.serving, NOW - 7200, NOW - 7000),
                                 Replica("m1", "mig", ReplicaState.serving, NOW - 7200, NOW - 7000)))
    usage, _ = metering.accumulate(prev, s, fleet, None, NOW)
    assert usage.on_demand.cost == pytest.approx(1.0) and usage.on_demand.gpu_hours == pytest.approx(1.0)
    assert usage.spot.cost == pytest.approx(1.9) and usage.spot.gpu_hours == pytest.approx(0.5)


def test_the_price_table_prices_a_class_by_its_product() -> None:
    s = spec({"name": "l4", "product": "NVIDIA-L4"}, {**MIG, "spot": False})
    priced = pricing.with_prices(s, s.capacity.price_per_gpu_hour, {"NVIDIA-L4": {"on-demand": 0.8, "spot": 0.3}})
    assert priced.capacity.classes is not None
    assert [c.price_per_replica_hour for c in priced.capacity.classes] == [0.8, 1.9]


def test_the_metrics_queries_select_the_pods_of_the_listed_classes() -> None:
    import re

    from gpufleet.adapters.metrics import classes_pod_regex

    pods_of = classes_pod_regex("chat", ("l4", "mig", "on-demand"))
    assert re.fullmatch(pods_of, "chat-l4-7665c88c7f-7r4h2")
    assert re.fullmatch(pods_of, "chat-ondemand-66c9bcbdf5-8w7mx")  # the on-demand class keeps its name
    assert not re.fullmatch(pods_of, "chat-l4-ondemand-66c9bcbdf5-8w7mx")  # service chat-l4's pod
    assert not re.fullmatch(pods_of, "chat-h100-7665c88c7f-7r4h2")  # not one of its classes
    assert re.fullmatch(pods_of, "chat-spot-66c9bcbdf5-8w7mx")  # the two-class form's, while they drain


def test_pods_of_a_class_no_longer_listed_serve_until_the_listed_ones_are_ready() -> None:
    # The onDemand/spot form replaced by a list: the on-demand pods keep serving, then drain.
    old = FleetState(replicas=(rep("o1", "on-demand"), rep("o2", "on-demand")))
    plan, _ = decide(spec(), old, rps=20.0)
    sizes = {c.name: c.replicas for c in plan.classes}
    assert sizes == {"l4": 2, "mig": 0, "on-demand": 2} and plan.retire == ()
    assert {c.name: c.state for c in plan.classes}["on-demand"] == "removed"
    both = FleetState(replicas=(*old.replicas, rep("l1", "l4", ReplicaState.standby),
                                rep("l2", "l4", ReplicaState.standby)))
    plan, _ = decide(spec(), both, rps=20.0)
    assert {c.name: c.replicas for c in plan.classes}["on-demand"] == 0
    ro = rollout(plan, both.replicas, now=NOW, drain_timeout_s=30)
    assert set(ro.drain) == {"o1", "o2"} and set(ro.promote) == {"l1", "l2"}
    assert manifests.deployment_name("chat", "on-demand") == "chat-ondemand"  # the Deployment scaled down


# -- properties ------------------------------------------------------------------------------------


@st.composite
def class_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 4))
    out = []
    for i in range(n):
        hi = draw(st.integers(0, 8))
        out.append({"name": f"c{i}", "pricePerReplicaHour": draw(st.sampled_from([0.3, 1.0, 1.9, 3.0])),
                    "targetRpsPerReplica": draw(st.sampled_from([None, 4.0, 10.0, 40.0])),
                    "spot": i > 0 and draw(st.booleans()), "min": draw(st.integers(0, min(hi, 2))), "max": hi,
                    "maxShare": draw(st.sampled_from([1.0, 0.5])), "pendingTimeoutSeconds": 60})
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(classes=class_lists(), data=st.data())
def test_the_mix_stays_within_each_class_and_names_only_pods_it_has(classes: list[dict[str, Any]],
                                                                     data: st.DataObject) -> None:
    s = spec(*classes)
    names = [c["name"] for c in classes] + ["on-demand"]  # and a class no longer listed
    reps = tuple(Replica(f"p{i}", data.draw(st.sampled_from(names)), data.draw(st.sampled_from(list(ReplicaState))),
                         NOW - 600, None if data.draw(st.booleans()) else NOW - 500,
                         interrupted=data.draw(st.booleans()) and data.draw(st.booleans()))
                 for i in range(data.draw(st.integers(0, 10))))
    reps = tuple(r if r.ready_at is not None or r.state == ReplicaState.starting else
                 Replica(r.name, r.capacity_class, ReplicaState.starting, r.created_at) for r in reps)
    pending = tuple((c["name"], 1) for c in classes if data.draw(st.booleans()))
    fleet = FleetState(replicas=reps, pending_by_class=pending)
    rps = data.draw(st.sampled_from([None, 0.0, 15.0, 200.0]))
    plan, memory = decide(s, fleet, rps=rps)
    assert plan.classes is not None
    by_name = {c.name: c for c in plan.classes}
    assert [c["name"] for c in classes] == [c.name for c in plan.classes][:len(classes)]
    noticed = dict(plan.interrupted or ())
    for c in classes:
        healthy_wanted = by_name[c["name"]].replicas - noticed.get(c["name"], 0)
        assert 0 <= healthy_wanted <= c["max"], (c, plan.mix_note)
    if "on-demand" in by_name:  # no longer listed: never more than its Ready pods, never new ones
        ready_old = sum(1 for r in reps if r.capacity_class == "on-demand" and r.ready_at is not None
                        and not r.interrupted and r.state != ReplicaState.draining)
        assert by_name["on-demand"].replicas - noticed.get("on-demand", 0) <= ready_old
        assert by_name["on-demand"].state == "removed"
    assert set(plan.retire) <= {r.name for r in reps}
    assert plan.serving >= 0 and plan.standby >= 0
    assert {n for n, _ in memory.class_availability} == {c["name"] for c in classes}
    # Rolled out: every class the plan sizes has one Deployment size, none negative.
    ro = rollout(plan, reps, now=NOW, drain_timeout_s=30)
    assert {c for c, _ in ro.sizes} == set(plan.class_names()) and all(n >= 0 for _, n in ro.sizes)


def test_autoscalers_aimed_at_a_class_deployment_are_found() -> None:
    from gpufleet.kopf_app import autoscalers_of, class_names

    hpas = {("ns", "chat-l4"): {"HorizontalPodAutoscaler x"}}
    names = class_names({"capacity": {"classes": [L4, MIG]}})
    assert names == ("l4", "mig") and class_names({}) == ("on-demand", "spot")
    assert autoscalers_of("ns", "chat", hpas, classes=names) == [  # type: ignore[arg-type]
        "HorizontalPodAutoscaler x targets Deployment chat-l4"]


def test_the_disruption_budget_counts_the_pods_that_carry_the_floor() -> None:
    big = {"name": "h100", "pricePerReplicaHour": 2.5, "targetRpsPerReplica": 40}
    pdb = next(d for d in manifests.children("chat", spec(big, L4)) if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1  # min 2 x 10 rps: one 40-rps pod carries it
    pdb = next(d for d in manifests.children("chat", spec()) if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2
