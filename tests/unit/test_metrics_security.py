"""Security of the metrics adapter (issue 17): label values escaped and matched exactly, checked in
Prometheus' own engine (`promtool test rules`: its parser, RE2 and anchoring); the operator's
allow-list for spec.metrics.prometheusUrl; TLS verified by default; failures summarised (never the
URL, the query or the answer's body) in status and Events, with the same text for the same cause."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gpufleet.adapters.fleet_metrics import BATCHED_QUERIES, FleetQueries, ServiceMetrics, fleet_metrics_port
from gpufleet.adapters.metrics import (
    NOT_ALLOWED,
    NoMetrics,
    PrometheusMetrics,
    UrlPolicy,
    UrlRule,
    metrics_port,
    pod_regex,
    promql_string,
    queries_for,
    re2_quote,
)
from gpufleet.adapters.wiring import ClusterWiring
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.control.service import ServiceLoop, Settings
from gpufleet.core.types import Observation
from tests.builders import make_spec
from tests.fakes import RecordingKube, pod
from tests.support import http_server, https_server

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")


def spec(model: str = "chat", **extra: Any) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": model}, "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}, **extra})


# --- promtool ------------------------------------------------------------------------------------


def literal(value: str) -> str:
    """A PromQL string literal written independently of promql_string: every character that is not
    a letter or digit as a \\u / \\U escape (what Go's strconv.Unquote, and so PromQL, reads back)."""
    out = []
    for ch in value:
        if ch.isascii() and ch.isalnum():
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def labels(**values: str) -> str:
    return "{" + ",".join(f"{k}={literal(v)}" for k, v in values.items()) + "}"


def promtool(tmp_path: Path, input_series: list[dict[str, str]], tests: list[dict[str, Any]],
             interval: str = "15s") -> subprocess.CompletedProcess[str]:
    """`promtool test rules` on synthetic series: each test's expression evaluated in Prometheus'
    engine and compared with its expected samples (exactly: no series more, none less)."""
    assert PROMTOOL is not None
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": []}))
    test = tmp_path / "test.yml"
    # PyYAML escapes what YAML cannot hold raw (control characters); JSON's surrogate pairs for
    # characters beyond the BMP are something Go's YAML parser refuses.
    test.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": interval, "tests": [
        {"interval": interval, "input_series": input_series, "promql_expr_test": tests}]},
        allow_unicode=True, width=1 << 30), encoding="utf-8")
    return subprocess.run([PROMTOOL, "test", "rules", str(test)], capture_output=True, text=True, timeout=120)


# --- literals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [
    ("chat", '"chat"'),
    ('a"b', '"a\\"b"'),
    ("a\\b", '"a\\\\b"'),
    ("a\nb", '"a\\nb"'),
    ("a\tb\r", '"a\\tb\\r"'),
    ("a\x00b\x7f", '"a\\x00b\\x7f"'),
    ("}é🙂", '"}é🙂"'),
])
def test_promql_string(value: str, expected: str) -> None:
    assert promql_string(value) == expected


def test_re2_quote_escapes_exactly_go_quotemeta() -> None:
    assert re2_quote("a.b+c*d?e(f)g|h[i]j{k}l^m$n\\o") == "a\\.b\\+c\\*d\\?e\\(f\\)g\\|h\\[i\\]j\\{k\\}l\\^m\\$n\\\\o"
    assert re2_quote("a b\n-#&~:") == "a b\n-#&~:"  # not special in RE2: left as they are


@needs_promtool
def test_a_regex_must_also_be_a_promql_string(tmp_path: Path) -> None:
    """Why both steps: a regex-escaped value pasted between quotes (`pod=~"a\\.b"`) is not a PromQL
    string (PromQL knows no `\\.` escape) and the query does not parse; through promql_string it does,
    and selects exactly `a.b`, not `axb`."""
    series = [{"series": 'm{pod="a.b"}', "values": "1x10"}, {"series": 'm{pod="axb"}', "values": "2x10"}]
    ok = {"expr": f"m{{pod=~{promql_string(re2_quote('a.b'))}}}", "eval_time": "1m",
          "exp_samples": [{"labels": 'm{pod="a.b"}', "value": 1}]}
    assert promtool(tmp_path, series, [ok]).returncode == 0
    naive = {**ok, "expr": f'm{{pod=~"{re.escape("a.b")}"}}'}
    proc = promtool(tmp_path, series, [naive])
    assert proc.returncode != 0 and "unknown escape sequence" in proc.stdout + proc.stderr


