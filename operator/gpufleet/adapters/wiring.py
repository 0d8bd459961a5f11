"""The I/O behind one InferenceService's loop on a cluster (control.service.Wiring): its fleet
port on the watch caches and the Kubernetes API, its metrics port on Prometheus (shared batched
queries where it can; a spec's own Prometheus URL only when --prometheus-url-allow permits it;
TLS verified, against --prometheus-ca-bundle when given) and, with --triton-direct, Triton's own
statistics as a second source. The metrics port checks its sums against the serving pods the
watch knows (a pod missing from the scrape makes them missing, never smaller).

In shadow mode (spec.targetRef) the fleet port is adapters.shadow.ShadowFleet on the target
Deployment, and the metrics port a per-service PrometheusMetrics whose queries select that
Deployment's pods by name (metrics.deployment_pod_regex): the batched queries know only the pods
of gpufleet's own Deployments."""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from gpufleet.adapters.fallback import FallbackMetrics
from gpufleet.adapters.fleet_metrics import FleetQueries, ServiceMetrics, fleet_metrics_port
from gpufleet.adapters.kube import KubeAPI
from gpufleet.adapters.kubefleet import KubeFleet
from gpufleet.adapters.metrics import (
    NoMetrics,
    PrometheusMetrics,
    UrlPolicy,
    classes_pod_regex,
    deployment_pod_regex,
    metrics_port,
)
from gpufleet.adapters.pods import Snapshot, replica_from_pod
from gpufleet.adapters.shadow import Autoscalers, Nodes, ShadowFleet, TargetReader
from gpufleet.adapters.triton import TritonStats
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.types import ReplicaState

Metrics = ServiceMetrics | PrometheusMetrics | FallbackMetrics | NoMetrics


@dataclass
class ClusterWiring:
    kube: Callable[[], KubeAPI]
    namespace: str
    name: str
    snapshot: Callable[..., Snapshot]  # this service's slice of the watch caches (thread-safe)
    prometheus_url: str | None = None  # --prometheus-url, when the spec names none
    prometheus_allow: tuple[str, ...] = ()  # --prometheus-url-allow: what spec.metrics.prometheusUrl may name
    prometheus_ca_bundle: str | None = None  # --prometheus-ca-bundle
    triton_direct: bool = False
    shared: MutableMapping[str, FleetQueries] = field(default_factory=dict)  # one per Prometheus URL
    nodes: Nodes | None = None  # shadow mode: the target's pods' nodes, from the nodes watch
    autoscalers: Autoscalers | None = None  # shadow mode: the HPAs / ScaledObjects aimed at the target
    _fleet: KubeFleet | None = None

    def fleet(self, spec: InferenceServiceSpec) -> KubeFleet:
        """The fleet port: the service's own Deployments, or (spec.targetRef) the target's, read only.
        A new port when shadow mode is turned on or off or names another target."""
        target = spec.target_ref.name if spec.target_ref is not None else None
        current = self._fleet.target if isinstance(self._fleet, ShadowFleet) else None
        if self._fleet is not None and target == current:
            return self._fleet
        if target is None:
            self._fleet = KubeFleet(self.kube(), namespace=self.namespace, name=self.name, spec=spec,
                                    snapshot=self.snapshot)
        else:
            read = TargetReader(self.kube(), namespace=self.namespace, deployment=target, nodes=self.nodes,
                                autoscalers=self.autoscalers)
            self._fleet = ShadowFleet(self.kube(), namespace=self.namespace, name=self.name, spec=spec, read=read,
                                      target=target)
        return self._fleet

    def metrics(self, spec: InferenceServiceSpec) -> Metrics:
        fleet = self.fleet(spec)
        policy = UrlPolicy.of(self.prometheus_allow, self.prometheus_url)
        if isinstance(fleet, ShadowFleet):
            for other in list(self.shared.values()):
                other.unregister(self.namespace, self.name)
            shadow = metrics_port(spec, namespace=self.namespace, name=self.name, default_url=self.prometheus_url,
                                  policy=policy, ca_bundle=self.prometheus_ca_bundle, serving=fleet.serving,
                                  pod_re=deployment_pod_regex(fleet.target))
            fleet.in_flight = dict  # nothing drains in shadow mode: no per-pod query
            return shadow
        metrics: Metrics
        if spec.capacity.classes is not None:
            # spec.capacity.classes: pods are `<service>-<class>-...`, not the batched queries'
            # `-ondemand-`/`-spot-` names: this service's own queries, by its classes' pod names.
            for other in list(self.shared.values()):
                other.unregister(self.namespace, self.name)
            metrics = metrics_port(spec, namespace=self.namespace, name=self.name, default_url=self.prometheus_url,
                                   policy=policy, ca_bundle=self.prometheus_ca_bundle, serving=self.serving_pods,
                                   pod_re=classes_pod_regex(self.name, spec.capacity.class_names()),
                                   classes=spec.capacity.class_names())
        else:
            metrics = fleet_metrics_port(spec, namespace=self.namespace, name=self.name,
                                         default_url=self.prometheus_url, shared=self.shared, policy=policy,
                                         ca_bundle=self.prometheus_ca_bundle, serving=self.serving_pods)
        if self.triton_direct and isinstance(metrics, (PrometheusMetrics, ServiceMetrics)):
            metrics = FallbackMetrics(primary=metrics, secondary=TritonStats(endpoints=[], model=spec.model.name),
                                      endpoints=fleet.endpoints)
        # Drains end when a pod reads idle: its in-flight requests come from the metrics.
        fleet.in_flight = metrics.per_pod if not isinstance(metrics, NoMetrics) else dict
        return metrics

    def serving_pods(self) -> dict[str, float]:
        """The service's serving pods (Ready, in the Service, not draining) and since when they are
        Ready, from the watch cache: the pods its metric sums must include."""
        out = {}
        for pod in self.snapshot().pods:
            replica = replica_from_pod(pod, set())
            if replica.state == ReplicaState.serving and replica.ready_at is not None:
                out[replica.name] = replica.ready_at
        return out

    def release(self, metrics: object) -> None:
        """Leave the shared metric queries (the service is gone, or its metrics port changes)."""
        if isinstance(metrics, ServiceMetrics):
            metrics.close()
        elif isinstance(metrics, FallbackMetrics) and isinstance(metrics.primary, ServiceMetrics):
            metrics.primary.close()

    def node_labels(self) -> Sequence[Mapping[str, str]]:
        return self.snapshot(node_labels=True).node_labels
