"""Issue 19's signals on the real cluster: the emulator's pods serve Triton's request summary and
TensorRT-LLM's KV-cache gauges, Debian's Prometheus scrapes them, the operator reads them through
its built-in (batched) queries, and the decision follows them.

- latency p95: Triton's summary quantile, not the mean. The emulated replica spreads request
  latencies so that 95 % finish within 1.5x its typical time: at a light load (no queue) the p95 is
  ~1.5x the mean, over a p95 target that the mean is under; the operator scales on the p95
  (reason Latency, "latency p95 ..."), and status shows both, each under its own name.
- KV cache: a TensorRT-LLM service whose threshold (slo.kvCacheUtilization 0.3) the load passes with
  an empty queue: the operator adds a replica for the cache alone (reason KVCache).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.support import Cluster, loop_service, set_load, status
from tests.support import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]


def decision(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = status(cluster, namespace, name).get("lastDecision", {})
    return result


def test_latency_p95_is_a_quantile_and_scales_where_the_mean_would_not(
        cluster: Cluster, operator: object, emulator: str, namespace: str) -> None:
    svc = loop_service(namespace, "p95")
    svc["spec"]["replicas"] = {"min": 1, "max": 3}
    # The mean (~1.0 s) is within both targets; the p95 (~1.6 s) is over its 1.2 s.
    svc["spec"]["slo"] = {"queueDepthPerReplica": 8, "latencyP95Ms": 1200, "latencyMeanMs": 1200}
    cluster.apply(svc)
    set_load(emulator, namespace, "p95", 30)  # a quarter of a replica: no queue, no rate need

    def observed() -> dict[str, Any]:
        got: dict[str, Any] = status(cluster, namespace, "p95").get("observed", {})
        return got

    wait_for(lambda: observed().get("latencyP95Ms") is not None and observed().get("latencyMeanMs") is not None,
             timeout=120, what="both latencies in status.observed")
    seen = observed()
    assert seen["latencyMeanMs"] < 1200 < seen["latencyP95Ms"], seen
    assert seen["latencyP95Ms"] > 1.3 * seen["latencyMeanMs"], seen  # a quantile of the spread, not the mean
    wait_for(lambda: decision(cluster, namespace, "p95").get("reason") == "Latency"
             and decision(cluster, namespace, "p95").get("desired", 0) >= 2,
             timeout=90, what="a scale-up for the p95")
    message = decision(cluster, namespace, "p95")["message"]
    assert "latency p95" in message and "> 1200ms target" in message and "latency mean" not in message, message


def test_kv_cache_adds_a_replica_before_the_queue_builds(
        cluster: Cluster, operator: object, emulator: str, namespace: str) -> None:
    svc = loop_service(namespace, "kv")
    svc["spec"]["model"]["backend"] = "tensorrtllm"
    svc["spec"]["replicas"] = {"min": 1, "max": 4}
    svc["spec"]["slo"] = {"queueDepthPerReplica": 8, "kvCacheUtilization": 0.3}
    cluster.apply(svc)
    wait_for(lambda: status(cluster, namespace, "kv").get("replicas", {}).get("serving") == 1,
             timeout=90, what="1 replica serving")
    # ~80 requests in flight of 128 slots: 0.56 of the cache, no queue, 0.8 of the rate target.
    set_load(emulator, namespace, "kv", 80)
    wait_for(lambda: (status(cluster, namespace, "kv").get("observed", {}).get("kvCacheUtilization") or 0) > 0.4,
             timeout=90, what="the KV cache over its threshold in status")
    wait_for(lambda: decision(cluster, namespace, "kv").get("reason") == "KVCache"
             and decision(cluster, namespace, "kv").get("desired", 0) >= 2, timeout=90, what="a scale-up for the cache")
    st = status(cluster, namespace, "kv")
    assert (st["observed"].get("queueDepth") or 0) <= 8, st["observed"]  # the queue did not ask for it
    assert "kv cache" in st["lastDecision"]["message"] and "> 0.3 target" in st["lastDecision"]["message"]
