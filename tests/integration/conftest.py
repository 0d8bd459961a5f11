"""Fixtures for tests against the real local control plane (kube-apiserver, etcd, KCM, scheduler,
kwok), started once per test session with hack/cluster.sh, and the operator run out of cluster."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.devenv.prometheus import PrometheusServer
from tests.support import ROOT, wait_for

CLUSTER = os.environ.get("GPUFLEET_TEST_CLUSTER", "gpufleet-test")


class Cluster:
    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["kubectl", *args], input=input, env=self.env, text=True,
                              capture_output=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def apply(self, obj: dict[str, Any] | str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        return self.kubectl("apply", "-f", "-", input=text, check=check)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        proc = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def list(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[dict[str, Any]] = json.loads(self.kubectl(*args).stdout)["items"]
        return items


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    env = {**os.environ, "CLUSTER_NAME": CLUSTER}
    subprocess.run([str(ROOT / "hack/cluster.sh"), "up"], env=env, check=True, timeout=3600)
    kubeconfig = subprocess.run([str(ROOT / "hack/cluster.sh"), "kubeconfig"], env=env, check=True,
                                text=True, capture_output=True).stdout.strip()
    yield Cluster(kubeconfig)
    if not os.environ.get("GPUFLEET_KEEP_CLUSTER"):
        subprocess.run([str(ROOT / "hack/cluster.sh"), "down"], env=env, timeout=300)


class Process:
    """A child process of the test session with its log; stopped at teardown."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd="/")

    def wait_log(self, text: str, timeout: float = 60) -> None:
        wait_for(lambda: self.proc.poll() is not None or text in self.log.read_text(),
                 timeout=timeout, what=f"{self.name}: {text!r}")
        assert self.proc.poll() is None, f"{self.name} exited: {self.log.read_text()[-3000:]}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
