"""Command line: `gpufleet operator` runs the operator; other subcommands come from their modules."""

from __future__ import annotations

import argparse
import logging
import random
import sys


def _operator(args: argparse.Namespace) -> int:
    import kopf
    from kubernetes import config as kube_config

    from gpufleet import kopf_app, telemetry

    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config(config_file=args.kubeconfig)
    kopf_app.CONFIG.prometheus_url = args.prometheus_url
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
    from gpufleet import report

    report.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
