"""Spec fuzzing against the real API server (issue 17, item 2).

InferenceService specs are generated from the generated CRD's schema (tests/specfuzz.py) and sent
with server-side dry-run; every spec the API server admits (as it would store it, defaults filled)
goes through what the operator does with it: parsing (api.models, as kopf_app.parse_spec), the
initial sizes (control.step.initial_decision), the children (adapters.manifests, themselves sent
with server-side dry-run: a child the API server refuses would wedge the service), two ticks of a
service's loop on fakes (control.service), and the status encoding (JSON with NaN and Infinity
forbidden, then patched onto a real object so the CRD's status schema judges it). Goal: zero
admitted specs that crash; an invalid one must be reported as InvalidSpec naming a field.

GPUFLEET_FUZZ_SPECS sets how many specs (200 here; `make fuzz` runs 2000), GPUFLEET_FUZZ_SEED
the seed (printed, so a run can be repeated).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from gpufleet.adapters import manifests
from gpufleet.api.models import GROUP, PLURAL, VERSION, InferenceServiceSpec
from gpufleet.api.timefmt import iso_seconds
from gpufleet.control.service import ServiceLoop, Settings
from gpufleet.kopf_app import initial_replicas, parse_spec, refusal
from tests.chaos import report
from tests.fakes import FakeMetrics, FakeWiring, RecordingKube, pod
from tests.integration.support import Cluster
from tests.specfuzz import Tally, specs, strict_json

pytestmark = pytest.mark.cluster

SPECS = int(os.environ.get("GPUFLEET_FUZZ_SPECS", "200"))
NOW = iso_seconds("2026-06-01T12:00:00Z")
NAME = "chat"  # the fakes' service name


@pytest.fixture
def api(cluster: Cluster) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=cluster.kubeconfig)
    yield api_client
    api_client.close()


def admitted(custom: client.CustomObjectsApi, namespace: str, spec: dict[str, Any],
             tally: Tally) -> dict[str, Any] | None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
            # The shard label keeps the session's operator (selector !gpufleet.io/shard) away.
            "metadata": {"name": "fuzz", "namespace": namespace, "labels": {"gpufleet.io/shard": "fuzz"}},
            "spec": spec}
    try:
        stored: dict[str, Any] = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body,
                                                                        dry_run="All")
    except ApiException as exc:
        reason = "invalid" if exc.status == 422 else str(exc.status)
        tally.note(f"refused by the API server ({reason})", str(exc.body))
        return None
    except ValueError as exc:  # the client refuses to encode it (no such JSON): never sent
        tally.note("not encodable as JSON", str(exc))
        return None
    return stored


def children_admitted(dynamic_api: client.ApiClient, namespace: str, parsed: InferenceServiceSpec,
                      tally: Tally) -> bool:
    """Each child with server-side dry-run. One the API server refuses is what the operator then
    reports (kopf_app.apply_children: Ready=False, InvalidSpec, via kopf_app.refusal): checked
    to name spec.template, and counted."""
    from kubernetes.dynamic import DynamicClient

    dyn = DynamicClient(dynamic_api)
    for child in manifests.children(NAME, parsed):
        resource = dyn.resources.get(api_version=child["apiVersion"], kind=child["kind"])
        try:
            resource.create(body=child, namespace=namespace, dry_run="All")
        except ApiException as exc:
            if exc.status not in (400, 422):
                raise
            message = refusal(child, exc)
            assert message.startswith("spec.template: the API server refused "), message
            where = re.findall(r"is invalid: \[?([a-zA-Z.\[\]0-9]+)", message)
            tally.note(f"InvalidSpec: {child['kind']} refused by the API server ({(where or ['?'])[0]}), "
                       "reported naming spec.template", message)
            return False
    return True


def one_loop(parsed: InferenceServiceSpec) -> list[dict[str, Any]]:
    """Two ticks of a service's loop on fakes: a serving on-demand pod, a spot standby."""
    sizes = initial_replicas(parsed, NOW)
    kube = RecordingKube(pods={"chat-a": pod("chat-a", serving=True), "chat-b": pod("chat-b", "spot")},
                         deployments={manifests.deployment_name(NAME, c): max(1, n) for c, n in sizes.items()})
    loop = ServiceLoop(name=NAME, wiring=FakeWiring(kube, metrics_port=FakeMetrics(request_rate=12.5)),
                       settings=Settings(heartbeat_s=0.0))
    status: dict[str, Any] = {}
    written = []
    for i in range(2):
        now = NOW + i * parsed.scaling.interval_seconds
        loop.configure(parsed, now)
        outcome = loop.tick(status, 1, now=now, reconciled=1)
        if outcome.status is not None:
            strict_json(outcome.status)
            status = {k: v for k, v in {**status, **outcome.status}.items() if v is not None}
            loop.confirm(outcome)
            written.append(outcome.status)
    return written


