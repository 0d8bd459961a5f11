"""crds/ is generated from the pydantic models and must be a structural schema."""

from __future__ import annotations

from typing import Any

import yaml

from gpufleet.api import crd
from gpufleet.api.models import InferenceServiceSpec
from tests.support import ROOT

CRD_FILE = ROOT / "crds/gpufleet.io_inferenceservices.yaml"


def test_crds_folder_matches_models() -> None:
    assert CRD_FILE.read_text() == crd.render(), "crds/ drifted from gpufleet.api.models: run `make crds`"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, sub in node.get("properties", {}).items():
            out += _walk(sub, f"{path}.{key}")
        if "items" in node:
            out += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_schema_is_structural() -> None:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(schema)
    assert "$ref" not in text and "$defs" not in text and "nullable" not in text
    for path, node in _walk(schema):
        typed = "type" in node or node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields")
        assert typed, f"{path} has no type"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf only allowed for int-or-string"


def test_cross_field_rules_and_subresources() -> None:
    version = crd.crd()["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert any("onDemand.base <= self.replicas.max" in r for r in rules)
    assert "self.min <= self.max" in spec["properties"]["replicas"]["x-kubernetes-validations"][0]["rule"]
    assert version["subresources"] == {"status": {}}
    assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Serving", "Standby", "Ready", "Age"}
    # Every spec field a user sets carries explain text.
    for path, node in _walk(spec):
        if path.count(".") == 1:
            assert node.get("description"), f"spec{path} has no description"


def test_defaults_reach_nested_objects() -> None:
    spec = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["scaling"]["default"] == {}
    assert spec["properties"]["scaling"]["properties"]["scaleDown"]["properties"]["stabilizationSeconds"]["default"] == 300


def test_status_has_no_defaults() -> None:
    # The API server would fill them in on any status write (the create handler's
    # observedGeneration), and a loop cannot tell a defaulted lastDecision from a decision made.
    from gpufleet.api import quota_crd

    for doc in (crd.crd(), quota_crd.crd()):
        status = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert [path for path, node in _walk(status) if "default" in node] == []
        assert status["properties"], "the status schema still describes its fields"


def test_examples_parse_with_the_models() -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "InferenceService":
                InferenceServiceSpec.model_validate(doc["spec"])


# -- GPUQuota (gpufleet.api.quota_crd) ----------------------------------------------------------

QUOTA_CRD_FILE = ROOT / "crds/gpufleet.io_gpuquotas.yaml"


def test_quota_crd_matches_models_and_is_cluster_scoped() -> None:
    from gpufleet.api import quota_crd

    assert QUOTA_CRD_FILE.read_text() == quota_crd.render(), "crds/ drifted from gpufleet.api.quota: run `make crds`"
    assert (ROOT / "charts/gpufleet/crds/gpufleet.io_gpuquotas.yaml").read_text() == QUOTA_CRD_FILE.read_text()
    doc = quota_crd.crd()
    assert doc["spec"]["scope"] == "Cluster"
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    assert "$ref" not in yaml.safe_dump(schema)
    for path, node in _walk(schema):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["tiers"]
    for path, node in _walk(spec):
        if path.count(".") == 1 and not path.endswith(("{}", "[]")):
            assert node.get("description"), f"spec{path} has no description"
    assert spec["properties"]["tiers"]["x-kubernetes-list-map-keys"] == ["name"]


def test_inference_service_names_its_quota_and_tier() -> None:
    quota = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["quota"]
    assert set(quota["required"]) == {"name", "tier"} and "QuotaNotFound" in quota["properties"]["name"]["description"]
