"""Shadow mode on the real cluster (issue 19): an existing Deployment that an HPA targets, whose
pods the emulator plays as Triton servers, watched by an InferenceService with spec.targetRef and
mode: recommend. gpufleet's status follows the load (recommended rises with it) while the
Deployment, its pods and the namespace stay exactly as they were: nothing created, labelled,
annotated or scaled. And mode: recommend without a targetRef creates no children at all."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpufleet.devenv.prometheus import PrometheusServer
from gpufleet.emulator import EMULATE_LABEL
from tests.integration.support import Cluster, condition, is_ready, set_load, status
from tests.support import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

TARGET = "web"
REPLICAS = 2


def target_deployment(namespace: str) -> dict[str, Any]:
    """A plain Triton Deployment, as a team runs it today (no gpufleet labels)."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": TARGET, "namespace": namespace, "labels": {"app": TARGET},
                     "annotations": {"team.example/owner": "search"}},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": TARGET}},
            "template": {
                "metadata": {"labels": {"app": TARGET, EMULATE_LABEL: TARGET},
                             "annotations": {"kwok.gpufleet.io/ready-delay": "2s"}},
                "spec": {
                    "nodeSelector": {"karpenter.sh/capacity-type": "on-demand"},
                    "containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:25.01-py3",
                                    "ports": [{"name": "http", "containerPort": 8000}],
                                    "resources": {"limits": {"nvidia.com/gpu": 1}}}],
                },
            },
        },
    }


def hpa(namespace: str) -> dict[str, Any]:
    """The autoscaler that owns the Deployment's size today (no metrics server here: it holds)."""
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": TARGET, "namespace": namespace},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": TARGET},
                 "minReplicas": 1, "maxReplicas": 6,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                               "target": {"type": "Utilization",
                                                                          "averageUtilization": 60}}}]},
    }


