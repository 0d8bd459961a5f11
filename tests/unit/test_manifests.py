"""Children rendered from a spec (pure)."""

from __future__ import annotations

from typing import Any

from gpufleet.adapters import manifests
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.types import ON_DEMAND, SPOT

SPEC = InferenceServiceSpec.model_validate({
    "model": {"name": "m"},
    "replicas": {"min": 3, "max": 9},
    "capacity": {
        "onDemand": {"nodeSelector": {"karpenter.sh/capacity-type": "on-demand"}},
        "spot": {"enabled": True, "nodeSelector": {"karpenter.sh/capacity-type": "spot"},
                 "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]},
    },
    "template": {"metadata": {"labels": {"app": "x"}},
                 "spec": {"containers": [{"name": "triton", "image": "img"}],
                          "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}},
})


def test_deployment_per_class_carries_placement_and_no_replicas() -> None:
    spot = manifests.deployment("svc", SPEC, SPOT)
    pod = spot["spec"]["template"]
    assert spot["metadata"]["name"] == "svc-spot"
    assert "replicas" not in spot["spec"]  # owned through /scale only
    assert pod["spec"]["nodeSelector"] == {"karpenter.sh/capacity-type": "spot"}
    assert [t["key"] for t in pod["spec"]["tolerations"]] == ["nvidia.com/gpu", "spot"]
    assert pod["metadata"]["labels"] == {"app": "x", "gpufleet.io/inference-service": "svc",
                                         "gpufleet.io/capacity-class": "spot",
                                         "app.kubernetes.io/managed-by": "gpufleet"}
    assert spot["spec"]["selector"]["matchLabels"] == {"gpufleet.io/inference-service": "svc",
                                                       "gpufleet.io/capacity-class": "spot"}
    on_demand = manifests.deployment("svc", SPEC, ON_DEMAND)
    assert on_demand["spec"]["template"]["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]


def test_rendering_does_not_mutate_the_spec() -> None:
    before = SPEC.model_dump()
    manifests.children("svc", SPEC)
    assert SPEC.model_dump() == before


def test_service_routes_only_to_serving_pods_and_pdb_keeps_floor() -> None:
    svc = manifests.service("svc")
    assert svc["spec"]["selector"] == {"gpufleet.io/inference-service": "svc", "gpufleet.io/serving": "true"}
    assert {p["port"] for p in svc["spec"]["ports"]} == {8000, 8001, 8002}
    pdb = manifests.pod_disruption_budget("svc", SPEC)
    assert pdb["spec"]["minAvailable"] == 3


def _pod(template_spec: dict[str, Any], model: str = "chat") -> dict[str, Any]:
    spec = InferenceServiceSpec.model_validate({"model": {"name": model}, "template": {"spec": template_spec}})
    pod: dict[str, Any] = manifests.deployment("svc", spec, ON_DEMAND)["spec"]["template"]["spec"]
    return pod


def test_triton_gets_a_model_ready_probe_and_a_grace_period_beyond_its_exit_timeout() -> None:
    pod = _pod({"containers": [{"name": "sidecar", "image": "envoy"},
                               {"name": "server", "image": "nvcr.io/nvidia/tritonserver:25.01-py3",
                                "ports": [{"name": "http", "containerPort": 9000}]}]})
    sidecar, triton = pod["containers"]
    assert "readinessProbe" not in sidecar
    # Pod Ready (what promotion trusts) means the service's model answers ready.
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/models/chat/ready", "port": 9000}
    assert pod["terminationGracePeriodSeconds"] == 30 + 5  # Triton's default --exit-timeout-secs + margin


def test_grace_period_follows_the_exit_timeout_in_the_args() -> None:
    for args in (["tritonserver", "--exit-timeout-secs=300"], ["tritonserver", "--exit-timeout-secs", "300"]):
        pod = _pod({"containers": [{"name": "triton", "image": "img", "args": args}]})
        assert pod["terminationGracePeriodSeconds"] == 305, args
        assert pod["containers"][0]["readinessProbe"]["httpGet"]["port"] == 8000


def test_the_templates_own_probe_and_grace_period_are_kept() -> None:
    own = {"httpGet": {"path": "/v2/health/ready", "port": 8000}, "periodSeconds": 2}
    pod = _pod({"terminationGracePeriodSeconds": 600,
                "containers": [{"name": "triton", "image": "img", "readinessProbe": own}]})
    assert pod["containers"][0]["readinessProbe"] == own
    assert pod["terminationGracePeriodSeconds"] == 600
