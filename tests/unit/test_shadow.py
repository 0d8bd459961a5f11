"""Shadow mode's pure and port-level parts (adapters.shadow, control.service on a ShadowFleet):
the target's selector, its pods as replicas, a loop that reports recommended against actual
replicas and writes nothing, Events once per change, the metrics, the spec's rule."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from gpufleet.adapters.pods import NodeInfo
from gpufleet.adapters.shadow import ShadowFleet, TargetReader, label_selector
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.api.timefmt import iso_seconds
from gpufleet.control.service import ServiceLoop, Settings
from gpufleet.control.status import material
from gpufleet.core.types import ON_DEMAND, SPOT, Plan, ReplicaState
from gpufleet.emulator import EMULATE_LABEL, Emulator
from gpufleet.telemetry import Telemetry
from tests.builders import make_spec
from tests.fakes import FakeMetrics, RecordingKube

NOW = iso_seconds("2026-01-01T00:05:00Z")


def plain_pod(name: str, *, ready: bool = True, node: str = "n1", deleting: bool = False) -> dict[str, Any]:
    """A pod of a Deployment gpufleet does not own: no gpufleet label at all."""
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "labels": {"app": "web"}, "annotations": {},
                            "creationTimestamp": "2026-01-01T00:00:00Z"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:04:00Z"
    conditions = [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:01:00Z"}] if ready else []
    return {"metadata": meta, "spec": {"nodeName": node, "containers": []}, "status": {"conditions": conditions}}


@dataclass
class TargetKube(RecordingKube):
    """RecordingKube (which records every write) that also answers shadow mode's two reads."""

    target: dict[str, Any] | None = None
    reads: list[tuple[str, str]] = field(default_factory=list)

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(("get", name))
        return copy.deepcopy(self.target)

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.reads.append(("list", selector))
        return [copy.deepcopy(p) for p in self.pods.values()]


def web(replicas: int = 2, pods: int = 2) -> TargetKube:
    deployment = {"metadata": {"name": "web"}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}}}
    return TargetKube(pods={f"web-{i}": plain_pod(f"web-{i}") for i in range(pods)}, target=deployment)


def shadow_spec(**over: Any) -> InferenceServiceSpec:
    base: dict[str, Any] = {"mode": "recommend", "targetRef": {"name": "web"}, "replicas": {"min": 1, "max": 8},
                            "warmPool": {"size": 0, "max": 0}, "capacity": {"spot": {"enabled": False}},
                            "forecast": {"enabled": False}, "scaling": {"targetRpsPerReplica": 100}}
    return make_spec(**{**base, **over})


class ShadowWiring:
    """control.service.Wiring in shadow mode: the real ShadowFleet and TargetReader on a TargetKube."""

    def __init__(self, kube: TargetKube, metrics: FakeMetrics, nodes: Mapping[str, NodeInfo] | None = None) -> None:
        self.kube, self.metrics_port, self.nodes = kube, metrics, dict(nodes or {})

    def fleet(self, spec: InferenceServiceSpec) -> ShadowFleet:
        assert spec.target_ref is not None
        read = TargetReader(self.kube, namespace="ns", deployment=spec.target_ref.name,
                            nodes=lambda names: {n: self.nodes.get(n, NodeInfo(labels={})) for n in names},
                            autoscalers=lambda d: [f"HorizontalPodAutoscaler {d}"])
        return ShadowFleet(self.kube, namespace="ns", name="shadow", spec=spec, read=read, target=spec.target_ref.name,
                           clock=lambda: 0.0, max_age_s=0.0)

    def metrics(self, spec: InferenceServiceSpec) -> FakeMetrics:
        return self.metrics_port

    def release(self, metrics: object) -> None:
        pass

    def node_labels(self) -> Sequence[Mapping[str, str]]:
        return []


def test_label_selector_writes_match_labels_and_expressions() -> None:
    selector = {"matchLabels": {"app": "web", "tier": "gpu"},
                "matchExpressions": [{"key": "track", "operator": "In", "values": ["stable", "canary"]},
                                     {"key": "legacy", "operator": "DoesNotExist"},
                                     {"key": "zone", "operator": "NotIn", "values": ["b"]},
                                     {"key": "model", "operator": "Exists"}]}
    assert label_selector(selector) == "app=web,tier=gpu,track in (canary,stable),!legacy,zone notin (b),model"
    with pytest.raises(ValueError, match="selects nothing"):
        label_selector({})
    with pytest.raises(ValueError, match="operator"):
        label_selector({"matchExpressions": [{"key": "a", "operator": "Near"}]})