# --- exact selection, in Prometheus' engine ------------------------------------------------------

TOKENS = ['"', "\\", "}", "{", "\n", "\t", "\r", "\x00", ".", "*", "+", "?", "(", ")", "|", "[", "]", "^", "$",
          "-", ",", "=", "~", " ", "a", "b", "x", "é", "🙂", "ondemand", "spot", "-spot-", "-ondemand-",
          "5d9f7c8b6", '\\"', "$service", "${sel}"]
NAMES = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=6).map("".join)
POD_TAILS = ("-ondemand-5d9f7c8b6-x2k4q", "-spot-7b4c9d8f5-q9z8w", "-ondemand-0")


def own_pods(service: str) -> list[str]:
    return [service + tail for tail in POD_TAILS]


def selection_case(services: list[tuple[str, str]]) -> tuple[list[dict[str, str]], dict[int, dict[str, Any]]]:
    """Series for every service's pods, each with every model and in two namespaces, each series a
    power of two: a sum tells exactly which series were selected. Returns the series and, per
    service, the bits of its own series and its own pods."""
    models = sorted({m for _, m in services})
    series, truth, bit = [], {}, 0
    for i, (service, model) in enumerate(services):
        mine = 0
        for name in own_pods(service):
            for m in models:
                for namespace in ("ns", "ns-other"):
                    series.append({"series": "nv_inference_pending_request_count"
                                             + labels(namespace=namespace, pod=name, model=m),
                                   "values": f"{2 ** bit}x40"})
                    if namespace == "ns" and m == model:
                        mine += 2 ** bit
                    bit += 1
        truth[i] = {"sum": mine, "pods": own_pods(service)}
    return series, truth


@needs_promtool
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(services=st.lists(st.tuples(NAMES, NAMES), min_size=2, max_size=3, unique_by=lambda s: s[0]))
@example(services=[("chat", "m"), ("chat-spot", "m")])
@example(services=[("chat.v1", "m"), ("chat-v1", "m")])  # `.` unescaped took the other's pods
@example(services=[("a", 'm"}'), ("b", 'm"}) or vector(1) or x{a="')])  # a quote closed the literal
def test_built_in_queries_select_exactly_the_service(tmp_path: Path, services: list[tuple[str, str]]) -> None:
    """Adversarial service and model names (quotes, backslashes, `}`, newlines, regex metacharacters,
    template syntax): every built-in query parses in Prometheus, and the sums, the per-pod reads and
    the user's templated overrides select exactly that service's series, never another's."""
    series, truth = selection_case(services)
    tests = []
    override = ('sum(nv_inference_pending_request_count{namespace="$namespace",pod=~"$pod_re",model="$model"})'
                ' + 0 * sum(nv_inference_pending_request_count{model=~"$model_re",pod=~"$service_re-.*"})')
    for i, (service, model) in enumerate(services):
        q = queries_for(spec(model), namespace="ns", name=service)
        custom = queries_for(spec(model, metrics={"queries": {"queueDepth": override}}), namespace="ns", name=service)
        pods = [{"labels": labels(pod=p), "value": 600} for p in truth[i]["pods"]]
        tests += [
            {"expr": q["queue_depth"], "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": truth[i]["sum"]}]},
            {"expr": custom["queue_depth"], "eval_time": "10m",
             "exp_samples": [{"labels": "{}", "value": truth[i]["sum"]}]},
            {"expr": q["reporting"], "eval_time": "10m", "exp_samples": pods},
            {"expr": q["sampled_at"], "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": 600}]},
        ]
        # Every other built-in query parses (a bad literal fails the whole file).
        tests += [{"expr": f"count({q[k]}) or vector(0)", "eval_time": "10m",
                   "exp_samples": [{"labels": "{}", "value": 0}]}
                  for k in ("queue_time_ms", "request_rate", "in_flight")]
    proc = promtool(tmp_path, series, tests)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@st.composite
