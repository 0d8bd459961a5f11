"""Objects gpufleet does not own are never adopted or overwritten (adapters.kube.apply_child),
look-alike Deployments are never scaled (the watch cache's filter), and the clash is reported:
Ready=False, reason Conflict, naming the object; HPAs and ScaledObjects aimed at gpufleet's
Deployments are reported too (Degraded, AutoscalerConflict). One Event per cause, not per tick."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes.dynamic.exceptions import NotFoundError

from gpufleet.adapters import manifests
from gpufleet.adapters.kube import Kube, NotOwned
from gpufleet.api.timefmt import iso_seconds
from gpufleet.control.service import ServiceLoop, Settings
from gpufleet.kopf_app import autoscalers_of, gpufleet_deployments, gpufleet_hpas, gpufleet_scaledobjects
from tests.builders import make_spec
from tests.fakes import FakeMetrics, FakeWiring, RecordingKube, pod

UID = "1111-aaaa"
OWNER = {"apiVersion": "gpufleet.io/v1alpha1", "kind": "InferenceService", "name": "chat", "uid": UID,
         "controller": True, "blockOwnerDeletion": True}
NOW = iso_seconds("2026-01-01T00:05:00Z")


class Result:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj

    def to_dict(self) -> dict[str, Any]:
        return self.obj


class FakeResource:
    """The dynamic client's resource for one kind: one object of the child's name, or none."""

    def __init__(self, existing: dict[str, Any] | None) -> None:
        self.existing = existing
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get(self, **_: Any) -> Result:
        if self.existing is None:
            raise NotFoundError(type("E", (), {"status": 404, "reason": "NotFound", "body": "", "headers": {}})())
        return Result(self.existing)

    def create(self, *, body: dict[str, Any], **_: Any) -> Result:
        self.calls.append(("create", body))
        return Result(body)

    def server_side_apply(self, *, body: dict[str, Any], **_: Any) -> Result:
        self.calls.append(("apply", body))
        return Result({**body, "metadata": {**body["metadata"], "resourceVersion": "2"}})


def kube_with(resource: FakeResource) -> Kube:
    kube = Kube.__new__(Kube)
    kube.timeout = (1.0, 1.0)
    kube.budget_s = 1.0
    kube._dynamic = type("D", (), {"resources": type("R", (), {"get": staticmethod(lambda **_: resource)})()})()
    return kube


def child() -> dict[str, Any]:
    body = manifests.deployment("chat", make_spec(), "on-demand")
    body["metadata"]["ownerReferences"] = [OWNER]
    return body


def existing(**meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "chat-ondemand", "uid": "9999-other", "resourceVersion": "1", **meta},
            "spec": {"replicas": 3}}


@pytest.mark.parametrize("meta", [
    {},  # someone's `kubectl create deployment chat-ondemand`
    {"ownerReferences": [{**OWNER, "uid": "2222-another-service"}]},  # a deleted and re-created service's
    {"ownerReferences": [{**OWNER, "controller": False}]},  # owner but not controller
], ids=["no owner", "other uid", "not controller"])
def test_an_object_the_service_does_not_control_is_neither_adopted_nor_overwritten(meta: dict[str, Any]) -> None:
    resource = FakeResource(existing(managedFields=[{"manager": "kubectl-create"}], **meta))
    with pytest.raises(NotOwned) as exc:
        kube_with(resource).apply_child("ns", child())
    assert resource.calls == []
    assert str(exc.value).startswith("Deployment chat-ondemand exists and is ")
    assert "neither adopts nor overwrites" in str(exc.value) and "kubectl-create" in str(exc.value)


def test_an_owned_object_is_applied_with_its_uid_as_a_precondition() -> None:
    resource = FakeResource(existing(uid="5555-ours", ownerReferences=[OWNER]))
    assert kube_with(resource).apply_child("ns", child()) == "updated"
    ((verb, body),) = resource.calls
    assert verb == "apply" and body["metadata"]["uid"] == "5555-ours" and "replicas" not in body["spec"]


def test_a_missing_child_is_created_at_its_initial_size() -> None:
    resource = FakeResource(None)
    assert kube_with(resource).apply_child("ns", child(), replicas=2) == "created"
    assert resource.calls[0][0] == "create" and resource.calls[0][1]["spec"]["replicas"] == 2


def index_of(fn: Any, **kwargs: Any) -> dict[Any, Any]:
    result: dict[Any, Any] = asyncio.run(fn(**kwargs))
    return result


def test_the_deployment_cache_holds_only_what_an_inference_service_controls() -> None:
    labels = {manifests.LABEL_SERVICE: "chat"}
    ours = index_of(gpufleet_deployments, namespace="ns", name="chat-ondemand", spec={"replicas": 3},
                    meta={"ownerReferences": [OWNER]}, labels=labels)
    assert ours == {("ns", "chat-ondemand"): 3}
    for meta in ({}, {"ownerReferences": [{**OWNER, "name": "other"}]},
                 {"ownerReferences": [{**OWNER, "kind": "ReplicaSet", "apiVersion": "apps/v1"}]}):
        assert index_of(gpufleet_deployments, namespace="ns", name="chat-ondemand", spec={"replicas": 3},
                        meta=meta, labels=labels) == {}


def test_autoscalers_aimed_at_gpufleet_deployments_are_found() -> None:
    hpa = index_of(gpufleet_hpas, namespace="ns", name="web",
                   spec={"scaleTargetRef": {"kind": "Deployment", "name": "chat-ondemand"}}, meta={})
    keda_hpa = index_of(gpufleet_hpas, namespace="ns", name="keda-hpa-q",
                        spec={"scaleTargetRef": {"kind": "Deployment", "name": "chat-spot"}},
                        meta={"ownerReferences": [{"kind": "ScaledObject", "name": "q"}]})
    assert keda_hpa == {}  # reported as its ScaledObject
    scaled = index_of(gpufleet_scaledobjects, namespace="ns", name="q", spec={"scaleTargetRef": {"name": "chat-spot"}})
    rollout = index_of(gpufleet_scaledobjects, namespace="ns", name="r",
                       spec={"scaleTargetRef": {"kind": "Rollout", "name": "chat-spot"}})
    assert rollout == {}

    def store(*entries: dict[Any, str]) -> dict[Any, list[str]]:
        out: dict[Any, list[str]] = {}
        for e in entries:
            for k, v in e.items():
                out.setdefault(k, []).append(v)
        return out

    found = autoscalers_of("ns", "chat", store(hpa), store(scaled), None)  # type: ignore[arg-type]
    assert found == ["HorizontalPodAutoscaler web targets Deployment chat-ondemand",
                     "ScaledObject q targets Deployment chat-spot"]
    assert autoscalers_of("other", "chat", store(hpa), None) == []  # type: ignore[arg-type]


def loop() -> ServiceLoop:
    kube = RecordingKube(pods={"chat-a": pod("chat-a", serving=True)}, deployments={"chat-ondemand": 1})
    spec = make_spec(replicas={"min": 1, "max": 8}, warmPool={"size": 0, "max": 0},
                     capacity={"spot": {"enabled": False}}, forecast={"enabled": False})
    service = ServiceLoop(name="chat", wiring=FakeWiring(kube, metrics_port=FakeMetrics()), settings=Settings())
    service.configure(spec, NOW)
    return service


def conditions(status: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    assert status is not None
    return {c["type"]: c for c in status["conditions"]}


def test_a_conflict_is_ready_false_naming_the_object_with_one_event_per_cause() -> None:
    service = loop()
    clash = ("Deployment chat-ondemand exists and is not controlled by this InferenceService: "
             "gpufleet neither adopts nor overwrites it (delete or rename it)")
    outcomes = [service.tick({}, 1, now=NOW + 70 * i, conflicts=(clash,)) for i in range(4)]
    for o in outcomes:
        ready = conditions(o.status)["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "Conflict") and "chat-ondemand" in ready["message"]
        service.confirm(o)
    assert [[(e.type, e.reason) for e in o.events if "Conflict" in e.reason] for o in outcomes] == \
        [[("Warning", "Conflict")], [], [], []]
    resolved = service.tick({}, 1, now=NOW + 400, conflicts=())
    assert [(e.type, e.reason) for e in resolved.events if "Conflict" in e.reason] == [("Normal", "ConflictResolved")]
    assert conditions(resolved.status)["Ready"]["status"] == "True"
    assert [e.reason for e in service.tick({}, 1, now=NOW + 470).events if "Conflict" in e.reason] == []


def test_an_autoscaler_on_a_gpufleet_deployment_is_degraded_with_one_event_per_cause() -> None:
    service = loop()
    hpa = ["HorizontalPodAutoscaler web targets Deployment chat-ondemand"]
    first = service.tick({}, 1, now=NOW, autoscalers=hpa)
    degraded = conditions(first.status)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "AutoscalerConflict")
    assert "HorizontalPodAutoscaler web" in degraded["message"]
    assert [e.reason for e in first.events if e.type == "Warning"] == ["AutoscalerConflict"]
    service.confirm(first)
    assert [e.reason for e in service.tick({}, 1, now=NOW + 10, autoscalers=hpa).events] == []
    # A second one is a new cause: one more Warning naming both.
    both = service.tick({}, 1, now=NOW + 20, autoscalers=[*hpa, "ScaledObject q targets Deployment chat-spot"])
    (warning,) = [e for e in both.events if e.type == "Warning"]
    assert "ScaledObject q" in warning.message and "HorizontalPodAutoscaler web" in warning.message
    gone = service.tick({}, 1, now=NOW + 30, autoscalers=[])
    assert [e.reason for e in gone.events] == ["AutoscalerConflictResolved"]
    assert conditions(gone.status)["Degraded"]["status"] == "False"


def test_a_child_the_api_server_refuses_is_invalid_spec_naming_the_field() -> None:
    from kubernetes.client.exceptions import ApiException

    from gpufleet.kopf_app import refusal

    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = ('{"message": "Deployment.apps \\"chat-spot\\" is invalid: spec.template.spec.tolerations[0].operator: '
                'Invalid value: \\"\\": operator must be Exists when key is empty"}')
    spot = manifests.deployment("chat", make_spec(), "spot")
    message = refusal(spot, exc)
    assert message.startswith("spec.template or spec.capacity.spot: the API server refused Deployment chat-spot")
    assert "operator must be Exists" in message
    service = loop()
    outcomes = [service.tick({}, 1, now=NOW + 70 * i, rejected=(message,)) for i in range(3)]
    for o in outcomes:
        ready = conditions(o.status)["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec") and "chat-spot" in ready["message"]
        service.confirm(o)
    assert [[e.reason for e in o.events if e.type == "Warning"] for o in outcomes] == [["InvalidSpec"], [], []]


def test_apply_children_reports_refusals_and_conflicts_and_applies_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf
    from kubernetes.client.exceptions import ApiException

    from gpufleet import kopf_app

    class Refusing:
        applied: list[str] = []

        def apply_child(self, namespace: str, body: dict[str, Any], *, replicas: int | None = None) -> str:
            name = body["metadata"]["name"]
            if name == "chat-spot":
                exc = ApiException(status=422, reason="Unprocessable Entity")
                exc.body = '{"message": "Deployment.apps \\"chat-spot\\" is invalid: spec.template.spec.x: bad"}'
                raise exc
            if name == "chat-ondemand":
                raise NotOwned("Deployment", name, "not controlled by this InferenceService")
            self.applied.append(name)
            return "unchanged"

    monkeypatch.setattr(kopf_app, "kube", lambda: Refusing())
    monkeypatch.setattr(kopf, "info", lambda *a, **k: None)
    body = kopf.Body({"apiVersion": "gpufleet.io/v1alpha1", "kind": "InferenceService",  # type: ignore[arg-type]
                      "metadata": {"name": "chat", "namespace": "ns", "uid": "u-refused", "generation": 3}})
    conflicts, rejected = kopf_app.apply_children(body, make_spec(), "ns", "chat")
    assert [c.split(" exists")[0] for c in conflicts] == ["Deployment chat-ondemand"]
    assert len(rejected) == 1 and rejected[0].startswith("spec.template: the API server refused Deployment chat-spot")
    assert Refusing.applied == ["chat", "chat"]  # the Service and the PDB (both named after the service)
    assert kopf_app.REJECTED["u-refused"] == rejected and "u-refused" not in kopf_app.RECONCILED
    status = kopf_app.conflict_status(body, conflicts, rejected, NOW)
    (ready,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert ready["reason"] == "InvalidSpec" and "observedGeneration" not in status
