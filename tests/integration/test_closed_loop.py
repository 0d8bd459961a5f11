"""Closed loop on the real cluster: emulated Triton pods -> real Prometheus -> operator ->
Deployments -> KWOK pods Ready after the model-load delay -> queue recovers."""

from __future__ import annotations

import math
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gpufleet.devenv.prometheus import PrometheusServer
from tests.integration.conftest import Cluster
from tests.integration.test_foundation import example
from tests.support import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

STABILIZE_S = 20
MAX_STEP_PERCENT = 50


def loop_service(namespace: str, name: str, prometheus_url: str | None = None) -> dict[str, Any]:
    obj = example(namespace, name=name)
    spec = obj["spec"]
    spec["replicas"] = {"min": 1, "max": 8}
    spec["warmPool"] = {"size": 0, "max": 0}
    spec["capacity"]["spot"]["enabled"] = False
    spec["forecast"] = {"enabled": False}
    spec["slo"] = {"queueDepthPerReplica": 8}
    spec["scaling"] = {"intervalSeconds": 2, "targetRpsPerReplica": 100,
                       "scaleDown": {"stabilizationSeconds": STABILIZE_S, "maxStepPercent": MAX_STEP_PERCENT}}
    spec["metrics"] = {"staleAfterSeconds": 10, **({"prometheusUrl": prometheus_url} if prometheus_url else {})}
    spec["template"]["metadata"]["annotations"]["kwok.gpufleet.io/ready-delay"] = "5s"
    return obj


def set_load(emulator: str, namespace: str, name: str, rps: float) -> None:
    req = urllib.request.Request(f"{emulator}/load/{namespace}/{name}", data=f"step:0={rps}".encode(), method="PUT")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 204


def status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj = cluster.get("inferenceservice", name, namespace) or {}
    result: dict[str, Any] = obj.get("status", {})
    return result


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions", []) if c["type"] == kind), {})


def desired(cluster: Cluster, namespace: str, name: str) -> int:
    dep = cluster.get("deployment", f"{name}-ondemand", namespace) or {}
    return int(dep.get("spec", {}).get("replicas", 0))


def wait_ticks(cluster: Cluster, namespace: str, name: str, ticks: int, timeout: float) -> list[int]:
    """Follow `ticks` new decisions of the operator; return the Deployment size seen at each."""
    seen: list[str] = []
    sizes: list[int] = []

    def next_tick() -> bool:
        t = status(cluster, namespace, name).get("lastDecision", {}).get("time")
        if t and (not seen or t != seen[-1]):
            seen.append(t)
            sizes.append(desired(cluster, namespace, name))
        return len(seen) > ticks

    wait_for(next_tick, timeout=timeout, what=f"{ticks} operator decisions", interval=0.5)
    return sizes


