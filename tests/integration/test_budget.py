"""Budgets, metering and the what-if report on the real cluster: emulated Triton pods -> real
Prometheus -> operator -> Deployments, with spec.budget capping the fleet."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.adapters.metrics import PrometheusMetrics, queries_for
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.devenv.prometheus import PrometheusServer
from tests.integration.support import Cluster, condition, desired, loop_service, set_load, status, wait_ticks
from tests.support import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

PRICE = 4.0  # per on-demand GPU-hour, one GPU per replica
LIMIT = 12.0  # maxCostPerHour: three replicas


def budget_service(namespace: str, name: str) -> dict[str, Any]:
    obj = loop_service(namespace, name)
    spec = obj["spec"]
    spec["warmPool"] = {"size": 2, "max": 2}
    spec["capacity"]["pricePerGpuHour"] = {"onDemand": PRICE, "spot": 1.0}
    spec["budget"] = {"maxCostPerHour": LIMIT, "alertPercent": 80}
    obj["metadata"].setdefault("labels", {}).update({"gpufleet.io/team": "search", "gpufleet.io/project": "chat"})
    return obj


def events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    return [e for e in cluster.list("events", namespace) if e["involvedObject"]["name"] == name]


def test_budget_caps_the_fleet_and_meters_usage(
    cluster: Cluster, operator: Path, emulator: str, namespace: str
) -> None:
    cluster.apply(budget_service(namespace, "capped"))
    # Idle: 1 serving + 2 standbys = 3 replicas x 4.0 = 12.0/h, at the limit: an alert, no cap.
    wait_for(lambda: (status(cluster, namespace, "capped").get("budget") or {}).get("state") == "Alert",
             timeout=90, what="budget state Alert at the idle floor")
    st = status(cluster, namespace, "capped")
    assert condition(st, "BudgetExceeded")["status"] == "False", st["conditions"]
    assert condition(st, "BudgetExceeded")["reason"] == "AlertThreshold"
    # A Warning on the way up (Alert; or Capped first, when the start-up plan briefly wanted more).
    wait_for(lambda: any(e["reason"] in ("BudgetAlert", "BudgetCapped") and e["type"] == "Warning"
                         for e in events(cluster, namespace, "capped")), timeout=30, what="BudgetAlert event")

    # 400 req/s against 100 req/s per replica: the load wants 4+ serving and 2 standbys (7 x 4.0).
    # The first capped decision may come while the 1-minute rate still reads part of the step (a
    # need of 2: one standby cut); once the need is 3 the standbys are gone first.
    set_load(emulator, namespace, "capped", 400)
    wait_for(lambda: (d := status(cluster, namespace, "capped").get("lastDecision", {})).get("reason") == "Budget"
             and d.get("standby") == 0, timeout=90, what="a decision capped by the budget, standbys cut first")
    st = status(cluster, namespace, "capped")
    assert st["budget"]["state"] == "Capped", st["budget"]
    assert st["budget"]["wantedPerHour"] > LIMIT >= st["budget"]["plannedPerHour"], st["budget"]
    assert "limit 12.00/h" in st["lastDecision"]["message"] and "standby" in st["lastDecision"]["message"]
    bx = condition(st, "BudgetExceeded")
    assert bx["status"] == "True" and bx["reason"] == "BudgetCapped", bx
    assert st["lastDecision"]["standby"] == 0, st["lastDecision"]

    # Held at the limit while the load stays: never more than 3 replicas asked for, never below min.
    sizes = wait_ticks(cluster, namespace, "capped", ticks=8, timeout=60)
    assert max(sizes) <= LIMIT / PRICE and min(sizes) >= 1, sizes
    wait_for(lambda: status(cluster, namespace, "capped").get("replicas", {}).get("serving") == 3,
             timeout=60, what="3 serving (the budget's worth)")
    evs = events(cluster, namespace, "capped")
    capped = [e for e in evs if e["reason"] == "BudgetCapped"]
    assert capped and capped[0]["type"] == "Warning", [(e["reason"], e["type"]) for e in evs]
    assert "limit 12.00/h" in capped[0]["message"]

    # Metering: GPU-hours and cost accumulate per class and agree with the price.
    usage = status(cluster, namespace, "capped")["usage"]
    assert usage["onDemand"]["gpuHours"] > 0 and usage["spot"]["gpuHours"] == 0, usage
    assert usage["cost"] == pytest.approx(usage["gpuHours"] * PRICE, rel=1e-3), usage
    wait_for(lambda: (status(cluster, namespace, "capped")["usage"].get("requests") or 0) > 100,
             timeout=30, what="requests metered")
    usage = status(cluster, namespace, "capped")["usage"]
    assert usage["costPerMillionRequests"] == pytest.approx(usage["cost"] / usage["requests"] * 1e6, rel=0.01)
    assert usage["day"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert usage["costToday"] <= usage["cost"] + 1e-6

    # Budget raised by GitOps (spec edit): the cap lifts and the fleet grows past 3.
    cluster.kubectl("patch", "inferenceservice", "capped", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"budget": {"maxCostPerHour": 100.0}}}))
    wait_for(lambda: desired(cluster, namespace, "capped") > 3, timeout=60, what="cap lifted")
    wait_for(lambda: condition(status(cluster, namespace, "capped"), "BudgetExceeded").get("status") == "False",
             timeout=30, what="BudgetExceeded=False")


def history_samples(prometheus_url: str, spec: dict[str, Any], namespace: str, name: str) -> int:
    parsed = InferenceServiceSpec.model_validate(spec)
    port = PrometheusMetrics(url=prometheus_url, queries=queries_for(parsed, namespace=namespace, name=name),
                             stale_after_s=60)
    now = time.time()
    return sum(1 for _, rps in port.history("request_rate", start=now - 120, end=now, step=5) if rps > 100)


def test_report_replays_real_prometheus_history(
    cluster: Cluster, operator: Path, emulator: str, prometheus: PrometheusServer, namespace: str, tmp_path: Path
) -> None:
    obj = loop_service(namespace, "whatif")
    cluster.apply(obj)
    wait_for(lambda: status(cluster, namespace, "whatif").get("replicas", {}).get("serving") == 1,
             timeout=60, what="1 replica serving")
    set_load(emulator, namespace, "whatif", 150)
    # A minute of loaded request-rate history at 5 s steps is enough to replay.
    wait_for(lambda: history_samples(prometheus.url, obj["spec"], namespace, "whatif") >= 12,
             timeout=150, what="a minute of request-rate history in Prometheus", interval=5)
    out = tmp_path / "report"
    # No --spec: the live InferenceService is read from the cluster.
    proc = subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", "report", "--prometheus-url", prometheus.url, "--namespace", namespace,
         "--name", "whatif", "--since", "2m", "--step", "5s", "--kubeconfig", cluster.kubeconfig, "--out", str(out)],
        cwd="/", env=cluster.env, text=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("current spec", "warm pool auto", "spot 0.7", "HPA-like", "KEDA-like"):
        assert name in proc.stdout, proc.stdout
    for png in ("cost.png", "slo_attainment.png", "gpu_hours.png", "replicas.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    report = json.loads((out / "report.json").read_text())
    assert len(report["rows"]) == 9 and report["requests"] > 0
    mean_rps = report["requests"] / report["seconds"]
    assert 50 < mean_rps < 250, report  # the emulator served ~150 req/s for most of the window
    assert all(r["gpu_hours"] > 0 and 0 <= r["attainment"] <= 1 for r in report["rows"])
    yaml.safe_dump(report)  # plain data
