"""One operator for many services, on the real cluster: more services than worker threads, a
blackholed API server, memory kept across kill -9.

Each test runs its own operator process on its own shard (`--selector gpufleet.io/shard=<x>`),
so the session's operator (which takes `!gpufleet.io/shard`) never touches these services.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.api.timefmt import iso_seconds
from gpufleet.control.memory import decode
from gpufleet.devenv.prometheus import PrometheusServer
from tests.chaos.proxy import Proxy
from tests.integration.support import Cluster, Process, free_port
from tests.support import ROOT, wait_for

pytestmark = [pytest.mark.cluster]

SHARD = "gpufleet.io/shard"


def service(namespace: str, name: str, shard: str, *, interval: int = 5) -> dict[str, Any]:
    return {
        "apiVersion": "gpufleet.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "labels": {SHARD: shard}},
        "spec": {
            "model": {"name": name, "backend": "triton"},
            "replicas": {"min": 1, "max": 3},
            "scaling": {"intervalSeconds": interval},
            "warmPool": {"size": 0, "max": 1},
            "capacity": {"onDemand": {"nodeSelector": {"karpenter.sh/capacity-type": "on-demand"}},
                         "spot": {"enabled": False}},
            "template": {
                "metadata": {"annotations": {"kwok.gpufleet.io/ready-delay": "1s"}},
                "spec": {"containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:25.01-py3"}]},
            },
        },
    }


OperatorFactory = Callable[..., tuple[Process, int]]


@pytest.fixture
def shard_operator(cluster: Cluster, prometheus: PrometheusServer, tmp_path: Path) -> Iterator[OperatorFactory]:
    """Start operators on one shard; each is stopped (and its log tail printed) at teardown."""
    started: list[Process] = []

    def start(shard: str, *extra: str, kubeconfig: str | None = None, label: str = "operator") -> tuple[Process, int]:
        metrics = free_port()
        config = kubeconfig or cluster.kubeconfig
        proc = Process(label, [
            sys.executable, "-m", "gpufleet.cli", "operator", "--kubeconfig", config,
            "--selector", f"{SHARD}={shard}", "--prometheus-url", prometheus.url, "--min-interval", "1",
            "--health", f"127.0.0.1:{free_port()}", "--metrics-port", str(metrics), "--metrics-host", "127.0.0.1",
            *extra,
        ], tmp_path / f"{label}-{len(started)}.log", {**cluster.env, "KUBECONFIG": config})
        started.append(proc)
        proc.wait_log("Activity 'configure' succeeded")
        return proc, metrics

    yield start
    for proc in started:
        proc.stop()
        sys.stderr.write(f"\n--- {proc.name} log (tail) ---\n{proc.log.read_text()[-3000:]}\n")


def isvcs(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return cluster.list("inferenceservices.gpufleet.io", namespace)


def decided(obj: dict[str, Any]) -> bool:
    return bool(((obj.get("status") or {}).get("lastDecision") or {}).get("time"))


def metric(port: int, name: str, *labels: str) -> float:
    """Sum of a metric's samples on the operator's /metrics whose labels contain each of `labels`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and all(label in line for label in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_more_services_than_workers_all_decide_and_delete_fast(
        cluster: Cluster, namespace: str, shard_operator: OperatorFactory) -> None:
    """20 services on 4 worker threads (the old design parked one thread per service, and kopf's
    executor has min(32, CPUs + 4)): all decide within three intervals, and deleting all 20
    finishes within 60 s."""
    _, port = shard_operator("twenty", "--workers", "4")
    interval = 5
    cluster.apply("\n---\n".join(yaml.safe_dump(service(namespace, f"svc-{i:02d}", "twenty", interval=interval))
                                 for i in range(20)))
    applied = time.monotonic()
    wait_for(lambda: len(isvcs(cluster, namespace)) == 20 and all(decided(o) for o in isvcs(cluster, namespace)),
             timeout=3 * interval + 5, what="a lastDecision on all 20 services within three intervals")
    took = time.monotonic() - applied
    assert took <= 3 * interval + 5, took
    # Every service gets its children as well (create handlers never wait behind loops), within
    # the same three intervals from the apply.
    wait_for(lambda: len(cluster.list("deployments", namespace, "gpufleet.io/capacity-class=on-demand")) == 20,
             timeout=max(1.0, applied + 3 * interval + 5 - time.monotonic()),
             what="the Deployments of all 20 services within three intervals")
    # Status is written only when something changed: once decided, a steady service skips writes.
    wait_for(lambda: metric(port, "gpufleet_status_writes_total", 'result="skipped"') > 20, timeout=30,
             what="skipped status writes on steady services")

    start = time.monotonic()
    cluster.kubectl("delete", "inferenceservices.gpufleet.io", "--all", "-n", namespace, "--wait=true",
                    "--timeout=60s")
    assert not isvcs(cluster, namespace)
    assert time.monotonic() - start <= 60


def api_server(cluster: Cluster) -> tuple[str, int]:
    server = yaml.safe_load(Path(cluster.kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
    host, _, port = server.removeprefix("https://").partition(":")
    return host, int(port)


def proxied_kubeconfig(cluster: Cluster, port: int, path: Path) -> str:
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_blackholed_api_server_times_out_and_the_loop_recovers(
        cluster: Cluster, namespace: str, shard_operator: OperatorFactory, tmp_path: Path) -> None:
    hole = Proxy(api_server(cluster))
    try:
        kubeconfig = proxied_kubeconfig(cluster, hole.port, tmp_path / "proxied.kubeconfig")
        proc, metrics = shard_operator("hole", "--kube-timeout", "3", "--status-heartbeat", "1",
                                       kubeconfig=kubeconfig)
        obj = service(namespace, "held", "hole", interval=2)
        obj["spec"]["replicas"]["min"] = 2
        cluster.apply(obj)
        wait_for(lambda: decided(cluster.get("inferenceservice", "held", namespace) or {}), timeout=60,
                 what="a first decision through the proxy")

        hole.blackhole()
        holed = time.time()
        # Writes cannot pass: a tick's status patch times out (3 s) instead of hanging for ever.
        wait_for(lambda: "TimeoutError" in proc.log.read_text() or "timed out" in proc.log.read_text(),
                 timeout=30, what="a Kubernetes call timing out in the operator's log")
        # The loop is not stuck: later ticks keep starting (and failing fast) while it hangs.
        failed = metric(metrics, "gpufleet_errors_total")
        wait_for(lambda: metric(metrics, "gpufleet_errors_total") >= failed + 2, timeout=30,
                 what="later ticks running (and failing) while the API server hangs")

        hole.restore()
        healed = time.time()
        assert healed > holed

        def decided_after_heal() -> bool:
            stamp = ((cluster.get("inferenceservice", "held", namespace) or {}).get("status") or {}) \
                .get("lastDecision", {}).get("time")
            return bool(stamp) and iso_seconds(stamp) >= healed
        wait_for(decided_after_heal, timeout=60, what="a decision written after the proxy healed")
        assert proc.proc.poll() is None, "the operator crashed"
    finally:
        hole.close()


def test_spot_backoff_survives_kill_9(cluster: Cluster, namespace: str, shard_operator: OperatorFactory) -> None:
    """Spot pods that never schedule put spot in back-off for 10 minutes; the operator is killed
    with SIGKILL and restarted: the new process restores the back-off from status.memory and
    creates no spot pod (before memory was persisted, it went straight back to spot)."""
    obj = service(namespace, "backoff", "restart", interval=2)
    spec = obj["spec"]
    spec["replicas"] = {"min": 2, "max": 4}
    spec["capacity"]["onDemand"]["base"] = 1
    # No node carries this label: spot pods stay Pending and spot is marked unavailable.
    spec["capacity"]["spot"] = {"enabled": True, "maxFraction": 0.5, "pendingTimeoutSeconds": 10,
                                "returnAfterSeconds": 600, "nodeSelector": {"gpufleet.test/no-such-node": "x"}}
    first, _ = shard_operator("restart", "--status-heartbeat", "1", label="first")
    cluster.apply(obj)

    def backed_off() -> dict[str, Any] | None:
        status = (cluster.get("inferenceservice", "backoff", namespace) or {}).get("status") or {}
        if not status.get("memory"):
            return None
        memory, _ = decode(status["memory"], now=time.time())
        spot = cluster.get("deployment", "backoff-spot", namespace) or {}
        if memory.spot_retry_at and memory.spot_retry_at > time.time() + 300 and spot.get("spec", {}).get("replicas") == 0:
            return status
        return None
    wait_for(backed_off, timeout=90, what="spot in back-off, persisted in status.memory, spot Deployment at 0")

    first.proc.kill()  # SIGKILL: no cleanup, no goodbye
    first.proc.wait()
    _, port = shard_operator("restart", "--status-heartbeat", "1", label="second")

    def spot_replicas() -> int:
        return int(((cluster.get("deployment", "backoff-spot", namespace) or {}).get("spec") or {}).get("replicas", 0))

    # Ten ticks of the new process, and not one spot replica asked for.
    def ticked() -> bool:
        assert spot_replicas() == 0, "the restarted operator forgot the spot back-off"
        return metric(port, "gpufleet_tick_lag_seconds_count") >= 10
    wait_for(ticked, timeout=90, what="ten ticks of the restarted operator", interval=0.2)
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert not [e for e in events if e["reason"] == "MemoryDiscarded"]


def peering(cluster: Cluster, name: str) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "charts/gpufleet/crds/kopf-peering.yaml"))
    cluster.apply({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}})


