"""Planned windows (spec.schedules) on the real cluster: the API server's validation, the
operator's InvalidSpec report for a cron the schema cannot check, and a window opening shortly
after creation that has its replicas Ready when it opens (default lead: measured time-to-ready
plus one interval)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.api.timefmt import iso
from tests.integration.support import Cluster, condition, example, is_ready, loop_service, pods, status
from tests.support import ROOT, wait_for

pytestmark = [pytest.mark.cluster]

READY_DELAY_S = 15
OPENS_IN_S = 45
FLOOR = 4


ONE_OFF = {"name": "launch", "start": "2026-12-01T14:00:00Z", "duration": "2h", "minReplicas": 3}

INVALID = [
    ("cron and start", [{**ONE_OFF, "cron": "0 9 * * *"}], "exactly one of cron (recurring) or start"),
    ("neither cron nor start", [{k: v for k, v in ONE_OFF.items() if k != "start"}], "exactly one of cron"),
    ("nothing to raise", [{k: v for k, v in ONE_OFF.items() if k != "minReplicas"}],
     "minReplicas and/or loadMultiplier"),
    ("zero duration", [{**ONE_OFF, "duration": "0m"}], "spec.schedules[0].duration"),
    ("negative duration", [{**ONE_OFF, "duration": "-2h"}], "spec.schedules[0].duration"),
    ("four-field cron", [{"name": "n", "cron": "0 9 * *", "duration": "1h", "minReplicas": 2}],
     "spec.schedules[0].cron"),
    ("multiplier below 1", [{**ONE_OFF, "loadMultiplier": 0.5}], "spec.schedules[0].loadMultiplier"),
    ("same name twice", [ONE_OFF, {**ONE_OFF, "minReplicas": 5}], "Duplicate value"),
    ("floor above max", [{**ONE_OFF, "minReplicas": 99}], "schedules[].minReplicas must be <= replicas.max"),
    ("bad start", [{**ONE_OFF, "start": "next tuesday"}], "spec.schedules[0].start"),
]


@pytest.mark.parametrize(("case", "schedules", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_api_server_rejects_bad_schedules(
    cluster: Cluster, namespace: str, case: str, schedules: list[dict[str, Any]], message: str
) -> None:
    obj = example(namespace, name="bad", schedules=schedules)
    proc = cluster.apply(obj, check=False)
    assert proc.returncode != 0, f"{case}: accepted"
    assert message in proc.stderr, proc.stderr


def test_api_server_accepts_and_defaults_schedules(cluster: Cluster, namespace: str) -> None:
    cron = {"name": "office", "cron": "0 9 * * 1-5", "timeZone": "Europe/Berlin", "duration": "8h",
            "loadMultiplier": 2}
    cluster.apply(example(namespace, name="ok", schedules=[ONE_OFF, cron]))
    got = (cluster.get("inferenceservice", "ok", namespace) or {})["spec"]["schedules"]
    assert [s["name"] for s in got] == ["launch", "office"]
    assert got[0]["timeZone"] == "UTC" and "cron" not in got[0] and "start" not in got[1]


def test_api_server_accepts_the_planned_events_example(cluster: Cluster, namespace: str) -> None:
    obj = yaml.safe_load((ROOT / "examples/02-planned-events.yaml").read_text())
    obj["metadata"]["namespace"] = namespace
    cluster.apply(obj)
    got = (cluster.get("inferenceservice", "storefront", namespace) or {})["spec"]["schedules"]
    assert [s["name"] for s in got] == ["launch", "berlin-office-hours", "nightly-batch"]


def test_operator_reports_a_cron_the_schema_cannot_check(
    cluster: Cluster, operator: Path, namespace: str
) -> None:
    # Five fields pass the schema's pattern; hour 25 does not exist (croniter says so).
    obj = loop_service(namespace, "badcron")
    obj["spec"]["schedules"] = [{"name": "nightly", "cron": "0 25 * * *", "duration": "1h", "minReplicas": 2}]
    cluster.apply(obj)

    def invalid() -> dict[str, Any]:
        return condition(status(cluster, namespace, "badcron"), "Ready")

    wait_for(lambda: invalid().get("reason") == "InvalidSpec", timeout=60, what="Ready=False InvalidSpec")
    ready = invalid()
    assert ready["status"] == "False"
    assert "spec.schedules.0.cron" in ready["message"] and "0 25 * * *" in ready["message"], ready


def ready_pods(cluster: Cluster, namespace: str, name: str) -> int:
    return sum(1 for p in pods(cluster, namespace, name) if is_ready(p) and not p["metadata"].get("deletionTimestamp"))


def test_window_opening_soon_has_its_replicas_ready_when_it_opens(
    cluster: Cluster, operator: Path, namespace: str
) -> None:
    created = time.time()
    opens = created + OPENS_IN_S
    obj = loop_service(namespace, "launch")
    obj["spec"]["template"]["metadata"]["annotations"]["kwok.gpufleet.io/ready-delay"] = f"{READY_DELAY_S}s"
    obj["spec"]["schedules"] = [{"name": "launch", "start": iso(opens), "duration": "3m", "minReplicas": FLOOR}]
    cluster.apply(obj)

    wait_for(lambda: ready_pods(cluster, namespace, "launch") >= 1, timeout=60, what="the floor replica Ready")

    # Ahead of the opening the operator raises the floor and names the schedule ...
    def scheduled() -> bool:
        last = status(cluster, namespace, "launch").get("lastDecision", {})
        return last.get("reason") == "Schedule" and last.get("desired", 0) >= FLOOR

    wait_for(scheduled, timeout=OPENS_IN_S + 5, what="a Schedule decision")
    raised_at = time.time()
    last = status(cluster, namespace, "launch")["lastDecision"]
    assert raised_at < opens, f"raised only {raised_at - opens:.1f}s after the opening"
    assert "schedule 'launch' (opens " in last["message"] and f"floor {FLOOR}" in last["message"], last
    ttr = status(cluster, namespace, "launch").get("timeToReadySeconds", {})
    assert ttr, "time-to-ready was measured from the first replica"
    (window,) = status(cluster, namespace, "launch")["schedules"]
    assert (window["name"], window["state"]) == ("launch", "Provisioning"), window
    assert window["opens"] == iso(opens), window  # the spec's start, as written

    # ... early enough that the capacity is Ready when the window opens.
    time.sleep(max(0.0, opens - time.time()))
    at_open = ready_pods(cluster, namespace, "launch")
    print(f"schedule raised {opens - raised_at:.1f}s before the opening; time-to-ready {ttr}; {at_open} Ready at it")
    assert at_open >= FLOOR, (
        f"{at_open} Ready at the opening (raised {opens - raised_at:.1f}s before it; time-to-ready {ttr})"
    )
    wait_for(lambda: status(cluster, namespace, "launch").get("replicas", {}).get("serving", 0) >= FLOOR,
             timeout=15, what=f"{FLOOR} serving")
    events = cluster.list("events", namespace)
    assert any(e["involvedObject"]["name"] == "launch" and e["reason"] == "Scaled" for e in events)
