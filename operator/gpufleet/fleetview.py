"""`gpufleet status`: every InferenceService (or one namespace's) in one table, from the API server.

    gpufleet status [-n NAMESPACE] [--kubeconfig FILE]

One row per service: mode (active, recommend, or shadow with its target), Ready, replicas desired,
serving, standby and starting, and per capacity class desired/ready/starting; the binding signal
(the last decision's reason: QueueDepth, RequestRate, ForecastLoad, ...), when that decision was
taken and its one-line explanation; cost per hour; budget used (today's cost against
maxCostPerDay, else the cost per hour against maxCostPerHour); in shadow mode the recommended
against the actual replicas. Everything comes from the objects' status as the operator wrote it:
what `kubectl get` cannot show in one screen. Needs the `report` extra (rich).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpufleet.api.models import GROUP, PLURAL, VERSION
from gpufleet.api.timefmt import iso_seconds


@dataclass(frozen=True)
class Row:
    """One service's line, as text."""

    service: str
    mode: str
    ready: str
    desired: str
    serving: str
    standby: str
    starting: str
    on_demand: str
    spot: str
    signal: str
    decision: str
    cost_per_hour: str
    budget: str
    shadow: str


HEADERS = ("Service", "Mode", "Ready", "Desired", "Serving", "Standby", "Starting", "On-demand", "Spot", "Signal",
           "Last decision", "Cost/h", "Budget", "Shadow")
TITLE = "InferenceServices ({n}): per class desired/ready/starting; Shadow: recommended/actual replicas"


def _ago(stamp: str | None, now: float) -> str:
    if not stamp:
        return "-"
    try:
        seconds = max(0.0, now - iso_seconds(stamp))
    except ValueError:
        return stamp
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _num(value: Any, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def budget_used(spec: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    """Today's cost against maxCostPerDay, else the cost per hour against maxCostPerHour, with the
    budget's state when it is not OK; '-' without a budget."""
    budget = spec.get("budget") or {}
    state = (status.get("budget") or {}).get("state")
    suffix = f" {state}" if state and state != "OK" else ""
    per_day, per_hour = budget.get("maxCostPerDay"), budget.get("maxCostPerHour")
    if per_day:
        today = (status.get("usage") or {}).get("costToday") or 0.0
        return f"{100 * today / per_day:.0f}% of {per_day:g}/day{suffix}"
    if per_hour:
        now = status.get("costPerHour") or 0.0
        return f"{100 * now / per_hour:.0f}% of {per_hour:g}/h{suffix}"
    return "-"


def row(obj: Mapping[str, Any], now: float) -> Row:
    """One InferenceService object (metadata, spec, status) as a table row. Missing fields show '-'."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    replicas = status.get("replicas") or {}
    decision = status.get("lastDecision") or {}
    target = (spec.get("targetRef") or {}).get("name")
    mode = f"shadow: {target}" if target else str(spec.get("mode", "active"))
    ready = next((c for c in status.get("conditions") or () if c.get("type") == "Ready"), None)

    def per_class(key: str) -> str:
        counts = replicas.get(key)
        if not counts:
            return "-"
        return f"{counts.get('desired', 0)}/{counts.get('ready', 0)}/{counts.get('starting', 0)}"

    shadow = status.get("shadow")
    if shadow:
        shadow_text = (f"{shadow.get('recommendedReplicas', 0)}/{_num(shadow.get('actualReplicas'), '{}')}"
                       if shadow.get("found") else "target unavailable")
    else:
        shadow_text = "-"
    when = _ago(decision.get("time"), now)
    message = str(decision.get("message") or "")
    return Row(
        service=f"{meta.get('namespace', '')}/{meta.get('name', '')}",
        mode=mode,
        ready=f"{ready.get('status')} {ready.get('reason', '')}".strip() if ready else "-",
        desired=_num(replicas.get("desired"), "{}"),
        serving=_num(replicas.get("serving"), "{}"),
        standby=_num(replicas.get("standby"), "{}"),
        starting=_num(replicas.get("starting"), "{}"),
        on_demand=per_class("onDemand"),
        spot=per_class("spot"),
        signal=str(decision.get("reason") or "-"),
        decision=f"{when}: {message}" if message else when,
        cost_per_hour=_num(status.get("costPerHour")),
        budget=budget_used(spec, status),
        shadow=shadow_text,
    )


def table(objects: Sequence[Mapping[str, Any]], now: float | None = None) -> Any:
    """A rich Table of the services, sorted by namespace and name."""
    from rich.table import Table

    now = time.time() if now is None else now
    out = Table(title=TITLE.format(n=len(objects)), title_justify="left")
    for header in HEADERS:
        wraps = header in ("Mode", "Ready", "Signal", "Last decision", "Budget")  # the others never fold
        out.add_column(header, overflow="fold", no_wrap=not wraps, min_width=24 if header == "Last decision" else None,
                       max_width=60 if header == "Last decision" else None)
    for r in sorted((row(o, now) for o in objects), key=lambda r: r.service):
        out.add_row(*(getattr(r, f) for f in Row.__dataclass_fields__))
    return out


def render(objects: Sequence[Mapping[str, Any]], *, now: float | None = None, width: int = 200) -> str:
    """The table as plain text (tests, pipes)."""
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(table(objects, now))
    return console.export_text()


def fetch(namespace: str | None, kubeconfig: str | None) -> list[dict[str, Any]]:
    """Every InferenceService the kubeconfig's user may list (in `namespace`, or all)."""
    from kubernetes import client, config

    try:
        config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    api = client.CustomObjectsApi()
    answer: Any
    if namespace:
        answer = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _request_timeout=30)
    else:
        answer = api.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=30)
    items: list[dict[str, Any]] = answer.get("items", [])
    return items


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    objects = fetch(args.namespace, args.kubeconfig)
    if not objects:
        where = f"namespace {args.namespace}" if args.namespace else "any namespace"
        print(f"no InferenceServices in {where}")
        return 0
    Console(width=None if sys.stdout.isatty() else args.width).print(table(objects))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="every InferenceService in one table: replicas per class, signal, "
                       "last decision, cost, budget, shadow recommendation")
    p.add_argument("--namespace", "-n", default=None, help="only this namespace (default: all)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--width", type=int, default=200, help="table width when not printing to a terminal")
    p.set_defaults(func=run)