def status_admitted(custom: client.CustomObjectsApi, namespace: str, stored: dict[str, Any],
                    status: dict[str, Any], tally: Tally) -> bool:
    """The CRD's status schema judges what the loop wrote (a real object: /status needs one)."""
    body = {k: stored[k] for k in ("apiVersion", "kind", "spec")}
    body["metadata"] = {"name": f"fuzz-{uuid.uuid4().hex[:8]}", "labels": {"gpufleet.io/shard": "fuzz"}}
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    try:
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, body["metadata"]["name"],
                                                     {"status": status})
        return True
    except ApiException as exc:
        tally.note("status refused by the API server", str(exc.body))
        return False
    finally:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body["metadata"]["name"])


def test_every_admitted_spec_is_parsed_sized_stepped_and_encoded(
    cluster: Cluster, namespace: str, api: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(api)
    run_seed = int(os.environ.get("GPUFLEET_FUZZ_SEED", random.randrange(2**32)))
    tally = Tally()
    started = time.monotonic()

    @seed(run_seed)
    @settings(max_examples=SPECS, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(specs())
    def fuzz(spec: dict[str, Any]) -> None:
        tally.tried += 1
        stored = admitted(custom, namespace, spec, tally)
        if stored is None:
            return
        tally.admitted += 1
        spec = stored["spec"]
        try:
            parsed = parse_spec(spec)
        except Exception as exc:  # noqa: BLE001 - counted: the goal is none
            tally.crash("parse_spec", spec, exc)
            return
        if isinstance(parsed, str):
            if not parsed.startswith("spec."):
                tally.crash("InvalidSpec naming no field", spec, AssertionError(parsed))
            else:
                tally.note("InvalidSpec, reported naming the field", parsed)
            return
        try:
            initial_replicas(parsed, NOW)
            strict_json(manifests.children(NAME, parsed))
        except Exception as exc:  # noqa: BLE001
            tally.crash("initial sizes and children", spec, exc)
            return
        try:
            if not children_admitted(api, namespace, parsed, tally):
                return
        except Exception as exc:  # noqa: BLE001
            tally.crash("the children's admission", spec, exc)
            return
        try:
            written = one_loop(parsed)
        except Exception as exc:  # noqa: BLE001
            tally.crash("the service's loop", spec, exc)
            return
        if written and not status_admitted(custom, namespace, stored, written[0], tally):
            tally.crash("status refused by the API server", spec, AssertionError(tally.examples))
            return
        tally.note("parsed, sized, two ticks, status admitted")

    fuzz()
    elapsed = time.monotonic() - started
    print(f"\nseed {run_seed} (GPUFLEET_FUZZ_SEED={run_seed} repeats it), {elapsed:.0f}s\n{tally.report()}")
    if os.environ.get("GPUFLEET_FUZZ_OUT"):  # make fuzz: the counts beside the chaos report
        out = Path(os.environ["GPUFLEET_FUZZ_OUT"])
        out.mkdir(parents=True, exist_ok=True)
        command = f"make fuzz FUZZ_SPECS={SPECS} FUZZ_SEED={run_seed}"
        (out / "fuzz.json").write_text(json.dumps(
            {"command": command, "seed": run_seed, "specs": SPECS, "elapsed_s": round(elapsed), **tally.summary()},
            indent=1) + "\n")
        if (out / "results.json").exists():
            report.rerender(out)
    assert tally.tried == SPECS
    assert tally.crashes == [], tally.report()
    assert tally.admitted > 0
