"""The capacity-class list's schema and CEL rules on the real API server (issue 18 item 1).

`spec.capacity.classes` is not in the InferenceService CRD yet (api/classes.py says why), so its
schema is served here by a probe CRD of its own: the rules must compile, stay within the CEL cost
budget and refuse bad lists with a message naming the problem before the field is published."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from gpufleet.api.classes import CapacityClasses
from gpufleet.api.crd import openapi_schema
from tests.integration.support import Cluster

pytestmark = pytest.mark.cluster

GROUP = "probe.gpufleet.io"
PLURAL = "capacityclassprobes"


@pytest.fixture(scope="module")
def probe_crd(cluster: Cluster) -> Iterator[None]:
    schema = openapi_schema(CapacityClasses)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {"group": GROUP, "scope": "Namespaced",
                 "names": {"plural": PLURAL, "singular": "capacityclassprobe", "kind": "CapacityClassProbe"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": schema}, "required": ["spec"]}}}]},
    }
    cluster.apply(crd)
    cluster.kubectl("wait", "--for", "condition=established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
    deadline = time.monotonic() + 60  # established, then served by discovery
    while cluster.kubectl("get", PLURAL, "-A", check=False).returncode != 0:
        assert time.monotonic() < deadline, "probe CRD never served"
        time.sleep(0.5)
    yield
    cluster.kubectl("delete", "crd", f"{PLURAL}.{GROUP}", "--wait=false", check=False)


def probe(namespace: str, name: str, classes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "CapacityClassProbe",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"classes": classes}}


H100 = {"name": "h100", "resources": {"nvidia.com/gpu": 1}, "product": "NVIDIA-H100-80GB-HBM3",
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}


def test_a_list_of_types_and_slices_is_admitted(cluster: Cluster, namespace: str, probe_crd: None) -> None:
    classes: list[dict[str, Any]] = [H100,
               {"name": "h100-mig", "resources": {"nvidia.com/mig-3g.40gb": 1}, "product": "NVIDIA-H100-80GB-HBM3",
                "sliceOfGpu": 0.5, "maxShare": 0.5, "targetRpsPerReplica": 4.6},
               {"name": "l4-spot", "spot": True, "pricePerReplicaHour": 0.3, "pendingTimeoutSeconds": 60,
                "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]}]
    cluster.apply(probe(namespace, "ok", classes))
    stored = cluster.get(PLURAL, "ok", namespace)
    assert stored is not None
    got = stored["spec"]["classes"]
    assert [c["name"] for c in got] == ["h100", "h100-mig", "l4-spot"]
    assert got[2]["resources"] == {"nvidia.com/gpu": 1}  # the default, from the schema
    CapacityClasses.model_validate(stored["spec"])  # what the server keeps, the model reads


@pytest.mark.parametrize("name, classes, words", [
    ("dupes", [H100, {**H100, "pricePerReplicaHour": 2.0}], "Duplicate value"),
    ("allspot", [{**H100, "spot": True}], "at least one class that is not spot"),
    ("unpriced", [{"name": "l4"}], "needs pricePerReplicaHour or a product"),
    ("minmax", [{**H100, "min": 3, "max": 2}], "a class's min must be <= its max"),
    ("resname", [{**H100, "resources": {"nvidia com/gpu": 1}}], "resource names must be qualified names"),
    ("zero", [{**H100, "resources": {"nvidia.com/gpu": 0}}], "should be greater than or equal to 1"),
    ("badname", [{**H100, "name": "H100_x"}], "spec.classes[0].name"),
])
def test_bad_lists_are_refused_naming_the_problem(cluster: Cluster, namespace: str, probe_crd: None, name: str,
                                                  classes: list[dict[str, Any]], words: str) -> None:
    proc = cluster.apply(probe(namespace, name, classes), check=False)
    assert proc.returncode != 0, f"{name} was admitted"
    assert words in proc.stderr, proc.stderr
    assert cluster.get(PLURAL, name, namespace) is None
