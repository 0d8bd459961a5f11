"""The chaos suite (issue 17): faults injected into a live fleet on the local real cluster, and
what each did.

One operator (its own shard, reaching the API server through a loopback proxy) runs eight
services in one namespace, with the fleet emulator playing Triton and real Prometheus scraping
it. Five services sit in the phases a SIGKILL can interrupt (scale-up, promotion of standbys,
drain, a spot notice, a planned window opening); three read Prometheus through a path a fault
cuts (their own Prometheus that is stopped, a proxy that adds 20 s, their own Prometheus with one
of four pods left out of the scrape). Each trial injects one fault, waits for it to clear and
then for the fleet to converge, and records the losses. `Recorder` follows every decision (a
watch on the InferenceServices) and the emulator's per-service counters (every second).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kubernetes import client, config, watch

from gpufleet.adapters.metrics import RATE_WINDOW_S
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.api.timefmt import iso, iso_seconds
from gpufleet.core.stabilize import max_up_step
from gpufleet.devenv.prometheus import PrometheusServer
from tests.chaos.faults import (
    KWOK_WORKDIR,
    Operator,
    ScrapeFilter,
    api_address,
    api_ready,
    proxied_kubeconfig,
    restart_component,
)
from tests.chaos.fleet import Judgement, Snapshot, judge
from tests.chaos.proxy import Proxy
from tests.integration.support import Cluster, loop_service, set_load
from tests.support import ROOT, wait_for

INTERVAL_S = 2  # every service's scaling.intervalSeconds
READY_S = 3  # the KWOK pods' model-load delay (a cold start)
RPS = 100  # targetRpsPerReplica
DRAIN_S = 6  # scaleDown.drainTimeoutSeconds: plain Triton reads idle only after 30 s without work
SPOT_NODES = ("gpu-spot-0", "gpu-spot-1")
# After a Prometheus fault, decisions are followed this long: a restarted Prometheus (or a pod back
# in its scrape) first answers rates over part of their window (docs/metrics.md), for a minute
# after its first scrape, which comes ~5 s after it starts (its discovery's throttle).
PROMETHEUS_WATCH_S = RATE_WINDOW_S + 15
NOTICE_TAINTS = {120: "karpenter.sh/disrupted", 30: "cloud.google.com/impending-node-termination"}


def budget_s(*, new_pods: bool, drained: bool, up_steps: int = 1) -> float:
    """How soon after a fault clears the fleet must have converged: two intervals, plus what no
    operator can shorten: one cold start when a pod had to be created after the fault cleared (a
    model loads as fast as it loads), one drain timeout when a pod on a node going away was
    still there (it may hold requests, so it drains before it goes; plain Triton reads idle only
    after IDLE_WINDOW without work, so the drain runs to its timeout; its replacement starts first,
    make-before-break, so the two add up), and one interval for each scale-up step beyond the first
    that the spec's own step limit asks for (`up_steps`)."""
    return 2 * INTERVAL_S + (READY_S if new_pods else 0) + (DRAIN_S if drained else 0) + INTERVAL_S * max(0, up_steps - 1)


def up_steps(spec: InferenceServiceSpec, start: int, end: int) -> int:
    """Ticks a scale-up from `start` to `end` serving takes under the spec's step limit
    (`scaling.scaleUp`: the HPA's default of 4 pods or 100 % a step, whichever is more), at least one."""
    steps, current = 1, start
    while current + max_up_step(spec, current) < end:
        current += max_up_step(spec, current)
        steps += 1
    return steps


@dataclass(frozen=True)
class Config:
    seed: int
    kill_rounds: int = 10  # each SIGKILL interrupts all five phases: 5 trials a round
    api_restarts: int = 2
    etcd_restarts: int = 2
    blackhole_s: float = 90
    prometheus_fault_s: float = 600  # Prometheus stopped, slowed, one pod out of the scrape
    slow_s: float = 20  # what the slow Prometheus adds to each request
    storm_notices: tuple[int, ...] = (120, 30)
    settle_timeout_s: float = 120
    cluster_name: str = "gpufleet-chaos"
    gpus_per_node: int | None = None  # what the cluster's nodes were made with (re-adding spot nodes)
    extra_nodes: int = 0  # on-demand KWOK nodes of 32 GPUs the run adds (and removes) for its own pods


