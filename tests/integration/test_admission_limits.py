"""Issue 17 leftovers on the real API server: InferenceService names longer than the pod-metric
selection can tell apart, and duplicate container names in the pod template, are refused at
admission with a message naming the field (before, the first left the service without metrics
for good, the second had every Deployment refused)."""

from __future__ import annotations

import pytest

from gpufleet.api.crd import MAX_NAME_LENGTH
from tests.integration.support import Cluster, example

pytestmark = pytest.mark.cluster


def test_names_longer_than_the_cap_are_refused(cluster: Cluster, namespace: str) -> None:
    longest = "c" * MAX_NAME_LENGTH
    cluster.apply(example(namespace, name=longest))
    proc = cluster.apply(example(namespace, name=longest + "c"), check=False)
    assert proc.returncode != 0, "a longer name was admitted"
    assert f"metadata.name must be at most {MAX_NAME_LENGTH} characters" in proc.stderr, proc.stderr


def test_duplicate_container_names_are_refused(cluster: Cluster, namespace: str) -> None:
    obj = example(namespace, name="twins")
    containers = obj["spec"]["template"]["spec"]["containers"]
    containers.append({**containers[0], "image": "busybox"})
    proc = cluster.apply(obj, check=False)
    assert proc.returncode != 0, "duplicate container names were admitted"
    assert "spec.template.spec.containers[1]" in proc.stderr and "Duplicate value" in proc.stderr, proc.stderr
    assert cluster.get("inferenceservice", "twins", namespace) is None
