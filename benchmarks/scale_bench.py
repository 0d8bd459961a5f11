"""Scale benchmark: what one operator process costs at N InferenceServices on the local real cluster.

    python benchmarks/scale_bench.py --sizes 50,200,500 --window-s 120 --out reports/scale
    python benchmarks/scale_bench.py --quick          # N=10, 30 s windows, into .run/scale-quick

For each N: a fresh cluster `gpufleet-scale` (hack/cluster.sh: kube-apiserver, etcd, KCM, scheduler,
kwok) with ceil(3N / GPUS_PER_NODE) fake GPU nodes, Debian's Prometheus (5 s scrapes), the fleet
emulator (per-pod Triton metrics, steady load per service) and N InferenceServices over a few
namespaces. The operator starts; once every service has decided and serves its floor, one window
measures the operator (tick lag, CPU, RSS, API requests, status writes, PromQL queries); then the
operator stops and a second window measures the same cluster without it (the API server's
baseline). At the largest N, two peered operators (priority 100 and 50) run and the first is killed
with SIGKILL: failover is the time until a decision is written again. Writes OUT/results.json,
OUT/README.md (rendered from results.json) and OUT/scale.png; logs go to .run/scale/<N>/.
Run from the repository root (not from operator/: that folder would shadow the stdlib `operator`).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "operator"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tqdm import tqdm  # noqa: E402

from gpufleet.api.timefmt import iso_seconds  # noqa: E402
from gpufleet.devenv._proc import free_port  # noqa: E402
from gpufleet.devenv.prometheus import PrometheusServer  # noqa: E402

CLUSTER = "gpufleet-scale"
BIN = Path(os.environ.get("GPUFLEET_BIN", Path.home() / ".cache/gpufleet/bin"))
INTERVAL_S = 10  # spec.scaling.intervalSeconds of every service
SCRAPE_S = 5.0  # Prometheus scrape interval (1,500 emulated pods on 2 cores)
MAX_NODES = 1000
GOALS = {"tick_lag_p99_s": 1.0, "cpu_cores": 1.0, "rss_mib": 500.0, "kube_requests_per_service_tick": 0.2,
         "promql_n_exponent": 0.1, "failover_s": 20.0}
GOAL_N = 500
# Requests only the cluster's own components make on a timer (kwok's node heartbeats, the lease
# renewals of nodes and controllers): their with − without difference is window-phase noise, not
# operator cost, so the per-service figure leaves them out (the by-verb table still shows them).
BACKGROUND = re.compile(r"^\S+ (leases|nodes/status)$|\(non-resource\)")
Sample = tuple[str, dict[str, str], float]  # metric sample: name, labels, value


# -- processes and the cluster --------------------------------------------------------------

@dataclass
class Proc:
    """A child process this benchmark started (stopped by its pid only), with its log."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, name: str, args: list[str], log: Path, env: dict[str, str]) -> Proc:
        with open(log, "wb") as out:
            popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=log.parent)
        return cls(name, popen, log)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait()

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Env:
    n: int
    workdir: Path
    kubeconfig: str
    env: dict[str, str]
    prometheus: PrometheusServer
    emulator_url: str
    procs: list[Proc] = field(default_factory=list)

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 300) -> str:
        proc = subprocess.run(["kubectl", *args], input=input, env=self.env, text=True, capture_output=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])}: {proc.stderr.strip()[-2000:]}")
        return proc.stdout


def cluster_script(action: str, env: dict[str, str]) -> str:
    proc = subprocess.run([str(ROOT / "hack/cluster.sh"), action], env=env, text=True, stdout=subprocess.PIPE,
                          timeout=1800, check=True)
    return proc.stdout.strip()


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


@contextmanager
def environment(n: int, gpus_per_node: int, workdir: Path, keep_cluster: bool) -> Iterator[Env]:
    """A fresh cluster with enough nodes, Prometheus and the emulator; all torn down afterwards."""
    nodes = min(MAX_NODES, max(2, math.ceil(3 * n / gpus_per_node)))
    # PYTHONPATH: the operator and emulator run from this checkout even where the venv's editable
    # install points at another one (e.g. a worktree of an older commit, for a before/after).
    base = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "CLUSTER_NAME": CLUSTER,
            "PYTHONPATH": str(ROOT / "operator")}
    cluster_env = {**base, "ONDEMAND_NODES": str(nodes), "SPOT_NODES": "0", "GPUS_PER_NODE": str(gpus_per_node)}
    workdir.mkdir(parents=True, exist_ok=True)
    prometheus = PrometheusServer(scrape_interval_s=SCRAPE_S, file_sd_dir=workdir / "file_sd")
    procs: list[Proc] = []
    try:
        cluster_script("down", base)  # a fresh API server: its counters start at zero
        cluster_script("up", cluster_env)
        kubeconfig = cluster_script("kubeconfig", base)
        env = {**base, "KUBECONFIG": kubeconfig}
        subprocess.run(["kubectl", "apply", "-f", str(ROOT / "charts/gpufleet/crds/kopf-peering.yaml")], env=env,
                       check=True, capture_output=True)
        subprocess.run(["kubectl", "wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev",
                        "--timeout=60s"], env=env, check=True, capture_output=True)
        subprocess.run(["kubectl", "apply", "-f", "-"], env=env, check=True, capture_output=True, text=True,
                       input="{apiVersion: kopf.dev/v1, kind: ClusterKopfPeering, metadata: {name: scale}}")
        prometheus.start()
        port = free_port()
        procs.append(Proc.start("emulator", [sys.executable, "-m", "gpufleet.emulator", "--kubeconfig", kubeconfig,
                                             "--port", str(port), "--file-sd", str(workdir / "file_sd"),
                                             "--tick", "1"], workdir / "emulator.log", env))
        wait_until(lambda: "serving per-pod metrics" in procs[0].log.read_text(), 60, "the emulator")
        yield Env(n=n, workdir=workdir, kubeconfig=kubeconfig, env=env, prometheus=prometheus,
                  emulator_url=f"http://127.0.0.1:{port}", procs=procs)
    finally:
        for proc in procs:
            proc.stop()
        prometheus.stop()
        if not keep_cluster:
            cluster_script("down", base)


