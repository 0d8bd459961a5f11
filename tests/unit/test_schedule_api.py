"""spec.schedules validation: the pydantic model (what the operator reports as InvalidSpec) and
the generated CRD schema (what the API server enforces; tests/integration/test_schedules.py
checks the API server's answers)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from gpufleet.api import crd
from gpufleet.api.models import (
    CRON_PATTERN,
    POSITIVE_DURATION_PATTERN,
    START_PATTERN,
    InferenceServiceSpec,
)

TEMPLATE = {"spec": {"containers": [{"name": "triton", "image": "triton"}]}}


def spec(*schedules: dict[str, Any], **extra: Any) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({"model": {"name": "m"}, "template": TEMPLATE,
                                               "schedules": list(schedules), **extra})


def errors(*schedules: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as exc:
        spec(*schedules)
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.value.errors()]


GOOD = {"name": "launch", "start": "2026-12-01T14:00:00Z", "duration": "2h", "minReplicas": 6}


def test_valid_schedules_and_defaults() -> None:
    s = spec(GOOD, {"name": "office", "cron": "*/30 9-17 * * 1-5", "timeZone": "Europe/Berlin", "duration": "30m",
                    "loadMultiplier": 1.5, "leadSeconds": 300})
    one, two = s.schedules
    assert (one.time_zone, one.lead_seconds, one.load_multiplier) == ("UTC", None, None)
    assert (two.cron, two.min_replicas, two.lead_seconds) == ("*/30 9-17 * * 1-5", None, 300)
    assert spec().schedules == []


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"cron": "61 * * * *", "start": None}, "schedules.0.cron", "invalid cron expression"),
        ({"cron": "0 9 * *", "start": None}, "schedules.0.cron", "should match pattern"),
        ({"cron": "0 0 9 * * *", "start": None}, "schedules.0.cron", "should match pattern"),
        ({"cron": "0 9 * * MON-XYZ", "start": None}, "schedules.0.cron", "invalid cron expression"),
        ({"cron": "0 * * * *", "start": None, "duration": "90m"}, "schedules.0", "would overlap"),
        ({"cron": "0 9 * * *"}, "schedules.0", "exactly one of cron"),
        ({"start": None}, "schedules.0", "exactly one of cron"),
        ({"start": "2026-02-30T14:00:00Z"}, "schedules.0.start", "not a calendar date"),
        ({"start": "tomorrow"}, "schedules.0.start", "should match pattern"),
        ({"duration": "0h"}, "schedules.0.duration", "should match pattern"),
        ({"duration": "-1h"}, "schedules.0.duration", "should match pattern"),
        ({"duration": "2 hours"}, "schedules.0.duration", "should match pattern"),
        ({"timeZone": "Mars/Olympus"}, "schedules.0.timeZone", "unknown IANA time zone"),
        ({"minReplicas": None}, "schedules.0", "minReplicas and/or loadMultiplier"),
        ({"loadMultiplier": 0.5}, "schedules.0.loadMultiplier", "greater than or equal to 1"),
        ({"leadSeconds": -5}, "schedules.0.leadSeconds", "greater than or equal to 0"),
        ({"name": "Launch Day"}, "schedules.0.name", "should match pattern"),
    ],
)
def test_invalid_schedule_names_the_field(change: dict[str, Any], field: str, text: str) -> None:
    doc = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    found = errors(doc)
    assert any(loc == field and text in msg for loc, msg in found), found


def test_names_are_unique() -> None:
    found = errors(GOOD, {**GOOD, "minReplicas": 2})
    assert any(loc == "schedules" and "launch repeated" in msg for loc, msg in found), found


def test_operator_reports_a_bad_cron_as_invalid_spec_naming_the_field() -> None:
    from gpufleet.kopf_app import parse_spec

    doc = {"model": {"name": "m"}, "template": TEMPLATE,
           "schedules": [{"name": "nightly", "cron": "0 25 * * *", "duration": "1h", "minReplicas": 2}]}
    message = parse_spec(doc)
    assert isinstance(message, str)
    assert message.startswith("spec.schedules.0.cron:") and "invalid cron expression '0 25 * * *'" in message


def _schedules_schema() -> dict[str, Any]:
    spec_schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    node: dict[str, Any] = spec_schema["properties"]["schedules"]
    return node


def test_crd_schema_for_schedules() -> None:
    node = _schedules_schema()
    assert node["x-kubernetes-list-type"] == "map" and node["x-kubernetes-list-map-keys"] == ["name"]
    assert node["maxItems"] == 16
    item = node["items"]
    assert "name" in item["required"] and "duration" in item["required"]
    rules = {r["rule"] for r in item["x-kubernetes-validations"]}
    assert rules == {"has(self.cron) != has(self.start)", "has(self.minReplicas) || has(self.loadMultiplier)"}
    props = item["properties"]
    assert props["loadMultiplier"]["minimum"] == 1.0 and props["timeZone"]["default"] == "UTC"
    spec_rules = [r["rule"] for r in crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
                  ["spec"]["x-kubernetes-validations"]]
    assert any("s.minReplicas <= self.replicas.max" in r for r in spec_rules)


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        (CRON_PATTERN, ["0 9 * * 1-5", " */5 * * * * ", "0 0 1 1 *"], ["0 9 * *", "@daily", "", "0 0 0 9 * * *"]),
        (POSITIVE_DURATION_PATTERN, ["1s", "90m", "2h", "1d", "010m"], ["0s", "00h", "-1h", "1.5h", "2w", "h"]),
        (START_PATTERN, ["2026-12-01T14:00:00Z", "2026-12-01T14:00", "2026-12-01T14:00:00.5+05:30"],
         ["2026-13-01T14:00Z", "2026-12-01 14:00", "2026-12-01T24:00", "2026-12-01"]),
    ],
)
def test_schema_patterns(pattern: str, good: list[str], bad: list[str]) -> None:
    # The API server evaluates these with Go's RE2; these patterns use nothing RE2 lacks.
    assert all(re.search(pattern, g) for g in good)
    assert not any(re.search(pattern, b) for b in bad)


def test_planned_events_example_is_valid() -> None:
    import yaml

    from tests.support import ROOT

    doc = yaml.safe_load((ROOT / "examples/02-planned-events.yaml").read_text())
    parsed = InferenceServiceSpec.model_validate(doc["spec"])
    assert [s.name for s in parsed.schedules] == ["launch", "berlin-office-hours", "nightly-batch"]
