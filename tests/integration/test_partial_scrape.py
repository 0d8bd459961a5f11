"""A partial scrape on the real cluster: one of four serving pods drops out of Prometheus, and the
operator holds the fleet instead of scaling down on the smaller sums (issue 17, safety item 3).

The session's emulator plays Triton on the KWOK pods and lists them in its file_sd file. This test
runs its own Prometheus on a copy of that list, from which it can leave one pod out, and its own
operator on its own shard (the session's operator never sees the service). The load needs four
replicas; with one pod out of the scrape Prometheus sums three quarters of it, which asks for three.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpufleet.api.timefmt import iso_seconds
from gpufleet.devenv.prometheus import PrometheusServer
from tests.chaos.faults import ScrapeFilter
from tests.integration.support import (
    STABILIZE_S,
    Cluster,
    DecisionLog,
    Process,
    condition,
    free_port,
    is_ready,
    loop_service,
    pods,
    set_load,
    status,
)
from tests.support import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

SHARD = "gpufleet.io/shard"
NAME = "partial"


@pytest.fixture
def filtered_prometheus(file_sd: Path, emulator: str, tmp_path: Path) -> Iterator[tuple[PrometheusServer, ScrapeFilter]]:
    own = tmp_path / "file_sd"
    own.mkdir()
    with ScrapeFilter(file_sd, own) as scrape:
        server = PrometheusServer(scrape_interval_s=1.0, file_sd_dir=own).start()
        try:
            yield server, scrape
        finally:
            server.stop()


@pytest.fixture
def shard_operator(cluster: Cluster, filtered_prometheus: tuple[PrometheusServer, ScrapeFilter],
                   tmp_path: Path) -> Iterator[Process]:
    prometheus, _ = filtered_prometheus
    proc = Process("operator", [
        sys.executable, "-m", "gpufleet.cli", "operator", "--kubeconfig", cluster.kubeconfig,
        "--selector", f"{SHARD}={NAME}", "--prometheus-url", prometheus.url, "--min-interval", "1",
        "--status-heartbeat", "1", "--health", f"127.0.0.1:{free_port()}",
    ], tmp_path / "operator.log", cluster.env)
    try:
        proc.wait_log("Activity 'configure' succeeded")
        yield proc
    finally:
        proc.stop()
        sys.stderr.write(f"\n--- operator log (tail) ---\n{proc.log.read_text()[-3000:]}\n")


def service(namespace: str) -> dict[str, Any]:
    obj = loop_service(namespace, NAME)
    obj["metadata"]["labels"] = {SHARD: NAME}
    # 180 req/s at 50 per replica: four replicas (3.6); 135 (three pods' share) asks for three.
    # A short stabilisation window and whole steps: a smaller sum that lasts is a scale-down.
    obj["spec"]["scaling"] = {"intervalSeconds": 2, "targetRpsPerReplica": 50,
                              "scaleDown": {"stabilizationSeconds": STABILIZE_S, "maxStepPercent": 100}}
    obj["spec"]["slo"] = {"queueDepthPerReplica": 50}
    return obj


def serving(cluster: Cluster, namespace: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods(cluster, namespace, NAME)
                  if is_ready(p) and p["metadata"].get("labels", {}).get("gpufleet.io/serving") == "true"
                  and not p["metadata"].get("deletionTimestamp"))


def test_a_pod_out_of_the_scrape_holds_the_fleet(
        cluster: Cluster, namespace: str, emulator: str, shard_operator: Process,
        filtered_prometheus: tuple[PrometheusServer, ScrapeFilter]) -> None:
    _, scrape = filtered_prometheus
    cluster.apply(service(namespace))
    set_load(emulator, namespace, NAME, 180)

    def settled() -> bool:
        st = status(cluster, namespace, NAME)
        return (len(serving(cluster, namespace)) == 4 and st.get("lastDecision", {}).get("desired") == 4
                and condition(st, "MetricsAvailable").get("status") == "True")

    wait_for(settled, timeout=180, what="four serving pods with complete metrics", interval=1.0)
    # Every serving pod has been Ready long enough to be required to report (staleAfterSeconds: 10).
    def ready_for_long() -> bool:
        ready_at = [next(iso_seconds(c["lastTransitionTime"]) for c in p["status"]["conditions"] if c["type"] == "Ready")
                    for p in pods(cluster, namespace, NAME) if p["metadata"]["name"] in serving(cluster, namespace)]
        return len(ready_at) == 4 and time.time() - max(ready_at) > 11
    wait_for(ready_for_long, timeout=60, what="four pods Ready for more than staleAfterSeconds", interval=1.0)
    wait_for(settled, timeout=60, what="still four serving pods with complete metrics", interval=1.0)

    with DecisionLog(cluster, namespace, NAME) as log:
        hidden = serving(cluster, namespace)[-1]
        scrape.hidden = {f"{hidden}"}
        dropped_at = time.time()

        # The request rate's 1-minute window still holds the pod's last samples for a minute; after
        # that Prometheus sums three pods. Five decisions past that point and the scale-down
        # window, none of them smaller.
        window_passed = dropped_at + 65 + STABILIZE_S
        wait_for(lambda: len([d for d in log.decisions() if d.at > window_passed]) >= 5, timeout=150,
                 what="five decisions once the dropped pod left the rate window", interval=1.0)
        during = [d for d in log.decisions() if d.at > dropped_at]
        assert min(d.desired for d in during) >= 4, during
        assert len(serving(cluster, namespace)) >= 4
        st = status(cluster, namespace, NAME)
        metrics = condition(st, "MetricsAvailable")
        assert metrics["status"] == "False" and "partial scrape: 1 of 4 serving pods" in metrics["message"], metrics
        assert hidden in metrics["message"]
        assert condition(st, "Degraded")["reason"] == "SafeMode"
        # One Warning for the whole partial scrape, not one per decision, and no URL in it.
        # (The service's first ticks, before its pods reported, had one of their own.)
        warnings = [e for e in cluster.list("events", namespace)
                    if e["involvedObject"].get("name") == NAME and e.get("reason") == "MetricsUnavailable"
                    and iso_seconds(e.get("lastTimestamp") or e.get("eventTime")) >= int(dropped_at) - 1]
        assert sum(int(e.get("count") or 1) for e in warnings) == 1, warnings
        assert "http" not in warnings[0]["message"] and "partial scrape" in warnings[0]["message"]

        # Back in the scrape, the pod's rate covers only the seconds since: for a minute it would read
        # low, so the rate stays missing until Prometheus covers the window again.
        scrape.hidden = set()
        wait_for(lambda: "rate window not covered: Prometheus lacks samples of 1 of 4 serving pods" in
                 condition(status(cluster, namespace, NAME), "MetricsAvailable").get("message", ""),
                 timeout=60, what="the returning pod in the scrape, its rate window not yet covered", interval=1.0)
        wait_for(lambda: condition(status(cluster, namespace, NAME), "MetricsAvailable").get("status") == "True",
                 timeout=120, what="metrics complete again", interval=1.0)
        assert min(d.desired for d in log.decisions() if d.at > dropped_at) >= 4
    set_load(emulator, namespace, NAME, 0)
