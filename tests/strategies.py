"""Hypothesis strategies for the decision core, shared by its property tests.

`observations()` is what a healthy fleet mostly sees: a scrape taken now with every signal
present. Blind, stale and partial samples (safe mode) come one example in ten, so the properties
exercise the load-driven policy (queue depth, rate, latency, forecast, stabilisation) and not
only the safe mode that answers a missing signal. `decide` records each plan's reason as a
hypothesis event (`pytest --hypothesis-show-statistics` shows the mix).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.schedule import Window
from gpufleet.core.types import (
    ON_DEMAND,
    SPOT,
    FleetState,
    ForecastSummary,
    Observation,
    Plan,
    PolicyMemory,
    Replica,
    ReplicaState,
)

NOW = 100_000.0
POLICY = GpufleetPolicy()
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rarely(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in `one_in` draws; shrinks to False (the common case)."""
    return draw(st.integers(0, one_in - 1)) == one_in - 1


@st.composite
def specs(draw: st.DrawFn) -> InferenceServiceSpec:
    hi = draw(st.integers(1, 40))
    lo = draw(st.one_of(st.integers(0, min(hi, 2)), st.integers(0, hi)))  # a floor that seldom binds
    size: int | str = draw(st.one_of(st.integers(0, 6), st.just("auto")))
    doc: dict[str, Any] = {
        "model": {"name": "m", "backend": draw(st.sampled_from(["triton", "tensorrtllm"]))},
        "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
        "replicas": {"min": lo, "max": hi},
        "slo": {
            "queueDepthPerReplica": draw(st.sampled_from([1.0, 4.0, 8.0, 12.5])),
            "ttftP95Ms": draw(st.sampled_from([None, 500, 800])),
            "queueTimeMs": draw(st.sampled_from([None, 50])),
            # Read on TensorRT-LLM only; it adds capacity, never blinds (not a key signal).
            "kvCacheUtilization": draw(st.sampled_from([0.85, 0.85, 1.0])),
        },
        "scaling": {
            "intervalSeconds": draw(st.sampled_from([5, 10, 30])),
            "targetRpsPerReplica": draw(st.sampled_from([None, 2.5, 10.0, 40.0])),
            "scaleUp": {
                "stabilizationSeconds": draw(st.sampled_from([0, 0, 30])),
                "maxStepPercent": draw(st.integers(1, 300)),
                "maxStepReplicas": draw(st.integers(1, 8)),
            },
            "scaleDown": {
                "stabilizationSeconds": draw(st.sampled_from([0, 60, 300])),
                "maxStepPercent": draw(st.integers(1, 100)),
            },
        },
        "forecast": {"enabled": draw(st.booleans())},
        "warmPool": {"size": size, "max": draw(st.integers(0, hi))},
        "capacity": {
            "onDemand": {"base": draw(st.integers(0, hi))},
            "spot": {"enabled": draw(st.booleans()), "maxFraction": draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))},
        },
        "mode": draw(st.sampled_from(["active", "recommend"])),
    }
    return InferenceServiceSpec.model_validate(doc)


@st.composite
def fleets(draw: st.DrawFn, max_size: int = 24) -> FleetState:
    """Replicas in any state. Reclaim notices are rare, as in production: about one fleet in eight
    has some (then about a quarter of its replicas), and spot is unavailable in one in eight."""
    n = draw(st.integers(0, max_size))
    noticed = rarely(draw, 8)
    reps = []
    for i in range(n):
        state = draw(st.sampled_from(list(ReplicaState)))
        created = draw(st.floats(0, NOW - 100))
        reps.append(
            Replica(
                name=f"r{i}",
                capacity_class=draw(st.sampled_from([ON_DEMAND, SPOT])),
                state=state,
                created_at=created,
                ready_at=None if state == ReplicaState.starting else created + 30,
                in_flight=draw(st.one_of(st.none(), st.floats(0, 50))),
                interrupted=noticed and draw(st.booleans()) and draw(st.booleans()),
            )
        )
    return FleetState(replicas=tuple(reps), spot_unavailable=rarely(draw, 8))


