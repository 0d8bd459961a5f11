"""The I/O behind one InferenceService's loop on a cluster (control.service.Wiring): its fleet
port on the watch caches and the Kubernetes API, its metrics port on Prometheus (shared batched
queries where it can) and, with --triton-direct, Triton's own statistics as a second source."""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from gpufleet.adapters.fallback import FallbackMetrics
from gpufleet.adapters.fleet_metrics import FleetQueries, ServiceMetrics, fleet_metrics_port
from gpufleet.adapters.kube import KubeAPI
from gpufleet.adapters.kubefleet import KubeFleet
from gpufleet.adapters.metrics import NoMetrics, PrometheusMetrics
from gpufleet.adapters.pods import Snapshot
from gpufleet.adapters.triton import TritonStats
from gpufleet.api.models import InferenceServiceSpec

Metrics = ServiceMetrics | PrometheusMetrics | FallbackMetrics | NoMetrics


@dataclass
class ClusterWiring:
    kube: Callable[[], KubeAPI]
    namespace: str
    name: str
    snapshot: Callable[..., Snapshot]  # this service's slice of the watch caches (thread-safe)
    prometheus_url: str | None = None  # --prometheus-url, when the spec names none
    triton_direct: bool = False
    shared: MutableMapping[str, FleetQueries] = field(default_factory=dict)  # one per Prometheus URL
    _fleet: KubeFleet | None = None

    def fleet(self, spec: InferenceServiceSpec) -> KubeFleet:
        if self._fleet is None:
            self._fleet = KubeFleet(self.kube(), namespace=self.namespace, name=self.name, spec=spec,
                                    snapshot=self.snapshot)
        return self._fleet

    def metrics(self, spec: InferenceServiceSpec) -> Metrics:
        fleet = self.fleet(spec)
        metrics: Metrics = fleet_metrics_port(spec, namespace=self.namespace, name=self.name,
                                              default_url=self.prometheus_url, shared=self.shared)
        if self.triton_direct and isinstance(metrics, (PrometheusMetrics, ServiceMetrics)):
            metrics = FallbackMetrics(primary=metrics, secondary=TritonStats(endpoints=[], model=spec.model.name),
                                      endpoints=fleet.endpoints)
        # Drains end when a pod reads idle: its in-flight requests come from the metrics.
        fleet.in_flight = metrics.per_pod if not isinstance(metrics, NoMetrics) else dict
        return metrics

    def release(self, metrics: object) -> None:
        """Leave the shared metric queries (the service is gone, or its metrics port changes)."""
        if isinstance(metrics, ServiceMetrics):
            metrics.close()
        elif isinstance(metrics, FallbackMetrics) and isinstance(metrics.primary, ServiceMetrics):
            metrics.primary.close()

    def node_labels(self) -> Sequence[Mapping[str, str]]:
        return self.snapshot(node_labels=True).node_labels
