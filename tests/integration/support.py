"""Helpers for the tests on the local cluster: kubectl on it, child processes, the example service
and the closed-loop service, reading status and following the operator's decisions."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gpufleet.api.timefmt import iso_seconds
from tests.support import ROOT, wait_for

# Under pytest-xdist (`make test` runs files on TEST_WORKERS processes) each worker has a cluster,
# operator, Prometheus and emulator of its own: the suffix keeps their clusters apart.
CLUSTER = os.environ.get("GPUFLEET_TEST_CLUSTER", "gpufleet-test") + (
    f"-{os.environ['PYTEST_XDIST_WORKER']}" if os.environ.get("PYTEST_XDIST_WORKER") else "")
READY_DELAY_S = 8  # the example's model-load delay on the KWOK pods
STABILIZE_S = 20  # the closed-loop service's scale-down stabilisation window
MAX_STEP_PERCENT = 50


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


def example(namespace: str, name: str = "chat", **spec_overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((ROOT / "examples/01-chat-triton.yaml").read_text())
    obj["metadata"].update(name=name, namespace=namespace)
    obj["spec"]["template"]["metadata"]["annotations"]["kwok.gpufleet.io/ready-delay"] = f"{READY_DELAY_S}s"
    obj["spec"].update(spec_overrides)
    return obj


def pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    return cluster.list("pods", namespace, f"gpufleet.io/inference-service={name}")


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


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


def pending(emulator: str, namespace: str, name: str) -> float:
    """Requests the emulator's pods of one service hold queued now (`GET /stats`)."""
    with urllib.request.urlopen(f"{emulator}/stats", timeout=5) as resp:  # noqa: S310 - loopback
        stats: dict[str, dict[str, float]] = json.load(resp)
    return stats.get(f"{namespace}/{name}", {}).get("pending", 0.0)


def status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj = cluster.get("inferenceservice", name, namespace) or {}
    result: dict[str, Any] = obj.get("status", {})
    return result


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions", []) if c["type"] == kind), {})


@contextlib.contextmanager
def explained(cluster: Cluster, namespace: str, name: str) -> Iterator[None]:
    """On a failed wait inside, add what the operator saw and decided: the service's last
    decision, conditions, replicas, observed signals, its pods and its Events (oldest first)."""
    try:
        yield
    except AssertionError as exc:
        st = status(cluster, namespace, name)
        evs = sorted((e for e in cluster.list("events", namespace) if e["involvedObject"]["name"] == name),
                     key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        lines = [f"{e.get('lastTimestamp') or e.get('eventTime')} {e['reason']} x{e.get('count', 1)}: "
                 f"{e.get('message', '')}" for e in evs][-30:]
        pod_lines = [f"{p['metadata']['name']} {p['status'].get('phase')} ready={is_ready(p)} "
                     f"serving={p['metadata'].get('labels', {}).get('gpufleet.io/serving')}"
                     for p in pods(cluster, namespace, name)]
        raise AssertionError("\n".join([
            str(exc), f"decision: {st.get('lastDecision')}", f"replicas: {st.get('replicas')}",
            f"conditions: {st.get('conditions')}", f"observed: {st.get('observed')}",
            "pods:", *pod_lines, "events:", *lines])) from None


def _size(dep: dict[str, Any] | None) -> int:
    return int((dep or {}).get("spec", {}).get("replicas", 0))


def desired(cluster: Cluster, namespace: str, name: str) -> int:
    """The size of the service's on-demand Deployment."""
    return _size(cluster.get("deployment", f"{name}-ondemand", namespace))


def desired_together(cluster: Cluster, namespace: str, names: Iterable[str]) -> dict[str, int]:
    """`desired` of several services from one list: a get per service reads each at another moment,
    so a replica one service released and another took could be counted twice."""
    deps = {d["metadata"]["name"]: d for d in cluster.list("deployments", namespace)}
    return {n: _size(deps.get(f"{n}-ondemand")) for n in names}


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


@dataclass(frozen=True)
class Decision:
    at: float  # the operator's decision time (status.lastDecision.time), unix seconds
    reason: str
    desired: int


class DecisionLog:
    """Every decision the operator writes to a service's status, from a watch (`kubectl get -w`),
    so a test can bound what happens in decisions and in the operator's own clock, not in the
    wall-clock time of a poll on a busy machine."""

    # Spaces, not tabs: kubectl's printer turns tabs into padding. Empty fields (no decision yet)
    # leave fewer than three words.
    TEMPLATE = '{.status.lastDecision.time} {.status.lastDecision.reason} {.status.lastDecision.desired}{"\\n"}'

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self._lock = threading.Lock()
        self._decisions: list[Decision] = []
        self._proc = subprocess.Popen(
            ["kubectl", "get", "inferenceservice", name, "-n", namespace, "-w", "-o", f"jsonpath={self.TEMPLATE}"],
            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            words = line.split()
            if len(words) != 3:
                continue
            d = Decision(iso_seconds(words[0]), words[1], int(words[2]))
            with self._lock:
                if not self._decisions or d.at > self._decisions[-1].at:  # one entry per decision
                    self._decisions.append(d)

    def decisions(self) -> list[Decision]:
        with self._lock:
            return list(self._decisions)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
