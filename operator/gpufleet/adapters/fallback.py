"""MetricsPort with a second source: Prometheus first, Triton's own statistics when it is down.

Both are read every tick, so the Triton source always has a previous read to take differences
from at the moment Prometheus fails. Triton statistics carry no queue gauge, so on the fallback
the core still sees queue depth as missing: it may scale up on request rate, never down.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpufleet.adapters.fleet_metrics import ServiceMetrics
from gpufleet.adapters.metrics import PrometheusMetrics
from gpufleet.adapters.triton import TritonStats
from gpufleet.core.types import Observation


@dataclass
class FallbackMetrics:
    primary: PrometheusMetrics | ServiceMetrics
    secondary: TritonStats
    endpoints: Callable[[], Sequence[str]]  # host:port of each serving pod's Triton HTTP endpoint
    available: bool = False
    source: str = "none"

    def observe(self, *, now: float) -> Observation:
        self.secondary.endpoints = list(self.endpoints())
        backup = self.secondary.observe(now=now)
        observation = self.primary.observe(now=now)
        if self.primary.available:
            self.available, self.source = True, "prometheus"
            return observation
        self.available = self.secondary.available and backup.sampled_at is not None
        self.source = "triton-statistics" if self.available else "none"
        return backup if self.available else observation

    def per_pod(self, key: str = "in_flight") -> dict[str, float]:
        return self.primary.per_pod(key)

    def history(self, key: str, *, start: float, end: float, step: float) -> list[tuple[float, float]]:
        return self.primary.history(key, start=start, end=end, step=step)

    @property
    def history_error(self) -> str | None:
        return self.primary.history_error

    def summary(self) -> str:
        if self.source == "prometheus":
            return self.primary.summary()
        return f"Prometheus: {self.primary.summary()}; Triton statistics: {self.secondary.summary()}"
