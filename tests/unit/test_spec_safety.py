"""Specs the schema admitted and the operator then choked on (issue 17): each is either refused by
the schema, reported as InvalidSpec naming the field, or handled; and what the operator writes to
status is always encodable (no NaN or Infinity), tolerant of fields a newer CRD wrote, and says
the generation only once the children match it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from gpufleet.api import crd
from gpufleet.api.models import InferenceServiceSpec, InferenceServiceStatus, read_status
from gpufleet.control import schedule
from gpufleet.control.service import ServiceLoop, Settings
from gpufleet.control.status import finite
from gpufleet.kopf_app import parse_spec
from tests.builders import make_spec
from tests.fakes import FakeMetrics, FakeWiring, RecordingKube, pod

TEMPLATE = {"spec": {"containers": [{"name": "triton", "image": "triton"}]}}
NOW = 1_767_225_900.0  # 2026-01-01T00:05:00Z


def doc(**extra: Any) -> dict[str, Any]:
    return {"model": {"name": "m"}, "template": TEMPLATE, **extra}


def one_off(**change: Any) -> dict[str, Any]:
    return {"name": "launch", "start": "2026-12-01T14:00:00Z", "duration": "2h", "minReplicas": 2, **change}


# -- spec: admitted by the old schema, crashed every tick ------------------------------------------


def test_a_directory_of_the_tz_database_is_invalid_spec_not_a_crash() -> None:
    # zoneinfo raises IsADirectoryError (an OSError) for "America": it escaped pydantic and
    # crashed the loop every 60 s with nothing in status.
    for zone in ("America", "Europe", "posix", "right", "Etc"):
        message = parse_spec(doc(schedules=[one_off(timeZone=zone)]))
        assert isinstance(message, str), zone
        assert message.startswith("spec.schedules.0.timeZone:") and "unknown IANA time zone" in message


def test_parse_spec_never_raises() -> None:
    # Whatever a validator raises becomes a message, never an exception out of the loop.
    assert isinstance(parse_spec({"model": 3}), str)
    assert isinstance(parse_spec(doc(schedules=[one_off(timeZone="\x00")])), str)


def test_a_window_too_long_for_the_calendar_is_invalid_spec() -> None:
    # 3000000d from 2026 ends in the year 10240: every tick failed with "year 10240 is out of range".
    message = parse_spec(doc(schedules=[one_off(duration="3000000d")]))
    assert isinstance(message, str) and message.startswith("spec.schedules.0.duration:"), message
    assert "366d" in message


def test_the_longest_window_at_the_latest_start_resolves() -> None:
    spec = InferenceServiceSpec.model_validate(doc(schedules=[one_off(start="2999-12-31T23:59:59-23:59",
                                                                       duration="366d")]))
    (window,) = schedule.windows(spec.schedules, NOW)
    assert window.end - window.start == 366 * 86400
    for start in ("0000-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00Z", "1969-12-31T23:00:00Z"):
        message = parse_spec(doc(schedules=[one_off(start=start)]))
        assert isinstance(message, str) and message.startswith("spec.schedules.0.start:"), (start, message)


def _spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def test_the_schema_bounds_durations_and_start_years() -> None:
    item = _spec_schema()["properties"]["schedules"]["items"]
    duration = item["properties"]["duration"]
    assert any("31622400" in r["rule"] for r in duration["x-kubernetes-validations"])
    assert "(19[7-9][0-9]|2[0-9]{3})" in item["properties"]["start"]["pattern"]


@pytest.mark.parametrize("path", [
    ("capacity", "pricePerGpuHour", "onDemand"), ("capacity", "pricePerGpuHour", "spot"),
    ("budget", "maxCostPerHour"), ("budget", "maxCostPerDay"), ("slo", "queueDepthPerReplica"),
    ("scaling", "targetRpsPerReplica"), ("slo", "ttftP95Ms"), ("slo", "latencyP95Ms"), ("slo", "queueTimeMs"),
])
def test_every_number_of_the_spec_has_a_ceiling(path: tuple[str, ...]) -> None:
    node = _spec_schema()
    for key in path:
        node = node["properties"][key]
    assert "maximum" in node, path


def test_a_price_of_1e308_is_refused() -> None:
    message = parse_spec(doc(capacity={"pricePerGpuHour": {"onDemand": 1e308}}))
    assert isinstance(message, str) and message.startswith("spec.capacity.pricePerGpuHour.onDemand:")


# -- status: always encodable, tolerant, and honest about the generation ---------------------------


def test_non_finite_numbers_are_dropped_from_status_and_named() -> None:
    status = {"costPerHour": math.inf, "observed": {"requestRate": math.nan, "queueDepth": 1.0},
              "timeToReadySeconds": {"on-demand": -math.inf, "spot": 3.0}, "replicas": {"desired": 2},
              "conditions": [{"type": "Ready", "status": "True"}]}
    clean, bad = finite(status)
    json.dumps(clean, allow_nan=False)
    assert bad == ["costPerHour", "observed.requestRate", "timeToReadySeconds.on-demand"]
    assert clean["costPerHour"] is None and clean["observed"] == {"requestRate": None, "queueDepth": 1.0}
    assert clean["replicas"] == {"desired": 2} and clean["conditions"] == status["conditions"]
    assert finite({"a": [1.0, math.inf]}) == ({"a": [1.0]}, ["a[1]"])


def test_kube_refuses_to_send_a_non_finite_status() -> None:
    from gpufleet.adapters.kube import Kube

    class Custom:
        calls = 0

        def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> None:
            Custom.calls += 1

    kube = Kube.__new__(Kube)
    kube.custom = Custom()  # type: ignore[assignment]
    kube.timeout = (1.0, 1.0)
    kube.budget_s = 1.0
    with pytest.raises(ValueError, match="costPerHour"):
        kube.patch_status("ns", "chat", {"costPerHour": math.inf})
    assert Custom.calls == 0


NEWER = {
    "observedGeneration": 1,
    "addedLater": {"x": 1},
    "replicas": {"desired": 2, "serving": 1, "draining": 1},
    "conditions": [{"type": "Ready", "status": "True", "reason": "Serving", "severity": "Info"},
                   {"type": "Degraded", "status": "Maybe", "reason": "X"}],
    "schedules": [{"name": "launch", "state": "Closing", "opens": "a", "closes": "b", "provisionFrom": "c"}],
    "usage": {"gpuHours": 2.5, "carbonKg": 1.0},
    "budget": {"state": "Throttled"},
}


def test_status_written_by_a_newer_operator_is_read_without_failing() -> None:
    status = read_status(NEWER)
    assert isinstance(status, InferenceServiceStatus)
    assert status.replicas.serving == 1 and status.usage.gpu_hours == 2.5
    assert [c.type for c in status.conditions] == ["Ready"]  # an item it cannot read is dropped
    assert status.schedules == [] and status.budget is None
    dumped = status.model_dump(by_alias=True, exclude_none=True)
    assert "addedLater" not in dumped and "draining" not in dumped["replicas"]
    assert "severity" not in dumped["conditions"][0]


def service_loop() -> tuple[ServiceLoop, InferenceServiceSpec]:
    kube = RecordingKube(pods={"chat-a": pod("chat-a", serving=True), "chat-b": pod("chat-b", serving=True)},
                         deployments={"chat-ondemand": 2})
    spec = make_spec(replicas={"min": 2, "max": 8}, warmPool={"size": 0, "max": 0},
                     capacity={"spot": {"enabled": False}}, forecast={"enabled": False})
    loop = ServiceLoop(name="chat", wiring=FakeWiring(kube, metrics_port=FakeMetrics()), settings=Settings())
    loop.configure(spec, NOW)
    return loop, spec


def test_a_tick_on_a_status_from_a_newer_operator_writes_only_known_fields() -> None:
    loop, _ = service_loop()
    outcome = loop.tick(NEWER, 1, now=NOW, reconciled=1)
    assert outcome.status is not None
    assert "addedLater" not in outcome.status and "draining" not in outcome.status["replicas"]
    assert {c["type"] for c in outcome.status["conditions"]} >= {"Ready", "Degraded"}
    json.dumps(outcome.status, allow_nan=False)


def test_observed_generation_waits_for_the_children() -> None:
    loop, _ = service_loop()
    # Generation 2's children failed to apply (reconciled is still 1): status says 1.
    first = loop.tick({"observedGeneration": 1}, 2, now=NOW, reconciled=1)
    assert first.status is not None and first.status["observedGeneration"] == 1
    loop.confirm(first)
    # Unknown (no reconcile seen by this process yet): what status said is kept, not advanced.
    unknown = loop.tick({"observedGeneration": 1}, 2, now=NOW + 61, reconciled=None)
    assert unknown.status is not None and unknown.status["observedGeneration"] == 1
    loop.confirm(unknown)
    # Once the children are applied for generation 2, it is written at once (a material change).
    done = loop.tick({"observedGeneration": 1}, 2, now=NOW + 62, reconciled=2)
    assert done.status is not None and done.status["observedGeneration"] == 2


def test_a_non_finite_value_in_the_status_becomes_one_warning_not_a_rejected_patch_each_tick() -> None:
    loop, _ = service_loop()
    metrics = loop.metrics
    assert isinstance(metrics, FakeMetrics)
    metrics.request_rate = math.inf
    outcomes = [loop.tick({}, 1, now=NOW + 70 * i, reconciled=1) for i in range(3)]
    for outcome in outcomes:
        assert outcome.status is not None
        json.dumps(outcome.status, allow_nan=False)
        loop.confirm(outcome)
    warned = [[e.reason for e in o.events if e.type == "Warning"] for o in outcomes]
    assert warned == [["NonFiniteStatus"], [], []]
    assert "observed.requestRate" in next(e.message for e in outcomes[0].events if e.reason == "NonFiniteStatus")


# -- labels and annotations gpufleet sets on the fleet's pods are not the template's --------------

RESERVED = [("labels", "gpufleet.io/serving"), ("labels", "gpufleet.io/inference-service"),
            ("labels", "gpufleet.io/capacity-class"), ("annotations", "gpufleet.io/draining-since"),
            ("annotations", "controller.kubernetes.io/pod-deletion-cost"), ("labels", "gpufleet.io/anything-new")]


@pytest.mark.parametrize(("where", "key"), RESERVED)
def test_reserved_keys_in_the_pod_template_are_invalid_spec(where: str, key: str) -> None:
    template = {"metadata": {where: {key: "true", "team": "a"}}, **TEMPLATE}
    message = parse_spec(doc(template=template))
    assert isinstance(message, str) and message.startswith("spec.template:"), message
    assert f"metadata.{where}[{key}]" in message


def test_keys_of_other_domains_are_the_templates() -> None:
    template = {"metadata": {"labels": {"app": "chat", "example.com/gpufleet.io": "x"},
                             "annotations": {"kwok.gpufleet.io/ready-delay": "5s", "prometheus.io/scrape": "true"}},
                **TEMPLATE}
    assert isinstance(parse_spec(doc(template=template)), InferenceServiceSpec)


def test_the_crd_refuses_reserved_keys_by_cel() -> None:
    from gpufleet.adapters import manifests

    meta = _spec_schema()["properties"]["template"]["properties"]["metadata"]["properties"]
    for where in ("labels", "annotations"):
        (rule,) = [r for r in meta[where]["x-kubernetes-validations"] if "startsWith" in r["rule"]]
        assert "!k.startsWith('gpufleet.io/')" in rule["rule"]
        assert "k != 'controller.kubernetes.io/pod-deletion-cost'" in rule["rule"]
        assert meta[where]["maxProperties"] > 0  # bounds the rule's cost
    # Every label and annotation the operator writes on pods is covered by the rule.
    for key in (manifests.LABEL_SERVICE, manifests.LABEL_CLASS, manifests.LABEL_SERVING,
                manifests.ANNOTATION_DRAINING, manifests.ANNOTATION_DELETION_COST):
        assert key.startswith("gpufleet.io/") or key == "controller.kubernetes.io/pod-deletion-cost", key


# -- found by the spec fuzzer (tests/integration/test_spec_fuzz.py) ---------------------------------


def test_a_per_replica_rate_that_underflows_to_zero_is_refused() -> None:
    # targetRpsPerReplica 1e-300 x targetUtilization 1e-5 is 0.0: every tick divided by it
    # (ZeroDivisionError in core.capacity.rate_need). The floors keep the product above 1e-5.
    message = parse_spec(doc(scaling={"targetRpsPerReplica": 1e-300, "targetUtilization": 1e-5}))
    assert isinstance(message, str) and "spec.scaling.targetRpsPerReplica" in message
    assert "spec.scaling.targetUtilization" in message
    node = _spec_schema()["properties"]["scaling"]["properties"]
    assert node["targetRpsPerReplica"]["minimum"] == 0.001 and node["targetUtilization"]["minimum"] == 0.01
    assert _spec_schema()["properties"]["slo"]["properties"]["queueDepthPerReplica"]["minimum"] == 0.01


def test_the_lowest_rates_allowed_still_tick() -> None:
    loop, _ = service_loop()
    spec = make_spec(replicas={"min": 2, "max": 8}, warmPool={"size": 0, "max": 0},
                     capacity={"spot": {"enabled": False}}, forecast={"enabled": False},
                     scaling={"targetRpsPerReplica": 0.001, "targetUtilization": 0.01},
                     slo={"queueDepthPerReplica": 0.01})
    loop.configure(spec, NOW)
    metrics = loop.metrics
    assert isinstance(metrics, FakeMetrics)
    metrics.request_rate = 1e6
    outcome = loop.tick({}, 1, now=NOW, reconciled=1)
    assert outcome.status is not None and outcome.status["lastDecision"]["desired"] == 6  # 2 + one step of 4
    json.dumps(outcome.status, allow_nan=False)


def test_node_selectors_and_tolerations_the_api_server_would_refuse_on_a_pod_are_refused_at_admission() -> None:
    placement = _spec_schema()["properties"]["capacity"]["properties"]["spot"]["properties"]
    selector = placement["nodeSelector"]
    assert any("k.matches(" in r["rule"] for r in selector["x-kubernetes-validations"])
    assert selector["additionalProperties"]["maxLength"] == 63
    rules = [r["message"] for r in placement["tolerations"]["items"]["x-kubernetes-validations"]]
    assert "a toleration without a key must have operator Exists" in rules
    assert placement["tolerations"]["items"]["properties"]["operator"]["enum"] == ["Exists", "Equal"]


def test_every_number_with_a_floor_above_zero_is_floored_by_cel_too() -> None:
    # kube-apiserver skips `minimum` for a number field whose value is 0: targetUtilization: 0
    # and quantile: 0 were admitted although the schema said >= 0.01 and >= 0.5.
    found = []

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "number" and "minimum" in node and (node["minimum"] > 0 or node.get("exclusiveMinimum")):
            rules = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
            assert any(r.startswith("self >") for r in rules), path
            found.append(path)
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(_spec_schema(), "spec")
    assert {"spec.scaling.targetUtilization", "spec.forecast.quantile", "spec.slo.queueDepthPerReplica",
            "spec.budget.maxCostPerHour"} <= set(found)


@pytest.mark.parametrize("listed, gone", [([], True), ([{"metadata": {"name": "chat"}}], False)])
def test_a_status_patch_on_a_deleted_service_says_the_service_is_gone(listed: list[Any], gone: bool) -> None:
    # A loop whose daemon outlived its InferenceService ticked on 404s for minutes (CI, 2026-12-03):
    # a 404 confirmed by a lookup is ServiceGone, which ends the loop; a 404 while the service is
    # still listed stays a failed tick (reported, tried again).
    from kubernetes.client.exceptions import ApiException

    from gpufleet.adapters.kube import Kube, ServiceGone

    class Custom:
        def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> None:
            raise ApiException(status=404, reason="Not Found")

        def list_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            assert kwargs["field_selector"] == "metadata.name=chat"
            return {"items": listed}

    kube = Kube.__new__(Kube)
    kube.custom = Custom()  # type: ignore[assignment]
    kube.timeout = (1.0, 1.0)
    kube.budget_s = 1.0
    with pytest.raises(ServiceGone if gone else ApiException) as raised:
        kube.patch_status("ns", "chat", {"replicas": {"desired": 1}})
    assert isinstance(raised.value, ServiceGone) == gone
