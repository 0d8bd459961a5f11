"""Spec fuzzing (issue 17): InferenceService specs generated from the generated CRD's own schema,
for tests/integration/test_spec_fuzz.py to send to the real API server with server-side dry-run
and to run every admitted one through the operator.

hypothesis-jsonschema (0.23.1, its latest) fails against current hypothesis ('many' object has no
attribute 'more'), so `strategy` here turns the schema into hypothesis strategies itself. The
CRD's OpenAPI v3.0 schema is first rewritten into plain JSON Schema: the `x-kubernetes-*`
extensions dropped (CEL rules are the API server's to apply: a generated spec that breaks one is
refused there, which is part of what is measured), int-or-string as a union, OpenAPI's boolean
exclusiveMinimum as a number. Optional fields are left out half the time (the API server fills
their defaults), numbers favour their bounds and small values. The pod template's `spec` is the
one part narrowed: a valid container, so that the children's admission measures what gpufleet
adds to them, not random pod specs.
"""

from __future__ import annotations

import copy
import json
import math
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from gpufleet.api import crd

DNS_LABEL = r"^[a-z]([-a-z0-9]{0,14}[a-z0-9])?$"
POD_SPEC = {
    "type": "object",
    "required": ["containers"],
    "additionalProperties": False,
    "properties": {
        "containers": {
            "type": "array", "minItems": 1, "maxItems": 2,
            "items": {
                "type": "object", "required": ["name", "image"], "additionalProperties": False,
                "properties": {"name": {"type": "string", "pattern": DNS_LABEL},
                               "image": {"type": "string", "pattern": r"^[a-z0-9]{1,10}(:[a-z0-9.]{1,8})?$"}},
            },
        },
        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0, "maximum": 600},
    },
}


def spec_schema() -> dict[str, Any]:
    """The CRD's spec schema (what the API server validates against), as JSON Schema."""
    version = crd.crd()["spec"]["versions"][0]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"]["properties"]["spec"])
    schema["properties"]["template"]["properties"]["spec"] = POD_SPEC
    out: dict[str, Any] = _json_schema(schema)
    return out


def _json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    if node.get("x-kubernetes-int-or-string"):
        return {"anyOf": [{"type": "integer", "minimum": -3, "maximum": 1200}, {"enum": ["auto"]},
                          {"type": "string", "maxLength": 6}]}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("description", "default"):
            continue
        if key == "properties":
            out[key] = {k: _json_schema(v) for k, v in value.items()}
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
            if value:
                out[key] = node["minimum" if key == "exclusiveMinimum" else "maximum"]
        else:
            out[key] = _json_schema(value)
    if out.get("type") == "object":
        if node.get("x-kubernetes-preserve-unknown-fields") and "properties" in out:
            out.setdefault("additionalProperties", False)  # extra keys are pruned: generating them is noise
        if "additionalProperties" not in out and "properties" in out:
            out["additionalProperties"] = False
        if isinstance(out.get("additionalProperties"), dict) or node.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("maxProperties", 4)
    if out.get("type") == "array":
        out["maxItems"] = min(int(out.get("maxItems", 4)), 4)
    if out.get("type") == "string" and "pattern" not in out and "enum" not in out:
        out["maxLength"] = min(int(out.get("maxLength", 40)), 40)
    if "exclusiveMinimum" in out and "minimum" in out and out["minimum"] == out["exclusiveMinimum"]:
        del out["minimum"]
    if "exclusiveMaximum" in out and "maximum" in out and out["maximum"] == out["exclusiveMaximum"]:
        del out["maximum"]
    return out


def specs() -> st.SearchStrategy[Any]:
    return strategy(spec_schema())


INT64 = 2**63 - 1
LABELISH = st.from_regex(r"[a-z0-9]([-a-z0-9./]{0,20}[a-z0-9])?", fullmatch=True)
ODD_TEXT = st.sampled_from(["", " ", "UTC", "America", "Europe/Berlin", "0", "-1", "auto", "\u0000", "é", "a" * 70,
                            "gpufleet.io/serving", "chat-ondemand", "$namespace", "}"])