def shadow_service(namespace: str, name: str, *, target: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": "chat"},
        "mode": "recommend",
        "replicas": {"min": 1, "max": 8},
        "warmPool": {"size": 0, "max": 0},
        "capacity": {"spot": {"enabled": False}},
        "forecast": {"enabled": False},
        "slo": {"queueDepthPerReplica": 8},
        "scaling": {"intervalSeconds": 2, "targetRpsPerReplica": 100},
        "metrics": {"staleAfterSeconds": 10},
        "template": {"spec": {"containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:25.01-py3"}]}},
    }
    if target is not None:
        spec["targetRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": target}
    return {"apiVersion": "gpufleet.io/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def rolled_out(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    """The Deployment once its controller is done with it (every replica available, progress
    reported as complete): from then on nothing but gpufleet could change it in this test."""
    dep = cluster.get("deployment", TARGET, namespace) or {}
    st = dep.get("status", {})
    done = (st.get("observedGeneration") == dep.get("metadata", {}).get("generation")
            and st.get("availableReplicas") == REPLICAS and st.get("updatedReplicas") == REPLICAS
            and any(c["type"] == "Progressing" and c.get("reason") == "NewReplicaSetAvailable"
                    for c in st.get("conditions", [])))
    return dep if done else None


def namespace_objects(cluster: Cluster, namespace: str) -> set[str]:
    """Every object of the kinds gpufleet could create, by kind and name."""
    out = set()
    for kind in ("deployments", "replicasets", "services", "poddisruptionbudgets", "horizontalpodautoscalers"):
        out |= {f"{kind}/{o['metadata']['name']}" for o in cluster.list(kind, namespace)}
    return out


def pod_marks(cluster: Cluster, namespace: str) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    return {p["metadata"]["name"]: (p["metadata"].get("labels", {}), p["metadata"].get("annotations", {}))
            for p in cluster.list("pods", namespace, f"app={TARGET}")}


def test_shadow_follows_the_load_and_leaves_the_workload_untouched(
    cluster: Cluster, operator: Path, emulator: str, prometheus: PrometheusServer, namespace: str, tmp_path: Path
) -> None:
    set_load(emulator, namespace, TARGET, 40)
    cluster.apply(target_deployment(namespace))
    cluster.apply(hpa(namespace))
    before = wait_for(lambda: rolled_out(cluster, namespace), timeout=120, what="the Deployment rolled out")
    wait_for(lambda: sum(map(is_ready, cluster.list("pods", namespace, f"app={TARGET}"))) == REPLICAS,
             timeout=60, what="its pods Ready")
    objects, marks = namespace_objects(cluster, namespace), pod_marks(cluster, namespace)

    cluster.apply(shadow_service(namespace, "shadow", target=TARGET))

    def shadow() -> dict[str, Any]:
        result: dict[str, Any] = status(cluster, namespace, "shadow").get("shadow") or {}
        return result

    wait_for(lambda: shadow().get("found") and shadow().get("actualReplicas") == REPLICAS
             and shadow().get("readyReplicas") == REPLICAS, timeout=60, what="status.shadow reads the target")
    wait_for(lambda: condition(status(cluster, namespace, "shadow"), "MetricsAvailable").get("status") == "True",
             timeout=60, what="the target's metrics read")
    low = wait_for(lambda: shadow().get("recommendedReplicas"), timeout=30, what="a recommendation")
    st = status(cluster, namespace, "shadow")
    assert condition(st, "Ready")["reason"] == "Shadowing", st["conditions"]
    assert st["shadow"]["autoscalers"] == [f"HorizontalPodAutoscaler {TARGET}"], st["shadow"]
    assert condition(st, "Degraded").get("reason") != "AutoscalerConflict", st["conditions"]
    assert st["lastDecision"]["applied"] is False

    # 600 req/s against ~122 req/s per replica: the target's queues build; gpufleet would run more.
    set_load(emulator, namespace, TARGET, 600)
    high = wait_for(lambda: (shadow().get("recommendedReplicas") or 0) > max(low, REPLICAS)
                    and shadow()["recommendedReplicas"], timeout=90, what="the recommendation rising with the load")
    st = status(cluster, namespace, "shadow")
    assert st["lastDecision"]["reason"] in {"QueueDepth", "RequestRate", "Latency", "MaxReplicas"}, st["lastDecision"]
    assert st["shadow"]["actualReplicas"] == REPLICAS and st["shadow"]["recommendedCostPerHour"] > 0

    def events() -> list[dict[str, Any]]:
        return [e for e in cluster.list("events", namespace) if e["involvedObject"]["name"] == "shadow"]

    wait_for(lambda: any(e["reason"] == "Recommendation" and f"would run {high} " in e["message"] for e in events()),
             timeout=30, what=f"a Recommendation event for {high} replicas")

    # Untouched: the Deployment (spec, labels, annotations, size, not one write), its pods' labels
    # and annotations, and the namespace's objects.
    after = cluster.get("deployment", TARGET, namespace) or {}
    for path in (("spec",), ("metadata", "labels"), ("metadata", "annotations"),
                 ("metadata", "resourceVersion"), ("metadata", "generation")):
        a, b = before, after
        for key in path:
            a, b = a.get(key), b.get(key)
        assert a == b, f"the Deployment's {'.'.join(path)} changed: {a!r} -> {b!r}"
    assert after["spec"]["replicas"] == REPLICAS
    assert pod_marks(cluster, namespace) == marks
    assert namespace_objects(cluster, namespace) == objects
    assert not any(e["reason"] in {"Created", "Scaled", "Updated"} for e in events()), events()

    # `gpufleet status` reads the same from the API server: the shadow row, recommended/actual.
    shown = subprocess.run([sys.executable, "-m", "gpufleet.cli", "status", "-n", namespace, "--kubeconfig",
                            cluster.kubeconfig, "--width", "250"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    line = next((ln for ln in shown.stdout.splitlines() if f"{namespace}/shadow" in ln), "")
    cell = re.search(rf"│ (\d+)/{REPLICAS} +│", line)
    assert "shadow: web" in line and cell is not None and int(cell.group(1)) >= high, shown.stdout

    # `gpufleet report --compare-actual`: the recorded load replayed against the pods that ran.
    out = tmp_path / "report"
    report = subprocess.run([sys.executable, "-m", "gpufleet.cli", "report", "--compare-actual", "-n", namespace,
                             "--name", "shadow", "--kubeconfig", cluster.kubeconfig, "--prometheus-url",
                             prometheus.url, "--since", "60s", "--step", "2s", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stdout + report.stderr
    compared = json.loads((out / "compare_actual.json").read_text())
    assert compared["ran"]["peak_replicas"] == REPLICAS, compared
    assert 0 < compared["ran"]["mean_replicas"] <= REPLICAS and compared["gpufleet"]["cost"] > 0, compared
    assert "what ran (pods reporting)" in report.stdout and "Deployment web" in report.stdout, report.stdout


def test_recommend_without_a_target_creates_nothing(cluster: Cluster, operator: Path, namespace: str) -> None:
    cluster.apply(shadow_service(namespace, "dry", target=None))
    st = wait_for(lambda: status(cluster, namespace, "dry").get("lastDecision") and status(cluster, namespace, "dry"),
                  timeout=60, what="a decision")
    assert st["lastDecision"]["applied"] is False and "shadow" not in st
    assert (condition(st, "Ready")["status"], condition(st, "Ready")["reason"]) == ("True", "Recommending")
    assert st.get("observedGeneration") == 1
    assert namespace_objects(cluster, namespace) == set()

    # A targetRef needs mode: recommend: refused at admission, naming the field.
    refused = cluster.apply({**shadow_service(namespace, "bad", target=TARGET),
                             "spec": {**shadow_service(namespace, "bad", target=TARGET)["spec"], "mode": "active"}},
                            check=False)
    assert refused.returncode != 0 and "spec.targetRef" in refused.stderr and "mode: recommend" in refused.stderr, \
        refused.stderr
