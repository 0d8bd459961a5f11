"""The narrow interfaces one control step talks through.

The operator implements them with Kubernetes/Prometheus/Triton adapters, the simulator with
simulated replicas and load. Both run the same `control.step.step` and the same policy.
"""

from __future__ import annotations

from typing import Protocol

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.schedule import Window
from gpufleet.core.types import FleetState, ForecastSummary, Observation, Plan, PolicyMemory


class Policy(Protocol):
    """A scaling policy: gpufleet's core, or a baseline (HPA-, KEDA-, Knative-like, static)."""

    @property
    def name(self) -> str: ...

    def decide(
        self,
        *,
        spec: InferenceServiceSpec,
        observation: Observation,
        forecast: ForecastSummary | None,
        fleet: FleetState,
        memory: PolicyMemory,
        now: float,
        windows: tuple[Window, ...] = (),
    ) -> tuple[Plan, PolicyMemory]: ...
    # `windows`: spec.schedules resolved around `now` (gpufleet.control.schedule); policies that
    # know nothing of planned events accept and ignore them.


class MetricsPort(Protocol):
    def observe(self, *, now: float) -> Observation: ...


class FleetPort(Protocol):
    def state(self, *, now: float) -> FleetState: ...

    def apply(self, plan: Plan, *, now: float) -> None: ...


class ForecastPort(Protocol):
    def forecast(self, *, now: float, horizon_s: float, quantile: float) -> ForecastSummary | None: ...
