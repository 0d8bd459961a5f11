"""Plain builders of specs, replicas, fleets and observations for the table-driven core tests."""

from __future__ import annotations

from typing import Any

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.types import ON_DEMAND, FleetState, Observation, Replica, ReplicaState

NOW = 10_000.0  # the tables' clock (the property tests use tests.strategies.NOW)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_spec(**overrides: Any) -> InferenceServiceSpec:
    base: dict[str, Any] = {
        "model": {"name": "chat"},
        "template": {"spec": {"containers": [{"name": "triton", "image": "triton"}]}},
        "replicas": {"min": 1, "max": 32},
        "capacity": {"onDemand": {"base": 0}},
        "scaling": {"targetRpsPerReplica": 10},
    }
    return InferenceServiceSpec.model_validate(deep_merge(base, overrides))


def rep(
    name: str,
    state: ReplicaState = ReplicaState.serving,
    cls: str = ON_DEMAND,
    created: float = 0.0,
    in_flight: float | None = None,
    interrupted: bool = False,
) -> Replica:
    ready = None if state == ReplicaState.starting else created + 60
    return Replica(name, cls, state, created, ready, in_flight, interrupted)


def serving_fleet(n: int, cls: str = ON_DEMAND, **kw: Any) -> FleetState:
    return FleetState(replicas=tuple(rep(f"s{i}", cls=cls, created=float(i)) for i in range(n)), **kw)


def obs(**kw: Any) -> Observation:
    """A fresh sample at NOW of an idle service, with `kw` changed."""
    values: dict[str, Any] = {"sampled_at": NOW, "queue_depth": 0.0, "request_rate": 0.0}
    values.update(kw)
    return Observation(**values)