def ticks_of(port: int, namespace: str, name: str) -> float:
    return metric(port, "gpufleet_loop_duration_seconds_count", f'namespace="{namespace}"', f'name="{name}"')


def test_two_shards_each_with_peering_and_a_kill_9_failover(
        cluster: Cluster, namespace: str, shard_operator: OperatorFactory) -> None:
    """Two shards by label, each with its own peering object; shard a has two replicas. Each
    shard's services are ticked only by that shard's active replica; when it is killed with SIGKILL
    the standby takes over within the peering lifetime and resumes the persisted memory."""
    suffix = namespace.removeprefix("t-")
    pa, pb = f"shard-a-{suffix}", f"shard-b-{suffix}"
    for name in (pa, pb):
        peering(cluster, name)
    try:
        active_proc, active = shard_operator(f"a-{suffix}", "--peering", pa, "--priority", "100",
                                             "--status-heartbeat", "1", label="a-active")
        standby_proc, standby = shard_operator(f"a-{suffix}", "--peering", pa, "--priority", "50",
                                               "--status-heartbeat", "1", label="a-standby")
        _, other = shard_operator(f"b-{suffix}", "--peering", pb, "--priority", "100", "--status-heartbeat", "1",
                                  label="b")
        cluster.apply(service(namespace, "sa", f"a-{suffix}", interval=2))
        cluster.apply(service(namespace, "sb", f"b-{suffix}", interval=2))
        wait_for(lambda: ticks_of(active, namespace, "sa") >= 3 and ticks_of(other, namespace, "sb") >= 3,
                 timeout=60, what="each shard's active replica ticking its own service")
        assert ticks_of(active, namespace, "sb") == 0 and ticks_of(other, namespace, "sa") == 0
        assert ticks_of(standby, namespace, "sa") == 0  # paused by peering

        status = (cluster.get("inferenceservice", "sa", namespace) or {})["status"]
        before, _ = decode(status["memory"], now=time.time())
        killed = time.monotonic()
        active_proc.proc.kill()
        wait_for(lambda: ticks_of(standby, namespace, "sa") >= 1, timeout=60,
                 what="the standby replica ticking after the active one was killed")
        failover = time.monotonic() - killed
        assert failover <= 30, failover
        after, _ = decode((cluster.get("inferenceservice", "sa", namespace) or {})["status"]["memory"],
                          now=time.time())
        assert after.started_at == before.started_at  # resumed, not started afresh
        assert standby_proc.proc.poll() is None
        sys.stderr.write(f"\nfailover after kill -9: {failover:.1f}s\n")
    finally:
        for name in (pa, pb):
            cluster.kubectl("delete", "clusterkopfpeering", name, "--wait=false", check=False)