def test_the_targets_pods_are_replicas_ready_serving_and_spot_by_their_node() -> None:
    kube = web(pods=0)
    kube.pods = {"a": plain_pod("a"), "b": plain_pod("b", ready=False), "c": plain_pod("c", node="spot-1"),
                 "d": plain_pod("d", deleting=True)}
    spot_nodes = {"spot-1": NodeInfo(labels={"karpenter.sh/capacity-type": "spot"})}
    spec = shadow_spec(capacity={"spot": {"enabled": True, "nodeSelector": {"karpenter.sh/capacity-type": "spot"}}})
    fleet = ShadowWiring(kube, FakeMetrics(), spot_nodes).fleet(spec)
    state = fleet.state(now=NOW)
    by_name = {r.name: r for r in state.replicas}
    assert by_name["a"].state == ReplicaState.serving and by_name["a"].capacity_class == ON_DEMAND
    assert by_name["b"].state == ReplicaState.starting
    assert by_name["c"].state == ReplicaState.serving and by_name["c"].capacity_class == SPOT
    assert "d" not in by_name  # terminating: gone as far as the Deployment is concerned
    assert set(fleet.serving()) == {"a", "c"}
    assert fleet.reading is not None and fleet.reading.found and fleet.reading.replicas == 2
    assert fleet.reading.autoscalers == ("HorizontalPodAutoscaler web",)
    fleet.apply(Plan(serving=6, standby=0, on_demand=6, spot=0, reason="QueueDepth", message="", apply=True), now=NOW)
    assert kube.calls == [] and fleet.events == []  # nothing scaled, labelled or evicted


def test_a_missing_target_is_reported_not_guessed() -> None:
    kube = web()
    kube.target = None
    fleet = ShadowWiring(kube, FakeMetrics()).fleet(shadow_spec())
    assert fleet.state(now=NOW).replicas == ()
    assert fleet.reading is not None and not fleet.reading.found
    assert fleet.reading.message == "spec.targetRef: Deployment web not found in namespace ns"


def tick(loop: ServiceLoop, spec: InferenceServiceSpec, status: dict[str, Any], now: float) -> Any:
    loop.configure(spec, now)
    outcome = loop.tick(status, 1, now=now)
    if outcome.status is not None:
        status.update({k: v for k, v in outcome.status.items() if v is not None})
        loop.confirm(outcome)
    return outcome