def strategy(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid against `schema` (JSON Schema: the subset the CRD uses), and at its edges."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([strategy(s) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object":
        return _object(schema)
    if kind == "array":
        return st.lists(strategy(schema.get("items", {})), min_size=int(schema.get("minItems", 0)),
                        max_size=int(schema.get("maxItems", 4)))
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        lo, hi = int(schema.get("minimum", -INT64 - 1)), int(schema.get("maximum", INT64))
        lo += 1 if schema.get("exclusiveMinimum") is not None else 0
        hi -= 1 if schema.get("exclusiveMaximum") is not None else 0
        edges = sorted({v for v in (lo, hi, lo + 1, hi - 1, 0, 1, 2, 10) if lo <= v <= hi})
        return st.one_of(st.sampled_from(edges), st.integers(lo, min(hi, max(lo, 0) + 100)), st.integers(lo, hi))
    if kind == "number":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        ex_lo, ex_hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        lo = ex_lo if ex_lo is not None else lo
        hi = ex_hi if ex_hi is not None else hi
        floats = st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False,
                           exclude_min=ex_lo is not None, exclude_max=ex_hi is not None)
        edges = [v for v in (lo, hi, 1e-300, 1.0, 1e308) if v is not None and (lo is None or v >= lo)
                 and (hi is None or v <= hi) and v != ex_lo and v != ex_hi]
        # 0 whatever the bounds: the API server skips `minimum` for a number that is 0 (crd._floor_by_cel).
        return st.one_of(floats, st.sampled_from([*edges, 0, 0.0]))
    if kind == "boolean":
        return st.booleans()
    return st.just({})


def _object(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    props = schema.get("properties")
    if props is None:
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            keys = st.one_of(LABELISH, ODD_TEXT, st.text(max_size=10))
            return st.dictionaries(keys, strategy(values), max_size=int(schema.get("maxProperties", 4)))
        return st.just({})
    required = set(schema.get("required", []))
    return st.fixed_dictionaries({k: strategy(v) for k, v in props.items() if k in required},
                                 optional={k: strategy(v) for k, v in props.items() if k not in required})


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    lo, hi = int(schema.get("minLength", 0)), int(schema.get("maxLength", 40))
    if "pattern" in schema:
        # Go's RE2 and Python's re agree on these patterns; fullmatch: no trailing newline either.
        return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: lo <= len(s) <= hi)
    return st.one_of(st.text(min_size=lo, max_size=min(hi, 40)), ODD_TEXT.filter(lambda s: lo <= len(s) <= hi))


# -- what happened to each spec --------------------------------------------------------------------


@dataclass
class Tally:
    """Counts per outcome, the admitted specs that crashed (with the spec and the traceback), and
    the first message of each kind of refusal (to read what the schema and the operator say)."""

    tried: int = 0
    admitted: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    crashes: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)

    def note(self, outcome: str, example: str = "") -> None:
        self.outcomes[outcome] += 1
        if example:
            self.examples.setdefault(outcome, example[:300])

    def crash(self, stage: str, spec: dict[str, Any], exc: BaseException) -> None:
        self.outcomes[f"CRASH in {stage}"] += 1
        self.crashes.append((stage, spec, "".join(traceback.format_exception(exc))[-2000:]))

    def summary(self) -> dict[str, Any]:
        """The counts, for reports/reliability (fuzz.json)."""
        return {"tried": self.tried, "admitted": self.admitted, "crashed": len(self.crashes),
                "outcomes": dict(self.outcomes)}

    def report(self) -> str:
        lines = [f"spec fuzzing: {self.tried} specs tried, {self.admitted} admitted by the API server, "
                 f"{len(self.crashes)} admitted specs crashed"]
        lines += [f"  {n:5d}  {outcome}" for outcome, n in sorted(self.outcomes.items(), key=lambda kv: -kv[1])]
        lines += [f"  e.g. {k}: {v}" for k, v in sorted(self.examples.items())]
        for stage, spec, tb in self.crashes[:5]:
            lines += [f"--- crash in {stage}: {json.dumps(spec)[:1500]}", tb]
        return "\n".join(lines)


def strict_json(value: Any) -> str:
    """JSON as the API server takes it: NaN and Infinity are errors, not `NaN`."""
    return json.dumps(value, allow_nan=False)


def finite_tree(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite_tree(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_tree(v) for v in value)
    return True
