"""Warm standbys absorb a load step without a cold start; scale-in drains before it deletes."""

from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import Cluster, condition, explained, loop_service, pods, set_load, status
from tests.support import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

COLD_START_S = 45


def hold(emulator: str, namespace: str, pod: str, count: int) -> None:
    req = urllib.request.Request(f"{emulator}/hold/{namespace}/{pod}", data=str(count).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 204


def serving_pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    return [p for p in pods(cluster, namespace, name)
            if p["metadata"]["labels"].get("gpufleet.io/serving") == "true"
            and not p["metadata"].get("deletionTimestamp")]


def test_step_absorbed_by_promotion_then_pool_refills(
    cluster: Cluster, operator: Path, emulator: str, namespace: str
) -> None:
    obj = loop_service(namespace, "warm")
    obj["spec"]["replicas"] = {"min": 1, "max": 14}  # room for the refilled pool beside any serving count
    obj["spec"]["warmPool"] = {"size": 4, "max": 4}
    # A scale-down window as long as the request rate's (1 minute): with the closed loop's 20 s the
    # rate, still averaging the minute before the step, undid the promotions once the queue had
    # drained (8 -> 3 serving at 400 rps, then up again) and the pool refilled a cycle late. The
    # core now holds scale-downs that long after a backlog (core.stabilize.AFTER_BACKLOG_S); the
    # window stays so that this test is about the pool, not that rule.
    obj["spec"]["scaling"]["scaleDown"]["stabilizationSeconds"] = 60
    obj["spec"]["template"]["metadata"]["annotations"]["kwok.gpufleet.io/ready-delay"] = f"{COLD_START_S}s"
    cluster.apply(obj)
    set_load(emulator, namespace, "warm", 80)

    def pool_ready() -> bool:
        r = status(cluster, namespace, "warm").get("replicas", {})
        return r.get("serving") == 1 and r.get("standby") == 4

    wait_for(pool_ready, timeout=COLD_START_S + 60, what="1 serving + 4 warm standbys")
    st = status(cluster, namespace, "warm")
    assert all(COLD_START_S - 1 <= v <= COLD_START_S + 15 for v in st["timeToReadySeconds"].values()), st

    # 4.5x the load: the standbys join the Service by a label change, long before any cold start.
    # 360 rps needs 4 serving (100 rps each), and 4 serving + 4 standbys fill the cluster's 8
    # on-demand GPUs exactly; at 400 rps the need sat on the edge of 5 and the refill's last pod
    # could not be scheduled (CI, 2026-12-02).
    set_load(emulator, namespace, "warm", 360)
    stepped = time.monotonic()
    wait_for(lambda: len(serving_pods(cluster, namespace, "warm")) >= 4, timeout=COLD_START_S - 10,
             what="standbys promoted")
    to_capacity = time.monotonic() - stepped
    sys.stderr.write(f"\ntime to capacity after a 4.5x step: {to_capacity:.1f}s (cold start {COLD_START_S}s)\n")
    # One tick (2 s) + metric rate window + scrape: well inside a cold start.
    assert to_capacity < 20, to_capacity
    events = cluster.list("events", namespace)
    assert any(e["reason"] == "Promoted" for e in events)

    # The pool refills in the background with new (cold) replicas.
    with explained(cluster, namespace, "warm"):
        wait_for(lambda: status(cluster, namespace, "warm").get("replicas", {}).get("standby") == 4,
                 timeout=COLD_START_S + 60, what="warm pool refilled")


def test_scale_in_drains_in_flight_work_before_deleting(
    cluster: Cluster, operator: Path, emulator: str, namespace: str
) -> None:
    # Long enough that the test's own steps (another decision, then the light pod's release) fit
    # well inside it on a loaded machine: the light pod must go as idle, not at the timeout.
    drain_timeout = 60
    obj = loop_service(namespace, "drain")
    obj["spec"]["model"]["backend"] = "tensorrtllm"  # exposes in-flight (active) requests per pod
    obj["spec"]["replicas"] = {"min": 1, "max": 4}
    obj["spec"]["scaling"]["scaleDown"] = {"stabilizationSeconds": 6, "maxStepPercent": 100,
                                            "drainTimeoutSeconds": drain_timeout}
    cluster.apply(obj)
    set_load(emulator, namespace, "drain", 220)

    def settled_at_three() -> bool:
        r = status(cluster, namespace, "drain").get("replicas", {})
        return (len(pods(cluster, namespace, "drain")) == 3 and len(serving_pods(cluster, namespace, "drain")) == 3
                and r.get("desired") == 3)

    # 220 req/s on one pod builds a backlog that wants the max (4) and is held AFTER_BACKLOG_S.
    wait_for(settled_at_three, timeout=180, what="3 pods, all serving")

    # Long requests pinned on every serving pod: 2, 5 and 9 in flight.
    held = dict(zip(sorted(p["metadata"]["name"] for p in serving_pods(cluster, namespace, "drain")), (2, 5, 9)))
    for pod, count in held.items():
        hold(emulator, namespace, pod, count)
    set_load(emulator, namespace, "drain", 0)

    # Two replicas must go: the least busy ones leave the Service and start draining ...
    def draining() -> dict[str, float]:
        out = {}
        for p in pods(cluster, namespace, "drain"):
            since = (p["metadata"].get("annotations") or {}).get("gpufleet.io/draining-since")
            if since:
                out[p["metadata"]["name"]] = float(since)
        return out

    # The request rate is a 1-minute window: the need falls below 2 replicas within it.
    victims = wait_for(lambda: (d := draining()) and len(d) == 2 and d, timeout=120, what="2 pods draining")
    assert {held[v] for v in victims} == {2, 5}, (victims, held)
    # ... and stay while their requests are in flight (several operator decisions later).
    first_decision = status(cluster, namespace, "drain")["lastDecision"]["time"]
    wait_for(lambda: status(cluster, namespace, "drain")["lastDecision"]["time"] != first_decision,
             timeout=30, what="another decision")
    alive = {p["metadata"]["name"] for p in pods(cluster, namespace, "drain")}
    assert set(victims) <= alive, "a pod with in-flight requests was deleted before its drain timeout"

    # The 2-request pod finishes its work: it goes as soon as it is idle.
    light = next(v for v in victims if held[v] == 2)
    heavy = next(v for v in victims if held[v] == 5)
    hold(emulator, namespace, light, 0)
    wait_for(lambda: light not in {p["metadata"]["name"] for p in pods(cluster, namespace, "drain")},
             timeout=30, what="idle pod deleted")
    assert heavy in {p["metadata"]["name"] for p in pods(cluster, namespace, "drain")}
    # The 5-request pod never finishes: it goes at the drain timeout, not before.
    wait_for(lambda: heavy not in {p["metadata"]["name"] for p in pods(cluster, namespace, "drain")},
             timeout=drain_timeout + 30, what="stuck pod deleted at the drain timeout")
    assert time.time() - victims[heavy] >= drain_timeout - 1
    events = cluster.list("events", namespace)
    messages = [e["message"] for e in events if e["reason"] == "Drained"]
    assert any(light in m and "idle" in m for m in messages), messages
    assert any(heavy in m and "drain timeout" in m for m in messages), messages
    assert condition(status(cluster, namespace, "drain"), "Ready").get("status") == "True"
