"""Why InferenceService names are capped (gpufleet.api.crd.MAX_NAME_LENGTH): a pod's name is its
ReplicaSet's generateName cut to 58 characters plus a 5-character suffix, and the operator selects
a service's series by pod name. Up to the cap every generated name matches its service exactly;
from 49 characters on the on-demand pods matched nothing (the service never got metrics)."""

from __future__ import annotations

import re

from gpufleet.adapters.metrics import pod_regex
from gpufleet.api.crd import MAX_NAME_LENGTH, crd

HASH, SUFFIX = "7457c7d7d6", "rpm64"  # the longest pod-template hash (10) and a random suffix


def pod_name(deployment: str) -> str:
    """What the ReplicaSet controller names a pod (names.SimpleNameGenerator: maxGeneratedNameLength 58)."""
    return f"{deployment}-{HASH}-"[:58] + SUFFIX


def test_every_name_up_to_the_cap_matches_its_own_pods() -> None:
    for n in range(1, MAX_NAME_LENGTH + 1):
        name = ("chat-" * 20)[:n].rstrip("-") or "c"
        for cls in ("ondemand", "spot"):
            assert re.fullmatch(pod_regex(name), pod_name(f"{name}-{cls}")), (name, cls)


def test_a_name_of_49_characters_never_matched_its_on_demand_pods() -> None:
    name = "a" * 49
    assert not re.fullmatch(pod_regex(name), pod_name(f"{name}-ondemand"))


def test_the_crd_refuses_longer_names() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert f"size(self.metadata.name) <= {MAX_NAME_LENGTH}" in rules