def dns_names(draw: st.DrawFn, max_size: int) -> str:
    """Service names as Kubernetes allows them for an InferenceService (its Service child: a DNS-1035
    label), built from parts that make prefixes of one another likely."""
    parts = draw(st.lists(st.sampled_from(["chat", "spot", "ondemand", "v2", "bcd", "x", "7", "llm"]),
                          min_size=1, max_size=8))
    name = "-".join(parts)[:max_size].strip("-")
    return name if name and name[0].isalpha() else "a" + name[: max_size - 1]


def k8s_pod_names(service: str, capacity_class: str) -> list[str]:
    """Names the ReplicaSet controller gives the class's pods: generateName `<rs>-` cut to 58
    characters plus 5 random ones; pod-template hashes of 10 and 9 characters."""
    return [f"{service}-{capacity_class}-{h}-"[:58] + "x2k4q" for h in ("5d9f7c8b6b", "7b4c9d8f5")]


@settings(max_examples=300, deadline=None)
@given(a=dns_names(36), b=dns_names(63))
def test_pod_names_of_one_service_never_match_another(a: str, b: str) -> None:
    """With the real naming of pods (truncation included), a service's pod regex (the same pattern
    Prometheus anchors) matches its own pods and never those of another service, for names of up to
    36 characters (docs/metrics.md: longer ones can share a 58-character cut with a sibling)."""
    if a == b:
        return
    for cls in ("ondemand", "spot"):
        for name in k8s_pod_names(a, cls):
            assert re.fullmatch(pod_regex(a), name), (a, name)
        for name in k8s_pod_names(b, cls):
            assert not re.fullmatch(pod_regex(a), name), (a, b, name)


def test_batched_queries_carry_no_names() -> None:
    """The batched queries are the same text whatever the services: nothing to escape."""
    for key, query in BATCHED_QUERIES.items():
        assert "$" not in query.replace('"$1"', ""), key


# --- the allow-list ------------------------------------------------------------------------------

DEFAULT = "http://prometheus.monitoring.svc:9090"


@pytest.mark.parametrize("allow,url,permitted", [
    ([], DEFAULT, True),  # the operator's own default
    ([], DEFAULT + "/", True),
    ([], "http://PROMETHEUS.monitoring.svc:9090", True),
    ([], "http://other.monitoring.svc:9090", False),  # default: nothing else
    ([], "http://169.254.169.254/latest/meta-data", False),
    (["thanos.example.com"], "https://thanos.example.com", True),
    (["thanos.example.com"], "http://thanos.example.com:10902/x", True),
    (["thanos.example.com"], "https://thanos.example.com.evil.io", False),
    (["thanos.example.com"], "https://evil.io/thanos.example.com", False),
    (["thanos.example.com"], "https://thanos.example.com@evil.io", False),
    (["thanos.example.com"], "https://evil.io#@thanos.example.com", False),
    (["thanos.example.com"], "https://user:pw@thanos.example.com", False),  # no credentials in specs
    (["thanos.example.com"], "ftp://thanos.example.com", False),
    (["thanos.example.com"], "file:///etc/passwd", False),
    (["thanos.example.com:9090"], "http://thanos.example.com:9090", True),
    (["thanos.example.com:9090"], "http://thanos.example.com:9091", False),
    (["thanos.example.com:9090"], "http://thanos.example.com", False),
    (["*.monitoring.svc"], "http://prom.monitoring.svc:9090", True),
    (["*.monitoring.svc"], "http://monitoring.svc", False),
    (["*.monitoring.svc"], "http://prom.monitoring.svc.evil.io", False),
    (["https://mimir.example.com/prometheus"], "https://mimir.example.com/prometheus", True),
    (["https://mimir.example.com/prometheus"], "https://mimir.example.com/prometheus/tenant-a", True),
    (["https://mimir.example.com/prometheus"], "https://mimir.example.com:443/prometheus", True),
    (["https://mimir.example.com/prometheus"], "https://mimir.example.com/prometheus-admin", False),
    (["https://mimir.example.com/prometheus"], "https://mimir.example.com/prometheus/../admin", False),
    (["https://mimir.example.com/prometheus"], "https://mimir.example.com/prometheus/%2e%2e/admin", False),
    (["https://mimir.example.com/prometheus"], "http://mimir.example.com/prometheus", False),  # scheme
    (["https://mimir.example.com/prometheus"], "https://mimir.example.com:8443/prometheus", False),
    (["https://mimir.example.com/prometheus"], "https://mimir.example.com/prometheus?x=1", False),
    (["https://mimir.example.com/prometheus"], "https://mimir.example.com/prometheus\n", False),
    (["*"], "http://anything.example:1234/x", True),
    (["*"], "gopher://anything.example", False),
])
def test_allow_list(allow: list[str], url: str, permitted: bool) -> None:
    assert UrlPolicy.of(allow, DEFAULT).permits(url) is permitted


