"""Issue 17 on the real API server and the operator out of cluster: specs the schema used to admit
and the loop then choked on, objects gpufleet does not own, autoscalers aimed at its Deployments,
and the labels and annotations it reserves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import Cluster, condition, example, loop_service, status
from tests.support import wait_for

pytestmark = pytest.mark.cluster

ONE_OFF = {"name": "launch", "start": "2026-12-01T14:00:00Z", "duration": "2h", "minReplicas": 1}

REFUSED = [
    ("window of 3000000d", {"schedules": [{**ONE_OFF, "duration": "3000000d"}]}, "duration must be at most 366d"),
    ("window of 367d", {"schedules": [{**ONE_OFF, "duration": "367d"}]}, "duration must be at most 366d"),
    ("start in year 0", {"schedules": [{**ONE_OFF, "start": "0000-01-01T00:00:00Z"}]}, "spec.schedules[0].start"),
    ("start in year 9999", {"schedules": [{**ONE_OFF, "start": "9999-12-31T23:00:00Z"}]}, "spec.schedules[0].start"),
    ("price 1e308", {"capacity": {"pricePerGpuHour": {"onDemand": 1e308}}}, "spec.capacity.pricePerGpuHour.onDemand"),
    ("budget 1e308", {"budget": {"maxCostPerHour": 1e308}}, "spec.budget.maxCostPerHour"),
    # Found by the spec fuzzer: each made every tick fail, or every apply of the Deployments.
    ("rate underflowing to 0", {"scaling": {"targetRpsPerReplica": 1e-300, "targetUtilization": 1e-5}},
     "spec.scaling.targetRpsPerReplica"),
    ("node selector key", {"capacity": {"spot": {"nodeSelector": {"a/b/c": "x"}}}},
     "nodeSelector keys must be label keys"),
    ("node selector value", {"capacity": {"onDemand": {"nodeSelector": {"pool": "a b"}}}},
     "spec.capacity.onDemand.nodeSelector.pool"),
    ("empty toleration", {"capacity": {"spot": {"tolerations": [{}]}}}, "a toleration without a key"),
    # The API server skips `minimum` for a number that is 0; the CEL floor does not.
    ("quantile 0", {"forecast": {"quantile": 0}}, "spec.forecast.quantile"),
    ("utilisation 0", {"scaling": {"targetUtilization": 0}}, "spec.scaling.targetUtilization"),
]


@pytest.mark.parametrize(("case", "override", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_the_api_server_refuses_what_the_loop_cannot_compute(
    cluster: Cluster, namespace: str, case: str, override: dict[str, Any], message: str
) -> None:
    obj = example(namespace, name="bad")
    obj["spec"].update(override)
    proc = cluster.apply(obj, check=False)
    assert proc.returncode != 0, f"{case}: accepted"
    assert message in proc.stderr, proc.stderr


def test_the_longest_window_is_admitted(cluster: Cluster, namespace: str) -> None:
    obj = example(namespace, name="long", schedules=[{**ONE_OFF, "duration": "366d"}])
    cluster.apply(obj)


def test_a_time_zone_that_is_a_directory_is_invalid_spec_and_the_loop_lives(
    cluster: Cluster, operator: Path, namespace: str
) -> None:
    # The schema's pattern admits "America"; the tz database has a directory of that name.
    obj = loop_service(namespace, "tz")
    obj["spec"]["schedules"] = [{**ONE_OFF, "timeZone": "America"}]
    cluster.apply(obj)

    def ready() -> dict[str, Any]:
        return condition(status(cluster, namespace, "tz"), "Ready")

    wait_for(lambda: ready().get("reason") == "InvalidSpec", timeout=60, what="Ready=False InvalidSpec")
    cond = ready()
    assert cond["status"] == "False" and "spec.schedules.0.timeZone" in cond["message"], cond
    assert "unknown IANA time zone 'America'" in cond["message"], cond
    isvc = cluster.get("inferenceservice", "tz", namespace) or {}
    assert isvc["status"].get("observedGeneration") == isvc["metadata"]["generation"]  # handled: rejected

    # Corrected, the same loop decides: it never died.
    cluster.kubectl("patch", "inferenceservice", "tz", "-n", namespace, "--type=json", "-p",
                    '[{"op": "replace", "path": "/spec/schedules/0/timeZone", "value": "America/New_York"}]')
    wait_for(lambda: status(cluster, namespace, "tz").get("lastDecision", {}).get("reason"), timeout=60,
             what="a decision after the fix")
    wait_for(lambda: ready().get("reason") != "InvalidSpec", timeout=30, what="InvalidSpec cleared")
    log = operator.read_text()
    assert "IsADirectoryError" not in log, log[-3000:]


def events_of(cluster: Cluster, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in cluster.list("events", namespace)
            if e["involvedObject"]["name"] == name and e["reason"] == reason]


def test_an_object_of_a_childs_name_is_not_adopted_and_is_reported(
    cluster: Cluster, operator: Path, namespace: str
) -> None:
    # Someone else's Deployment with the name gpufleet would give the on-demand class.
    cluster.kubectl("create", "deployment", "clash-ondemand", "-n", namespace, "--image=nginx:foreign", "--replicas=0")
    before = cluster.get("deployment", "clash-ondemand", namespace) or {}
    obj = loop_service(namespace, "clash")
    cluster.apply(obj)

    def ready() -> dict[str, Any]:
        return condition(status(cluster, namespace, "clash"), "Ready")

    wait_for(lambda: ready().get("reason") == "Conflict", timeout=60, what="Ready=False Conflict")
    cond = ready()
    assert cond["status"] == "False" and "Deployment clash-ondemand exists" in cond["message"], cond
    # Several ticks later: still one Warning for it, the foreign object untouched, the rest applied.
    wait_for(lambda: len({status(cluster, namespace, "clash").get("lastDecision", {}).get("time")}) and
             status(cluster, namespace, "clash").get("lastDecision", {}).get("time"), timeout=60, what="a decision")
    first = status(cluster, namespace, "clash")["lastDecision"]["time"]
    wait_for(lambda: status(cluster, namespace, "clash")["lastDecision"]["time"] != first, timeout=30,
             what="another decision")
    assert len(events_of(cluster, namespace, "clash", "Conflict")) == 1
    after = cluster.get("deployment", "clash-ondemand", namespace) or {}
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert not after["metadata"].get("ownerReferences")
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:foreign"
    assert cluster.get("service", "clash", namespace) is not None  # the children it owns were applied
    assert "observedGeneration" not in status(cluster, namespace, "clash")  # the children do not match yet

    # Removed, the clash clears by itself: the operator creates its own and says so.
    cluster.kubectl("delete", "deployment", "clash-ondemand", "-n", namespace, "--wait=true")

    def owned() -> bool:
        dep = cluster.get("deployment", "clash-ondemand", namespace) or {}
        refs = dep.get("metadata", {}).get("ownerReferences") or []
        return any(r["kind"] == "InferenceService" and r["name"] == "clash" for r in refs)

    wait_for(owned, timeout=90, what="the operator's own clash-ondemand")
    wait_for(lambda: events_of(cluster, namespace, "clash", "ConflictResolved"), timeout=60, what="ConflictResolved")
    wait_for(lambda: ready().get("reason") != "Conflict", timeout=30, what="Conflict cleared")
    isvc = cluster.get("inferenceservice", "clash", namespace) or {}
    wait_for(lambda: status(cluster, namespace, "clash").get("observedGeneration") == isvc["metadata"]["generation"],
             timeout=30, what="observedGeneration once the children match")


SCALED_OBJECT_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "scaledobjects.keda.sh"},
    "spec": {"group": "keda.sh", "scope": "Namespaced",
             "names": {"kind": "ScaledObject", "plural": "scaledobjects", "singular": "scaledobject",
                       "listKind": "ScaledObjectList"},
             "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]},
}


def test_an_hpa_or_scaled_object_on_a_gpufleet_deployment_is_reported(
    cluster: Cluster, operator: Path, namespace: str
) -> None:
    obj = loop_service(namespace, "auto")
    cluster.apply(obj)
    wait_for(lambda: status(cluster, namespace, "auto").get("lastDecision"), timeout=60, what="a decision")

    def degraded() -> dict[str, Any]:
        return condition(status(cluster, namespace, "auto"), "Degraded")

    cluster.kubectl("autoscale", "deployment", "auto-ondemand", "-n", namespace, "--min=1", "--max=4",
                    "--cpu-percent=80", "--name=web-hpa")
    wait_for(lambda: degraded().get("reason") == "AutoscalerConflict", timeout=60, what="Degraded AutoscalerConflict")
    assert "HorizontalPodAutoscaler web-hpa targets Deployment auto-ondemand" in degraded()["message"]
    cluster.kubectl("delete", "hpa", "web-hpa", "-n", namespace)
    wait_for(lambda: degraded().get("reason") != "AutoscalerConflict", timeout=60, what="the HPA's conflict cleared")
    assert len(events_of(cluster, namespace, "auto", "AutoscalerConflict")) == 1
    assert events_of(cluster, namespace, "auto", "AutoscalerConflictResolved")

    # KEDA is not installed on the test cluster: the operator ran without its CRD so far. Once the
    # CRD appears, kopf starts watching ScaledObjects.
    cluster.apply(SCALED_OBJECT_CRD)
    try:
        cluster.kubectl("wait", "--for=condition=Established", "crd/scaledobjects.keda.sh", "--timeout=30s")
        cluster.apply({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                       "metadata": {"name": "queue", "namespace": namespace},
                       "spec": {"scaleTargetRef": {"name": "auto-spot"}, "triggers": []}})
        wait_for(lambda: "ScaledObject queue targets Deployment auto-spot" in degraded().get("message", ""),
                 timeout=90, what="Degraded naming the ScaledObject")
    finally:
        cluster.kubectl("delete", "crd", "scaledobjects.keda.sh", "--wait=false", check=False)


RESERVED = [("labels", "gpufleet.io/serving"), ("labels", "gpufleet.io/inference-service"),
            ("labels", "gpufleet.io/capacity-class"), ("annotations", "gpufleet.io/draining-since"),
            ("annotations", "controller.kubernetes.io/pod-deletion-cost")]


@pytest.mark.parametrize(("where", "key"), RESERVED, ids=[k for _, k in RESERVED])
def test_the_api_server_refuses_reserved_keys_in_the_pod_template(
    cluster: Cluster, namespace: str, where: str, key: str
) -> None:
    obj = example(namespace, name="bad")
    obj["spec"]["template"]["metadata"].setdefault(where, {})[key] = "true"
    proc = cluster.apply(obj, check=False)
    assert proc.returncode != 0, f"{key}: accepted"
    assert f"spec.template.metadata.{where}" in proc.stderr and "set by the gpufleet operator" in proc.stderr, \
        proc.stderr
    assert cluster.get("inferenceservice", "bad", namespace) is None
