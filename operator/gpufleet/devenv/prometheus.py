"""Debian's `prometheus` binary as a child process on loopback, for tests and the demo.

Targets come from two places: static targets given at start (e.g. a real Triton server, the
operator), and a file_sd directory that other processes write JSON target files into (the pod-metrics
emulator writes one target per pod, labelled namespace/pod/capacity_class). Prometheus watches that
directory itself, so targets come and go without a reload. Prometheus applies target changes at most
every 5 s (its discovery manager throttles updates), so a new target is scraped 5-6 s after it is
written, and the first scrape happens ~5 s after start: `wait_for_targets` waits for that.

    with PrometheusServer(scrape_interval_s=1, static_targets=[Target("127.0.0.1:8002", {...})]) as prom:
        prom.url  # http://127.0.0.1:<port>

    python -m gpufleet.devenv.prometheus --port 9090 --file-sd .run/file_sd
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

import yaml

from gpufleet.devenv._proc import LOOPBACK, free_port, http_ok, log_tail, stop_process, wait_until

BINARY = "prometheus"


def is_available(binary: str = BINARY) -> bool:
    """Is the prometheus binary on PATH? (hack/deps.sh installs Debian's package.)"""
    return shutil.which(binary) is not None


@dataclass(frozen=True)
class Target:
    """One scrape target: `host:port` plus labels attached to every series scraped from it."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"


def write_file_sd(directory: Path, name: str, targets: Iterable[Target]) -> Path:
    """Write (atomically) one file_sd JSON file; Prometheus picks it up by watching the directory.

    Write to a temp file and rename, so Prometheus never reads half a file. `metrics_path` other than
    /metrics is passed as the `__metrics_path__` label, which Prometheus honours for file_sd targets.
    """
    groups = []
    for t in targets:
        labels = dict(t.labels)
        if t.metrics_path != "/metrics":
            labels["__metrics_path__"] = t.metrics_path
        groups.append({"targets": [t.address], "labels": labels})
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    tmp = directory / f".{name}.json.tmp"  # not *.json: Prometheus only reads files matching the glob
    tmp.write_text(json.dumps(groups, indent=1))
    os.replace(tmp, path)
    return path


def remove_file_sd(directory: Path, name: str) -> None:
    (directory / f"{name}.json").unlink(missing_ok=True)


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"  # Prometheus durations accept ms; no float seconds


def render_config(*, scrape_interval_s: float, static_targets: Sequence[Target],
                  file_sd_dir: Path | None) -> str:
    interval = _duration(scrape_interval_s)
    scrape_configs: list[dict[str, object]] = []
    # One job per metrics path: a static_config cannot carry its own path.
    paths = sorted({t.metrics_path for t in static_targets})
    for i, path in enumerate(paths):
        scrape_configs.append({
            "job_name": "static" if i == 0 else f"static-{i}",
            "metrics_path": path,
            "static_configs": [{"targets": [t.address], "labels": dict(t.labels)}
                               for t in static_targets if t.metrics_path == path],
        })
    if file_sd_dir is not None:
        scrape_configs.append({
            "job_name": "file_sd",
            # Prometheus watches the directory (inotify); the refresh is only a safety net.
            "file_sd_configs": [{"files": [str(file_sd_dir / "*.json")], "refresh_interval": "5s"}],
        })
    config = {
        # scrape_timeout may not exceed the interval; with 1 s scrapes of loopback targets that is fine.
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": scrape_configs,
    }
    return yaml.safe_dump(config, sort_keys=False)


class PrometheusServer:
    """A Prometheus process with its own temp TSDB, listening on 127.0.0.1 only."""

    def __init__(self, *, scrape_interval_s: float = 1.0, static_targets: Sequence[Target] = (),
                 file_sd_dir: Path | None = None, port: int | None = None, binary: str = BINARY,
                 workdir: Path | None = None) -> None:
        self.scrape_interval_s = scrape_interval_s
        self.static_targets = list(static_targets)
        self.file_sd_dir = file_sd_dir
        self.port = port
        self.binary = binary
        self._given_workdir = workdir
        self.workdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("Prometheus is not started")
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "prometheus.log"

    def start(self, *, timeout_s: float = 60.0) -> PrometheusServer:
        if self.proc is not None:
            raise RuntimeError("already started")
        path = shutil.which(self.binary)
        if path is None:
            raise FileNotFoundError(f"{self.binary!r} not on PATH: run hack/deps.sh (apt-get install prometheus)")
        self.workdir = self._given_workdir or Path(tempfile.mkdtemp(prefix="gpufleet-prom-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.file_sd_dir is not None:
            self.file_sd_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        config = self.workdir / "prometheus.yml"
        config.write_text(render_config(scrape_interval_s=self.scrape_interval_s,
                                        static_targets=self.static_targets, file_sd_dir=self.file_sd_dir))
        args = [path, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={LOOPBACK}:{self.port}", "--storage.tsdb.retention.time=1d",
                "--log.level=warn"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.workdir)
        try:
            wait_until(lambda: http_ok(f"{self.url}/-/ready"), proc=self.proc, log=self.log_path,
                       timeout_s=timeout_s, what=f"prometheus on port {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, *, timeout_s: float = 15.0) -> None:
        """Stop the process; remove the TSDB dir if we created it."""
        stop_process(self.proc, timeout_s=timeout_s)
        self.proc = None
        if self.workdir is not None and self._given_workdir is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None

    def active_targets(self) -> list[dict[str, object]]:
        """Prometheus's /api/v1/targets activeTargets (labels, health, lastError, ...); [] on error."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/targets?state=active", timeout=2) as resp:  # noqa: S310
                targets: list[dict[str, object]] = json.load(resp)["data"]["activeTargets"]
                return targets
        except (OSError, ValueError, KeyError):
            return []

    def wait_for_targets(self, count: int, *, timeout_s: float = 30.0) -> list[dict[str, object]]:
        """Wait until at least `count` targets are active and scraped successfully (health "up")."""
        deadline = time.monotonic() + timeout_s
        while True:
            up = [t for t in self.active_targets() if t.get("health") == "up"]
            if len(up) >= count:
                return up
            if not self.running:
                raise RuntimeError(f"prometheus exited:\n{log_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(up)}/{count} targets up after {timeout_s:.0f}s: {self.active_targets()}")
            time.sleep(0.25)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _parse_target(text: str) -> Target:
    """`host:port[/path][,k=v,...]`, e.g. `127.0.0.1:8002,namespace=default,pod=chat-ondemand-0`."""
    address, *pairs = text.split(",")
    path = "/metrics"
    if "/" in address:
        address, rest = address.split("/", 1)
        path = "/" + rest
    labels = dict(p.split("=", 1) for p in pairs if p)
    return Target(address, labels, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpufleet.devenv.prometheus",
                                     description="Run Debian's Prometheus on loopback until interrupted.")
    parser.add_argument("--port", type=int, default=None, help="listen port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--file-sd", type=Path, default=None, help="directory of file_sd *.json target files")
    parser.add_argument("--target", action="append", default=[], type=_parse_target,
                        help="static target host:port[/path][,label=value...] (repeatable)")
    parser.add_argument("--scrape-interval", type=float, default=2.0, help="seconds (default 2)")
    parser.add_argument("--data", type=Path, default=None, help="working dir for config and TSDB (default: temp)")
    args = parser.parse_args(argv)
    server = PrometheusServer(scrape_interval_s=args.scrape_interval, static_targets=args.target,
                              file_sd_dir=args.file_sd.resolve() if args.file_sd else None, port=args.port,
                              workdir=args.data)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    print(server.url, flush=True)  # the demo script reads the URL from the first line
    try:
        while not done.wait(1.0):
            if not server.running:
                print(f"prometheus exited:\n{server.log_path.read_text(errors='replace')[-2000:]}", file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