@pytest.mark.parametrize("entry", ["foo bar", "http://", "ftp://x", "https://u:p@x", "a:b:c", "x:port", ""])
def test_allow_list_entries_that_cannot_be_read_are_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        UrlRule.parse(entry)


def test_a_spec_url_the_operator_does_not_allow_is_never_queried() -> None:
    shared: dict[str, FleetQueries] = {}
    own = spec(metrics={"prometheusUrl": "http://attacker.example:80/"})
    port = fleet_metrics_port(own, namespace="a", name="chat", default_url=DEFAULT, shared=shared,
                              policy=UrlPolicy.of([], DEFAULT))
    # Not the default instead either: the spec asked for another Prometheus.
    assert isinstance(port, NoMetrics) and port.summary() == NOT_ALLOWED and shared == {}
    assert "spec.metrics.prometheusUrl" in port.summary() and "attacker" not in port.summary()
    # Without a policy, only the default URL is allowed.
    assert isinstance(metrics_port(own, namespace="a", name="chat", default_url=DEFAULT), NoMetrics)
    allowed = metrics_port(own, namespace="a", name="chat", default_url=DEFAULT,
                           policy=UrlPolicy.of(["attacker.example"], DEFAULT))
    assert isinstance(allowed, PrometheusMetrics) and allowed.url == "http://attacker.example:80"


