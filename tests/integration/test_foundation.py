"""The CRD, the children and the status on a real API server, with the operator out of cluster."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from gpufleet.api.timefmt import iso_seconds
from tests.integration.support import READY_DELAY_S, Cluster, example, explained, is_ready, pods
from tests.support import wait_for

pytestmark = pytest.mark.cluster

def owned_by(obj: dict[str, Any], isvc: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(r["uid"] == isvc["metadata"]["uid"] and r["kind"] == "InferenceService" and r.get("controller")
               for r in refs)


def test_crd_has_explain_text(cluster: Cluster) -> None:
    # The API server publishes a new CRD's OpenAPI a little after it is Established.
    out = wait_for(lambda: (o := cluster.kubectl("explain", "inferenceservice.spec.replicas.min", check=False).stdout)
                   and "Fewest serving replicas" in o and o, timeout=60, what="explain text published")
    assert "Fewest serving replicas" in out
    out = cluster.kubectl("explain", "inferenceservice.spec.warmPool").stdout
    assert "standby" in out.lower()


INVALID = [
    ("min > max", {"replicas": {"min": 5, "max": 2}}, "replicas.min must be <= replicas.max"),
    ("negative min", {"replicas": {"min": -1, "max": 2}}, "spec.replicas.min"),
    ("unknown backend", {"model": {"name": "m", "backend": "onnx"}}, "spec.model.backend"),
    ("bad warm pool", {"warmPool": {"size": "lots"}}, "warmPool.size"),
    ("base above max", {"replicas": {"min": 1, "max": 2}, "capacity": {"onDemand": {"base": 3}}},
     "capacity.onDemand.base"),
    ("spot fraction > 1", {"capacity": {"spot": {"enabled": True, "maxFraction": 1.5}}},
     "spec.capacity.spot.maxFraction"),
    ("utilisation target 0", {"scaling": {"targetUtilization": 0}}, "spec.scaling.targetUtilization"),
]


@pytest.mark.parametrize("case,override,field", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_specs_are_rejected_naming_the_field(
    cluster: Cluster, namespace: str, case: str, override: dict[str, Any], field: str
) -> None:
    obj = example(namespace, name="bad")
    obj["spec"].update(copy.deepcopy(override))
    proc = cluster.apply(obj, check=False)
    assert proc.returncode != 0, f"{case}: accepted"
    assert field in proc.stderr, proc.stderr
    assert cluster.get("inferenceservice", "bad", namespace) is None


@pytest.mark.parametrize("drop", ["template", "containers"])
def test_missing_template_is_rejected(cluster: Cluster, namespace: str, drop: str) -> None:
    obj = example(namespace, name="bad")
    if drop == "template":
        del obj["spec"]["template"]
        expected = "spec.template: Required value"
    else:
        obj["spec"]["template"]["spec"]["containers"] = []
        expected = "spec.template.spec.containers"
    proc = cluster.apply(obj, check=False)
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr


def test_lifecycle_children_placement_status_update_delete(
    cluster: Cluster, operator: Path, namespace: str
) -> None:
    cluster.apply(example(namespace))
    isvc = wait_for(lambda: cluster.get("inferenceservice", "chat", namespace), timeout=10, what="isvc")

    # Children exist, owned by the InferenceService.
    names = [("deployment", "chat-ondemand"), ("deployment", "chat-spot"), ("service", "chat"),
             ("poddisruptionbudget", "chat")]
    for kind, child in names:
        obj = wait_for(lambda k=kind, c=child: cluster.get(k, c, namespace), timeout=60, what=f"{kind}/{child}")
        assert owned_by(obj, isvc), f"{kind}/{child} lacks an owner reference"
    svc = cluster.get("service", "chat", namespace)
    assert svc and svc["spec"]["selector"] == {"gpufleet.io/inference-service": "chat", "gpufleet.io/serving": "true"}

    # min 2 serving + 1 warm standby, split across classes; every pod Ready only after its delay.
    def settled() -> list[dict[str, Any]] | None:
        current = pods(cluster, namespace, "chat")
        return current if len(current) == 3 and all(is_ready(p) for p in current) else None

    with explained(cluster, namespace, "chat"):
        current = wait_for(settled, timeout=120, what="3 Ready pods")
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"] for n in cluster.list("nodes", "")}
    classes = []
    for pod in current:
        capacity_class = pod["metadata"]["labels"]["gpufleet.io/capacity-class"]
        classes.append(capacity_class)
        assert nodes[pod["spec"]["nodeName"]]["karpenter.sh/capacity-type"] == capacity_class
        ready_at = next(iso_seconds(c["lastTransitionTime"]) for c in pod["status"]["conditions"] if c["type"] == "Ready")
        assert ready_at - iso_seconds(pod["metadata"]["creationTimestamp"]) >= READY_DELAY_S - 1
    assert classes.count("on-demand") >= 1 and classes.count("spot") >= 1

    def status_says_ready() -> dict[str, Any] | None:
        obj = cluster.get("inferenceservice", "chat", namespace) or {}
        st = obj.get("status", {})
        conds = {c["type"]: c for c in st.get("conditions", [])}
        ok = (conds.get("Ready", {}).get("status") == "True" and st.get("replicas", {}).get("serving") == 2
              and st.get("replicas", {}).get("standby") == 1 and st.get("observedGeneration") == obj["metadata"]["generation"])
        return obj if ok else None

    obj = wait_for(status_says_ready, timeout=60, what="status Ready with 2 serving + 1 standby")
    ttr = obj["status"]["timeToReadySeconds"]
    assert ttr and all(READY_DELAY_S - 1 <= v <= READY_DELAY_S + 15 for v in ttr.values()), ttr
    serving = [p for p in pods(cluster, namespace, "chat") if p["metadata"]["labels"].get("gpufleet.io/serving") == "true"]
    assert len(serving) == 2

    # Events were emitted for the children.
    events = cluster.list("events", namespace)
    assert any(e["involvedObject"]["name"] == "chat" and e["reason"] == "Created" for e in events)

    # An update changes the children: a new container arg reaches the Deployments' template,
    # and a higher floor scales them up without resetting replica counts to defaults.
    cluster.kubectl("patch", "inferenceservice", "chat", "-n", namespace, "--type=merge", "-p",
                    '{"spec":{"replicas":{"min":4},"template":{"spec":{"containers":[{"name":"triton",'
                    '"image":"nvcr.io/nvidia/tritonserver:25.02-py3"}]}}}}')

    def updated() -> bool:
        dep = cluster.get("deployment", "chat-ondemand", namespace) or {}
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        total = sum((cluster.get("deployment", d, namespace) or {})["spec"]["replicas"]
                    for d in ("chat-ondemand", "chat-spot"))
        return image.endswith("25.02-py3") and total == 5

    wait_for(updated, timeout=60, what="template update and scale to 4 serving + 1 standby")

    # Deleting the InferenceService removes its children (garbage collection by owner reference).
    cluster.kubectl("delete", "inferenceservice", "chat", "-n", namespace, "--wait=true", "--timeout=60s")
    for kind, child in names:
        wait_for(lambda k=kind, c=child: cluster.get(k, c, namespace) is None, timeout=90, what=f"{kind}/{child} gone")
    wait_for(lambda: not pods(cluster, namespace, "chat"), timeout=90, what="pods gone")
