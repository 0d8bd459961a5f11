"""Closed loop on the real cluster: emulated Triton pods -> real Prometheus -> operator ->
Deployments -> KWOK pods Ready after the model-load delay -> queue recovers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gpufleet.devenv.prometheus import PrometheusServer
from tests.integration.support import (
    MAX_STEP_PERCENT,
    STABILIZE_S,
    Cluster,
    Decision,
    DecisionLog,
    condition,
    desired,
    loop_service,
    set_load,
    status,
    wait_ticks,
)
from tests.support import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]


def held_by_the_window(log: list[Decision], peak: int, start: int) -> tuple[Decision, list[Decision], Decision]:
    """The first scale-down below `peak` from log[start], the decisions held by the stabilisation
    window just before it (reason Stabilizing: the load asked for less), and the last decision
    before those (the load still asked for `peak`: its need stays in the window for STABILIZE_S)."""
    down = next(i for i, d in enumerate(log) if i >= start and d.desired < peak)
    first_held = down
    while first_held > 0 and log[first_held - 1].reason == "Stabilizing":
        first_held -= 1
    assert first_held > 0, f"the log does not reach back past the held decisions: {log}"
    return log[first_held - 1], log[first_held:down], log[down]


def test_load_step_scales_up_then_stabilised_scale_down(
    cluster: Cluster, operator: Path, emulator: str, namespace: str
) -> None:
    cluster.apply(loop_service(namespace, "loop"))
    wait_for(lambda: status(cluster, namespace, "loop").get("replicas", {}).get("serving") == 1,
             timeout=60, what="1 replica serving")
    wait_for(lambda: condition(status(cluster, namespace, "loop"), "MetricsAvailable").get("status") == "True",
             timeout=60, what="metrics available")

    # 350 req/s against ~122 req/s per replica: the queue builds and the operator scales up. At
    # 100 req/s per replica the rate needs 4 (3.5), far enough from a boundary that noise in the
    # measured rate does not flip the need between 4 and 5 (at 400 any reading above it needed 5,
    # and each flip back down was held as Stabilizing, restarting the settle wait below).
    set_load(emulator, namespace, "loop", 350)
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

    with DecisionLog(cluster, namespace, "loop") as log:
        # Settle: the size follows the current load and no longer a backlog the stabilisation
        # window still holds: the same for a whole window of decisions, none of them held.
        def steady() -> bool:
            recent = log.decisions()[-(STABILIZE_S // 2 + 2):]
            return (len(recent) == STABILIZE_S // 2 + 2 and len({d.desired for d in recent}) == 1
                    and all(d.reason != "Stabilizing" for d in recent))

        try:
            wait_for(steady, timeout=180, what="a size the load needs, unchanged for a stabilisation window")
        except AssertionError as e:
            raise AssertionError(f"{e}; decisions {log.decisions()[-30:]}") from None
        settled = log.decisions()
        peak, start = settled[-1].desired, len(settled)

        # Load drops. The 1-minute request rate falls over a minute, so the need falls late
        # whatever the window; what the window adds is measured from the last decision that
        # still needed the peak, in the operator's own decision times: no scale-down for
        # STABILIZE_S after it, the decisions between held as Stabilizing. Without a window the
        # first decision that needs less scales down (no Stabilizing, 1 interval later).
        set_load(emulator, namespace, "loop", 20)
        try:
            wait_for(lambda: any(d.desired < peak for d in log.decisions()[start:]), timeout=STABILIZE_S + 90,
                     what="first scale-down")
        except AssertionError as e:
            raise AssertionError(f"{e}; peak {peak}, Deployment {desired(cluster, namespace, 'loop')}, "
                                 f"decisions {log.decisions()[max(0, start - 3):]}") from None
        last_high, held, first_down = held_by_the_window(log.decisions(), peak, start)
        assert held, f"scaled down at the first decision that needed less: {log.decisions()}"
        # Decision times are whole seconds: 1 s of rounding.
        assert first_down.at - last_high.at >= STABILIZE_S - 1, (last_high, held, first_down)

        # Then bounded steps down to the floor (the rate falls over its minute, each step waits).
        wait_for(lambda: log.decisions()[-1].desired == 1, timeout=240, what="the floor")
        sizes = [d.desired for d in log.decisions()[start - 1:]]
    for before, after in zip(sizes, sizes[1:]):
        if after < before:
            assert before - after <= max(1, math.ceil(before * MAX_STEP_PERCENT / 100)), sizes
    # The Deployment keeps draining pods until their requests are done, then follows.
    wait_for(lambda: desired(cluster, namespace, "loop") == 1, timeout=120, what="the Deployment at the floor")


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
        # It starts empty: a pod Ready for longer than the rate window reads again once the new
        # Prometheus holds three quarters of that window (~52 s of 1 s scrapes), as in test_partial_scrape.
        own = PrometheusServer(scrape_interval_s=1.0, file_sd_dir=file_sd, port=port).start()
        wait_for(lambda: condition(status(cluster, namespace, "safe"), "MetricsAvailable").get("status") == "True",
                 timeout=120, what="MetricsAvailable=True again")
        wait_for(lambda: desired(cluster, namespace, "safe") < held, timeout=STABILIZE_S + 90,
                 what="scale-down after recovery")
    finally:
        own.stop()