def test_a_refused_url_holds_capacity_and_says_why_in_status() -> None:
    """On the cluster's wiring: four serving pods, no load to read; the refused URL is reported in
    MetricsAvailable, the service is in safe mode and keeps its four pods."""
    kube = RecordingKube(pods={f"chat-{i}": pod(f"chat-{i}", serving=True) for i in range(4)},
                         deployments={"chat-ondemand": 4})
    wiring = ClusterWiring(kube=lambda: kube, namespace="ns", name="chat", snapshot=kube.snapshot,  # type: ignore[arg-type,return-value]
                           prometheus_url=DEFAULT)
    loop = ServiceLoop(name="chat", wiring=wiring, settings=Settings())
    s = make_spec(metrics={"prometheusUrl": "http://10.0.0.1:9090"},
                  scaling={"scaleDown": {"stabilizationSeconds": 0, "maxStepPercent": 100}},
                  capacity={"spot": {"enabled": False}}, warmPool={"size": 0, "max": 0})
    status: dict[str, Any] = {}
    now = 1_767_225_900.0  # 2026-01-01T00:05:00Z, after the pods turned Ready
    warnings = []
    for t in range(5):
        loop.configure(s, now + 10 * t)
        outcome = loop.tick(status, 1, now=now + 10 * t)
        status = {**status, **(outcome.status or {})}
        loop.confirm(outcome)
        warnings += [e for e in outcome.events if e.type == "Warning"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["MetricsAvailable"]["status"] == "False"
    assert "spec.metrics.prometheusUrl is not allowed" in conditions["MetricsAvailable"]["message"]
    assert conditions["Degraded"]["reason"] == "SafeMode"
    assert status["lastDecision"]["desired"] == 4 and kube.deployments["chat-ondemand"] == 4
    assert not [c for c in kube.calls if c[0] in ("patch", "evict", "scale")]
    assert [w.reason for w in warnings] == ["MetricsUnavailable"] and "10.0.0.1" not in warnings[0].message


# --- TLS -------------------------------------------------------------------------------------------


class PromHandler(http.server.BaseHTTPRequestHandler):
    """Answers /api/v1/query like Prometheus: one series, the time now for the query `ts`, else 7."""

    def do_GET(self) -> None:  # noqa: N802
        value = str(time.time()) if "query=ts" in self.path else "7"
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [time.time(), value]}]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Prometheus-like HTTPS endpoint with a self-signed certificate; yields (URL, its CA file)."""
    with https_server(PromHandler, tmp_path) as served:
        yield served


def tls_ports(url: str, ca: str | None) -> list[PrometheusMetrics | ServiceMetrics]:
    single = PrometheusMetrics(url=url, queries={"sampled_at": "ts", "queue_depth": "x", "queue_time_ms": "x",
                                                 "request_rate": "x"}, stale_after_s=60, timeout_s=2, ca_bundle=ca)
    batched = ServiceMetrics(FleetQueries(url, timeout_s=2, ca_bundle=ca), namespace="a", name="chat", spec=spec())
    return [single, batched]


def test_tls_is_verified_by_default(https_prometheus: tuple[str, Path]) -> None:
    url, _ = https_prometheus
    for port in tls_ports(url, None):
        assert port.observe(now=time.time()) == Observation() and not port.available
        assert port.summary().startswith("sampled_at: Prometheus TLS certificate not trusted"), port.summary()


def test_tls_verified_against_the_configured_ca_bundle(https_prometheus: tuple[str, Path]) -> None:
    url, ca = https_prometheus
    single, _ = tls_ports(url, str(ca))
    observation = single.observe(now=time.time())
    assert observation.queue_depth == 7.0 and single.available, single.summary()


def test_the_wiring_passes_the_ca_bundle_through(https_prometheus: tuple[str, Path]) -> None:
    url, ca = https_prometheus
    kube = RecordingKube()
    wiring = ClusterWiring(kube=lambda: kube, namespace="a", name="chat", snapshot=kube.snapshot,  # type: ignore[arg-type,return-value]
                           prometheus_url=url, prometheus_ca_bundle=str(ca))
    port = wiring.metrics(spec())
    assert isinstance(port, ServiceMetrics) and port.fleet.ca_bundle == str(ca)
    wiring.release(port)


# --- what reaches status and Events ----------------------------------------------------------------

SECRET = "s3cr3t-token"


class FailingHandler(http.server.BaseHTTPRequestHandler):
    mode = "503"

    def do_GET(self) -> None:  # noqa: N802
        mode = type(self).mode
        if mode == "slow":
            time.sleep(3)
        if mode == "bad_data":
            body = json.dumps({"status": "error", "errorType": "bad_data",
                               "error": f"parse error near {SECRET} in {self.path}"}).encode()
            code = 400
        elif mode == "html":
            body, code = f"<html>{SECRET} login</html>".encode(), 200
        else:
            body, code = f"upstream {SECRET} down at {self.path}".encode(), 503
        try:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (timeout)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_prometheus() -> Iterator[tuple[str, type[FailingHandler]]]:
    handler = type("Handler", (FailingHandler,), {})
    with http_server(handler) as url:
        yield url, handler


def dead_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("mode,cause", [
    ("503", "Prometheus answered HTTP 503"),
    ("bad_data", "Prometheus query error: bad_data (HTTP 400)"),
    ("html", "Prometheus answer unreadable (not the Prometheus API?)"),
    ("slow", "Prometheus timeout after 1s"),
    ("refused", "Prometheus unreachable (connection refused)"),
])
def test_failures_are_summarised_without_url_query_or_body(
        failing_prometheus: tuple[str, type[FailingHandler]], mode: str, cause: str) -> None:
    url, handler = failing_prometheus
    handler.mode = mode
    if mode == "refused":
        url = dead_url()
    s = spec("model-with-a-name")
    single = PrometheusMetrics(url=url, queries=queries_for(s, namespace="team-a", name="chat"),
                               stale_after_s=60, timeout_s=1.0)
    batched = ServiceMetrics(FleetQueries(url, timeout_s=1.0, max_age_s=0), namespace="team-a", name="chat", spec=s)
    for port in (single, batched):
        summaries = []
        for t in range(2):
            assert port.observe(now=time.time() + t) == Observation() and not port.available
            summaries.append(port.summary())
        # The cause and since when it lasts (first seen: the same text on the next tick).
        assert summaries[0] == summaries[1]
        assert summaries[0].startswith(f"sampled_at: {cause} (since 20") and \
            summaries[0].endswith("Z) (details in the operator log)"), summaries[0]
        for leak in (url, "127.0.0.1", SECRET, "nv_inference", "model-with-a-name", "team-a", "api/v1"):
            assert leak not in summaries[0], (leak, summaries[0])


def test_an_outage_posts_one_warning_and_no_url_in_status_or_events() -> None:
    """The issue's report: 9 Warnings in 45 s, each with the full URL and query. Now: one Warning,
    and neither the Warning nor the status carry the URL or the query."""
    url = dead_url()
    kube = RecordingKube(pods={"chat-a": pod("chat-a", serving=True)}, deployments={"chat-ondemand": 1})
    wiring = ClusterWiring(kube=lambda: kube, namespace="ns", name="chat", snapshot=kube.snapshot,  # type: ignore[arg-type,return-value]
                           prometheus_url=url)
    loop = ServiceLoop(name="chat", wiring=wiring, settings=Settings())
    s = make_spec(scaling={"intervalSeconds": 5}, capacity={"spot": {"enabled": False}})
    status: dict[str, Any] = {}
    events = []
    now = 1_767_225_900.0
    for t in range(9):
        loop.configure(s, now + 5 * t)
        outcome = loop.tick(status, 1, now=now + 5 * t)
        status = {**status, **(outcome.status or {})}
        loop.confirm(outcome)
        events += list(outcome.events)
    loop.close()
    warnings = [e for e in events if e.type == "Warning"]
    assert [w.reason for w in warnings] == ["MetricsUnavailable"]
    text = json.dumps(status) + " ".join(e.message for e in events)
    for leak in (url, "127.0.0.1", "nv_inference", "HTTPConnectionPool", "api/v1/query"):
        assert leak not in text, leak
    # sampled_at (observe) and in_flight (the drain's per-pod read): one cause, named once.
    message = {c["type"]: c for c in status["conditions"]}["MetricsAvailable"]["message"]
    assert message == ("in_flight, sampled_at: Prometheus unreachable (connection refused) (since 2026-01-01T00:05:00Z)"
                       " (details in the operator log)")
    assert warnings[0].message == message


# --- the operator's flags and the chart's values -----------------------------------------------------


def operator_args(*argv: str) -> Any:
    import argparse

    from gpufleet import cli

    args = argparse.Namespace(prometheus_url=None, prometheus_url_allow=None, prometheus_ca_bundle=None)
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        key = flag.removeprefix("--").replace("-", "_")
        if key == "prometheus_url_allow":
            args.prometheus_url_allow = [*(args.prometheus_url_allow or []), value]
        else:
            setattr(args, key, value)
    return cli.prometheus_options(args)


def test_flags_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpufleet import cli

    assert operator_args() == ((), None)
    assert operator_args("--prometheus-url-allow", "a.example, *.b.example",
                         "--prometheus-url-allow", "https://c.example/x") == \
        (("a.example", "*.b.example", "https://c.example/x"), None)
    monkeypatch.setenv(cli.ALLOW_ENV, "env.example")
    assert operator_args()[0] == ("env.example",)
    assert operator_args("--prometheus-url-allow", "flag.example")[0] == ("flag.example",)  # the flag wins
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv(cli.CA_BUNDLE_ENV, str(ca))
    assert operator_args()[1] == str(ca)
    for bad in (("--prometheus-url-allow", "not a host"), ("--prometheus-ca-bundle", str(tmp_path / "missing")),
                ("--prometheus-url", "ftp://prom")):
        with pytest.raises(ValueError):
            operator_args(*bad)
    proc = subprocess.run([sys.executable, "-m", "gpufleet.cli", "operator", "--prometheus-url-allow", "a b"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a host" in proc.stderr


def helm_template(*sets: str) -> subprocess.CompletedProcess[str]:
    from tests.support import HELM, ROOT

    if not Path(HELM).exists():
        pytest.skip("helm not built: run `make bins`")
    args = [HELM, "template", "rel", str(ROOT / "charts" / "gpufleet"), "-n", "gf", "--kube-version", "1.33.0"]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def operator_container(*sets: str) -> tuple[dict[str, Any], dict[str, Any]]:
    proc = helm_template(*sets)
    assert proc.returncode == 0, proc.stderr
    deployment = next(d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "Deployment")
    pod_spec = deployment["spec"]["template"]["spec"]
    return pod_spec["containers"][0], pod_spec


def test_chart_default_allows_nothing_more_and_mounts_no_ca() -> None:
    container, pod_spec = operator_container("operator.prometheusUrl=https://prom.monitoring.svc:9090")
    assert not [a for a in container["args"] if a.startswith(("--prometheus-url-allow", "--prometheus-ca-bundle"))]
    assert "prometheus-ca" not in {v["name"] for v in pod_spec["volumes"]}


@pytest.mark.parametrize("source", ["configMap", "secret"])
def test_chart_allow_list_and_ca_bundle(source: str) -> None:
    container, pod_spec = operator_container(
        "operator.prometheusUrlAllow={https://thanos.example.com/tenant,*.monitoring.svc}",
        f"operator.prometheusCA.{source}=prom-ca", "operator.prometheusCA.key=bundle.pem")
    assert [a for a in container["args"] if a.startswith("--prometheus")] == [
        "--prometheus-url-allow=https://thanos.example.com/tenant", "--prometheus-url-allow=*.monitoring.svc",
        "--prometheus-ca-bundle=/etc/gpufleet-prometheus-ca/bundle.pem"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "prometheus-ca")
    assert mount == {"name": "prometheus-ca", "mountPath": "/etc/gpufleet-prometheus-ca", "readOnly": True}
    volume = next(v for v in pod_spec["volumes"] if v["name"] == "prometheus-ca")
    ref = volume["configMap"]["name"] if source == "configMap" else volume["secret"]["secretName"]
    items = (volume.get("configMap") or volume.get("secret"))["items"]
    assert ref == "prom-ca" and items == [{"key": "bundle.pem", "path": "bundle.pem"}]


@pytest.mark.parametrize("sets,error", [
    (("operator.prometheusCA.configMap=a", "operator.prometheusCA.secret=b"), "not both"),
    (("operator.prometheusUrlAllow={a b}",), "prometheusUrlAllow"),
])
def test_chart_refuses_bad_prometheus_values(sets: tuple[str, ...], error: str) -> None:
    proc = helm_template(*sets)
    assert proc.returncode != 0 and error in proc.stderr, proc.stderr


def test_triton_statistics_are_summarised_by_cause_without_addresses() -> None:
    from gpufleet.adapters.fallback import FallbackMetrics
    from gpufleet.adapters.triton import TritonStats

    endpoints = [dead_url().removeprefix("http://") for _ in range(2)]
    stats = TritonStats(endpoints=endpoints, model="m", timeout_s=1.0)
    assert stats.summary() == "all endpoints read"
    stats.observe(now=1000.0)
    assert stats.summary() == "2 of 2 pods: unreachable (connection refused)"
    assert TritonStats(endpoints=[], model="m").summary() == "no serving pod to read"
    prometheus = PrometheusMetrics(url=dead_url(), queries=queries_for(spec(), namespace="a", name="chat"),
                                   stale_after_s=60, timeout_s=1.0)
    both = FallbackMetrics(primary=prometheus, secondary=TritonStats(endpoints=[], model="m", timeout_s=1.0),
                           endpoints=lambda: endpoints)
    summaries = {(both.observe(now=1000.0 + t), both.summary())[1] for t in range(2)}
    assert summaries == {"Prometheus: sampled_at: Prometheus unreachable (connection refused) (since "
                         "1970-01-01T00:16:40Z) (details in the operator log); Triton statistics: 2 of 2 pods: "
                         "unreachable (connection refused)"}
    assert not any(e.split(":")[0] in next(iter(summaries)) for e in endpoints)