def test_a_shadow_loop_reports_recommended_against_actual_and_writes_nothing() -> None:
    kube, metrics = web(), FakeMetrics(request_rate=600.0)
    loop = ServiceLoop(name="shadow", wiring=ShadowWiring(kube, metrics), settings=Settings(heartbeat_s=60))
    spec, status = shadow_spec(), {}
    first = tick(loop, spec, status, NOW)
    shadow = status["shadow"]
    assert shadow["found"] and shadow["actualReplicas"] == 2 and shadow["readyReplicas"] == 2
    assert shadow["recommendedReplicas"] == first.telemetry.result.plan.total > 2
    assert shadow["recommendedCostPerHour"] > shadow["actualCostPerHour"] > 0
    assert shadow["autoscalers"] == ["HorizontalPodAutoscaler web"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Shadowing")
    assert status["lastDecision"]["applied"] is False
    assert [e.reason for e in first.events] == ["Recommendation"]
    assert f"would run {shadow['recommendedReplicas']} " in first.events[0].message
    assert first.telemetry.actual_replicas == 2

    # The same numbers: no new Event. The target's own autoscaler scales it: one.
    assert "Recommendation" not in [e.reason for e in tick(loop, spec, status, NOW + 2).events]
    kube.target["spec"]["replicas"] = 3
    assert "Recommendation" in [e.reason for e in tick(loop, spec, status, NOW + 4).events]

    # The target goes: one Warning naming the field, not one per tick; then back.
    target, kube.target = kube.target, None
    gone = tick(loop, spec, status, NOW + 6)
    assert [(e.type, e.reason) for e in gone.events] == [("Warning", "TargetUnavailable")]
    assert "spec.targetRef" in gone.events[0].message
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["reason"] == "TargetUnavailable"
    assert not [e for e in tick(loop, spec, status, NOW + 8).events if e.reason == "TargetUnavailable"]
    kube.target = target
    back = tick(loop, spec, status, NOW + 10)
    assert "TargetUnavailableResolved" in [e.reason for e in back.events]
    assert kube.calls == []  # every tick: reads only
    assert {verb for verb, _ in kube.reads} == {"get", "list"}


def test_the_shadow_message_alone_is_no_reason_to_write() -> None:
    status = {"shadow": {"target": "Deployment/web", "recommendedReplicas": 4, "actualReplicas": 2,
                         "message": "would run 4; ... (QueueDepth)", "actualCostPerHour": 8.2}}
    moved = copy.deepcopy(status)
    moved["shadow"]["message"] = "would run 4; ... (RequestRate)"
    moved["shadow"]["actualCostPerHour"] = 8.3
    assert material(status) == material(moved)
    moved["shadow"]["recommendedReplicas"] = 5
    assert material(status) != material(moved)


def test_recommended_and_actual_replicas_are_exported() -> None:
    kube, metrics = web(), FakeMetrics(request_rate=600.0)
    loop = ServiceLoop(name="shadow", wiring=ShadowWiring(kube, metrics))
    outcome = tick(loop, shadow_spec(), {}, NOW)
    data = outcome.telemetry
    telemetry = Telemetry()
    telemetry.record_tick(namespace="ns", name="shadow", labels={}, spec=data.spec, result=data.result,
                          duration_s=0.01, actual_replicas=data.actual_replicas)
    labels = {"namespace": "ns", "name": "shadow", "team": "", "project": ""}
    assert telemetry.registry.get_sample_value("gpufleet_actual_replicas", labels) == 2.0
    assert telemetry.registry.get_sample_value("gpufleet_recommended_replicas", labels) == data.result.plan.total


def test_a_target_ref_needs_recommend_mode() -> None:
    with pytest.raises(ValidationError, match="targetRef .* needs mode: recommend"):
        shadow_spec(mode="active")
    assert shadow_spec().target_ref is not None and make_spec(mode="recommend").target_ref is None


def test_the_emulator_plays_a_plain_deployments_ready_pods() -> None:
    emu = Emulator(loads={}, slots=8, service_time_s=1.0)
    mine = plain_pod("web-1")
    mine["metadata"]["labels"][EMULATE_LABEL] = "web"
    starting = plain_pod("web-2", ready=False)
    starting["metadata"]["labels"][EMULATE_LABEL] = "web"
    emu.sync_pods([mine, starting, plain_pod("unrelated")])
    assert set(emu.pods) == {"ns/web-1", "ns/web-2"}
    assert emu.serving == {"ns/web": ["ns/web-1"]}


def test_the_shadow_example_is_a_valid_shadow_spec_of_its_deployment() -> None:
    import yaml

    from tests.support import ROOT

    docs = list(yaml.safe_load_all((ROOT / "examples/03-shadow.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    spec = InferenceServiceSpec.model_validate(kinds["InferenceService"]["spec"])
    assert spec.target_ref is not None and spec.target_ref.name == kinds["Deployment"]["metadata"]["name"]
    assert kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == spec.target_ref.name
    assert label_selector(kinds["Deployment"]["spec"]["selector"]) == "app=web"


def test_recommend_without_a_target_is_ready_as_asked_not_waiting() -> None:
    from tests.fakes import FakeWiring

    loop = ServiceLoop(name="chat", wiring=FakeWiring(RecordingKube(), metrics_port=FakeMetrics(request_rate=50.0)))
    status: dict[str, Any] = {}
    outcome = tick(loop, make_spec(mode="recommend"), status, NOW)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Recommending") and "nothing is created" in ready["message"]
    assert "shadow" not in status and outcome.telemetry.actual_replicas is None
    active = ServiceLoop(name="chat", wiring=FakeWiring(RecordingKube()))
    status = {}
    tick(active, make_spec(), status, NOW)
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["reason"] == "ReplicasStarting"