@dataclass
class Trial:
    fault: str
    service: str
    injected: float
    cleared: float
    converged: bool
    converge_s: float | None  # from the fault clearing to the fleet converged
    budget_s: float  # two intervals, plus one cold start when new pods had to start
    orphaned: int = 0
    duplicated: int = 0
    left_out: int = 0
    blind_scale_downs: int = 0
    below_need: int = 0  # decisions that lowered the serving count below the offered load's need
    dropped: float = 0.0
    min_capacity: float = 1.0  # lowest (serving pods x per-pod target) / offered load during the trial
    lowest_at_s: float = 0.0  # when, in seconds after the fault was injected
    max_queue_ms: float = 0.0  # worst 1-second mean queue time during the trial
    warnings: int = 0  # MetricsUnavailable Warnings posted for the service from the fault on
    warning_causes: int = 0  # distinct messages among them (one Warning per cause is the rule)
    detail: str = ""


@dataclass
class Service:
    name: str
    obj: dict[str, Any]
    load: float  # req/s now
    rps: float = RPS  # targetRpsPerReplica
    floor: int = 1  # serving pods the spec asks for whatever the load
    prometheus_fault: bool = False  # its decisions may not scale down: its metrics are cut

    @property
    def spec(self) -> InferenceServiceSpec:
        return InferenceServiceSpec.model_validate(self.obj["spec"])

    @property
    def need(self) -> int:
        return max(self.floor, math.ceil(self.load / self.rps - 1e-9))


def service(namespace: str, shard: str, name: str, load: float, **spec: Any) -> Service:
    obj = loop_service(namespace, name)
    obj["metadata"]["labels"] = {"gpufleet.io/shard": shard}
    s = obj["spec"]
    s["replicas"] = {"min": 1, "max": 8}
    s["scaling"] = {"intervalSeconds": INTERVAL_S, "targetRpsPerReplica": RPS,
                    "scaleDown": {"stabilizationSeconds": 4, "maxStepPercent": 100, "drainTimeoutSeconds": DRAIN_S}}
    s["template"]["metadata"]["annotations"]["kwok.gpufleet.io/ready-delay"] = f"{READY_S}s"
    merge(s, spec)
    return Service(name, obj, load, rps=float(s["scaling"]["targetRpsPerReplica"]), floor=int(s["replicas"]["min"]))


def merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def scale_downs_below(decisions: list[tuple[float, int, bool]], start: float, end: float, need: int) -> int:
    """Decisions (time, serving decided, metrics available) in [start, end] that lowered the serving
    count below `need`, whatever the metrics said: an undercount on data taken as complete is the
    scale-down that `blind_scale_downs` does not see."""
    return sum(1 for (_, before, _), (t, after, _) in zip(decisions, decisions[1:])
               if start <= t <= end and after < min(before, need))


