"""Generate the InferenceService CustomResourceDefinition from the pydantic models.

Kubernetes wants a *structural* OpenAPI v3 schema: no $ref, no nullable unions, every node typed
(or explicitly preserving unknown fields). pydantic emits JSON Schema with $defs and anyOf-null
unions, so this module rewrites one into the other. `python -m gpufleet.api.crd` prints the YAML;
`make crds` writes it to crds/ and a test fails when the file drifts from the models.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from gpufleet.api.models import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    InferenceServiceSpec,
    InferenceServiceStatus,
)

_DROP_KEYS = {"title", "$defs"}

# The longest InferenceService name whose pods' metrics are selected exactly (docs/metrics.md): a
# pod's generateName `<name>-<class>-<hash>-` is cut to 58 characters, so from 49 characters on the
# on-demand pods' names lose `-ondemand-` and the service never gets metrics, and from 37 on a
# name can share its cut with a sibling's. Refused at admission rather than left in safe mode.
MAX_NAME_LENGTH = 36


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline $ref, collapse Optional unions, and drop what a structural schema forbids."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if node.get("x-kubernetes-int-or-string"):
        # int-or-string: the union is described by the extension itself; values checked by CEL.
        keep = {"x-kubernetes-int-or-string", "x-kubernetes-validations", "description", "default"}
        return {k: v for k, v in node.items() if k in keep}
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return _resolve({**branches[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "additionalProperties" and isinstance(value, bool):
            # false is the default (pruning); true is expressed with preserve-unknown-fields.
            if value and "properties" not in node:
                out["x-kubernetes-preserve-unknown-fields"] = True
            continue
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020 (pydantic) uses a number; OpenAPI v3.0 (Kubernetes) a flag.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        out[key] = _resolve(value, defs)
    if out.get("type") == "object" and "properties" in out:
        _default_nested_objects(out)
    if out.get("type") == "number" and "minimum" in out:
        _floor_by_cel(out)
    return out


def _floor_by_cel(node: dict[str, Any]) -> None:
    """The API server skips `minimum` for a number field whose value is 0 (kube-apiserver 1.33:
    `targetUtilization: 0` passes `minimum: 0.01`; an integer 0 is checked), so a floor above 0 is
    also a CEL rule, which sees every value."""
    low, exclusive = node["minimum"], bool(node.get("exclusiveMinimum"))
    if low < 0 or (low == 0 and not exclusive):
        return
    rule = {"rule": f"self {'>' if exclusive else '>='} {low!r}", "message": f"must be {'>' if exclusive else '>='} {low:g}"}
    node.setdefault("x-kubernetes-validations", []).append(rule)


def _default_nested_objects(obj: dict[str, Any]) -> None:
    """Give optional sub-objects `default: {}` so the API server fills their own defaults."""
    required = set(obj.get("required", []))
    for name, sub in obj["properties"].items():
        if name in required or "default" in sub:
            continue
        if sub.get("type") == "object" and "properties" in sub:
            sub["default"] = {}


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    resolved: dict[str, Any] = _resolve(raw, raw.get("$defs", {}))
    return resolved


def status_schema_of(model: type[Any]) -> dict[str, Any]:
    """A status schema without defaults. The API server would fill them in on every status write,
    so a status written only by the create handler (observedGeneration) would already hold a
    `lastDecision` of zeros: a loop would read that as a decision made, and no reader can tell a
    defaulted field from a written one. Status is what the operator writes, nothing more."""
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "default"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    stripped: dict[str, Any] = strip(openapi_schema(model))
    return stripped


def crd() -> dict[str, Any]:
    spec_schema = openapi_schema(InferenceServiceSpec)
    status_schema = status_schema_of(InferenceServiceStatus)
    columns = [
        ("Model", "string", ".spec.model.name", 1),
        ("Mode", "string", ".spec.mode", 1),
        ("Desired", "integer", ".status.replicas.desired", 0),
        ("Serving", "integer", ".status.replicas.serving", 0),
        ("Standby", "integer", ".status.replicas.standby", 0),
        ("Starting", "integer", ".status.replicas.starting", 0),
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', 0),
        ("Reason", "string", ".status.lastDecision.reason", 0),
        ("Cost/h", "number", ".status.costPerHour", 1),
        # Shadow mode (spec.targetRef): Desired is gpufleet's recommendation, Actual what the
        # target Deployment runs (its spec.replicas, set by its own autoscaler).
        ("Target", "string", ".spec.targetRef.name", 1),
        ("Actual", "integer", ".status.shadow.actualReplicas", 1),
    ]
    return document(
        kind=KIND, plural=PLURAL, singular=SINGULAR, short_names=SHORT_NAMES, scope="Namespaced",
        columns=columns, spec_schema=spec_schema, status_schema=status_schema,
        description="An elastic fleet of GPU inference replicas (Triton / TensorRT-LLM) "
        "scaled on queue depth, latency and forecast load, with warm standbys and spot capacity.",
        validations=[{
            "rule": f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
            "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters: the "
            "metrics of a longer service's pods cannot be told apart by pod name",
        }],
    )


def document(*, kind: str, plural: str, singular: str, short_names: list[str], scope: str,
             columns: list[tuple[str, str, str, int]], spec_schema: dict[str, Any], status_schema: dict[str, Any],
             description: str, validations: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """One gpufleet.io CRD (a single served version with the status subresource): the
    InferenceService's and the GPUQuota's share this shape. `columns`: (name, type, JSONPath,
    priority) printer columns; Age is added last."""
    status_schema.pop("description", None)
    status_schema["description"] = "Observed state, written only by the gpufleet operator."
    printer = [
        {"name": n, "type": t, "jsonPath": p, **({"priority": prio} if prio else {})}
        for n, t, p, prio in columns
    ]
    printer.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    schema: dict[str, Any] = {"type": "object", "description": description, "required": ["spec"]}
    if validations:
        schema["x-kubernetes-validations"] = validations
    schema["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec_schema,
        "status": status_schema,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": singular,
                      "shortNames": short_names, "categories": ["gpufleet"]},
            "scope": scope,
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": printer,
                "schema": {"openAPIV3Schema": schema},
            }],
        },
    }


def render() -> str:
    header = "# Generated by `make crds` from gpufleet.api.models. Do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
