"""A scale-in drain never cuts a request that a real Triton is executing (issue 15, item 5).

Triton exposes no gauge of executing requests: `nv_inference_pending_request_count` counts queued
ones only and the counters (`nv_inference_exec_count`, `..._request_success`, durations) move when
an execution completes. So:

1. the per-pod in-flight reading (what a draining pod is released on, when it reads <= 0) counts a
   pod busy while requests are queued on it or an execution finished on it within the idle window:
   shown here on a real Triton (a Python model that sleeps 5 s) scraped by a real Prometheus, in both
   query forms (per service and batched), against the pending-only reading it replaces;
2. a request that no metric shows (the pod finished nothing for a while before it) is protected by
   graceful termination: on SIGTERM, what the kubelet sends when the released pod is deleted, Triton
   refuses new requests and finishes the executing one (the operator's grace period outlasts
   Triton's exit timeout, gpufleet.adapters.manifests.serving_defaults).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http

from gpufleet.adapters.fleet_metrics import FleetQueries, ServiceMetrics
from gpufleet.adapters.metrics import PrometheusMetrics, metrics_port
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.devenv import prometheus as devprom
from gpufleet.devenv import triton as devtriton
from tests.support import ROOT, wait_for

pytestmark = [pytest.mark.triton, pytest.mark.prometheus]

NAMESPACE, SERVICE, POD = "default", "chat", "chat-ondemand-0"
SERVICE_TIME_S = 5.0
# One request per execution, one instance: a second request waits while the first executes.
LONG = devtriton.ModelSpec("long", service_time_s=SERVICE_TIME_S, max_batch_size=1)
SCRAPE_S = 1.0
IDLE_WINDOW_S = 30.0  # gpufleet.adapters.metrics.IDLE_WINDOW
SPEC = InferenceServiceSpec.model_validate({
    "model": {"name": LONG.name, "backend": "triton"},
    "template": {"spec": {"containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver"}]}},
})


@pytest.fixture(scope="module")
def triton_runtime() -> devtriton.TritonRuntime:
    try:
        return devtriton.ensure_runtime()
    except Exception as exc:  # noqa: BLE001 - a failure, never a skip
        pytest.fail(f"cannot install the Triton runtime venv ({devtriton.runtime_venv()}): {exc}")


@pytest.fixture(scope="module")
def prometheus_binary() -> None:
    if not devprom.is_available():
        proc = subprocess.run([str(ROOT / "hack/deps.sh")], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not devprom.is_available():
            pytest.fail(f"prometheus not installed and hack/deps.sh failed ({proc.returncode}): {proc.stderr[-2000:]}")


@pytest.fixture(scope="module")
def triton(triton_runtime: devtriton.TritonRuntime) -> Iterator[devtriton.TritonServer]:
    with devtriton.TritonServer([LONG], runtime=triton_runtime) as server:
        yield server


@pytest.fixture(scope="module")
def prometheus(prometheus_binary: None, triton: devtriton.TritonServer) -> Iterator[devprom.PrometheusServer]:
    target = devprom.Target(triton.metrics_address, {"namespace": NAMESPACE, "pod": POD})
    with devprom.PrometheusServer(scrape_interval_s=SCRAPE_S, static_targets=[target]) as prom:
        prom.wait_for_targets(1, timeout_s=30)
        yield prom


def one_input(value: float) -> Any:
    inp = triton_http.InferInput("INPUT0", [1, 1], "FP32")
    inp.set_data_from_numpy(np.array([[value]], dtype=np.float32))
    return inp


def send(triton: devtriton.TritonServer, outputs: dict[float, float], done: dict[float, float],
         value: float) -> None:
    """One request with input `value`, from its own thread: fills in outputs[value] and done[value]
    (its completion time, also when it failed). tritonclient's async results cannot be collected
    from other threads."""

    def infer() -> None:
        client = triton_http.InferenceServerClient(triton.http_address, network_timeout=60)
        try:
            result = client.infer(LONG.name, [one_input(value)])
            outputs[value] = float(result.as_numpy("OUTPUT0")[0, 0])
        except Exception:  # noqa: BLE001 - a cut request: recorded as no output
            pass
        finally:
            done[value] = time.time()
            client.close()

    threading.Thread(target=infer, daemon=True).start()


def executions(triton: devtriton.TritonServer) -> int:
    """Batches the model has begun to execute (it logs each, devenv.triton's generated model.py)."""
    return triton.log_path.read_text(errors="replace").count("executing a batch of")


def send_two(triton: devtriton.TritonServer) -> tuple[dict[float, float], dict[float, float]]:
    """Input 1.0, and once it executes, 2.0, which waits behind it: {input: output} and {input:
    completion time}. The second is sent only after the first executes: the dynamic batcher's
    queue gauge also counts a request on its way to the instance, so `pending == 1` after sending
    both at once does not prove that both have arrived (make test once SIGTERMed the server before
    the second request got there)."""
    outputs: dict[float, float] = {}
    done: dict[float, float] = {}
    before = executions(triton)
    send(triton, outputs, done, 1.0)
    wait_for(lambda: executions(triton) > before, timeout=10, interval=0.1, what="the first request executing")
    send(triton, outputs, done, 2.0)
    wait_for(lambda: triton_metric(triton, "nv_inference_pending_request_count") == 1.0, timeout=10,
             interval=0.1, what="the second request queued behind the executing one")
    return outputs, done


def triton_metric(triton: devtriton.TritonServer, name: str) -> float | None:
    with urllib.request.urlopen(f"http://{triton.metrics_address}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f"{name}{{") and f'model="{LONG.name}"' in line:
                return float(line.rsplit(" ", 1)[1])
    return None


def pending_only(url: str) -> float | None:
    """The former in-flight reading: the queue gauge alone."""
    query = f'sum by (pod) (nv_inference_pending_request_count{{namespace="{NAMESPACE}",pod="{POD}"}})'
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}", timeout=5) as resp:
        result = json.load(resp)["data"]["result"]
    return float(result[0]["value"][1]) if len(result) == 1 else None


def test_in_flight_reads_busy_until_the_executing_request_completes(
        triton: devtriton.TritonServer, prometheus: devprom.PrometheusServer) -> None:
    single = metrics_port(SPEC, namespace=NAMESPACE, name=SERVICE, default_url=prometheus.url)
    assert isinstance(single, PrometheusMetrics)
    batched = ServiceMetrics(FleetQueries(prometheus.url, max_age_s=0.0), namespace=NAMESPACE, name=SERVICE,
                             spec=SPEC)

    def readings() -> tuple[float | None, float | None]:
        return single.per_pod("in_flight").get(POD), batched.per_pod("in_flight").get(POD)

    # Idle to begin with (increase() needs two samples in its window).
    wait_for(lambda: readings() == (0.0, 0.0), timeout=30, what="an idle reading")

    outputs, done = send_two(triton)
    # One request waits behind the other: busy from the first scrape that sees it.
    wait_for(lambda: all(v is not None and v > 0 for v in readings()), timeout=10, interval=0.2,
             what="a busy reading")
    seen: list[tuple[float, float | None, float | None, float | None]] = []  # (time, single, batched, old)
    while len(done) < 2:
        seen.append((time.time(), *readings(), pending_only(prometheus.url)))
        assert time.time() < seen[0][0] + 4 * SERVICE_TIME_S, "the requests never completed"
        time.sleep(0.2)
    assert outputs == {1.0: 1.0, 2.0: 2.0}
    first_done, last_done = sorted(done.values())
    assert last_done - first_done >= SERVICE_TIME_S - 0.5, "one executed after the other"
    # Busy in both forms for the whole time a request was queued or executing ...
    assert all(s is not None and s >= 1 and b is not None and b >= 1 for _, s, b, _ in seen), seen
    # ... including while the second executed alone, when the queue gauge (the former reading) said idle.
    executing_second = [old for t, _, _, old in seen if first_done + 2 * SCRAPE_S < t < last_done]
    assert executing_second and 0.0 in executing_second, (done, seen)

    # Idle again only once no execution finished for the idle window (after b completed).
    wait_for(lambda: readings() == (0.0, 0.0), timeout=IDLE_WINDOW_S + 15, what="idle after the window")
    assert time.time() - last_done >= IDLE_WINDOW_S - 2 * SCRAPE_S - 1


def test_sigterm_lets_the_executing_request_finish(triton_runtime: devtriton.TritonRuntime) -> None:
    """What happens when a released pod is deleted: the kubelet SIGTERMs Triton (its main process)."""
    exit_timeout_s = 20
    server = devtriton.TritonServer([LONG], runtime=triton_runtime, exit_timeout_s=exit_timeout_s).start()
    try:
        outputs, done = send_two(server)  # one executing (no metric counts it), one queued
        assert triton_metric(server, "nv_inference_exec_count") == 0.0  # nothing completed: invisible
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.time()
        # New requests are refused at once ...
        late = triton_http.InferenceServerClient(server.http_address, network_timeout=10)
        with pytest.raises(Exception):  # noqa: B017 - refused or closed: either way, not served
            late.infer(LONG.name, [one_input(3.0)])
        late.close()
        # ... while the executing request completes, after the signal, with its answer.
        wait_for(lambda: len(done) == 2, timeout=3 * SERVICE_TIME_S, interval=0.1, what="both requests to end")
        first = min(done, key=lambda v: done[v])
        assert done[first] > signalled, (done, signalled)
        assert outputs == {1.0: 1.0, 2.0: 2.0}  # the queued one is served too
        # Triton then exits by itself, within its exit timeout (the grace period outlasts it).
        server.proc.wait(timeout=exit_timeout_s + 10)
    finally:
        server.stop()