class Recorder:
    """Every decision of every service (a watch on the InferenceServices) and the emulator's
    counters once a second, so a trial can be judged on what happened during it, not only after."""

    def __init__(self, api: client.ApiClient, namespace: str, emulator: str) -> None:
        self.api, self.namespace, self.emulator = api, namespace, emulator
        self.lock = threading.Lock()
        # service -> [(decision time, serving decided, metrics available)]
        self.decisions: dict[str, list[tuple[float, int, bool]]] = {}
        self.samples: list[tuple[float, dict[str, dict[str, float]]]] = []  # (time, emulator /stats)
        self.loadavg: list[float] = []  # the machine's 1-minute load average, every second
        self._stop = threading.Event()
        for target in (self._watch, self._sample):
            threading.Thread(target=target, daemon=True).start()

    def close(self) -> None:
        self._stop.set()

    def stats(self) -> dict[str, dict[str, float]]:
        with urllib.request.urlopen(f"{self.emulator}/stats", timeout=5) as resp:  # noqa: S310 - loopback
            data: dict[str, dict[str, float]] = json.load(resp)
            return data

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self.loadavg.append(os.getloadavg()[0])
            try:
                s = self.stats()
            except OSError:
                continue
            with self.lock:
                self.samples.append((time.time(), s))

    def _record(self, obj: dict[str, Any]) -> None:
        st = obj.get("status") or {}
        d = st.get("lastDecision") or {}
        if not d.get("time"):
            return
        ok = any(c.get("type") == "MetricsAvailable" and c.get("status") == "True" for c in st.get("conditions") or [])
        entry = (iso_seconds(d["time"]), int(d.get("desired", 0)), ok)
        with self.lock:
            seen = self.decisions.setdefault(obj["metadata"]["name"], [])
            if not seen or entry[0] > seen[-1][0]:
                seen.append(entry)

    def _watch(self) -> None:
        api = client.CustomObjectsApi(self.api)
        while not self._stop.is_set():
            try:
                stream: Callable[..., Iterator[dict[str, Any]]] = watch.Watch().stream  # type: ignore[no-untyped-call]
                for event in stream(api.list_namespaced_custom_object, "gpufleet.io", "v1alpha1", self.namespace,
                                    "inferenceservices", timeout_seconds=60, _request_timeout=(5, 90)):
                    self._record(event["object"])
                    if self._stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - the API server is one of the things the suite restarts
                self._stop.wait(1.0)

    def blind_scale_downs(self, name: str, start: float, end: float, *, cut: bool) -> int:
        """Decisions in [start, end] that lowered the serving count while the metrics were missing
        or partial (MetricsAvailable not True, or, with `cut`, the service's metrics were cut)."""
        with self.lock:
            seen = list(self.decisions.get(name, []))
        count = 0
        for (_, before, _), (t, after, ok) in zip(seen, seen[1:]):
            if start <= t <= end and after < before and (cut or not ok):
                count += 1
        return count

    def below_need(self, name: str, start: float, end: float, need: int) -> int:
        with self.lock:
            seen = list(self.decisions.get(name, []))
        return scale_downs_below(seen, start, end, need)

    def during(self, name: str, start: float, end: float, rps: float, load: float) -> tuple[float, float, float, float]:
        """Requests dropped, the lowest capacity (serving x rps / load), the worst mean queue time
        (ms) of one service between start and end, and when the capacity was lowest."""
        with self.lock:
            window = [(t, s.get(f"{self.namespace}/{name}", {})) for t, s in self.samples if start - 1.5 <= t <= end + 1.5]
        if len(window) < 2:
            return 0.0, 1.0, 0.0, start
        dropped = window[-1][1].get("dropped", 0.0) - window[0][1].get("dropped", 0.0)
        capacity, lowest_at = min(((s.get("serving", 0.0) * rps / load if load else 1.0), t) for t, s in window)
        queue = max(((b.get("queue_us", 0.0) - a.get("queue_us", 0.0)) / max(b.get("success", 0.0) - a.get("success", 0.0), 1e-9)
                     / 1000 if b.get("success", 0.0) > a.get("success", 0.0) else 0.0)
                    for (_, a), (_, b) in zip(window, window[1:]))
        return dropped, min(capacity, 1.0), queue, lowest_at