def maybe(x: st.SearchStrategy[float]) -> st.SearchStrategy[float | None]:
    return st.one_of(st.none(), x, x, x)


@st.composite
def fresh_observations(draw: st.DrawFn) -> Observation:
    """A scrape taken now with every signal any spec needs: nothing puts the policy in safe mode.
    Loads and latencies are mostly near their targets (two draws in three), so that not every plan
    is simply capped at replicas.max."""
    return Observation(
        sampled_at=NOW,
        queue_depth=draw(load(40, 500)),
        queue_time_ms=draw(load(50, 200)),
        ttft_p95_ms=draw(load(600, 3000)),
        latency_p95_ms=draw(load(600, 5000)),
        request_rate=draw(load(60, 500)),
        latency_mean_ms=draw(load(400, 3000)),
        itl_p95_ms=draw(load(50, 200)),
        kv_cache_utilization=draw(load(0.6, 1.0)),
        gpu_utilization=draw(load(60, 100)),
    )


def load(usual: float, peak: float) -> st.SearchStrategy[float]:
    return st.one_of(st.floats(0, usual), st.floats(0, usual), st.floats(0, peak))


@st.composite
def partial_observations(draw: st.DrawFn) -> Observation:
    """Any sample: none at all, stale, or with signals missing (mostly safe mode)."""
    return Observation(
        sampled_at=draw(st.one_of(st.none(), st.floats(NOW - 200, NOW), st.just(NOW))),
        queue_depth=draw(maybe(st.floats(0, 500))),
        queue_time_ms=draw(maybe(st.floats(0, 200))),
        ttft_p95_ms=draw(maybe(st.floats(0, 3000))),
        latency_p95_ms=draw(maybe(st.floats(0, 5000))),
        request_rate=draw(maybe(st.floats(0, 500))),
        latency_mean_ms=draw(maybe(st.floats(0, 3000))),
        itl_p95_ms=draw(maybe(st.floats(0, 200))),
        kv_cache_utilization=draw(maybe(st.floats(0, 1))),
        gpu_utilization=draw(maybe(st.floats(0, 100))),
    )


@st.composite
def observations(draw: st.DrawFn) -> Observation:
    """Fresh and complete nine times in ten; otherwise any sample (blind, stale, partial)."""
    return draw(partial_observations() if rarely(draw, 10) else fresh_observations())


@st.composite
def forecasts(draw: st.DrawFn) -> ForecastSummary | None:
    if draw(st.booleans()):
        return None
    mean = draw(load(60, 400))
    return ForecastSummary(horizon_s=90, mean_rps=mean, upper_rps=mean + draw(load(30, 200)), method="hw")


@st.composite
def memories(draw: st.DrawFn) -> PolicyMemory:
    if draw(st.booleans()):
        return PolicyMemory()
    recs = tuple(sorted((NOW - draw(st.floats(1, 400)), draw(st.integers(0, 45))) for _ in range(draw(st.integers(0, 6)))))
    last_down = draw(st.one_of(st.none(), st.floats(NOW - 100, NOW - 1)))
    return PolicyMemory(
        recommendations=recs,
        last_scale_down_at=last_down,
        learned_rps_per_replica=draw(st.one_of(st.none(), st.floats(0.5, 50))),
        started_at=draw(st.one_of(st.none(), st.floats(NOW - 1000, NOW))),
        last_serving=draw(st.one_of(st.none(), st.integers(0, 45))),
        last_decided_at=NOW - 10,
        last_need=draw(st.one_of(st.none(), st.integers(0, 45))),
        burst_replicas=draw(st.floats(0, 10)),
    )


def decide(
    spec: InferenceServiceSpec,
    observation: Observation,
    fleet: FleetState,
    memory: PolicyMemory,
    forecast: ForecastSummary | None = None,
    now: float = NOW,
    windows: tuple[Window, ...] = (),
) -> tuple[Plan, PolicyMemory]:
    """The policy's decision, its reason recorded as a hypothesis event (call it inside @given)."""
    plan, out = POLICY.decide(spec=spec, observation=observation, forecast=forecast, fleet=fleet, memory=memory,
                              now=now, windows=windows)
    event(f"reason: {plan.reason}")
    return plan, out
