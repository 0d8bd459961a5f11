"""Spot capacity on the real cluster: interruption notices, lost nodes, unavailable spot."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import CLUSTER, Cluster, loop_service, pods, set_load, status
from tests.support import ROOT, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

SPOT_NODES = ("gpu-spot-0", "gpu-spot-1")


@pytest.fixture
def restore_nodes(cluster: Cluster) -> Iterator[None]:
    """Whatever a test does to the shared spot nodes is undone afterwards."""
    yield
    for node in SPOT_NODES:
        for taint in ("karpenter.sh/disrupted", "gpufleet.test/full", "cloud.google.com/impending-node-termination"):
            cluster.kubectl("taint", "node", node, f"{taint}-", check=False)
    subprocess.run([str(ROOT / "hack/cluster.sh"), "nodes"], env={**os.environ, "CLUSTER_NAME": CLUSTER},
                   check=True, timeout=180)


def spot_service(namespace: str, name: str) -> dict[str, Any]:
    obj = loop_service(namespace, name)
    spec = obj["spec"]
    spec["replicas"] = {"min": 2, "max": 10}
    spec["warmPool"] = {"size": 1, "max": 1}
    spec["capacity"]["onDemand"]["base"] = 1
    spec["capacity"]["spot"].update(enabled=True, maxFraction=0.5, pendingTimeoutSeconds=10, returnAfterSeconds=20)
    spec["scaling"]["scaleDown"]["stabilizationSeconds"] = 60
    spec["template"]["metadata"]["annotations"]["kwok.gpufleet.io/ready-delay"] = "15s"
    return obj


def serving_now(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    return [p for p in pods(cluster, namespace, name)
            if p["metadata"]["labels"].get("gpufleet.io/serving") == "true" and not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def on_spot(pod: dict[str, Any]) -> bool:
    return pod["spec"].get("nodeName", "") in SPOT_NODES


def settle_with_spot(cluster: Cluster, emulator: str, namespace: str, name: str, need: int) -> None:
    set_load(emulator, namespace, name, need * 100 - 50)

    def ready() -> bool:
        serving = serving_now(cluster, namespace, name)
        return len(serving) >= need and any(on_spot(p) for p in serving)

    wait_for(ready, timeout=120, what=f">= {need} serving, some on spot")


def test_interruption_notice_keeps_serving_capacity(
    cluster: Cluster, operator: Path, emulator: str, namespace: str, restore_nodes: None
) -> None:
    need = 4
    cluster.apply(spot_service(namespace, "notice"))
    settle_with_spot(cluster, emulator, namespace, "notice", need)

    for node in SPOT_NODES:  # the reclaim notice Karpenter puts on a node it is about to remove
        cluster.kubectl("taint", "node", node, "karpenter.sh/disrupted=:NoSchedule")
    noticed = time.monotonic()
    lowest = need

    def replaced() -> bool:
        nonlocal lowest
        serving = serving_now(cluster, namespace, "notice")
        lowest = min(lowest, len(serving))
        spot_left = [p for p in pods(cluster, namespace, "notice") if on_spot(p) and not p["metadata"].get("deletionTimestamp")]
        return not spot_left and len(serving) >= need

    wait_for(replaced, timeout=150, what="spot pods replaced by on-demand ones", interval=0.25)
    assert lowest >= need, f"serving dipped to {lowest} (< {need}) during the replacement"
    elapsed = time.monotonic() - noticed
    assert elapsed < 120, f"replacement took {elapsed:.0f}s, longer than AWS's 2-minute notice"
    events = cluster.list("events", namespace)
    assert any(e["reason"] == "Drained" for e in events)


def test_short_notice_drains_before_replacements_are_ready(
    cluster: Cluster, operator: Path, emulator: str, namespace: str, restore_nodes: None
) -> None:
    """GCP gives 30 s: less than a drain needs, so interrupted pods leave the Service at once
    instead of waiting for their replacements (15 s cold start here) and losing in-flight work."""
    need = 3
    cluster.apply(spot_service(namespace, "short"))
    settle_with_spot(cluster, emulator, namespace, "short", need)
    for node in SPOT_NODES:
        cluster.kubectl("taint", "node", node, "cloud.google.com/impending-node-termination=:NoSchedule")
    noticed = time.monotonic()

    def spot_out_of_service() -> bool:
        return not [p for p in serving_now(cluster, namespace, "short") if on_spot(p)]

    wait_for(spot_out_of_service, timeout=30, what="spot pods out of the Service", interval=0.25)
    elapsed = time.monotonic() - noticed
    assert elapsed < 12, f"spot pods left the Service {elapsed:.0f}s after a 30 s notice"
    # Capacity comes back from the replacements (and the promoted standby).
    wait_for(lambda: len(serving_now(cluster, namespace, "short")) >= need, timeout=90, what=f">= {need} serving")


def test_lost_spot_node_is_replaced(
    cluster: Cluster, operator: Path, emulator: str, namespace: str, restore_nodes: None
) -> None:
    need = 3
    cluster.apply(spot_service(namespace, "lost"))
    settle_with_spot(cluster, emulator, namespace, "lost", need)
    victims = {p["spec"]["nodeName"] for p in serving_now(cluster, namespace, "lost") if on_spot(p)}
    for node in victims:  # reclaimed without notice: the node object is gone
        cluster.kubectl("delete", "node", node, "--wait=false")

    def healthy_serving() -> bool:
        nodes = {n["metadata"]["name"] for n in cluster.list("nodes", "")}
        alive = [p for p in serving_now(cluster, namespace, "lost") if p["spec"].get("nodeName") in nodes]
        return len(alive) >= need

    # The warm standby is promoted at once, replacements start without waiting for pod GC.
    wait_for(healthy_serving, timeout=60, what="serving capacity restored on live nodes")


def test_unavailable_spot_falls_back_to_on_demand_and_returns(
    cluster: Cluster, operator: Path, namespace: str, restore_nodes: None
) -> None:
    for node in SPOT_NODES:  # spot capacity can't be had: new spot pods stay Pending
        cluster.kubectl("taint", "node", node, "gpufleet.test/full=true:NoSchedule")
    obj = spot_service(namespace, "scarce")
    obj["spec"]["warmPool"] = {"size": 0, "max": 0}
    cluster.apply(obj)

    def replicas(name: str) -> int:
        dep = cluster.get("deployment", name, namespace) or {}
        return int(dep.get("spec", {}).get("replicas", 0))

    wait_for(lambda: replicas("scarce-spot") >= 1, timeout=30, what="a spot replica asked for")
    # Pending past pendingTimeoutSeconds (10 s): the capacity moves to on-demand.
    wait_for(lambda: replicas("scarce-spot") == 0 and replicas("scarce-ondemand") == 2, timeout=45,
             what="fallback to on-demand")
    st = status(cluster, namespace, "scarce")
    assert "spot" in st["lastDecision"]["message"].lower(), st["lastDecision"]
    wait_for(lambda: len(serving_now(cluster, namespace, "scarce")) == 2, timeout=60, what="2 on-demand serving")

    # Spot comes back: after returnAfterSeconds the fleet moves a replica back onto it.
    for node in SPOT_NODES:
        cluster.kubectl("taint", "node", node, "gpufleet.test/full-")
    wait_for(lambda: any(on_spot(p) for p in serving_now(cluster, namespace, "scarce")), timeout=90,
             what="a replica serving on spot again")
    sizes = []
    for _ in range(10):  # no ping-pong once back: the split holds over the next decisions
        before = status(cluster, namespace, "scarce")["lastDecision"]["time"]
        wait_for(lambda b=before: status(cluster, namespace, "scarce")["lastDecision"]["time"] != b,
                 timeout=20, what="next decision")
        sizes.append(replicas("scarce-spot"))
    assert min(sizes) >= 1, sizes