@dataclass
class Chaos:
    """The rig: a namespace of services, the operator behind its proxy, the faults' own Prometheus."""

    cluster: Cluster
    emulator: str
    file_sd: Path
    prometheus_url: str
    workdir: Path
    cfg: Config
    log: Callable[[str], None] = print
    trials: list[Trial] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.cfg.seed)
        self.namespace = f"chaos-{self.rng.randrange(16**6):06x}"
        self.shard = self.namespace
        self.api = config.new_client_from_config(config_file=self.cluster.kubeconfig)  # type: ignore[no-untyped-call]
        self.kube_proxy = Proxy(api_address(self.cluster.kubeconfig))
        prom = urlparse(self.prometheus_url)
        self.slow_proxy = Proxy((prom.hostname or "127.0.0.1", prom.port or 80))
        self.down_prom = PrometheusServer(scrape_interval_s=1.0, file_sd_dir=self.file_sd, workdir=self.workdir / "prom-down")
        self.filter = ScrapeFilter(self.file_sd, self.workdir / "file_sd-partial")
        self.partial_prom = PrometheusServer(scrape_interval_s=1.0, file_sd_dir=self.workdir / "file_sd-partial",
                                             workdir=self.workdir / "prom-partial")
        kubeconfig = proxied_kubeconfig(self.cluster.kubeconfig, self.kube_proxy.port, self.workdir / "kubeconfig-proxied.yaml")
        self.operator = Operator(self.cluster, kubeconfig, self.shard, self.prometheus_url, self.workdir)
        self.services: dict[str, Service] = {}
        self.notice = "notice"  # the current spot-notice service (fresh_notice)
        self.skipped: list[str] = []  # trials not run, and why (a baseline that never came)
        self.recorder: Recorder | None = None
        self.timelines: dict[str, list[str]] = {}  # service -> what held its convergence, when (converge)
        self.drained: dict[str, bool] = {}  # service -> a pod on a leaving node was live after `since` (converge)

    # --- setup -------------------------------------------------------------------------------

    def extra_node_names(self) -> list[str]:
        return [f"{self.namespace}-ondemand-{i}" for i in range(self.cfg.extra_nodes)]

    def add_nodes(self) -> None:
        for name in self.extra_node_names():
            self.cluster.apply({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                             "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                        "karpenter.sh/capacity-type": "on-demand", "nvidia.com/gpu.product": "NVIDIA-L4",
                                        "nvidia.com/gpu.count": "32"}},
                "status": {"allocatable": {"cpu": "128", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "32"},
                           "capacity": {"cpu": "128", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "32"}}})

    def notice_service(self, name: str) -> Service:
        spot = {"onDemand": {"base": 1},
                "spot": {"enabled": True, "maxFraction": 0.5, "pendingTimeoutSeconds": 10, "returnAfterSeconds": 10}}
        # At its need from the start (min 4 for 350 req/s): a new service that scaled up through a
        # backlog would hold its pods a minute (core.stabilize.AFTER_BACKLOG_S), and each kill round
        # makes a new one (the first full run waited ~70 s a round for it).
        return service(self.namespace, self.shard, name, 350, replicas={"min": 4, "max": 8}, capacity=spot)

    def fresh_notice(self, tag: str) -> None:
        """A new spot-notice service in place of the last: a notice leaves the old one backing off
        spot (up to 8 x returnAfterSeconds), so the next notice would find no spot pod to move."""
        old, new = self.notice, self.notice_service(f"notice-{tag}")
        self.cluster.apply(new.obj)
        self.services[new.name] = new
        # Its load once its pods serve (its floor is its need): load offered before would be
        # dropped by the emulator, and a trial starting soon after counted it (175 requests, the
        # third full run's 30 s spot storm, all of it before the storm).
        key = f"{self.namespace}/{new.name}"
        assert self.recorder is not None
        wait_for(lambda: (self.recorder.stats().get(key) or {}).get("serving", 0.0) >= new.floor, timeout=120,
                 what=f"{new.name} serving at its floor")
        set_load(self.emulator, self.namespace, new.name, new.load)
        self.notice = new.name
        self.load(old, 0)
        self.cluster.kubectl("delete", "inferenceservice", old, "-n", self.namespace, "--wait=false")
        del self.services[old]

    def start(self) -> None:
        self.add_nodes()
        self.down_prom.start()
        self.partial_prom.start()
        ns, sh = self.namespace, self.shard
        base = [
            *(service(ns, sh, name, 150) for name in self.turns("up")),
            *(service(ns, sh, name, 150, warmPool={"size": 2, "max": 2}) for name in self.turns("promote")),
            *(service(ns, sh, name, 450) for name in self.turns("drain")),
            self.notice_service("notice"),
            service(ns, sh, "window", 80),
            service(ns, sh, "prom-down", 250, metrics={"prometheusUrl": self.down_prom.url}),
            service(ns, sh, "prom-slow", 250, metrics={"prometheusUrl": f"http://{self.slow_proxy.address}"}),
            service(ns, sh, "prom-partial", 180, metrics={"prometheusUrl": self.partial_prom.url},
                    scaling={"targetRpsPerReplica": 50}, slo={"queueDepthPerReplica": 50}),
        ]
        for s in base:
            if s.name.startswith("prom-"):
                s.prometheus_fault = True
        self.services = {s.name: s for s in base}
        self.cluster.kubectl("create", "namespace", ns)
        self.recorder = Recorder(self.api, ns, self.emulator)
        for s in base:
            self.cluster.apply(s.obj)
            set_load(self.emulator, ns, s.name, s.load)
        self.operator.start()
        self.log(f"chaos: seed {self.cfg.seed}, namespace {ns}, operator log in {self.workdir}")
        # Every service starts at once, each through a backlog it then holds a minute after.
        if not self.settle(list(self.services), timeout=2 * self.cfg.settle_timeout_s):
            raise AssertionError(f"the services never settled: {self.skipped}")

    def close(self) -> None:
        for s in self.services.values():
            try:
                set_load(self.emulator, self.namespace, s.name, 0)
            except OSError:
                pass
        self.operator.stop()
        if self.recorder:
            self.recorder.close()
        self.filter.close()
        for p in (self.down_prom, self.partial_prom):
            p.stop()
        self.kube_proxy.close()
        self.slow_proxy.close()
        self.untaint_spot()
        self.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)
        for name in self.extra_node_names():
            self.cluster.kubectl("delete", "node", name, "--wait=false", check=False)

    # --- observing ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot | None:
        try:
            return Snapshot.read(self.api, self.namespace)
        except Exception:  # noqa: BLE001 - the API server may be the fault
            return None

    def converge(self, names: list[str], since: float, timeout: float,
                 leaving: frozenset[str] = frozenset()) -> dict[str, tuple[float | None, Judgement]]:
        """Poll until every named service has converged (or `timeout`); the first time each did.
        `self.timelines[n]` says what held each one and when (seconds after `since`)."""
        first: dict[str, float] = {}
        last: dict[str, Judgement] = {}
        self.timelines = {n: [] for n in names}
        self.drained = {n: False for n in names}
        deadline = time.time() + timeout
        while True:
            snap = self.snapshot()
            now = time.time()
            if snap is not None:
                for n in names:
                    if n in first:
                        continue
                    j = judge(snap, n, since=since, need_serving=self.services[n].need, leaving_nodes=leaving,
                              drain_limit_s=DRAIN_S + 3 * INTERVAL_S)
                    if n not in last or last[n].why != j.why:
                        self.timelines[n].append(f"+{now - since:.1f} {j.why}")
                    self.drained[n] = self.drained[n] or j.on_leaving > 0
                    last[n] = j
                    if j.converged:
                        first[n] = now
            if len(first) == len(names) or now > deadline:
                return {n: (first.get(n), last.get(n, Judgement(False, 0, 0, 0, 0, 0, False, "API unreachable")))
                        for n in names}
            time.sleep(0.5)

    def detail(self, name: str, since: float) -> str:
        """What held a trial's convergence and when (from `converge`), and the service's decisions
        from `since` on (seconds after it: serving count decided)."""
        assert self.recorder is not None
        with self.recorder.lock:
            decided = [f"+{t - since:.1f}:{n}" for t, n, _ in self.recorder.decisions.get(name, []) if t >= since - 2]
        return "; ".join(self.timelines.get(name, [])) + " | decisions " + " ".join(decided[:8])

    def decided_before(self, name: str, t: float) -> int:
        """The serving count decided last before `t`: where a scale-up through a fault starts from
        (before it was injected: a restarted operator may decide before its startup is seen done)."""
        assert self.recorder is not None
        with self.recorder.lock:
            earlier = [n for at, n, _ in self.recorder.decisions.get(name, []) if at < t]
        return earlier[-1] if earlier else 0

    def warnings(self, name: str, reason: str, since: float) -> dict[str, int]:
        """Warnings of one reason posted for a service since `since`: message -> how many."""
        try:
            resp: Any = client.CoreV1Api(self.api).list_namespaced_event(
                self.namespace, field_selector=f"involvedObject.name={name},reason={reason}",
                _preload_content=False, _request_timeout=10)
        except Exception:  # noqa: BLE001 - counted as none; the trial's other columns still stand
            return {}
        out: dict[str, int] = {}
        for e in json.loads(resp.data)["items"]:
            when = e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp")
            if e.get("type") == "Warning" and when and iso_seconds(when) >= math.floor(since):
                out[e.get("message", "")] = out.get(e.get("message", ""), 0) + int(e.get("count") or 1)
        return out

    def settle(self, names: list[str], leaving: frozenset[str] = frozenset(), timeout: float | None = None) -> bool:
        """Wait for a baseline (not a trial): every named service converged, at its need if it
        gets there in time (so a load step from the baseline is a scale-up). False, logged with
        the services' pods, when some never converged: the caller skips its trial."""
        deadline = time.time() + (timeout or self.cfg.settle_timeout_s)
        while True:
            # A fresh decision is one made since the call began: never ask for one in less than a
            # few intervals (a last call of one second read "no fresh decision" where the service
            # was only holding above its need).
            got = self.converge(names, time.time(), max(deadline - time.time(), 3.0 * INTERVAL_S), leaving)
            stuck = {n: j.why for n, (t, j) in got.items() if t is None}
            high = {n: f"decided {j.decided_serving} > need {self.services[n].need}" for n, (t, j) in got.items()
                    if t is not None and j.decided_serving > self.services[n].need}
            if not stuck and not high:
                return True
            if time.time() > deadline:
                if stuck:
                    self.skipped.append(f"no baseline ({'; '.join(f'{n}: {w}' for n, w in stuck.items())})")
                    statuses = "\n".join(self.cluster.kubectl(
                        "get", "inferenceservice", n, "-n", self.namespace, "-o",
                        "jsonpath={.metadata.name}: lastDecision {.status.lastDecision} conditions {.status.conditions}",
                        check=False).stdout for n in stuck)
                    self.log(f"no baseline: {stuck}\n{statuses}\n" + self.cluster.kubectl(
                        "get", "pods,inferenceservices", "-n", self.namespace, "-o", "wide", check=False).stdout)
                    return False
                self.log(f"baseline above the need, going on: {high}")
                return True
            time.sleep(1.0)

    def record(self, faults: dict[str, str], injected: float, cleared: float, *, began: dict[str, float] | None = None,
               leaving: frozenset[str] = frozenset(), timeout: float = 90, watch_s: float = 0.0) -> list[Trial]:
        """Judge one trial per service in `faults` (service -> fault name): converged after
        `cleared`, losses at the end, drops and capacity from `began` (each phase's start) on.
        Decisions, drops and capacity are followed until `watch_s` after `cleared` at least: a fault
        whose after-effects outlast the convergence (a Prometheus back with a rate window to fill)
        is judged on them too."""
        got = self.converge(list(faults), cleared, timeout, leaving)
        time.sleep(max(0.0, cleared + watch_s - time.time()))  # an observation period, not a wait for a state
        end = time.time()
        assert self.recorder is not None
        out = []
        for n, (t, j) in got.items():
            s, fault = self.services[n], faults[n]
            start = (began or {}).get(n, injected)
            dropped, capacity, queue, lowest_at = self.recorder.during(n, start, end, s.rps, s.load)
            warnings = self.warnings(n, "MetricsUnavailable", injected)
            trial = Trial(fault=fault, service=n, injected=injected, cleared=cleared, converged=t is not None,
                          converge_s=None if t is None else round(max(t - cleared, 0.0), 1),
                          budget_s=budget_s(new_pods=j.new_pods, drained=self.drained.get(n, False),
                                            up_steps=up_steps(s.spec, self.decided_before(n, injected), j.decided_serving)),
                          orphaned=j.orphaned, duplicated=j.duplicated, left_out=j.left_out,
                          blind_scale_downs=self.recorder.blind_scale_downs(n, injected, cleared + INTERVAL_S,
                                                                            cut=s.prometheus_fault and fault.startswith("prometheus")),
                          below_need=self.recorder.below_need(n, start, end, s.need),
                          dropped=round(dropped, 1), min_capacity=round(capacity, 2), max_queue_ms=round(queue, 1),
                          lowest_at_s=round(lowest_at - injected, 1),
                          warnings=sum(warnings.values()), warning_causes=len(warnings),
                          detail=self.detail(n, cleared))
            out.append(trial)
            self.log(f"  {fault:<36} {n:<13} converged={trial.converged} in {trial.converge_s}s "
                     f"(budget {trial.budget_s}s) dropped={trial.dropped} blind={trial.blind_scale_downs} "
                     f"below_need={trial.below_need} "
                     f"warnings={trial.warnings}/{trial.warning_causes} {trial.detail}")
        self.trials.extend(out)
        return out

    # --- the phases a kill can interrupt -----------------------------------------------------

    def load(self, name: str, rps: float) -> None:
        self.services[name].load = rps
        set_load(self.emulator, self.namespace, name, rps)

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.cluster.kubectl("patch", "inferenceservice", name, "-n", self.namespace, "--type", "merge",
                             "-p", json.dumps({"spec": spec}))

    def taint_spot(self, taint: str) -> None:
        for node in SPOT_NODES:
            self.cluster.kubectl("taint", "node", node, f"{taint}=:NoSchedule", "--overwrite")

    def untaint_spot(self) -> None:
        for node in SPOT_NODES:
            for taint in NOTICE_TAINTS.values():
                self.cluster.kubectl("taint", "node", node, f"{taint}-", check=False)

    def turns(self, name: str) -> tuple[str, ...]:
        """The services that take turns at a phase. A service whose load stepped up holds its pods
        for a minute after the backlog (core.stabilize.AFTER_BACKLOG_S): the scale-up and
        promotion services after their step, the drain service after its reset to the higher
        load. With several rounds, three of each rotate, and each comes back to its baseline
        during the next two rounds, off the suite's clock."""
        return (name, f"{name}-b", f"{name}-c")[:max(1, min(3, self.cfg.kill_rounds))]

    def turn(self, name: str, k: int) -> str:
        names = self.turns(name)
        return names[k % len(names)]

    def reset_phases(self, k: int) -> None:
        for name in (*self.turns("up"), *self.turns("promote")):
            self.load(name, 150)
        for name in self.turns("drain"):
            self.load(name, 450)
        self.untaint_spot()
        self.fresh_notice(f"r{k}")
        self.patch("window", {"schedules": None})
        self.services["window"].floor = 1

    def trigger(self, name: str, k: int) -> None:
        if name.startswith("up"):
            self.load(name, 450)
        elif name.startswith("promote"):
            self.load(name, 350)
        elif name.startswith("drain"):
            self.load(name, 150)
        elif name == self.notice:
            self.taint_spot(NOTICE_TAINTS[120])
        elif name == "window":
            self.patch("window", {"schedules": [{"name": f"w{k}", "start": iso(time.time() + 1), "duration": "1h",
                                                 "minReplicas": 4}]})
            self.services["window"].floor = 4

    def kill_rounds(self) -> None:
        for k in range(self.cfg.kill_rounds):
            self.reset_phases(k)
            phases = [self.turn("up", k), self.turn("promote", k), self.turn("drain", k), self.notice, "window"]
            if not self.settle(phases):
                self.skipped[-1] = f"kill round {k + 1}: {self.skipped[-1]}"
                continue
            wait_for(lambda: self._on_spot(self.notice) > 0, timeout=60, what="the notice service on spot")
            span = 4 * INTERVAL_S  # a kill lands 0-8 s into its phase: decision, apply, start, promote, drain
            offsets = sorted((self.rng.uniform(0, span), p) for p in phases)
            t0 = time.time()
            began = {}
            for off, p in offsets:
                time.sleep(max(0.0, t0 + off - time.time()))
                began[p] = time.time()
                self.trigger(p, k)
            time.sleep(max(0.0, t0 + span - time.time()))
            injected = time.time()
            self.operator.kill9()
            self.log(f"round {k + 1}/{self.cfg.kill_rounds}: SIGKILL "
                     + ", ".join(f"{p} +{span - off:.1f}s" for off, p in offsets))
            cleared = self.operator.start()
            self.record({p: f"kill -9 operator: {p.split('-')[0]}" for p in phases}, injected, cleared, began=began,
                        leaving=frozenset(SPOT_NODES))
        self.untaint_spot()
        self.patch("window", {"schedules": None})
        self.services["window"].floor = 1

    # --- the API server and etcd -------------------------------------------------------------

    def control_plane(self, component: str, fault: str) -> None:
        if not self.settle(list(self.services)):
            self.skipped[-1] = f"{fault}: {self.skipped[-1]}"
            return
        self.load("up", 450)  # a scale-up in flight: the restart lands mid-tick
        time.sleep(self.rng.uniform(0, INTERVAL_S))
        injected = time.time()
        restart_component(self.cfg.cluster_name, component)
        try:
            wait_for(lambda: api_ready(self.cluster), timeout=300, what=f"API server back after the {component} restart")
        except AssertionError as exc:  # recorded as a trial that did not converge, with the logs' tails
            logs = KWOK_WORKDIR / "clusters" / self.cfg.cluster_name / "logs"
            self.log(f"{exc}\n" + "\n".join(f"--- {n}.log\n{(logs / f'{n}.log').read_text(errors='replace')[-3000:]}"
                                             for n in ("kube-apiserver", "etcd") if (logs / f"{n}.log").exists()))
        cleared = time.time()
        self.log(f"{fault}: API server back {cleared - injected:.1f} s after the kill")
        self.record({n: fault for n in self.services}, injected, cleared)
        self.load("up", 150)

    def blackhole(self) -> None:
        if not self.settle(list(self.services)):
            self.skipped[-1] = f"blackhole: {self.skipped[-1]}"
            return
        injected = time.time()
        self.kube_proxy.blackhole()
        self.load("up", 450)
        time.sleep(self.cfg.blackhole_s)
        self.kube_proxy.restore()
        fault = f"API server blackholed {self.cfg.blackhole_s:g} s"
        self.record({n: fault for n in self.services}, injected, time.time())
        self.load("up", 150)

    # --- Prometheus --------------------------------------------------------------------------

    def start_prometheus_faults(self) -> float:
        if not self.settle(["prom-down", "prom-slow", "prom-partial"]):
            raise AssertionError(f"the Prometheus services never settled: {self.skipped}")
        snap = self.snapshot()
        assert snap is not None
        serving = sorted(p["metadata"]["name"] for p in snap.pods
                         if (p["metadata"].get("labels") or {}).get("gpufleet.io/inference-service") == "prom-partial"
                         and (p["metadata"].get("labels") or {}).get("gpufleet.io/serving") == "true")
        self.down_prom.stop()
        self.slow_proxy.delay(self.cfg.slow_s)
        self.filter.hidden = {serving[-1]}
        self.log(f"prometheus faults on: prom-down stopped, prom-slow +{self.cfg.slow_s:g}s, {serving[-1]} out of the scrape")
        return time.time()

    def end_prometheus_faults(self, injected: float) -> None:
        time.sleep(max(0.0, injected + self.cfg.prometheus_fault_s - time.time()))
        self.down_prom.start()
        self.slow_proxy.restore()
        self.filter.hidden = set()
        cleared = time.time()
        minutes = (cleared - injected) / 60
        # One record for the three: each is judged from the same clearing on. (One after the other,
        # a service's first look came only after the one before had converged: the first full runs
        # put 4.8 s on the partial scrape, 0.1 s after the slow Prometheus's 4.7 s.)
        self.record({"prom-down": f"prometheus: Prometheus stopped {minutes:.1f} min",
                     "prom-slow": f"prometheus: Prometheus +{self.cfg.slow_s:g} s for {minutes:.1f} min",
                     "prom-partial": f"prometheus: 1 of 4 pods out of the scrape {minutes:.1f} min"},
                    injected, cleared, timeout=120, watch_s=PROMETHEUS_WATCH_S)

    # --- spot storm --------------------------------------------------------------------------

    def spot_storm(self, notice_s: int) -> None:
        self.untaint_spot()
        self.fresh_notice(f"s{notice_s}")
        wait_for(lambda: self._on_spot(self.notice) > 0, timeout=120, what="the notice service on spot")
        if not self.settle(list(self.services)):
            self.skipped[-1] = f"spot storm {notice_s} s: {self.skipped[-1]}"
            return
        injected = time.time()
        self.taint_spot(NOTICE_TAINTS[notice_s])
        time.sleep(notice_s)
        # The nodes go: their pods with them, then the Node objects.
        for node in SPOT_NODES:
            self.cluster.kubectl("delete", "pods", "-n", self.namespace, "--field-selector", f"spec.nodeName={node}",
                                 "--grace-period=0", "--force", "--wait=false", check=False)
            self.cluster.kubectl("delete", "node", node, "--wait=false", check=False)
        cleared = time.time()
        self.record({n: f"spot storm, {notice_s} s notice" for n in self.services}, injected, cleared,
                    leaving=frozenset(SPOT_NODES), timeout=120)
        env = {**self.cluster.env, "CLUSTER_NAME": self.cfg.cluster_name,
               **({"GPUS_PER_NODE": str(self.cfg.gpus_per_node)} if self.cfg.gpus_per_node else {})}
        subprocess.run([str(ROOT / "hack/cluster.sh"), "nodes"], env=env, check=True, timeout=180)

    def _on_spot(self, name: str) -> int:
        snap = self.snapshot()
        if snap is None:
            return 0
        return sum(1 for p in snap.pods if (p["metadata"].get("labels") or {}).get("gpufleet.io/inference-service") == name
                   and (p.get("spec") or {}).get("nodeName") in SPOT_NODES)

    # --- the whole run -----------------------------------------------------------------------

    def run(self) -> list[Trial]:
        began = time.time()
        self.start()
        prom_injected = self.start_prometheus_faults()
        self.kill_rounds()
        self.end_prometheus_faults(prom_injected)
        for _ in range(self.cfg.api_restarts):
            self.control_plane("kube-apiserver", "kube-apiserver restarted mid-tick")
        for _ in range(self.cfg.etcd_restarts):
            self.control_plane("etcd", "etcd restarted")
        for notice in self.cfg.storm_notices:
            self.spot_storm(notice)
        # Last: the service stepped up while the operator is cut off holds its pods a minute after
        # its backlog, and a fault after it waited that long for its baseline.
        if self.cfg.blackhole_s:
            self.blackhole()
        self.log(f"chaos: {len(self.trials)} trials in {(time.time() - began) / 60:.1f} min")
        return self.trials


def as_dicts(trials: list[Trial]) -> list[dict[str, Any]]:
    return [asdict(t) for t in trials]