# -- InferenceServices --------------------------------------------------------------------

def service_manifest(i: int, namespace: str, forecast_quantile: float) -> dict[str, Any]:
    """Service i: floor 1..3, max 4, a 10 s loop, one GPU per pod, Ready 5 s after it starts.

    The forecast runs (its cost is part of a tick) but provisions for `forecast_quantile`: at the
    default 0.9, the load's step from 0 when a service starts widens the forecast's upper bound for
    minutes, so ~2 min in most services scale up under constant load and hold for the 300 s
    scale-down stabilisation: no steady state within a run. 0.5 (the median) keeps the fleets still."""
    return {
        "apiVersion": "gpufleet.io/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": f"svc-{i:04d}", "namespace": namespace, "labels": {"gpufleet.io/team": f"team-{i % 5}"}},
        "spec": {
            "model": {"name": "chat", "backend": "triton"},
            "replicas": {"min": 1 + i % 3, "max": 4},
            "slo": {"queueDepthPerReplica": 8},
            "scaling": {"intervalSeconds": INTERVAL_S, "targetRpsPerReplica": 100},
            "forecast": {"quantile": forecast_quantile},
            "capacity": {"onDemand": {"nodeSelector": {"karpenter.sh/capacity-type": "on-demand"}}},
            "template": {
                "metadata": {"annotations": {"kwok.gpufleet.io/ready-delay": "5s"}},
                "spec": {
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{
                        "name": "triton", "image": "nvcr.io/nvidia/tritonserver:25.01-py3",
                        "ports": [{"name": "http", "containerPort": 8000}, {"name": "metrics", "containerPort": 8002}],
                        "resources": {"limits": {"nvidia.com/gpu": 1}},
                    }],
                },
            },
        },
    }


def create_services(env: Env, forecast_quantile: float) -> list[dict[str, Any]]:
    """N services over a few namespaces, each offered 60 req/s per floor replica (60% of its target):
    a steady load that the floor serves, so the fleet holds still and the window sees steady state."""
    namespaces = [f"scale-{k}" for k in range(max(1, min(4, env.n // 10)))]
    env.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces]))
    services = [service_manifest(i, namespaces[i % len(namespaces)], forecast_quantile) for i in range(env.n)]
    for chunk in range(0, len(services), 100):
        env.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(services[chunk:chunk + 100]))
    for svc in tqdm(services, desc="loads", leave=False):
        meta, floor = svc["metadata"], svc["spec"]["replicas"]["min"]
        req = urllib.request.Request(f"{env.emulator_url}/load/{meta['namespace']}/{meta['name']}",
                                     data=f"step:0={60 * floor}".encode(), method="PUT")
        urllib.request.urlopen(req, timeout=10).close()  # noqa: S310 - loopback
    return services


def decision_times(env: Env) -> dict[str, dict[str, Any]]:
    """ns/name -> {time, serving, min} of every InferenceService (one LIST)."""
    items = json.loads(env.kubectl("get", "inferenceservices", "-A", "-o", "json"))["items"]
    return {f"{o['metadata']['namespace']}/{o['metadata']['name']}": {
        "time": (o.get("status") or {}).get("lastDecision", {}).get("time"),
        "serving": (o.get("status") or {}).get("replicas", {}).get("serving", 0),
        "min": o["spec"]["replicas"]["min"]} for o in items}


def wait_settled(env: Env, timeout_s: float) -> dict[str, Any]:
    """Until every service has decided and serves its floor, and Prometheus scrapes every pod."""
    start = time.monotonic()
    bar = tqdm(total=env.n, desc=f"N={env.n} settling", leave=False)
    settled = False
    while time.monotonic() - start < timeout_s:
        state = decision_times(env)
        done = sum(1 for s in state.values() if s["time"] and s["serving"] >= s["min"])
        bar.update(done - bar.n)
        pods = sum(s["min"] for s in state.values())
        if done == env.n and len(env.prometheus.active_targets()) >= pods:
            env.prometheus.wait_for_targets(pods, timeout_s=max(10.0, timeout_s - (time.monotonic() - start)))
            settled = True
            break
        time.sleep(5)
    bar.close()
    return {"settled": settled, "settle_s": round(time.monotonic() - start, 1),
            "decided": sum(1 for s in decision_times(env).values() if s["time"])}


