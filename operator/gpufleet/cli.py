"""Command line: `gpufleet operator` runs the operator; other subcommands come from their modules."""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from pathlib import Path
from urllib.parse import urlsplit


def _operator(args: argparse.Namespace) -> int:
    import kopf
    from kubernetes import config as kube_config

    from gpufleet import kopf_app, telemetry

    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config(config_file=args.kubeconfig)
    kopf_app.CONFIG.prometheus_url = args.prometheus_url
    kopf_app.CONFIG.prometheus_allow, kopf_app.CONFIG.prometheus_ca_bundle = prometheus_options(args)
    kopf_app.CONFIG.min_interval_seconds = args.min_interval
    kopf_app.CONFIG.triton_direct = args.triton_direct
    kopf_app.CONFIG.workers = args.workers
    kopf_app.CONFIG.kube_timeout_s = args.kube_timeout
    kopf_app.CONFIG.peering_lifetime_s = args.peering_lifetime
    kopf_app.CONFIG.heartbeat_s = args.status_heartbeat
    kopf_app.CONFIG.selector = kopf_app.parse_selector(args.selector or "")
    if args.price_table:
        from gpufleet.control.pricing import load_table

        kopf_app.CONFIG.price_table = load_table(args.price_table)
    namespaces = args.namespace or []
    kopf.configure(verbose=args.verbose)
    if args.metrics_port:
        telemetry.serve(args.metrics_port, host=args.metrics_host)
    kopf.run(
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=peering_priority(args),
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://{args.health}/healthz" if args.health else None,
    )
    return 0


ALLOW_ENV = "GPUFLEET_PROMETHEUS_URL_ALLOW"
CA_BUNDLE_ENV = "GPUFLEET_PROMETHEUS_CA_BUNDLE"


def prometheus_options(args: argparse.Namespace) -> tuple[tuple[str, ...], str | None]:
    """(allow-list, CA bundle) from --prometheus-url-allow (repeatable, comma-separated) or
    $GPUFLEET_PROMETHEUS_URL_ALLOW, and --prometheus-ca-bundle or $GPUFLEET_PROMETHEUS_CA_BUNDLE.
    ValueError names a bad entry, a missing CA file or a --prometheus-url that is not http(s)."""
    from gpufleet.adapters.metrics import UrlPolicy

    raw = args.prometheus_url_allow if args.prometheus_url_allow else [os.environ.get(ALLOW_ENV, "")]
    allow = tuple(e.strip() for item in raw for e in item.split(",") if e.strip())
    UrlPolicy.of(allow, None)  # raises ValueError on an entry it cannot read
    if args.prometheus_url:
        parts = urlsplit(args.prometheus_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--prometheus-url must be an http(s) URL: {args.prometheus_url!r}")
    ca_bundle = args.prometheus_ca_bundle or os.environ.get(CA_BUNDLE_ENV) or None
    if ca_bundle and not Path(ca_bundle).is_file():
        raise ValueError(f"--prometheus-ca-bundle: no such file: {ca_bundle}")
    return allow, ca_bundle


def peering_priority(args: argparse.Namespace) -> int | None:
    """With peering, kopf runs only the highest-priority peer and pauses ALL peers of equal
    priority; replicas of one Deployment share their args, so each draws its own random priority
    (one active, the others on standby until its keep-alive expires)."""
    chosen: int | None = args.priority
    if chosen is None and args.peering is not None:
        chosen = random.randrange(1, 2**31)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpufleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    op = sub.add_parser("operator", help="run the operator against the current kubeconfig (or in-cluster)")
    op.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    op.add_argument("--namespace", "-n", action="append", help="watch only this namespace (repeatable)")
    op.add_argument("--prometheus-url", default=None, help="default Prometheus for services that set none")
    op.add_argument("--prometheus-url-allow", action="append", default=None, metavar="PREFIX|HOST",
                    help="a Prometheus that spec.metrics.prometheusUrl may name (repeatable, comma-separated): "
                    "a URL prefix (https://thanos.example:9090/tenant), a host (prom.monitoring.svc[:port]), "
                    "*.domain, or * for any; default: none but --prometheus-url itself "
                    f"(env {ALLOW_ENV}; docs/metrics.md)")
    op.add_argument("--prometheus-ca-bundle", default=None, metavar="FILE",
                    help="PEM CA certificates to verify Prometheus' TLS certificate with (default: the system's); "
                    f"verification is never off (env {CA_BUNDLE_ENV})")
    op.add_argument("--health", default=None, metavar="HOST:PORT", help="serve kopf's liveness probe here")
    op.add_argument("--peering", default=None, help="kopf peering object name for HA (default: standalone)")
    op.add_argument("--priority", type=int, default=None,
                    help="kopf peering priority (default with --peering: random, so replicas never tie)")
    op.add_argument("--metrics-port", type=int, default=None, help="serve the operator's Prometheus metrics here")
    op.add_argument("--metrics-host", default="0.0.0.0", help="address for --metrics-port (default 0.0.0.0)")
    op.add_argument("--min-interval", type=float, default=1.0, help="floor on any service's loop interval (s)")
    op.add_argument("--price-table", default=None, metavar="FILE",
                    help="YAML GPU-hour prices by nvidia.com/gpu.product and capacity type (on-demand, spot); "
                    "overrides the services' capacity.pricePerGpuHour (docs/budgets.md)")
    op.add_argument("--triton-direct", action="store_true",
                    help="read Triton's statistics from pod IPs when Prometheus is down (needs pod network access)")
    op.add_argument("--selector", "-l", default=None, metavar="LABELS",
                    help="handle only InferenceServices with these labels (k=v, k!=v, k, !k, comma-separated): "
                    "instances with disjoint selectors shard a fleet; give each its own --peering")
    op.add_argument("--workers", type=int, default=8,
                    help="threads shared by all services' ticks (default 8; ticks are mostly waiting on I/O)")
    op.add_argument("--kube-timeout", type=float, default=10.0,
                    help="seconds before any Kubernetes request of a tick gives up (default 10)")
    op.add_argument("--peering-lifetime", type=int, default=15,
                    help="with --peering: seconds after which a silent peer counts as dead and a standby "
                    "takes over (default 15; kopf's own default is 60)")
    op.add_argument("--status-heartbeat", type=float, default=60.0,
                    help="status fields that move every tick (observed metrics, usage, lastDecision.time) are "
                    "written at most this often unless something else changed (default 60 s)")
    op.add_argument("--verbose", action="store_true")
    op.set_defaults(func=_operator)
    from gpufleet import fleetview, report

    report.add_parser(sub)
    fleetview.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "operator":
        try:
            prometheus_options(args)
        except ValueError as exc:
            parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result: int = args.func(args)
    except ModuleNotFoundError as exc:
        # The human-facing commands' libraries are an optional extra, left out of the operator image.
        missing = (exc.name or "").split(".")[0]
        if missing not in REPORT_EXTRA:
            raise
        sys.stderr.write(f"gpufleet {args.command} needs {missing}, from the optional 'report' extra: "
                         "pip install 'gpufleet[report]' (the operator image leaves it out)\n")
        return 2
    return result


# pyproject.toml's [report] extra: imported lazily by `gpufleet report`, `status` and the like.
REPORT_EXTRA = ("rich", "matplotlib")


if __name__ == "__main__":
    sys.exit(main())
