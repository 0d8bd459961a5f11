"""Issue 17 on the real API server and the operator out of cluster: specs the schema used to admit
and the loop then choked on, objects gpufleet does not own, autoscalers aimed at its Deployments,
and the labels and annotations it reserves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import Cluster, condition, example, loop_service, status
from tests.support import wait_for

pytestmark = pytest.mark.cluster

ONE_OFF = {"name": "launch", "start": "2026-12-01T14:00:00Z", "duration": "2h", "minReplicas": 1}

REFUSED = [
    ("window of 3000000d", {"schedules": [{**ONE_OFF, "duration": "3000000d"}]}, "duration must be at most 366d"),
    ("window of 367d", {"schedules": [{**ONE_OFF, "duration": "367d"}]}, "duration must be at most 366d"),
    ("start in year 0", {"schedules": [{**ONE_OFF, "start": "0000-01-01T00:00:00Z"}]}, "spec.schedules[0].start"),
    ("start in year 9999", {"schedules": [{**ONE_OFF, "start": "9999-12-31T23:00:00Z"}]}, "spec.schedules[0].start"),
    ("price 1e308", {"capacity": {"pricePerGpuHour": {"onDemand": 1e308}}}, "spec.capacity.pricePerGpuHour.onDemand"),
    ("budget 1e308", {"budget": {"maxCostPerHour": 1e308}}, "spec.budget.maxCostPerHour"),
]


@pytest.mark.parametrize(("case", "override", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_the_api_server_refuses_what_the_loop_cannot_compute(
    cluster: Cluster, namespace: str, case: str, override: dict[str, Any], message: str
) -> None:
    obj = example(namespace, name="bad")
    obj["spec"].update(override)
    proc = cluster.apply(obj, check=False)
    assert proc.returncode != 0, f"{case}: accepted"
    assert message in proc.stderr, proc.stderr


def test_the_longest_window_is_admitted(cluster: Cluster, namespace: str) -> None:
    obj = example(namespace, name="long", schedules=[{**ONE_OFF, "duration": "366d"}])
    cluster.apply(obj)


def test_a_time_zone_that_is_a_directory_is_invalid_spec_and_the_loop_lives(
    cluster: Cluster, operator: Path, namespace: str
) -> None:
    # The schema's pattern admits "America"; the tz database has a directory of that name.
    obj = loop_service(namespace, "tz")
    obj["spec"]["schedules"] = [{**ONE_OFF, "timeZone": "America"}]
    cluster.apply(obj)

    def ready() -> dict[str, Any]:
        return condition(status(cluster, namespace, "tz"), "Ready")

    wait_for(lambda: ready().get("reason") == "InvalidSpec", timeout=60, what="Ready=False InvalidSpec")
    cond = ready()
    assert cond["status"] == "False" and "spec.schedules.0.timeZone" in cond["message"], cond
    assert "unknown IANA time zone 'America'" in cond["message"], cond
    isvc = cluster.get("inferenceservice", "tz", namespace) or {}
    assert isvc["status"].get("observedGeneration") == isvc["metadata"]["generation"]  # handled: rejected

    # Corrected, the same loop decides: it never died.
    cluster.kubectl("patch", "inferenceservice", "tz", "-n", namespace, "--type=json", "-p",
                    '[{"op": "replace", "path": "/spec/schedules/0/timeZone", "value": "America/New_York"}]')
    wait_for(lambda: status(cluster, namespace, "tz").get("lastDecision", {}).get("reason"), timeout=60,
             what="a decision after the fix")
    wait_for(lambda: ready().get("reason") != "InvalidSpec", timeout=30, what="InvalidSpec cleared")
    log = operator.read_text()
    assert "IsADirectoryError" not in log, log[-3000:]
