"""Fixtures for tests against the real local control plane (kube-apiserver, etcd, KCM, scheduler,
kwok), started once per test session with hack/cluster.sh, and the operator run out of cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpufleet.devenv.prometheus import PrometheusServer
from tests.integration.support import CLUSTER, Cluster, Process, free_port
from tests.support import ROOT


LOGS: dict[str, Path] = {}  # the session's child processes' logs by name (a failing test may quote them)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    env = {**os.environ, "CLUSTER_NAME": CLUSTER}
    subprocess.run([str(ROOT / "hack/cluster.sh"), "up"], env=env, check=True, timeout=3600)
    kubeconfig = subprocess.run([str(ROOT / "hack/cluster.sh"), "kubeconfig"], env=env, check=True,
                                text=True, capture_output=True).stdout.strip()
    yield Cluster(kubeconfig)
    if not os.environ.get("GPUFLEET_KEEP_CLUSTER"):
        subprocess.run([str(ROOT / "hack/cluster.sh"), "down"], env=env, timeout=300)


@pytest.fixture(scope="session")
def file_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("file_sd")


@pytest.fixture(scope="session")
def prometheus(file_sd: Path) -> Iterator[PrometheusServer]:
    """Debian's Prometheus, scraping whatever the emulator lists in file_sd, every second."""
    server = PrometheusServer(scrape_interval_s=1.0, file_sd_dir=file_sd).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def emulator(cluster: Cluster, file_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Per-pod Triton metrics for the KWOK pods; yields its base URL (PUT /load/... sets load)."""
    port = free_port()
    proc = Process("emulator", [sys.executable, "-m", "gpufleet.emulator", "--kubeconfig", cluster.kubeconfig,
                                "--port", str(port), "--file-sd", str(file_sd), "--tick", "0.5"],
                   tmp_path_factory.mktemp("emulator") / "emulator.log", cluster.env)
    LOGS["emulator"] = proc.log
    try:
        proc.wait_log("serving per-pod metrics")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def operator(cluster: Cluster, prometheus: PrometheusServer, emulator: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The operator as a separate process, out of cluster, reading the session's Prometheus."""
    proc = Process("operator", [sys.executable, "-m", "gpufleet.cli", "operator", "--kubeconfig", cluster.kubeconfig,
                                "--health", f"127.0.0.1:{free_port()}", "--min-interval", "1",
                                "--prometheus-url", prometheus.url, "--status-heartbeat", "1",
                                # Tests' own Prometheus servers (spec.metrics.prometheusUrl) listen
                                # on loopback ports: the allow-list permits that host only.
                                "--prometheus-url-allow", "127.0.0.1",
                                # Services labelled with a shard belong to the tests' own operators.
                                "--selector", "!gpufleet.io/shard"],
                   tmp_path_factory.mktemp("operator") / "operator.log", cluster.env)
    try:
        proc.wait_log("Activity 'configure' succeeded")
        yield proc.log
    finally:
        proc.stop()
        sys.stderr.write(f"\n--- operator log (tail) ---\n{proc.log.read_text()[-4000:]}\n")


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
