"""A pod that turns Ready joins the Service within seconds, not at its service's next tick: the
pod watch wakes the service's loop, which carries out its last plan again (docs/rollout.md)."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from gpufleet.api.timefmt import iso_seconds
from tests.integration.support import Cluster, loop_service, pods, status
from tests.support import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

INTERVAL_S = 120  # the next tick is 108-132 s after the first one
LOAD_S = 30  # model-load delay: the first tick (within a tenth of an interval) finds the pods loading
JOIN_S = 5.0  # from Ready to serving: a debounce and one label patch, on a busy CI machine


def ready_at(pod: dict[str, Any]) -> float | None:
    cond = next((c for c in pod["status"].get("conditions", []) if c["type"] == "Ready"), None)
    return iso_seconds(cond["lastTransitionTime"]) if cond and cond["status"] == "True" else None


def serving(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"]["labels"].get("gpufleet.io/serving") == "true")


def test_a_pod_that_turns_ready_joins_the_service_long_before_the_next_tick(
    cluster: Cluster, operator: object, emulator: str, namespace: str
) -> None:
    obj = loop_service(namespace, "ready")
    obj["spec"]["replicas"] = {"min": 2, "max": 4}
    obj["spec"]["scaling"]["intervalSeconds"] = INTERVAL_S
    obj["spec"]["template"]["metadata"]["annotations"]["kwok.gpufleet.io/ready-delay"] = f"{LOAD_S}s"
    cluster.apply(obj)

    # The first tick plans 2 serving while both pods still load: nothing to promote yet.
    def decision() -> dict[str, Any]:
        made: dict[str, Any] = status(cluster, namespace, "ready").get("lastDecision") or {}
        return made if made.get("time") else {}  # the CRD's defaults fill the rest before any tick

    first = wait_for(decision, timeout=INTERVAL_S / 10 + 30, what="the first decision")
    # (The first tick may come before the ReplicaSet made both pods.)
    def both_created() -> list[dict[str, Any]]:
        found = pods(cluster, namespace, "ready")
        return found if len(found) == 2 else []

    loading = wait_for(both_created, timeout=30, what="both pods created")
    assert not any(ready_at(p) for p in loading), "the pods were Ready before the first tick"

    joined_at: dict[str, float] = {}  # when this test first saw each pod serving

    def all_serving() -> bool:
        now = time.time()
        current = pods(cluster, namespace, "ready")
        for p in current:
            if serving(p):
                joined_at.setdefault(p["metadata"]["name"], now)
        return len(current) == 2 and all(serving(p) for p in current)

    wait_for(all_serving, timeout=LOAD_S + 30, what="both pods serving", interval=0.25)
    for p in pods(cluster, namespace, "ready"):
        became_ready = ready_at(p)
        assert became_ready is not None
        sys.stderr.write(f"\n{p['metadata']['name']}: Ready -> serving in "
                         f"{joined_at[p['metadata']['name']] - became_ready:.1f}s (interval {INTERVAL_S}s)\n")
        # The transition time has whole seconds: one more second of slack.
        assert joined_at[p["metadata"]["name"]] - became_ready < JOIN_S + 1, (p["metadata"]["name"], became_ready)
    # No tick came between: the decision is still the first one.
    assert decision()["time"] == first["time"], (first, decision())
    promoted = [e for e in cluster.list("events", namespace) if e["reason"] == "Promoted"]
    assert len(promoted) == 2, promoted
