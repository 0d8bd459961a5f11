"""The chaos suite's hands: restart a control-plane component of the kwokctl cluster, run the
operator as a process that can be killed with SIGKILL and started again, keep a copy of the
emulator's scrape targets with one pod left out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from tests.integration.support import Cluster, Process, free_port
from tests.support import wait_for

KWOK_WORKDIR = Path(os.environ.get("KWOK_WORKDIR", Path.home() / ".cache/gpufleet/kwok"))
SD_NAME = "gpufleet-emulator.json"  # the file the emulator owns in its file_sd directory


def restart_component(cluster_name: str, component: str) -> None:
    """SIGKILL a component of the kwokctl cluster (binary runtime) and start it again with the
    arguments kwokctl recorded, its pid where kwokctl keeps it (so `kwokctl delete` still stops it)."""
    home = KWOK_WORKDIR / "clusters" / cluster_name
    docs = [d for d in yaml.safe_load_all((home / "kwok.yaml").read_text()) if d and "components" in d]
    spec = next(c for d in docs for c in d["components"] if c["name"] == component)
    pidfile = home / "pids" / f"{component}.pid"
    pid = int(pidfile.read_text().strip())
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    # Start again at once: other sessions' clusters on this machine pick free ports, and a port of
    # the dead component can be taken meanwhile (seen: etcd's "bind: address already in use").
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in _state(pid), timeout=10, interval=0.02,
             what=f"{component} gone")
    for _ in range(10):  # a start that dies at once (a port still taken) is tried again
        with open(home / "logs" / f"{component}.log", "ab") as log:
            proc = subprocess.Popen([spec["binary"], *spec.get("args", [])], cwd=spec.get("workDir", str(home)),
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        pidfile.write_text(str(proc.pid))
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            return


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def api_ready(cluster: Cluster) -> bool:
    return cluster.kubectl("get", "--raw", "/readyz", check=False).returncode == 0


def proxied_kubeconfig(kubeconfig: str, proxy_port: int, path: Path) -> Path:
    """The kubeconfig with its server moved to the proxy (the certificate names 127.0.0.1, not a port)."""
    conf = yaml.safe_load(Path(kubeconfig).read_text())
    for c in conf["clusters"]:
        c["cluster"]["server"] = f"https://127.0.0.1:{proxy_port}"
    path.write_text(yaml.safe_dump(conf))
    return path


def api_address(kubeconfig: str) -> tuple[str, int]:
    server = yaml.safe_load(Path(kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").split(":")
    return host, int(port)


class Operator:
    """The operator out of cluster on its own shard, through `kubeconfig` (the proxy's)."""

    def __init__(self, cluster: Cluster, kubeconfig: Path, shard: str, prometheus_url: str, logdir: Path) -> None:
        self.cluster, self.kubeconfig, self.shard = cluster, kubeconfig, shard
        self.prometheus_url, self.logdir = prometheus_url, logdir
        self.lives = 0
        self.proc: Process | None = None

    def start(self, timeout: float = 90) -> float:
        """Start a new life; return the time it reported its startup done (the fault cleared)."""
        self.lives += 1
        self.proc = Process(f"operator-{self.lives}", [
            sys.executable, "-m", "gpufleet.cli", "operator", "--kubeconfig", str(self.kubeconfig),
            "--selector", f"gpufleet.io/shard={self.shard}", "--prometheus-url", self.prometheus_url,
            "--prometheus-url-allow", "127.0.0.1", "--min-interval", "1", "--status-heartbeat", "1",
            "--health", f"127.0.0.1:{free_port()}"],
            self.logdir / f"operator-{self.lives}.log", {**self.cluster.env, "KUBECONFIG": str(self.kubeconfig)})
        self.proc.wait_log("Activity 'configure' succeeded", timeout=timeout)
        return time.time()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.proc.send_signal(signal.SIGKILL)
        self.proc.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.proc.poll() is None:
            self.proc.stop()


class ScrapeFilter:
    """Copies the emulator's file_sd targets into a directory of its own, leaving out `hidden` pods."""

    def __init__(self, source: Path, target: Path) -> None:
        self.source, self.target = source / SD_NAME, target / SD_NAME
        target.mkdir(parents=True, exist_ok=True)
        self.hidden: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._copy()
        self._thread.start()

    def _copy(self) -> None:
        try:
            groups = json.loads(self.source.read_text())
        except (OSError, ValueError):
            return
        kept = [g for g in groups if g.get("labels", {}).get("pod") not in self.hidden]
        tmp = self.target.with_suffix(".tmp")
        tmp.write_text(json.dumps(kept))
        os.replace(tmp, self.target)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._copy()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> ScrapeFilter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
