"""`gpufleet report`: backtest a service's scaling on its own recorded load before enabling it.

    gpufleet report --prometheus-url URL --namespace NS --name SVC --since 24h [--spec FILE] [--out DIR]
    gpufleet report --trace FILE --spec FILE [--out DIR]      # generic CSV: one row per request

1. Load: the service's request rate from Prometheus (the operator's own request-rate query,
   PrometheusMetrics.history) turned into per-second Poisson arrivals, or a per-request trace.
2. Spec: --spec (an InferenceService or just its spec, YAML), else the live object from the cluster.
3. Replay through the simulator (gpufleet.sim: the same control step and policy the operator runs)
   with the current spec and alternatives: warm pool 0 / auto / 2, spot share 0 / 0.5 / 0.7, and
   HPA-like / KEDA-like baselines; print a table and write PNG plots (cost, SLO attainment,
   GPU-hours, replicas over time) plus report.json.

Units: the simulator's replica is a calibrated LLM replica (gpufleet.sim.model). The service's
`scaling.targetRpsPerReplica` says how many of *its* requests one replica serves, so its load is
scaled by (simulated replica capacity / targetRpsPerReplica) before the replay: replica counts,
GPU-hours and cost are then those of the service, and requests are reported in its own units.
Without targetRpsPerReplica the requests are taken as LLM requests of the simulator's mix.
Without --spot-trace spot capacity never runs out in the replay: spot variants show the price
effect only, not interruptions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import yaml

from gpufleet import compare_actual
from gpufleet.adapters.metrics import PrometheusMetrics, queries_for
from gpufleet.api.models import InferenceServiceSpec, Mode, Slo, WarmPool
from gpufleet.api.timefmt import duration_seconds
from gpufleet.sim.capacity import capacity_table
from gpufleet.sim.engine import SimResult
from gpufleet.sim.model import LatencyBook
from gpufleet.sim.scenarios import Scenario, make_scenario
from gpufleet.sim.spot import SpotTrace, load_spot
from gpufleet.sim.traces import (
    DEFAULT_IN_MEDIAN,
    DEFAULT_IN_SIGMA,
    DEFAULT_OUT_MEDIAN,
    DEFAULT_OUT_SIGMA,
    TOKEN_SAMPLE,
    Trace,
    load_generic_csv,
    load_trace,
)

# ---------------------------------------------------------------------------------------------
# Load


def rate_trace(name: str, samples: list[tuple[float, float]], step_s: float, seed: int = 0) -> Trace:
    """Per-second Poisson arrivals from (time, requests/s) samples, each held for one step."""
    if not samples:
        raise ValueError("no request-rate samples")
    t0 = samples[0][0]
    n = int(round(samples[-1][0] - t0 + step_s))
    rate = np.zeros(n)
    for t, r in samples:
        i = int(round(t - t0))
        rate[i: i + int(round(step_s))] = max(r, 0.0)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rate).astype(float)
    ins = rng.lognormal(np.log(DEFAULT_IN_MEDIAN), DEFAULT_IN_SIGMA, TOKEN_SAMPLE).clip(16, 32000).round()
    outs = rng.lognormal(np.log(DEFAULT_OUT_MEDIAN), DEFAULT_OUT_SIGMA, TOKEN_SAMPLE).clip(1, 4096).round()
    return Trace(name=name, counts=counts, in_tokens=counts * ins.mean(), out_tokens=counts * outs.mean(),
                 ca2=np.ones(n), missing=np.zeros(n, dtype=bool), in_sample=ins, out_sample=outs,
                 notes=(f"request rate every {step_s:g}s from Prometheus, Poisson within each second",))


# The operator's variable for --prometheus-ca-bundle (gpufleet.cli): one setting serves both.
CA_BUNDLE_ENV = "GPUFLEET_PROMETHEUS_CA_BUNDLE"


def prometheus_history(url: str, spec: InferenceServiceSpec, *, namespace: str, name: str, since_s: float,
                       step_s: float, now: float | None = None, ca_bundle: str | None = None,
                       errors: list[str] | None = None) -> list[tuple[float, float]]:
    """The service's request rate as the operator itself reads it, over TLS verified against
    `ca_bundle` (else the system's trust store) like the operator; why it failed goes to `errors`."""
    now = time.time() if now is None else now
    # A shadow service's load is its target Deployment's pods' (spec.targetRef).
    queries = queries_for(spec, namespace=namespace, name=name, pod_re=compare_actual.pod_re_of(spec))
    port = PrometheusMetrics(url=url.rstrip("/"), queries=queries,
                             stale_after_s=float(spec.metrics.stale_after_seconds), ca_bundle=ca_bundle)
    samples = port.history("request_rate", start=now - since_s, end=now, step=step_s)
    if port.history_error and errors is not None:
        errors.append(port.history_error)
    return samples


def scaled(trace: Trace, factor: float, seed: int = 0) -> Trace:
    """The same load in simulator units: Poisson re-draw of the scaled per-second rate."""
    if abs(factor - 1.0) < 1e-9:
        return trace
    rng = np.random.default_rng(seed + 1)
    counts = rng.poisson(trace.counts * factor).astype(float)
    per_in = trace.in_sample.mean()
    per_out = trace.out_sample.mean()
    return replace(trace, counts=counts, in_tokens=counts * per_in, out_tokens=counts * per_out,
                   notes=trace.notes + (f"load x{factor:.3g} to simulator units",))


# ---------------------------------------------------------------------------------------------
# Spec and variants


def load_spec(path: str) -> InferenceServiceSpec:
    with open(path) as fh:
        doc = yaml.safe_load(fh)
    spec = doc.get("spec", doc) if isinstance(doc, dict) and "model" not in doc else doc
    return InferenceServiceSpec.model_validate(spec)


def cluster_spec(namespace: str, name: str, kubeconfig: str | None) -> InferenceServiceSpec:
    from kubernetes import client, config

    from gpufleet.api.models import GROUP, PLURAL, VERSION

    try:
        config.load_kube_config(config_file=kubeconfig)
    except config.ConfigException:
        config.load_incluster_config()
    obj: Any = client.CustomObjectsApi().get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return InferenceServiceSpec.model_validate(obj["spec"])


@dataclass(frozen=True)
class Calibration:
    factor: float  # simulator requests per service request
    rps_per_replica: float  # in simulator units
    note: str


def calibrate(spec: InferenceServiceSpec, trace: Trace) -> Calibration:
    """Map the service's per-replica throughput onto the simulator's replica (see module doc)."""
    probe_sc = make_scenario("probe", trace if trace.total_requests > 0 else replace(trace, counts=trace.counts + 1))
    model, cfg = probe_sc.cfg.model, probe_sc.cfg
    user_rps = spec.scaling.target_rps_per_replica
    if user_rps is None:
        return Calibration(1.0, probe_sc.rps_per_replica,
                           "no targetRpsPerReplica: requests taken as the simulator's LLM requests")
    book = LatencyBook(model, trace.in_sample, cfg.target_ttft_s)
    probe = capacity_table(model, book, float(trace.in_sample.mean()), float(trace.out_sample.mean()), 1.0, 64)
    n_mean = int(np.clip(math.ceil(float(trace.counts.mean()) / user_rps), 1, 64))
    sim_rps = float(probe.cap_requests[n_mean] / n_mean)
    return Calibration(sim_rps / user_rps, sim_rps,
                       f"1 replica = {user_rps:g} req/s of the service = {sim_rps:.2f} simulated LLM req/s "
                       f"(load x{sim_rps / user_rps:.3g})")


def sim_spec(spec: InferenceServiceSpec, cal: Calibration, target_ttft_s: float) -> InferenceServiceSpec:
    """The service's spec in simulator units: same replicas, pool, capacity, forecast, budget; the
    SLO becomes the simulator's TTFT target (latency signals it cannot produce would read as
    missing metrics, i.e. safe mode) and metrics sources are irrelevant."""
    scaling = spec.scaling.model_copy(update={"target_rps_per_replica": round(cal.rps_per_replica, 3)})
    slo = Slo(ttft_p95_ms=int(round(target_ttft_s * 1000)), queue_depth_per_replica=spec.slo.queue_depth_per_replica)
    return spec.model_copy(update={"scaling": scaling, "slo": slo, "mode": Mode.active})


def _pool(spec: InferenceServiceSpec, size: int | str) -> InferenceServiceSpec:
    top = max(spec.warm_pool.max, 2 if size == 2 else 4)
    top = min(top, spec.replicas.max)
    return spec.model_copy(update={"warm_pool": WarmPool(size=min(size, top) if isinstance(size, int) else size,
                                                         max=top)})


def _spot(spec: InferenceServiceSpec, fraction: float) -> InferenceServiceSpec:
    spot = spec.capacity.spot.model_copy(update={"enabled": fraction > 0, "max_fraction": fraction or
                                                 spec.capacity.spot.max_fraction})
    return spec.model_copy(update={"capacity": spec.capacity.model_copy(update={"spot": spot})})


def variants(spec: InferenceServiceSpec) -> list[tuple[str, str, InferenceServiceSpec]]:
    """(label, policy, spec): the current spec, alternatives, and baselines on the current spec."""
    return [
        ("current spec", "gpufleet", spec),
        ("warm pool 0", "gpufleet", _pool(spec, 0)),
        ("warm pool auto", "gpufleet", _pool(spec, "auto")),
        ("warm pool 2", "gpufleet", _pool(spec, 2)),
        ("spot 0", "gpufleet", _spot(spec, 0.0)),
        ("spot 0.5", "gpufleet", _spot(spec, 0.5)),
        ("spot 0.7", "gpufleet", _spot(spec, 0.7)),
        ("HPA-like", "hpa", spec),
        ("KEDA-like", "keda", spec),
    ]


# ---------------------------------------------------------------------------------------------
# Replay


@dataclass
class Row:
    label: str
    policy: str
    result: SimResult
    requests: float  # in the service's units
    cost_per_1m: float

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {"variant": self.label, "policy": self.policy, "attainment": r.attainment,
                "ttft_p95_ms": r.ttft_p95_ms, "gpu_hours": r.gpu_hours, "gpu_hours_spot": r.gpu_hours_spot,
                "cost": r.cost, "requests": self.requests, "cost_per_1m_requests": self.cost_per_1m,
                "scale_events": r.scale_events, "violation_s": r.violation_s, "dropped": r.dropped}


def replay(trace: Trace, spec: InferenceServiceSpec, *, spot: SpotTrace | None = None, seed: int = 0,
           only: tuple[str, ...] | None = None) -> tuple[list[Row], Calibration, Scenario]:
    cal = calibrate(spec, trace)
    sim_trace = scaled(trace, cal.factor, seed)
    base = make_scenario(trace.name, sim_trace, seed=seed, spot=spot, spot_enabled=spec.capacity.spot.enabled)
    # A short history: the replay must not run on for the default 15 min drain tail.
    base.cfg.drain_tail_s = min(base.cfg.drain_tail_s, max(60, trace.seconds // 4))
    current = sim_spec(spec, cal, base.cfg.target_ttft_s)
    rows: list[Row] = []
    cache: dict[tuple[str, str], SimResult] = {}
    for label, policy, vspec in variants(current):
        if only and label not in only:
            continue
        key = (policy, vspec.model_dump_json())
        if key not in cache:
            sc = replace(base, spec=vspec, rps_per_replica=cal.rps_per_replica, _oracle_need={})
            cache[key] = sc.run(policy)
        res = cache[key]
        requests = res.arrived / cal.factor
        rows.append(Row(label, policy, res, requests, res.cost / requests * 1e6 if requests > 0 else math.nan))
    return rows, cal, base


# ---------------------------------------------------------------------------------------------
# Output


def table(rows: list[Row], title: str) -> Any:
    from rich.table import Table

    t = Table(title=title)
    for col in ("variant", "policy", "SLO attainment", "TTFT p95 ms", "GPU-hours", "spot GPU-h", "cost",
                "cost / 1M req", "scale events", "violation s"):
        t.add_column(col, justify="left" if col in ("variant", "policy") else "right")
    for row in rows:
        r = row.result
        t.add_row(row.label, row.policy, f"{100 * r.attainment:.2f} %", f"{r.ttft_p95_ms:.0f}",
                  f"{r.gpu_hours:.3f}", f"{r.gpu_hours_spot:.3f}", f"{r.cost:.3f}", f"{row.cost_per_1m:.2f}",
                  str(r.scale_events), str(r.violation_s))
    return t


def plots(rows: list[Row], out: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    labels = [r.label for r in rows]
    colors = ["tab:blue" if r.policy == "gpufleet" else "tab:gray" for r in rows]
    paths = []
    for fname, title, values, unit in (
        ("cost.png", "Cost over the replayed period", [r.result.cost for r in rows], "cost (price unit)"),
        ("slo_attainment.png", "SLO attainment (share of requests within the TTFT target)",
         [100 * r.result.attainment for r in rows], "%"),
        ("gpu_hours.png", "GPU-hours over the replayed period", [r.result.gpu_hours for r in rows], "GPU-hours"),
    ):
        fig, ax = plt.subplots(figsize=(9, 4))
        ax.barh(labels, values, color=colors)
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        ax.set_title(title)
        if fname == "slo_attainment.png":
            lo = min(values)
            ax.set_xlim(max(0.0, min(lo - 1.0, 99.0)), 100.0)
        fig.tight_layout()
        path = os.path.join(out, fname)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    fig, ax = plt.subplots(figsize=(10, 4))
    ax2 = ax.twinx()
    first = rows[0].result
    ax2.plot(first.t / 3600, first.load_rps, color="black", alpha=0.3, label="load (sim req/s)")
    ax2.set_ylabel("simulated requests/s")
    for row in rows:
        ax.step(row.result.t / 3600, row.result.total, where="post", label=row.label, linewidth=1)
    ax.set_xlabel("hours")
    ax.set_ylabel("replicas (all states)")
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    ax.set_title("Replicas over time")
    fig.tight_layout()
    path = os.path.join(out, "replicas.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
    return paths


def _seconds(text: str) -> float:
    return float(duration_seconds(text)) if text[-1] in "smhd" else float(text)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(width=160)
    if args.spec:
        spec = load_spec(args.spec)
    elif args.namespace and args.name:
        spec = cluster_spec(args.namespace, args.name, args.kubeconfig)
    else:
        console.print("[red]--spec FILE, or --namespace and --name of a live InferenceService, is needed")
        return 2
    if args.compare_actual and (args.trace or not (args.prometheus_url and args.namespace and args.name)):
        console.print("[red]--compare-actual reads what ran from Prometheus: --prometheus-url, --namespace and "
                      "--name are needed (not --trace)")
        return 2
    if args.trace:
        trace = load_trace(args.trace, seed=args.seed) if ":" in args.trace else load_generic_csv(args.trace)
        source = f"trace {args.trace}"
    else:
        if not (args.prometheus_url and args.namespace and args.name):
            console.print("[red]--prometheus-url, --namespace and --name (or --trace FILE) are needed")
            return 2
        since, step = _seconds(args.since), _seconds(args.step)
        errors: list[str] = []
        samples = prometheus_history(args.prometheus_url, spec, namespace=args.namespace, name=args.name,
                                     since_s=since, step_s=step, errors=errors,
                                     ca_bundle=args.prometheus_ca_bundle or os.environ.get(CA_BUNDLE_ENV) or None)
        if len(samples) < 2:
            console.print(f"[red]no request-rate history for {args.namespace}/{args.name} in the last {args.since} "
                          f"at {args.prometheus_url}" + (f": {errors[0]}" if errors else ""))
            return 1
        trace = rate_trace(f"{args.namespace}/{args.name}", samples, step, seed=args.seed)
        source = f"{args.prometheus_url}, last {args.since} at {args.step} steps ({len(samples)} samples)"
    spot = load_spot(args.spot_trace) if args.spot_trace else None
    if args.compare_actual:
        return compare_run(args, console, spec, trace, source, spot)
    rows, cal, base = replay(trace, spec, spot=spot, seed=args.seed)
    console.print(f"load: {source}; {trace.seconds} s, {trace.total_requests:.0f} requests, "
                  f"mean {trace.counts.mean():.2f} req/s, peak {trace.counts.max():.0f} req/s")
    console.print(f"calibration: {cal.note}; TTFT target {base.cfg.target_ttft_s:g} s")
    if spot is None:
        console.print("spot: always available in this replay (pass --spot-trace for interruptions)")
    console.print(table(rows, f"What-if replay of {trace.name}"))
    out = args.out or os.path.join("reports", "whatif")
    paths = plots(rows, out)
    with open(os.path.join(out, "report.json"), "w") as fh:
        json.dump({"source": source, "calibration": cal.note, "seconds": trace.seconds,
                   "requests": trace.total_requests, "rows": [r.as_dict() for r in rows]}, fh, indent=2)
    console.print("wrote " + ", ".join([*paths, os.path.join(out, "report.json")]))
    return 0


def compare_run(args: argparse.Namespace, console: Any, spec: InferenceServiceSpec, trace: Trace, source: str,
                spot: SpotTrace | None) -> int:
    """--compare-actual: the replay of the current spec against the replicas that ran (compare_actual)."""
    errors: list[str] = []
    step = _seconds(args.step)
    actual = compare_actual.actual_history(
        args.prometheus_url, spec, namespace=args.namespace, name=args.name, since_s=_seconds(args.since),
        step_s=step, errors=errors, ca_bundle=args.prometheus_ca_bundle or os.environ.get(CA_BUNDLE_ENV) or None)
    if not actual:
        console.print(f"[red]no record of the pods that ran for {args.namespace}/{args.name} in the last {args.since}"
                      + (f": {errors[0]}" if errors else ""))
        return 1
    rows, cal, base = replay(trace, spec, spot=spot, seed=args.seed, only=("current spec",))
    comparison = compare_actual.compare(actual, step, spec, rows[0].result, rows[0].requests)
    console.print(f"load: {source}; {trace.total_requests:.0f} requests, peak {trace.counts.max():.0f} req/s")
    console.print(f"calibration: {cal.note}; TTFT target {base.cfg.target_ttft_s:g} s")
    console.print("what ran: the pods reporting Triton metrics at each step"
                  + (f" (Deployment {spec.target_ref.name})" if spec.target_ref else "")
                  + f", costed at the on-demand price {spec.capacity.price_per_gpu_hour.on_demand:g}/GPU-hour")
    console.print(compare_actual.table(comparison, f"{args.namespace}/{args.name}: what ran against what gpufleet "
                                       f"would have run, last {args.since}"))
    out = args.out or os.path.join("reports", "whatif")
    path = compare_actual.plot(actual, rows[0].result, out)
    with open(os.path.join(out, "compare_actual.json"), "w") as fh:
        json.dump({"source": source, "calibration": cal.note, **comparison.as_dict()}, fh, indent=2)
    console.print(f"wrote {path}, {os.path.join(out, 'compare_actual.json')}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="what-if replay of a service's recorded load (cost, SLO, GPU-hours)")
    p.add_argument("--prometheus-url", default=None, help="Prometheus holding the service's Triton metrics")
    p.add_argument("--prometheus-ca-bundle", default=None, metavar="FILE",
                   help="PEM CA certificates to verify Prometheus' TLS certificate with (default: the system's); "
                   f"verification is never off (env {CA_BUNDLE_ENV}, as for the operator)")
    p.add_argument("--namespace", "-n", default=None, help="namespace of the InferenceService")
    p.add_argument("--name", default=None, help="name of the InferenceService")
    p.add_argument("--since", default="24h", help="history to replay: 90s, 15m, 24h, 7d (default 24h)")
    p.add_argument("--step", default="60s", help="resolution of the rate history (default 60s)")
    p.add_argument("--trace", default=None, help="replay this instead: generic CSV (timestamp[,input_tokens,"
                   "output_tokens] per request) or a simulator trace name (azure, servegen:m-small, ...)")
    p.add_argument("--spec", default=None, help="InferenceService YAML (default: the live object)")
    p.add_argument("--kubeconfig", default=None, help="for reading the live InferenceService")
    p.add_argument("--spot-trace", default=None, help="spot availability trace (gpufleet.sim.spot format)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-actual", action="store_true",
                   help="replay the recorded load with the current spec and print what gpufleet would have run "
                   "and cost against the replicas that ran (pods reporting to Prometheus; a shadow service's "
                   "target Deployment's: docs/migration.md)")
    p.add_argument("--out", default=None, help="folder for PNG plots and report.json (default reports/whatif)")
    p.set_defaults(func=run)
