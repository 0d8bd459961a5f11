"""`gpufleet report` reads Prometheus over TLS like the operator: verified against
--prometheus-ca-bundle (or GPUFLEET_PROMETHEUS_CA_BUNDLE, the operator's variable), never
unverified; a certificate it cannot verify is named in the message, not read as "no history"."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from gpufleet import cli, report
from gpufleet.api.models import InferenceServiceSpec
from tests.support import https_server


class RangeHandler(BaseHTTPRequestHandler):
    """Answers every range query with one series of three samples (Prometheus' JSON shape)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {}, "values": [[1000, "1"], [1060, "2"], [1120, "3"]]}]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with https_server(RangeHandler, tmp_path) as served:
        yield served


def spec() -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({"model": {"name": "chat"}, "template": {"spec": {"containers": [
        {"name": "triton", "image": "triton"}]}}})


def test_the_report_verifies_prometheus_with_the_ca_bundle(tls_prometheus: tuple[str, Path]) -> None:
    url, ca = tls_prometheus
    kw = dict(namespace="ns", name="chat", since_s=120, step_s=60, now=1120.0)
    errors: list[str] = []
    assert report.prometheus_history(url, spec(), errors=errors, **kw) == []  # type: ignore[arg-type]
    assert errors and "certificate" in errors[0].lower() and url not in errors[0], errors  # a cause, not the URL
    assert report.prometheus_history(url, spec(), ca_bundle=str(ca), **kw) == [  # type: ignore[arg-type]
        (1000.0, 1.0), (1060.0, 2.0), (1120.0, 3.0)]


def test_the_option_and_its_variable_match_the_operators() -> None:
    assert report.CA_BUNDLE_ENV == cli.CA_BUNDLE_ENV
    parser = argparse.ArgumentParser()
    report.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "--prometheus-ca-bundle", "/etc/ca.pem"])
    assert args.prometheus_ca_bundle == "/etc/ca.pem"
