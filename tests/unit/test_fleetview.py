"""`gpufleet status` rendering (gpufleet.fleetview) from InferenceService objects as the API server
returns them: what each column says, missing fields as '-', shadow and budget columns."""

from __future__ import annotations

from typing import Any

from gpufleet.api.timefmt import iso_seconds
from gpufleet.fleetview import budget_used, render, row

NOW = iso_seconds("2026-12-03T08:00:00Z")


def active() -> dict[str, Any]:
    return {
        "metadata": {"name": "chat", "namespace": "prod"},
        "spec": {"mode": "active", "budget": {"maxCostPerDay": 400}},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "Serving"}],
            "replicas": {"desired": 7, "serving": 4, "standby": 1, "starting": 2,
                         "onDemand": {"desired": 4, "ready": 4, "starting": 0},
                         "spot": {"desired": 3, "ready": 1, "starting": 2}},
            "lastDecision": {"time": "2026-12-03T07:59:48Z", "reason": "QueueDepth",
                             "message": "queue 120 > 8/replica x 4 serving: need 7"},
            "costPerHour": 20.3,
            "usage": {"costToday": 100.0},
            "budget": {"state": "Alert"},
        },
    }


def shadow() -> dict[str, Any]:
    return {
        "metadata": {"name": "web-shadow", "namespace": "search"},
        "spec": {"mode": "recommend", "targetRef": {"name": "web"}},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Shadowing"}],
                   "lastDecision": {"time": "2026-12-03T07:00:00Z", "reason": "RequestRate", "message": ""},
                   "shadow": {"found": True, "recommendedReplicas": 6, "actualReplicas": 2}},
    }


def test_a_row_says_what_status_holds() -> None:
    r = row(active(), NOW)
    assert (r.service, r.mode, r.ready) == ("prod/chat", "active", "True Serving")
    assert (r.desired, r.serving, r.standby, r.starting) == ("7", "4", "1", "2")
    assert (r.on_demand, r.spot) == ("4/4/0", "3/1/2")
    assert r.signal == "QueueDepth"
    assert r.decision == "12s ago: queue 120 > 8/replica x 4 serving: need 7"
    assert (r.cost_per_hour, r.budget, r.shadow) == ("20.30", "25% of 400/day Alert", "-")


def test_shadow_rows_show_the_target_and_recommended_against_actual() -> None:
    r = row(shadow(), NOW)
    assert (r.mode, r.shadow, r.signal, r.decision) == ("shadow: web", "6/2", "RequestRate", "1h ago")
    assert (r.desired, r.on_demand, r.cost_per_hour, r.budget) == ("-", "-", "-", "-")
    gone = shadow()
    gone["status"]["shadow"] = {"found": False}
    assert row(gone, NOW).shadow == "target unavailable"


def test_a_service_never_ticked_is_all_dashes() -> None:
    r = row({"metadata": {"name": "new", "namespace": "x"}, "spec": {}}, NOW)
    assert r.mode == "active" and {r.ready, r.desired, r.signal, r.decision, r.cost_per_hour} == {"-"}


def test_budget_used_per_hour_when_no_daily_limit() -> None:
    assert budget_used({"budget": {"maxCostPerHour": 40}}, {"costPerHour": 10.0}) == "25% of 40/h"
    assert budget_used({}, {"costPerHour": 10.0}) == "-"


def test_the_table_lists_every_service_sorted() -> None:
    text = render([shadow(), active()], now=NOW)
    assert "InferenceServices (2)" in text
    assert text.index("prod/chat") < text.index("search/web-shadow")
    for cell in ("shadow: web", "6/2", "QueueDepth", "25% of 400/day Alert", "3/1/2", "Shadow: recommended/actual"):
        assert cell in text, cell
