"""Fleet emulator for the local KWOK cluster: per-pod Triton `/metrics` from an offered load.

KWOK pods run no containers, so something must play the Triton servers. This process watches the
pods of every InferenceService, and those labelled `kwok.gpufleet.io/emulate` (a plain Deployment
watched in shadow mode), with one LIST, then a WATCH (no per-tick load on the API server),
splits each service's offered load (a step function or a trace) over the pods that are Ready *and*
labelled serving, runs a fluid queue per pod each tick, and serves per-pod cumulative Triton
counters and gauges at /metrics/<namespace>/<pod>. A file_sd JSON lists one Prometheus target per
pod (labels namespace, pod, capacity_class), so a real Prometheus scrapes realistic per-pod series
and the operator reads them through its normal queries. Everything listens on 127.0.0.1.

    python -m gpufleet.emulator --kubeconfig K --file-sd DIR --port 9400 \
        --load default/chat=step:0=20,60=100,300=20

Per-pod service follows the simulator's replica model (gpufleet.sim.model.ReplicaModel): batch
slots and the time a request holds one, from the mean prompt/generated token counts.
`PUT /load/<namespace>/<service>` with a profile body changes a service's load at run time.
`GET /stats` reports, per service, requests done and dropped (offered while no pod served, or
queued or in flight on a pod that went) for tests/chaos.

A terminating pod plays Triton after SIGTERM: it takes no new requests and finishes the ones it
queued or ran, for at most its grace period (the pod's deletionGracePeriodSeconds, capped by
Triton's `--exit-timeout-secs`, default 30 s: "Timeout (in seconds) when exiting to wait for
in-flight inferences to finish", `tritonserver --help`); what is left then is dropped. KWOK deletes
the Pod object at once, so the emulator keeps playing the exiting server after it. A pod deleted
with no grace period (a force delete, a node gone) drops what it held at once.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import numpy as np
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from gpufleet.adapters.manifests import LABEL_SERVICE
from gpufleet.adapters.pods import replica_from_pod
from gpufleet.core.types import ReplicaState
from gpufleet.devenv.exposition import PodLatencies, dcgm_lines, kv_cache_lines
from gpufleet.devenv.prometheus import Target, write_file_sd
from gpufleet.sim.model import ReplicaModel

log = logging.getLogger("gpufleet.emulator")
SD_NAME = "gpufleet-emulator"  # file_sd file this process owns
# Pods of a Deployment gpufleet does not own (shadow-mode tests) are played too when they carry this
# label: its value names the service whose load they share, and each serves once Ready.
EMULATE_LABEL = "kwok.gpufleet.io/emulate"


@dataclass(frozen=True)
class LoadProfile:
    """Piecewise-constant offered load: rates[i] requests/s from times[i] seconds on; loops."""

    times: np.ndarray
    rates: np.ndarray
    period: float | None = None  # repeat after this many seconds (a replayed trace)

    def rate(self, t: float) -> float:
        if self.period:
            t = t % self.period
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        return float(self.rates[max(i, 0)])


def parse_load(text: str) -> tuple[str, LoadProfile]:
    """`ns/svc=step:0=20,60=100` or `ns/svc=trace:FILE[:speedup[:peak]]` (ServeGen aggregate CSV)."""
    service, _, profile = text.partition("=")
    kind, _, rest = profile.partition(":")
    if kind == "step":
        points = sorted((float(a), float(b)) for a, b in (p.split("=") for p in rest.split(",")))
        return service, LoadProfile(np.array([p[0] for p in points]), np.array([p[1] for p in points]))
    if kind == "trace":
        path, *opts = rest.split(":")
        speedup = float(opts[0]) if opts else 60.0
        with open(path) as f:
            lines = [line for line in f if not line.startswith("#")]
            rows = [(float(r["window_start_s"]), float(r["total_rate_rps"])) for r in csv.DictReader(lines)]
        times = np.array([t for t, _ in rows]) / speedup
        rates = np.array([r for _, r in rows])
        if len(opts) > 1:  # rescale so the trace's peak equals the requested rate
            rates = rates * float(opts[1]) / max(rates.max(), 1e-9)
        period = float(times[-1] + (times[1] - times[0])) if len(times) > 1 else None
        return service, LoadProfile(times - times[0], rates, period)
    raise ValueError(f"unknown load profile {profile!r}: use step:... or trace:...")


@dataclass
class PodCounters:
    """Cumulative Triton counters of one emulated pod (microseconds, like Triton)."""

    capacity_class: str
    service: str = ""  # "namespace/service" the pod belongs to
    in_flight: float = 0.0  # requests holding a batch slot
    pending: float = 0.0  # requests waiting for a slot (Triton's pending count)
    held: float = 0.0  # long requests pinned in flight (PUT /hold), e.g. very long generations
    success: float = 0.0
    queue_us: float = 0.0
    compute_us: float = 0.0
    request_us: float = 0.0
    latencies: PodLatencies = field(default_factory=PodLatencies)  # histograms and summary


def replica_capacity(model: ReplicaModel, in_tokens: float, out_tokens: float) -> tuple[int, float]:
    """Batch slots and per-request service time of one replica at full batch (the simulator's model)."""
    service_time = in_tokens / model.prefill_rate(model.max_batch) + out_tokens * model.itl(model.max_batch)
    return model.max_batch, service_time


@dataclass
class Emulator:
    loads: dict[str, LoadProfile]  # "namespace/service" -> offered requests/s over time
    slots: int  # concurrent requests one replica batches
    service_time_s: float  # time a request holds a slot
    model: str = "chat"
    first_token_s: float | None = None  # prefill + one decode step (TTFT without queueing); None: 10 % of service
    per_token_s: float | None = None  # time per output token; None: 90 % of service over 128 tokens
    pods: dict[str, PodCounters] = field(default_factory=dict)  # "namespace/pod" -> counters
    serving: dict[str, list[str]] = field(default_factory=dict)  # service -> serving pod keys
    started: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _pod_service: dict[str, str] = field(default_factory=dict)  # serving pod key -> its service
    # Requests lost per service: offered while no pod served, or queued/in flight on a pod that went.
    dropped: dict[str, float] = field(default_factory=dict)
    _unserved: set[str] = field(default_factory=set)  # services whose load finds no serving pod now
    exit_timeout_s: float = 30.0  # Triton's --exit-timeout-secs (its default)
    # Terminating pods finishing their work: "namespace/pod" -> (counters, seconds of grace left).
    exiting: dict[str, tuple[PodCounters, float]] = field(default_factory=dict)

    def sync_pods(self, pods: list[dict[str, Any]]) -> bool:
        """Replace the pod set with a full listing; True when the scrape targets changed."""
        with self.lock:
            old = self.pods
            self.pods, self.serving, self._pod_service = {}, {}, {}
            for pod in pods:
                self._apply(pod, deleted=False, counters=old)
            for key in set(old) - set(self.pods):  # deleted while the watch was down
                self._drop(old[key], key, "gone from a new listing")
            return set(self.pods) != set(old)

    def update_pod(self, pod: dict[str, Any], *, deleted: bool) -> bool:
        """Apply one watch event (ADDED/MODIFIED, or DELETED); True when the scrape targets changed."""
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        with self.lock:
            had = key in self.pods
            self._apply(pod, deleted=deleted, counters=self.pods)
            return had != (key in self.pods)

    def _apply(self, pod: dict[str, Any], *, deleted: bool, counters: dict[str, PodCounters]) -> None:
        """Add, update or drop one pod (lock held); a terminating pod is gone (Triton stops with it).
        `counters` holds the pods' running counters to carry over."""
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        service = self._pod_service.pop(key, None)
        if service is not None:
            self.serving[service] = [k for k in self.serving.get(service, []) if k != key]
            if not self.serving[service]:
                del self.serving[service]
        if deleted or meta.get("deletionTimestamp"):
            gone = self.pods.pop(key, None)
            if gone is not None:
                grace = meta.get("deletionGracePeriodSeconds")
                grace_s = min(float(30 if grace is None else grace), self.exit_timeout_s)
                if grace_s > 0 and gone.pending + gone.in_flight > 0:
                    self.exiting[key] = (gone, grace_s)  # SIGTERM: it finishes what it has
                else:
                    self._drop(gone, key, "deleted" if deleted else "terminating")
            return
        labels = meta.get("labels") or {}
        if LABEL_SERVICE not in labels and EMULATE_LABEL not in labels:
            return  # not a Triton server this emulator plays
        replica = replica_from_pod(pod, set())
        owner = f"{meta['namespace']}/{labels.get(LABEL_SERVICE) or labels.get(EMULATE_LABEL, '')}"
        self.pods[key] = counters.get(key) or PodCounters(capacity_class=replica.capacity_class, service=owner)
        # A plain Deployment's pod (EMULATE_LABEL) serves once Ready: its Service routes to every Ready pod.
        plain = LABEL_SERVICE not in labels and replica.ready_at is not None and replica.state != ReplicaState.draining
        if replica.state == ReplicaState.serving or plain:
            service = owner
            self._pod_service[key] = service
            self.serving.setdefault(service, []).append(key)

    def _drop(self, pod: PodCounters, key: str, why: str) -> None:
        """A pod went (lock held): whatever it still queued or ran is lost (held requests too).
        Logged with the pod: a drop is a loss the chaos suite fails on, and needs its story."""
        lost = pod.pending + pod.in_flight
        if lost > 0:
            self.dropped[pod.service] = self.dropped.get(pod.service, 0.0) + lost
            log.warning("dropped %.1f requests of %s: pod %s %s with %.1f pending, %.1f in flight",
                        lost, pod.service, key, why, pod.pending, pod.in_flight)

    def stats(self) -> dict[str, dict[str, float]]:
        """Per service: cumulative requests done and dropped, queue time, serving pods, pending now."""
        with self.lock:
            out: dict[str, dict[str, float]] = {}
            pods = [*self.pods.values(), *(p for p, _ in self.exiting.values())]
            for service in set(self.loads) | set(self.dropped) | {p.service for p in pods}:
                mine = [p for p in pods if p.service == service]
                out[service] = {"success": sum(p.success for p in mine), "queue_us": sum(p.queue_us for p in mine),
                                "pending": sum(p.pending for p in mine), "dropped": self.dropped.get(service, 0.0),
                                "serving": float(len(self.serving.get(service, [])))}
            return out

    def set_load(self, service: str, profile: LoadProfile) -> None:
        with self.lock:
            self.loads[service] = profile
            self.started = time.time()

    def hold(self, key: str, count: float) -> bool:
        with self.lock:
            pod = self.pods.get(key)
            if pod is None:
                return False
            pod.in_flight = max(pod.in_flight - pod.held, 0.0) + count
            pod.held = count
            return True

    def advance(self, now: float, dt: float) -> None:
        """One fluid step: arrivals spread over serving pods; every pod (serving or draining)
        batches up to `slots` requests, completes in_flight / service_time per second, and
        queues the rest."""
        with self.lock:
            arrivals: dict[str, float] = {}
            for service, load in self.loads.items():
                keys = self.serving.get(service, [])
                rate = load.rate(now - self.started)
                if not keys and rate > 0:  # no serving pod: the load is refused upstream, counted as dropped
                    self.dropped[service] = self.dropped.get(service, 0.0) + rate * dt
                    if service not in self._unserved:
                        log.warning("dropping the load of %s: no serving pod", service)
                    self._unserved.add(service)
                else:
                    self._unserved.discard(service)
                for key in keys:
                    arrivals[key] = rate * dt / len(keys)
            first = self.first_token_s if self.first_token_s is not None else 0.1 * self.service_time_s
            per_token = self.per_token_s if self.per_token_s is not None else 0.9 * self.service_time_s / 128
            for key, pod in [*self.pods.items(), *((k, p) for k, (p, _) in self.exiting.items())]:
                # What a request finishing now waited: the queue ahead of it drained at full batch.
                wait = pod.pending * self.service_time_s / self.slots
                running = max(pod.in_flight - pod.held, 0.0)
                done = min(running, running * dt / self.service_time_s)
                if running - done < 0.5 and pod.pending <= 0:
                    done = running  # the fluid tail: a last fraction of a request completes
                pod.in_flight -= done
                pod.pending += arrivals.get(key, 0.0)
                admitted = min(pod.pending, self.slots - pod.in_flight)
                pod.pending -= admitted
                pod.in_flight += admitted
                # Little's law: the waiting requests accumulate pending x dt of queue time.
                pod.queue_us += pod.pending * dt * 1e6
                pod.compute_us += done * self.service_time_s * 1e6
                pod.success += done
                pod.request_us = pod.queue_us + pod.compute_us
                pod.latencies.record(now, done, wait_s=wait, service_s=self.service_time_s, first_s=first,
                                     per_token_s=per_token)
            for key, (pod, grace_s) in list(self.exiting.items()):
                if pod.pending + pod.in_flight <= 0:
                    del self.exiting[key]  # finished everything: Triton exits
                elif grace_s <= dt:
                    del self.exiting[key]
                    self._drop(pod, key, "past its exit timeout")
                else:
                    self.exiting[key] = (pod, grace_s - dt)

    def render(self, key: str, now: float | None = None) -> str | None:
        """The pod's /metrics: Triton's counters and gauges, its latency histogram and summary,
        TensorRT-LLM's (backend gauges, KV cache, its own histograms) and a DCGM GPU series."""
        now = time.time() if now is None else now
        with self.lock:
            pod = self.pods.get(key)
            if pod is None:
                return None
            labels = f'model="{self.model}",version="1"'
            lines = [
                "# HELP nv_inference_request_success Number of successful inference requests, all batch sizes",
                "# TYPE nv_inference_request_success counter",
                f"nv_inference_request_success{{{labels}}} {int(pod.success)}",
                "# HELP nv_inference_count Number of inferences performed",
                "# TYPE nv_inference_count counter",
                f"nv_inference_count{{{labels}}} {int(pod.success)}",
                "# HELP nv_inference_pending_request_count Instantaneous number of pending requests",
                "# TYPE nv_inference_pending_request_count gauge",
                f"nv_inference_pending_request_count{{{labels}}} {int(round(pod.pending))}",
                # The emulated engine is TensorRT-LLM-like: its in-flight batcher's gauges.
                "# HELP nv_trt_llm_request_metrics TRT LLM request metrics",
                "# TYPE nv_trt_llm_request_metrics gauge",
                f'nv_trt_llm_request_metrics{{{labels},request_type="active"}} {int(math.ceil(pod.in_flight))}',
                f'nv_trt_llm_request_metrics{{{labels},request_type="waiting"}} 0',
                f'nv_trt_llm_request_metrics{{{labels},request_type="max"}} {self.slots}',
                "# HELP nv_inference_exec_count Number of model executions performed",
                "# TYPE nv_inference_exec_count counter",
                f"nv_inference_exec_count{{{labels}}} {int(pod.success)}",
                "# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds",
                "# TYPE nv_inference_queue_duration_us counter",
                f"nv_inference_queue_duration_us{{{labels}}} {int(pod.queue_us)}",
                "# HELP nv_inference_compute_infer_duration_us Cumulative compute inference duration in microseconds",
                "# TYPE nv_inference_compute_infer_duration_us counter",
                f"nv_inference_compute_infer_duration_us{{{labels}}} {int(pod.compute_us)}",
                "# HELP nv_inference_request_duration_us Cumulative inference request duration in microseconds",
                "# TYPE nv_inference_request_duration_us counter",
                f"nv_inference_request_duration_us{{{labels}}} {int(pod.request_us)}",
                *pod.latencies.lines(self.model, now),
                *kv_cache_lines(self.model, pod.in_flight, self.slots),
                *dcgm_lines(pod.in_flight, self.slots, uuid=f"GPU-{abs(hash(key)) % 10**12:012d}",
                            hostname=key.split("/")[-1]),
            ]
        return "\n".join(lines) + "\n"

    def targets(self, address: str) -> list[Target]:
        with self.lock:
            return [
                Target(address=address, metrics_path=f"/metrics/{key}",
                       labels={"namespace": key.split("/")[0], "pod": key.split("/")[1],
                               "capacity_class": pod.capacity_class})
                for key, pod in sorted(self.pods.items())
            ]


def watch_pods(emulator: Emulator, core: client.CoreV1Api, changed: threading.Event, stop: threading.Event,
               *, timeout_s: int = 240) -> None:
    """Keep the emulator's pod set current: LIST once, then WATCH from its resourceVersion.

    The watch ends after `timeout_s` (server side) and resumes from the last resourceVersion seen;
    a 410 Gone or any other error starts over with a fresh LIST (after a short pause on errors).
    Sets `changed` whenever the scrape targets change. Runs until `stop` is set.
    """
    version: str | None = None
    while not stop.is_set():
        try:
            if version is None:
                resp = core.list_pod_for_all_namespaces(_preload_content=False,
                                                        _request_timeout=(5, 60))
                listing = json.loads(cast(Any, resp).data)
                version = listing["metadata"]["resourceVersion"]
                if emulator.sync_pods(listing["items"]):
                    changed.set()
            events = watch.Watch().stream(core.list_pod_for_all_namespaces,
                                          resource_version=version, allow_watch_bookmarks=True,
                                          timeout_seconds=timeout_s, _request_timeout=(5, timeout_s + 30),
                                          deserialize=False)
            for event in events:
                obj = event["object"]
                version = obj.get("metadata", {}).get("resourceVersion") or version
                if event["type"] in ("ADDED", "MODIFIED", "DELETED") and \
                        emulator.update_pod(obj, deleted=event["type"] == "DELETED"):
                    changed.set()
                if stop.is_set():
                    return
        except ApiException as exc:
            if exc.status != 410:  # 410 Gone: the version is too old, relist at once
                log.warning("pod watch failed (%s); listing again", exc.status)
                stop.wait(1.0)
            version = None
        except Exception:  # noqa: BLE001 - an API hiccup must not stop the metrics
            log.exception("pod watch failed; listing again")
            version = None
            stop.wait(1.0)


def serve(emulator: Emulator, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            key = self.path.removeprefix("/metrics/")
            body = emulator.render(key) if self.path.startswith("/metrics/") else None
            if self.path == "/stats":  # per service: done, dropped, queue time, serving (tests/chaos)
                body = json.dumps(emulator.stats())
            if body is None:
                self.send_error(404)
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:  # noqa: N802
            """PUT /load/<namespace>/<service> with a profile (e.g. `step:0=120`) changes the load now."""
            if not self.path.startswith("/load/"):
                self.send_error(404)
                return
            text = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            try:
                service, profile = parse_load(f"{self.path.removeprefix('/load/')}={text}")
            except (ValueError, OSError) as exc:
                self.send_error(400, str(exc))
                return
            emulator.set_load(service, profile)
            self.send_response(204)
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802
            """POST /hold/<namespace>/<pod> with a count pins that many requests in flight (0 frees)."""
            key = self.path.removeprefix("/hold/")
            count = float(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode() or 0)
            if not self.path.startswith("/hold/") or not emulator.hold(key, count):
                self.send_error(404)
                return
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpufleet-emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--file-sd", type=Path, required=True, help="directory for Prometheus file_sd JSON")
    parser.add_argument("--load", action="append", default=[], metavar="NS/SERVICE=PROFILE",
                        help="offered load, e.g. default/chat=step:0=20,60=100 or default/chat=trace:FILE:speedup")
    parser.add_argument("--in-tokens", type=float, default=512, help="mean prompt tokens per request")
    parser.add_argument("--out-tokens", type=float, default=128, help="mean generated tokens per request")
    parser.add_argument("--model", default="chat")
    parser.add_argument("--tick", type=float, default=1.0)
    parser.add_argument("--exit-timeout", type=float, default=30.0,
                        help="seconds a terminating pod finishes its requests (Triton's --exit-timeout-secs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config.load_kube_config(config_file=args.kubeconfig)
    loads = dict(parse_load(spec) for spec in args.load)
    replica = ReplicaModel()
    slots, service_time = replica_capacity(replica, args.in_tokens, args.out_tokens)
    emulator = Emulator(loads=loads, slots=slots, service_time_s=service_time, model=args.model,
                        first_token_s=float(replica.first_token_s(np.array([args.in_tokens]), replica.max_batch)[0]),
                        per_token_s=replica.itl(replica.max_batch), exit_timeout_s=args.exit_timeout)
    log.info("replica model: %d slots x %.2fs per request = %.0f req/s at full batch",
             slots, service_time, slots / service_time)
    server = serve(emulator, args.port)
    address = f"127.0.0.1:{server.server_address[1]}"
    log.info("serving per-pod metrics on %s, targets in %s", address, args.file_sd)
    write_file_sd(args.file_sd, SD_NAME, [])
    changed, stop = threading.Event(), threading.Event()
    threading.Thread(target=watch_pods, args=(emulator, client.CoreV1Api(), changed, stop), name="pod-watch",
                     daemon=True).start()
    last = time.monotonic()
    while True:
        if changed.is_set():
            changed.clear()
            write_file_sd(args.file_sd, SD_NAME, emulator.targets(address))
        now = time.monotonic()
        emulator.advance(time.time(), now - last)
        last = now
        time.sleep(max(0.0, args.tick - (time.monotonic() - now)))


if __name__ == "__main__":
    raise SystemExit(main())