def test_load_step_scales_up_then_stabilised_scale_down(
    cluster: Cluster, operator: Path, emulator: str, namespace: str
) -> None:
    cluster.apply(loop_service(namespace, "loop"))
    wait_for(lambda: status(cluster, namespace, "loop").get("replicas", {}).get("serving") == 1,
             timeout=60, what="1 replica serving")
    wait_for(lambda: condition(status(cluster, namespace, "loop"), "MetricsAvailable").get("status") == "True",
             timeout=60, what="metrics available")

    # 400 req/s against ~122 req/s per replica: the queue builds and the operator scales up.
    set_load(emulator, namespace, "loop", 400)
    wait_for(lambda: (status(cluster, namespace, "loop").get("observed", {}).get("queueDepth") or 0) > 8,
             timeout=60, what="queue depth above target")
    wait_for(lambda: desired(cluster, namespace, "loop") >= 4, timeout=60, what="scale-up to >= 4")
    st = status(cluster, namespace, "loop")
    assert st["lastDecision"]["reason"] in {"QueueDepth", "RequestRate", "Latency", "MaxReplicas"}, st["lastDecision"]
    assert st["lastDecision"]["applied"] is True

    # New pods turn Ready after the model-load delay, join the Service, and the queue drains.
    wait_for(lambda: status(cluster, namespace, "loop").get("replicas", {}).get("serving", 0) >= 4,
             timeout=90, what=">= 4 serving")

    def queue_recovered() -> bool:
        st = status(cluster, namespace, "loop")
        q = st.get("observed", {}).get("queueDepth")
        return q is not None and q <= 8 * st["replicas"]["serving"]

    wait_for(queue_recovered, timeout=90, what="queue depth back under target")
    events = cluster.list("events", namespace)
    assert any(e["reason"] == "Scaled" and e["involvedObject"]["name"] == "loop" for e in events)
    # Settle: the size follows the current load and no longer a backlog the stabilisation window
    # still holds, i.e. it stayed the same for a whole window of decisions.
    def steady() -> bool:
        return len(set(wait_ticks(cluster, namespace, "loop", STABILIZE_S // 2 + 2, timeout=STABILIZE_S + 40))) == 1

    wait_for(steady, timeout=180, what="a size unchanged for a stabilisation window")
    peak = desired(cluster, namespace, "loop")

    # Load drops: nothing is removed before the stabilisation window, then bounded steps down.
    set_load(emulator, namespace, "loop", 20)
    dropped_at = time.monotonic()
    wait_for(lambda: desired(cluster, namespace, "loop") < peak, timeout=STABILIZE_S + 60, what="first scale-down")
    assert time.monotonic() - dropped_at >= STABILIZE_S - 3, "scaled down inside the stabilisation window"
    sizes = [peak, *wait_ticks(cluster, namespace, "loop", 30, timeout=150)]
    for before, after in zip(sizes, sizes[1:]):
        if after < before:
            assert before - after <= max(1, math.ceil(before * MAX_STEP_PERCENT / 100)), sizes
    assert sizes[-1] == 1, f"did not settle at the floor: {sizes}"


def test_prometheus_down_holds_capacity_and_recovers(
    cluster: Cluster, operator: Path, emulator: str, namespace: str, file_sd: Path
) -> None:
    own = PrometheusServer(scrape_interval_s=1.0, file_sd_dir=file_sd).start()
    port = own.port
    try:
        cluster.apply(loop_service(namespace, "safe", prometheus_url=own.url))
        set_load(emulator, namespace, "safe", 300)
        wait_for(lambda: desired(cluster, namespace, "safe") >= 3, timeout=90, what="scale-up to >= 3")
        wait_for(lambda: status(cluster, namespace, "safe").get("replicas", {}).get("serving", 0) >= 3,
                 timeout=90, what=">= 3 serving")
        held = desired(cluster, namespace, "safe")

        # Prometheus goes away and the load vanishes: without metrics nothing may be removed.
        own.stop()
        set_load(emulator, namespace, "safe", 0)
        wait_for(lambda: condition(status(cluster, namespace, "safe"), "MetricsAvailable").get("status") == "False",
                 timeout=30, what="MetricsAvailable=False")
        st = status(cluster, namespace, "safe")
        assert st["lastDecision"]["reason"] == "SafeMode", st["lastDecision"]
        sizes = wait_ticks(cluster, namespace, "safe", ticks=(STABILIZE_S // 2) + 5, timeout=120)
        assert min(sizes) >= held, f"scaled down without metrics: {sizes}"
        events = cluster.list("events", namespace)
        assert any(e["reason"] == "MetricsUnavailable" for e in events)

        # Prometheus returns on the same address: metrics flow again and the idle fleet shrinks.
        own = PrometheusServer(scrape_interval_s=1.0, file_sd_dir=file_sd, port=port).start()
        wait_for(lambda: condition(status(cluster, namespace, "safe"), "MetricsAvailable").get("status") == "True",
                 timeout=60, what="MetricsAvailable=True again")
        wait_for(lambda: desired(cluster, namespace, "safe") < held, timeout=STABILIZE_S + 90,
                 what="scale-down after recovery")
    finally:
        own.stop()