# -- the operator -------------------------------------------------------------------------

@functools.cache
def operator_flags() -> list[str]:
    """The flags `gpufleet operator --help` lists (the CLI is being extended, e.g. --workers)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    text = subprocess.run([sys.executable, "-m", "gpufleet.cli", "operator", "--help"], capture_output=True,
                          text=True, cwd="/", check=True, env=env).stdout
    return sorted(set(re.findall(r"--[a-z][a-z-]+", text)))


def start_operator(env: Env, name: str, workers: int | None, *peering: str) -> tuple[Proc, int]:
    metrics_port = free_port()
    args = [sys.executable, "-m", "gpufleet.cli", "operator", "--kubeconfig", env.kubeconfig,
            "--prometheus-url", env.prometheus.url, "--metrics-port", str(metrics_port),
            "--metrics-host", "127.0.0.1", "--health", f"127.0.0.1:{free_port()}", *peering]
    if workers is not None and "--workers" in operator_flags():
        args += ["--workers", str(workers)]
    proc = Proc.start(name, args, env.workdir / f"{name}.log", env.env)
    env.procs.append(proc)
    wait_until(lambda: not proc.alive() or http_get(f"http://127.0.0.1:{metrics_port}/metrics") is not None,
               60, f"{name} /metrics", 0.5)
    if not proc.alive():
        raise RuntimeError(f"{name} exited: {proc.log.read_text()[-3000:]}")
    return proc, metrics_port


def http_get(url: str, timeout_s: float = 30) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback only
            text: str = resp.read().decode()
            return text
    except OSError:
        return None


# -- measuring ------------------------------------------------------------------------------

def samples(text: str | None, *prefixes: str) -> list[Sample]:
    """Samples of the metric families whose names start with a prefix (lines filtered first: the
    API server exposes megabytes)."""
    if not text:
        return []
    lines = [ln for ln in text.splitlines() if ln.startswith(prefixes) or
             (ln.startswith("# TYPE ") and ln[7:].startswith(prefixes))]
    return [(s.name, dict(s.labels), s.value) for fam in text_string_to_metric_families("\n".join(lines) + "\n")
            for s in fam.samples]


def total(samples_: list[Sample], name: str, match: Callable[[dict[str, str]], bool] = lambda _: True) -> float:
    return sum(v for n, labels, v in samples_ if n == name and match(labels))


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative bucket counts {le: count}."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank, prev_le, prev_count = q * buckets[bounds[-1]], 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return prev_le  # in the +Inf bucket: the highest finite bound, as Prometheus does
            return le if count == prev_count else prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return None


def histogram_delta(before: list[Sample], after: list[Sample], name: str) -> dict[str, Any] | None:
    """p50/p99/count of a histogram (summed over its label sets) between two scrapes; None if absent."""
    def buckets(s: list[Sample]) -> dict[float, float]:
        out: dict[float, float] = {}
        for n, labels, v in s:
            if n == f"{name}_bucket":
                out[float(labels["le"])] = out.get(float(labels["le"]), 0.0) + v
        return out

    b0, b1 = buckets(before), buckets(after)
    if not b1:
        return None
    delta = {le: b1[le] - b0.get(le, 0.0) for le in b1}
    count = total(after, f"{name}_count") - total(before, f"{name}_count")
    mean = (total(after, f"{name}_sum") - total(before, f"{name}_sum")) / count if count else None
    return {"p50": histogram_quantile(0.5, delta), "p99": histogram_quantile(0.99, delta), "count": count,
            "mean": mean}


def apiserver_requests(env: Env) -> tuple[float, dict[str, float]]:
    """(time, {"VERB resource[/subresource]": cumulative count}) from the API server's own metrics."""
    text = env.kubectl("get", "--raw", "/metrics", timeout=120)
    at = time.time()
    counts: dict[str, float] = {}
    for _, labels, value in samples(text, "apiserver_request_total"):
        resource = labels.get("resource") or "(non-resource)"
        key = f"{labels['verb']} {resource}" + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        counts[key] = counts.get(key, 0.0) + value
    return at, counts


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def proc_rss_mib(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def measure_window(env: Env, seconds: float, operator: Proc | None, metrics_port: int | None,
                   label: str) -> dict[str, Any]:
    """One window: API requests by verb/resource, PromQL queries, and with an operator its CPU, RSS
    and histograms. During the window nothing but two /metrics reads touches the API server."""
    op_url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None
    prom0 = samples(http_get(f"{env.prometheus.url}/metrics"), "prometheus_http_requests_total")
    op0 = samples(http_get(op_url), "gpufleet_") if op_url else []
    t0, api0 = apiserver_requests(env)
    cpu0 = proc_cpu_s(operator.popen.pid) if operator else 0.0
    busy0, all0 = machine_busy()
    rss: list[float] = []
    end = time.monotonic() + seconds
    with tqdm(total=int(seconds), desc=f"N={env.n} {label}", unit="s", leave=False) as bar:
        while (left := end - time.monotonic()) > 0:
            if operator:
                if not operator.alive():
                    raise RuntimeError(f"operator exited: {operator.log.read_text()[-3000:]}")
                rss.append(proc_rss_mib(operator.popen.pid))
            time.sleep(min(5.0, left))
            bar.update(int(seconds - max(0.0, end - time.monotonic())) - bar.n)
    t1, api1 = apiserver_requests(env)
    elapsed = t1 - t0
    cpu1 = proc_cpu_s(operator.popen.pid) if operator else 0.0
    busy1, all1 = machine_busy()
    prom1 = samples(http_get(f"{env.prometheus.url}/metrics"), "prometheus_http_requests_total")
    op1 = samples(http_get(op_url), "gpufleet_") if op_url else []
    is_query: Callable[[dict[str, str]], bool] = lambda labels: labels.get("handler", "").startswith("/api/v1/query")
    queries = total(prom1, "prometheus_http_requests_total", is_query) - total(prom0, "prometheus_http_requests_total",
                                                                                is_query)
    op_names = {n for n, _, _ in op1}
    own = "gpufleet_promql_queries_total" if "gpufleet_promql_queries_total" in op_names else None
    return {
        "seconds": round(elapsed, 1),
        "kube_rps": {k: (v - api0.get(k, 0.0)) / elapsed for k, v in sorted(api1.items()) if v - api0.get(k, 0.0) > 0},
        "promql_qps": queries / elapsed,
        "operator_promql_qps": (total(op1, own) - total(op0, own)) / elapsed if own else None,
        "cpu_cores": (cpu1 - cpu0) / elapsed if operator else None,
        "rss_mib_max": max(rss) if rss else None,
        "machine_busy_cores": (busy1 - busy0) / max(1, all1 - all0) * (os.cpu_count() or 1),
        "tick_lag": histogram_delta(op0, op1, "gpufleet_tick_lag_seconds") if op_url else None,
        "loop_duration": histogram_delta(op0, op1, "gpufleet_loop_duration_seconds") if op_url else None,
        "operator_errors": (total(op1, "gpufleet_errors_total") - total(op0, "gpufleet_errors_total")
                            if op_url else None),
        "decision_reasons": by_label(op0, op1, "gpufleet_decisions_total", "reason"),
        "promql_by_kind": by_label(op0, op1, "gpufleet_promql_queries_total", "kind"),
    }


def by_label(before: list[Sample], after: list[Sample], name: str, label: str) -> dict[str, float]:
    """Increase of a counter between two scrapes, summed by one label (zeros left out)."""
    out: dict[str, float] = {}
    for sign, samples_ in ((-1.0, before), (1.0, after)):
        for n, labels, v in samples_:
            if n == name:
                out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + sign * v
    return {k: v for k, v in sorted(out.items()) if v}


def decisions(metrics_port: int) -> float:
    """gpufleet_decisions_total of one operator, summed over services and reasons."""
    text = http_get(f"http://127.0.0.1:{metrics_port}/metrics", timeout_s=5)
    return total(samples(text, "gpufleet_decisions"), "gpufleet_decisions_total")


def measure_failover(env: Env, workers: int | None, timeout_s: float = 240) -> dict[str, Any]:
    """Two peered operators (priority 100 active, 50 standby); SIGKILL the active one once it decides.

    Failover (the goal's figure) is the time until some service's status.lastDecision.time is at or
    after the kill, i.e. written by the standby. Also recorded: the time until the standby's own
    decision counter moves (its first tick, whether or not that tick writes status)."""
    config.load_kube_config(config_file=env.kubeconfig)  # type: ignore[no-untyped-call]
    api = client.CustomObjectsApi()
    seen: dict[str, str] = {}
    events: list[tuple[float, str]] = []  # (received, lastDecision.time) of each change
    stop = threading.Event()

    def follow() -> None:
        while not stop.is_set():
            try:
                stream: Callable[..., Iterator[dict[str, Any]]] = watch.Watch().stream  # type: ignore[no-untyped-call]
                for ev in stream(api.list_cluster_custom_object, "gpufleet.io", "v1alpha1", "inferenceservices",
                                 timeout_seconds=30):
                    obj = ev["object"]
                    t = (obj.get("status") or {}).get("lastDecision", {}).get("time")
                    key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
                    if t and seen.get(key) != t:
                        seen[key] = t
                        events.append((time.time(), t))
                    if stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - keep following through API hiccups
                time.sleep(0.5)

    threading.Thread(target=follow, daemon=True).start()
    active, active_port = start_operator(env, "operator-active", workers, "--peering", "scale", "--priority", "100")
    standby, standby_port = start_operator(env, "operator-standby", workers, "--peering", "scale", "--priority", "50")
    try:
        # The active one decides for every service within an interval or two; the standby pauses.
        wait_until(lambda: decisions(active_port) >= env.n, 180, "decisions by the active operator", 1.0)
        time.sleep(INTERVAL_S)
        standby_before = decisions(standby_port)
        killed = time.time()
        active.stop(signal.SIGKILL)
        after = math.ceil(killed)  # decision times have whole seconds
        status_s: float | None = None
        first_decision_s: float | None = None
        while time.time() < killed + timeout_s and (status_s is None or first_decision_s is None):
            if first_decision_s is None and decisions(standby_port) > standby_before:
                first_decision_s = time.time() - killed
            if status_s is None:
                status_s = next((r - killed for r, t in list(events) if r > killed and iso_seconds(t) >= after), None)
            time.sleep(0.25)
        return {"seconds": status_s, "first_decision_s": first_decision_s, "timeout_s": timeout_s,
                "standby_decisions_before_kill": standby_before, "standby_alive": standby.alive()}
    finally:
        stop.set()
        standby.stop()
        active.stop()


def run_size(n: int, args: argparse.Namespace, failover: bool) -> dict[str, Any]:
    started = time.monotonic()
    with environment(n, args.gpus_per_node, ROOT / ".run/scale" / str(n), args.keep_cluster) as env:
        create_services(env, args.forecast_quantile)
        operator, port = start_operator(env, "operator", args.workers)
        settle = wait_settled(env, args.settle_timeout_s)
        time.sleep(INTERVAL_S)  # one more tick each: the scale-up burst is over
        with_op = measure_window(env, args.window_s, operator, port, "with operator")
        operator.stop()
        without = measure_window(env, args.baseline_s, None, None, "without operator")
        fail = measure_failover(env, args.workers) if failover else None
        pods = len(env.prometheus.active_targets())
    return summarize(n, with_op, without, fail, settle, pods, time.monotonic() - started)


def summarize(n: int, with_op: dict[str, Any], without: dict[str, Any], fail: dict[str, Any] | None,
              settle: dict[str, Any], pods: int, wall_s: float) -> dict[str, Any]:
    keys = sorted(set(with_op["kube_rps"]) | set(without["kube_rps"]))
    diff = {k: with_op["kube_rps"].get(k, 0.0) - without["kube_rps"].get(k, 0.0) for k in keys}
    operator_diff = sum(v for k, v in diff.items() if not BACKGROUND.search(k))
    ticks_per_s = n / INTERVAL_S
    lag = with_op["tick_lag"]
    return {
        "n": n, "pods": pods, "wall_s": round(wall_s, 1), **settle,
        "tick_lag_p50_s": lag["p50"] if lag else None, "tick_lag_p99_s": lag["p99"] if lag else None,
        "loop_duration_p50_s": (with_op["loop_duration"] or {}).get("p50"),
        "loop_duration_p99_s": (with_op["loop_duration"] or {}).get("p99"),
        "ticks_per_s": (with_op["loop_duration"] or {}).get("count", 0) / with_op["seconds"],
        "cpu_cores": with_op["cpu_cores"], "rss_mib": with_op["rss_mib_max"],
        "machine_busy_cores": with_op["machine_busy_cores"],
        "machine_busy_cores_without": without["machine_busy_cores"],
        "kube_rps_with": sum(v for k, v in with_op["kube_rps"].items() if "(non-resource)" not in k),
        "kube_rps_without": sum(v for k, v in without["kube_rps"].items() if "(non-resource)" not in k),
        "kube_rps_diff": operator_diff,
        "kube_requests_per_service_tick": operator_diff / ticks_per_s,
        "kube_rps_diff_by_verb_resource": {k: v for k, v in sorted(diff.items(), key=lambda kv: -abs(kv[1]))
                                           if abs(v) >= 0.005},
        "status_writes_per_s": diff.get("PATCH inferenceservices/status", 0.0),
        "promql_qps": with_op["promql_qps"], "promql_qps_without": without["promql_qps"],
        "promql_per_interval": (with_op["promql_qps"] - without["promql_qps"]) * INTERVAL_S,
        "operator_promql_qps": with_op["operator_promql_qps"],
        "operator_promql_by_kind": {k: v * INTERVAL_S / with_op["seconds"] for k, v in
                                    with_op["promql_by_kind"].items()},  # queries per interval
        # The per-signal queries shared by the fleet; the per-service ones are one-off history reads
        # (forecast backfill when a loop starts) and user overrides.
        "promql_batched_per_interval": with_op["promql_by_kind"].get("batched", 0.0) * INTERVAL_S / with_op["seconds"],
        "operator_errors": with_op["operator_errors"], "decision_reasons": with_op["decision_reasons"],
        "scale_changes_per_s": diff.get("PATCH deployments/scale", 0.0),
        "pods_created_per_s": diff.get("POST pods", 0.0),
        "failover_s": fail["seconds"] if fail else None, "failover": fail,
        "failover_first_decision_s": fail["first_decision_s"] if fail else None,
        "windows_s": {"with": with_op["seconds"], "without": without["seconds"]},
    }


# -- the report ------------------------------------------------------------------------------

METRICS = [  # key, label, unit format, goal key (None: context only)
    ("tick_lag_p99_s", "tick lag p99 (s)", "{:.2f}", "tick_lag_p99_s"),
    ("tick_lag_p50_s", "tick lag p50 (s)", "{:.2f}", None),
    ("loop_duration_p99_s", "loop duration p99 (s)", "{:.2f}", None),
    ("cpu_cores", "operator CPU (cores)", "{:.2f}", "cpu_cores"),
    ("rss_mib", "operator RSS max (MiB)", "{:.0f}", "rss_mib"),
    ("kube_rps_diff", "Kubernetes requests/s the operator adds", "{:.1f}", None),
    ("kube_requests_per_service_tick", "Kubernetes requests per service per tick", "{:.2f}",
     "kube_requests_per_service_tick"),
    ("status_writes_per_s", "status writes/s", "{:.2f}", None),
    ("scale_changes_per_s", "Deployment scale changes/s (0 = steady)", "{:.2f}", None),
    ("promql_batched_per_interval", "batched PromQL queries per 10 s interval (one per signal)", "{:.1f}",
     "promql_n_exponent"),
    ("promql_per_interval", "all PromQL queries per 10 s interval (with one-off history reads)", "{:.0f}", None),
    ("failover_s", "failover: status written by the standby (s)", "{:.1f}", "failover_s"),
    ("failover_first_decision_s", "failover: standby's first decision (s)", "{:.1f}", None),
    ("machine_busy_cores", "whole machine busy (cores)", "{:.2f}", None),
]


def growth(runs: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    """Power-law exponent b of value ~ N^b (log-log least squares) and the linear fit's value at
    GOAL_N; None with fewer than two sizes measured."""
    points = [(r["n"], r[key]) for r in runs if isinstance(r.get(key), (int, float))]
    if len({n for n, _ in points}) < 2:
        return {"exponent": None, "at_goal_n": None}
    ns, vs = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
    slope, intercept = np.polyfit(ns, vs, 1)
    exponent = float(np.polyfit(np.log(ns), np.log(vs), 1)[0]) if (vs > 0).all() else None
    return {"exponent": exponent, "at_goal_n": float(intercept + slope * GOAL_N)}


def verdict(runs: list[dict[str, Any]], key: str, goal_key: str | None, spec: str) -> str:
    """Against the goal at N=500: measured there, else projected linearly (marked)."""
    if goal_key is None:
        return ""
    goal, fit = GOALS[goal_key], growth(runs, key)
    if goal_key == "promql_n_exponent":
        if fit["exponent"] is None:
            return "n/a (needs 2 sizes)"
        return f"{'PASS' if fit['exponent'] <= goal else 'FAIL'} (exponent {fit['exponent']:.2f}, goal ≤ {goal})"
    at_goal = next((r[key] for r in runs if r["n"] == GOAL_N and r.get(key) is not None), None)
    note = ""
    if at_goal is None and key == "failover_s":
        at_goal = next((r[key] for r in reversed(runs) if r.get(key) is not None), None)
        note = f" at N={max((r['n'] for r in runs if r.get(key) is not None), default=0)}"
    elif at_goal is None and key == "kube_requests_per_service_tick":
        # A ratio: project the total (requests/s, linear in N) and divide by the ticks at N=500.
        total_at_goal = growth(runs, "kube_rps_diff")["at_goal_n"]
        at_goal = None if total_at_goal is None else max(0.0, total_at_goal) / (GOAL_N / INTERVAL_S)
        note = f" projected to N={GOAL_N}"
    elif at_goal is None:
        at_goal, note = fit["at_goal_n"], f" projected to N={GOAL_N}"
        at_goal = None if at_goal is None else max(0.0, at_goal)
    if at_goal is None:
        return "n/a (not measured)"
    return f"{'PASS' if at_goal <= goal else 'FAIL'}: {spec.format(at_goal)}{note} (goal ≤ {goal:g})"


def fmt(spec: str, value: float | None) -> str:
    return "—" if value is None else spec.format(value)


def render_readme(results: dict[str, Any]) -> str:
    runs, meta = results["runs"], results["meta"]
    head = "| figure | " + " | ".join(f"N={r['n']}" for r in runs) + " | growth ~N^b | goal at N=500 |"
    rows = [head, "|" + "---|" * (len(runs) + 3)]
    for key, label, f, goal_key in METRICS:
        fit = growth(runs, key)
        rows.append(f"| {label} | " + " | ".join(fmt(f, r.get(key)) for r in runs)
                    + f" | {fmt('{:.2f}', fit['exponent'])} | {verdict(runs, key, goal_key, f)} |")
    largest = runs[-1] if runs else None
    by_verb = ""
    if largest:
        lines = [f"| {k} | {v:.2f} | {v / (largest['n'] / INTERVAL_S):.3f} |"
                 for k, v in list(largest["kube_rps_diff_by_verb_resource"].items())[:15]]
        by_verb = (f"\n### Kubernetes requests the operator adds at N={largest['n']} (with − without)\n\n"
                   "| verb resource | requests/s | per service per tick |\n|---|---|---|\n" + "\n".join(lines) + "\n")
    notes = []
    if any(r["tick_lag_p99_s"] is None for r in runs):
        notes.append("- **tick lag**: the operator does not export `gpufleet_tick_lag_seconds` yet, so tick "
                     "lag is null; `gpufleet_loop_duration_seconds` (a tick's own wall time) is shown instead.")
    if any(r["operator_promql_qps"] is None for r in runs):
        notes.append("- `gpufleet_promql_queries_total` is not exported yet; PromQL counts come from "
                     "Prometheus's own `prometheus_http_requests_total{handler=~\"/api/v1/query.*\"}`.")
    for r in runs:
        if not r["settled"]:
            notes.append(f"- N={r['n']}: did not settle within the timeout ({r['decided']}/{r['n']} services "
                         "had decided); its figures include the start-up burst.")
        if r.get("scale_changes_per_s", 0) > 0.01:
            notes.append(f"- N={r['n']}: the fleet was not steady during the window ({r['scale_changes_per_s']:.2f} "
                         f"scale changes/s, {r['pods_created_per_s']:.2f} pods created/s); decisions by reason: "
                         f"{r['decision_reasons']}.")
        if r.get("operator_errors"):
            notes.append(f"- N={r['n']}: {r['operator_errors']:.0f} failed ticks during the window.")
        if r["failover"] and r["failover"]["seconds"] is None:
            notes.append(f"- N={r['n']}: no decision within {r['failover']['timeout_s']} s after the kill.")
    wall = ", ".join(f"N={r['n']}: {r['wall_s']:.0f} s (settle {r['settle_s']:.0f} s)" for r in runs)
    return f"""# Scale benchmark: one operator process, N InferenceServices

Generated by `{meta['command']}` on {meta['date']} (commit {meta['commit']}, {meta['cpus']} CPUs,
{meta['memory_gib']:.0f} GiB). Every number below is rendered from [results.json](results.json).

{chr(10).join(rows)}

Growth: b of a log-log least-squares fit (0 = flat, 1 = linear in N). A goal is judged on the N=500
run; without one, on the linear fit's value at N=500 ("projected"; requests per service per tick from
the projected requests/s); failover on the largest N run.
PromQL's goal is "queries per interval independent of N": b ≤ {GOALS['promql_n_exponent']}.
{by_verb}
![cost vs N](scale.png)

## Method

- **Cluster**: `hack/cluster.sh` (cluster `{CLUSTER}`, fresh per N): kube-apiserver, etcd, KCM,
  scheduler and kwok on 127.0.0.1, ceil(3N / {meta['gpus_per_node']}) on-demand fake nodes with
  {meta['gpus_per_node']} `nvidia.com/gpu` each (at most {MAX_NODES}).
- **Services**: N InferenceServices over up to 4 namespaces; service i has `replicas: {{min: 1 + i mod 3,
  max: 4}}`, `scaling.intervalSeconds: {INTERVAL_S}`, `targetRpsPerReplica: 100`, one GPU per pod, Ready
  5 s after start (`kwok.gpufleet.io/ready-delay`), forecasting on with `forecast.quantile:
  {meta.get('forecast_quantile', 0.9)}`. The fleet emulator offers each a steady 60 req/s per floor replica, so every
  fleet sits at its floor: the windows see steady state, not scaling (checked: scale changes/s). At the
  CRD's default quantile 0.9 the start-up step of the load widens the forecast's upper bound and most
  fleets scale up ~2 min in, then hold for the 300 s scale-down stabilisation.
- **Prometheus**: Debian's, scraping every pod's emulated Triton metrics every {SCRAPE_S:g} s (file_sd).
- **Operator**: `python -m gpufleet.cli operator` out of cluster{meta['operator_extra']}. After every
  service has a `status.lastDecision.time`, serves its floor and Prometheus scrapes every pod (plus one
  interval), a {meta['window_s']:g} s window measures it; then the operator stops and a
  {meta['baseline_s']:g} s window measures the same cluster without it.
- **Tick lag**: `gpufleet_tick_lag_seconds` (due → decision applied), **loop duration**:
  `gpufleet_loop_duration_seconds`, both from the operator's /metrics at window start and end; quantiles
  from the bucket deltas summed over services, interpolated like `histogram_quantile`.
- **CPU**: utime+stime of the operator's pid over the window / window seconds; **RSS**: max VmRSS of
  samples every 5 s. **Whole machine busy**: all processes (cluster, Prometheus, emulator, others).
- **Kubernetes requests**: the API server's own `apiserver_request_total` (`kubectl get --raw /metrics`
  at window start and end) by verb and resource; the operator's cost is with − without, per service per
  tick = that / (N / {INTERVAL_S} s), leaving out non-resource requests (the benchmark's own /metrics
  reads) and timer-driven traffic of the cluster's own components (`leases`, `nodes/status`: kwok's
  heartbeats, whose with − without difference is only the windows' phase). It includes what the
  operator's writes cause others to do (e.g. the endpoints controller).
  **Status writes**: `PATCH inferenceservices/status`.
- **PromQL**: Prometheus's `prometheus_http_requests_total{{handler=~"/api/v1/query.*"}}` (with −
  without), per {INTERVAL_S} s interval; the operator's `gpufleet_promql_queries_total` when exported.
- **Failover** (largest N{' and all' if meta['failover_all'] else ''}): two operators with
  `--peering scale`, priorities 100 and 50; SIGKILL the first once it has decided for every service;
  seconds until some service's `status.lastDecision.time` is at or after the kill (written by the
  second; a watch on InferenceServices), and until the second's `gpufleet_decisions_total` moves (its
  first tick, whether or not that tick writes status).

Wall time per N: {wall}.

## Notes

{chr(10).join(notes) if notes else '- none'}
"""


def plot(results: dict[str, Any], path: Path) -> None:
    runs = results["runs"]
    panels = [m for m in METRICS if m[0] not in ("tick_lag_p50_s", "status_writes_per_s", "kube_rps_diff",
                                                 "failover_first_decision_s", "scale_changes_per_s")]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, (key, label, _, goal_key) in zip(axes.flat, panels):
        pts = [(r["n"], r[key]) for r in runs if r.get(key) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
        if goal_key and goal_key != "promql_n_exponent":
            ax.axhline(GOALS[goal_key], color="red", ls="--", lw=1, label=f"goal at N={GOAL_N}")
            ax.legend(fontsize=8)
        ax.set_title(label if pts else f"{label}\n(not measured)", fontsize=10)
        ax.set_xlabel("N InferenceServices")
        ax.set_xlim(0, 1.05 * max((r["n"] for r in runs), default=1))
        tops = [p[1] for p in pts] + ([GOALS[goal_key]] if goal_key and goal_key != "promql_n_exponent" else [])
        ax.set_ylim(1.15 * min(0.0, *tops), 1.15 * max(max(tops, default=1.0), 1e-3))
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("gpufleet: one operator process vs N InferenceServices")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    plot(results, out / "scale.png")
    (out / "README.md").write_text(render_readme(results))


def git_commit() -> str:
    """HEAD's short hash, with "+dirty" when the checkout has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50,200,500", help="comma-separated N (InferenceServices)")
    parser.add_argument("--window-s", type=float, default=120, help="measurement window with the operator")
    parser.add_argument("--baseline-s", type=float, default=None, help="window without it (default: --window-s)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default reports/scale)")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=10, 30 s windows, .run/scale-quick")
    parser.add_argument("--gpus-per-node", type=int, default=int(os.environ.get("GPUS_PER_NODE", 4)))
    parser.add_argument("--workers", type=int, default=None,
                        help="pass --workers to the operator (only if `gpufleet operator --help` lists it)")
    parser.add_argument("--failover", choices=("largest", "all", "none"), default="largest")
    parser.add_argument("--forecast-quantile", type=float, default=0.5,
                        help="services' spec.forecast.quantile (0.9, the default of the CRD, scales fleets up "
                        "~2 min after start under constant load; see service_manifest)")
    parser.add_argument("--settle-timeout-s", type=float, default=420)
    parser.add_argument("--keep-cluster", action="store_true", help="leave the last cluster running")
    parser.add_argument("--report-only", action="store_true", help="re-render README/plot from OUT/results.json")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SystemExit: the teardown in `finally` runs
    if args.quick:
        args.sizes, args.window_s = "10", min(args.window_s, 30)
        args.out = args.out or ROOT / ".run/scale-quick"
    out: Path = args.out or ROOT / "reports/scale"
    if args.report_only:
        write_report(json.loads((out / "results.json").read_text()), out)
        return 0
    args.baseline_s = args.baseline_s or args.window_s
    sizes = sorted(int(s) for s in args.sizes.split(","))
    flags = operator_flags()
    passed_workers = args.workers is not None and "--workers" in flags
    results: dict[str, Any] = {"meta": {
        "command": "python benchmarks/scale_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "host": platform.node(), "cpus": os.cpu_count(),
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "window_s": args.window_s, "baseline_s": args.baseline_s, "gpus_per_node": args.gpus_per_node,
        "scrape_s": SCRAPE_S, "interval_s": INTERVAL_S, "failover_all": args.failover == "all",
        "forecast_quantile": args.forecast_quantile,
        "operator_flags": flags, "workers": args.workers if passed_workers else None,
        "operator_extra": f" with `--workers {args.workers}`" if passed_workers else
        (" (`--workers` given but not supported by this operator: not passed)" if args.workers else ""),
        "goals": GOALS,
    }, "runs": []}
    for n in tqdm(sizes, desc="sizes"):
        failover = args.failover == "all" or (args.failover == "largest" and n == sizes[-1])
        run = run_size(n, args, failover)
        results["runs"].append(run)
        write_report(results, out)  # after every size: a partial report survives a later failure
        tqdm.write(f"N={n}: wall {run['wall_s']:.0f}s, CPU {run['cpu_cores']:.2f} cores, RSS {run['rss_mib']:.0f} MiB, "
                   f"{run['kube_requests_per_service_tick']:.2f} kube req/service/tick, "
                   f"{run['promql_per_interval']:.0f} PromQL/interval, failover {run['failover_s']}")
    print(f"report: {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
