"""Fixtures for tests against the real local control plane (kube-apiserver, etcd, KCM, scheduler,
kwok), started once per test session with hack/cluster.sh, and the operator run out of cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

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


@pytest.fixture(scope="session")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The operator as a separate process, out of cluster, against the test cluster."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpufleet.cli", "operator", "--kubeconfig", cluster.kubeconfig,
             "--health", "127.0.0.1:18080", "--min-interval", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=cluster.env, cwd="/",
        )
    try:
        wait_for(lambda: proc.poll() is not None or "Activity 'configure' succeeded" in log.read_text()
                 or "Serving health status" in log.read_text(), timeout=60, what="operator start")
        assert proc.poll() is None, f"operator exited: {log.read_text()[-3000:]}"
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        sys.stderr.write(f"\n--- operator log (tail) ---\n{log.read_text()[-4000:]}\n")


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
