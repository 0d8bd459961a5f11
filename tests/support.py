"""Helpers shared by the test suites: waiting on a condition with a deadline (never a bare sleep),
the helm binary and the RBAC the chart must grant, the metric names the operator exports.

Builders of core values are in tests.builders, hypothesis strategies in tests.strategies, and
helpers that need the local cluster in tests.integration.support: test modules never import
each other."""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from gpufleet.telemetry import Telemetry

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
HELM = shutil.which("helm") or str(Path(os.environ.get("GPUFLEET_BIN", Path.home() / ".cache/gpufleet/bin")) / "helm")


def wait_for(predicate: Callable[[], T], *, timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


# Exactly what the operator (gpufleet.adapters.kube, gpufleet.kopf_app) and kopf call. A new API call
# in the code needs a rule here and in templates/rbac.yaml, on purpose. On namespaced resources (a
# Role per watched namespace when the chart's watchNamespaces is set) and on cluster-scoped ones
# (read-only, always in the ClusterRole).
NAMESPACED_RULES = {
    ("gpufleet.io", "inferenceservices"): {"list", "watch", "patch"},
    ("gpufleet.io", "inferenceservices/status"): {"patch"},
    ("gpufleet.io", "inferenceservices/finalizers"): {"update"},
    ("apps", "deployments"): {"get", "create", "patch", "list", "watch"},
    ("apps", "deployments/scale"): {"patch"},
    ("", "services"): {"get", "create", "patch"},
    ("policy", "poddisruptionbudgets"): {"get", "create", "patch"},
    ("", "pods"): {"list", "watch", "patch"},
    ("", "pods/eviction"): {"create"},
    ("autoscaling", "horizontalpodautoscalers"): {"list", "watch"},
    ("keda.sh", "scaledobjects"): {"list", "watch"},
    ("", "events"): {"create"},
}
CLUSTER_RULES = {
    ("", "nodes"): {"list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("gpufleet.io", "gpuquotas"): {"list", "watch"},
    ("gpufleet.io", "gpuquotas/status"): {"patch"},  # a GPUQuota's arbitration (docs/quotas.md)
}
BASE_RULES = {**NAMESPACED_RULES, **CLUSTER_RULES}


def exported_names() -> set[str]:
    names = set()
    for family in Telemetry().registry.collect():
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
    return names


@contextlib.contextmanager
def https_server(handler: type[http.server.BaseHTTPRequestHandler], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTPS server answering with `handler`, its certificate self-signed for 127.0.0.1
    by openssl; yields (its URL, the certificate to verify it with)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with http_server(handler, tls=context) as url:
        yield url, cert


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler],
                tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """A loopback HTTP(S) server answering with `handler` in a thread; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
