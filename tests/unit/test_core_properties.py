"""Hypothesis properties of the decision core: bounds, monotonicity, safe mode, determinism,
stability, cooldowns. Pure functions, no clock: every run is deterministic per example."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpufleet.api.models import InferenceServiceSpec, Mode
from gpufleet.core.capacity import bounds
from gpufleet.core.fleet import FleetView, is_healthy
from gpufleet.core.capacity import FORECAST_LOAD, LATENCY, QUEUE_DEPTH, REQUEST_RATE
from gpufleet.core.policy import REASONS, SAFE_MODE, STABILIZING
from gpufleet.core.split import interrupted_by_class, spot_cap, spot_usable
from gpufleet.core.stabilize import max_down_step, max_up_step
from gpufleet.core.types import (
    ON_DEMAND,
    SPOT,
    FleetState,
    ForecastSummary,
    Observation,
    PolicyMemory,
    Replica,
    ReplicaState,
)
from tests.strategies import (
    NOW,
    SETTINGS,
    decide,
    fleets,
    forecasts,
    fresh_observations,
    memories,
    observations,
    specs,
)

# ---------------------------------------------------------------------------------------------
# What the properties below exercise: the load-driven policy, not its safe mode.

LOAD_DRIVEN = {QUEUE_DEPTH, REQUEST_RATE, LATENCY, FORECAST_LOAD, STABILIZING}


def test_the_strategies_drive_the_policy_by_load() -> None:
    """Over the inputs every property here draws, each load-driven reason occurs and safe mode
    is the exception (it was 76 of 80 with strategies that rarely made a complete sample)."""
    reasons: Counter[str] = Counter()

    # derandomize: the same examples on every run, so the mix is a fact about the strategies.
    @settings(max_examples=400, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(spec=specs(), observation=observations(), fleet=fleets(), memory=memories(), forecast=forecasts())
    def sample(spec: InferenceServiceSpec, observation: Observation, fleet: FleetState, memory: PolicyMemory,
               forecast: ForecastSummary | None) -> None:
        reasons[decide(spec, observation, fleet, memory, forecast)[0].reason] += 1

    sample()
    total = sum(reasons.values())
    assert LOAD_DRIVEN <= set(reasons), reasons
    # A fifth, not a quarter: hypothesis also draws literal constants of the loaded modules, so
    # the mix moves with unrelated code and with which test files ran first (94 of 400 in a full
    # unit run, against 100 and more alone).
    assert sum(reasons[r] for r in LOAD_DRIVEN) >= total // 5, reasons
    assert reasons[SAFE_MODE] <= total // 5, reasons


# ---------------------------------------------------------------------------------------------
# Bounds.


@SETTINGS
@given(spec=specs(), observation=observations(), fleet=fleets(), memory=memories(), forecast=forecasts())
def test_bounds_always_hold(
    spec: InferenceServiceSpec, observation: Observation, fleet: FleetState, memory: PolicyMemory,
    forecast: ForecastSummary | None,
) -> None:
    plan, _ = decide(spec, observation, fleet, memory, forecast)
    lo, hi = bounds(spec)
    view = FleetView.of(fleet)
    wanted = plan.serving + plan.standby
    assert lo <= plan.serving <= hi
    assert plan.standby >= 0 and wanted <= hi
    # Healthy replicas per class (the Deployment sizes also hold the interrupted ones).
    interrupted = interrupted_by_class(fleet)
    od, spot = plan.on_demand - interrupted[ON_DEMAND], plan.spot - interrupted[SPOT]
    assert od >= 0 and spot >= 0
    assert wanted <= od + spot <= hi
    # The on-demand base (safe mode may keep Ready spot replicas in its way).
    keep_spot = view.ready_by_class[SPOT] if plan.safe_mode else 0
    assert od >= min(spec.capacity.on_demand.base, wanted, hi - keep_spot)
    # Spot share: within maxFraction beyond the base, except Ready spot replicas kept until
    # their replacements are Ready.
    cap = spot_cap(spec, wanted) if spot_usable(spec, fleet.spot_unavailable) else 0
    assert spot <= max(cap, view.ready_by_class[SPOT])
    assert plan.reason in REASONS and "\n" not in plan.message
    assert plan.apply == (spec.mode.value == "active")


@SETTINGS
@given(spec=specs(), observation=observations(), fleet=fleets(), memory=memories(), forecast=forecasts())
def test_promotions_and_retirements_are_consistent(
    spec: InferenceServiceSpec, observation: Observation, fleet: FleetState, memory: PolicyMemory,
    forecast: ForecastSummary | None,
) -> None:
    plan, _ = decide(spec, observation, fleet, memory, forecast)
    by_name = {r.name: r for r in fleet.replicas}
    view = FleetView.of(fleet)
    assert len(set(plan.promote)) == len(plan.promote)
    assert all(by_name[n].state == ReplicaState.standby and is_healthy(by_name[n]) for n in plan.promote)
    assert len(plan.promote) <= max(0, plan.serving - view.serving)
    assert len(set(plan.retire)) == len(plan.retire)
    assert not set(plan.retire) & set(plan.promote)
    assert all(by_name[n].state != ReplicaState.draining for n in plan.retire)
    interrupted = [r.name for r in fleet.replicas if r.interrupted and r.state != ReplicaState.draining]
    assert set(plan.retire[: len(interrupted)]) == set(interrupted)
    # Retirements leave each class exactly at its healthy count wanted (never more go).
    interrupted_n = interrupted_by_class(fleet)
    for cls, wanted in ((ON_DEMAND, plan.on_demand - interrupted_n[ON_DEMAND]), (SPOT, plan.spot - interrupted_n[SPOT])):
        healthy = [r for r in fleet.replicas if is_healthy(r) and r.capacity_class == cls]
        gone = [n for n in plan.retire if by_name[n].capacity_class == cls and is_healthy(by_name[n])]
        assert len(healthy) - len(gone) == min(len(healthy), wanted)


# ---------------------------------------------------------------------------------------------
# Monotone in load.

LOAD_FIELDS = ("queue_depth", "request_rate", "ttft_p95_ms", "latency_p95_ms", "queue_time_ms", "latency_mean_ms",
               "itl_p95_ms", "kv_cache_utilization", "gpu_utilization")


@SETTINGS
@given(
    spec=specs(), observation=observations(), fleet=fleets(), memory=memories(), forecast=forecasts(),
    field=st.sampled_from(LOAD_FIELDS), a=st.floats(0, 1000), b=st.floats(0, 1000),
)
def test_desired_capacity_is_monotone_in_load(
    spec: InferenceServiceSpec, observation: Observation, fleet: FleetState, memory: PolicyMemory,
    forecast: ForecastSummary | None, field: str, a: float, b: float,
) -> None:
    lo_v, hi_v = sorted((a, b))
    low, _ = decide(spec, replace(observation, **{field: lo_v}), fleet, memory, forecast)
    high, _ = decide(spec, replace(observation, **{field: hi_v}), fleet, memory, forecast)
    assert low.serving <= high.serving
    # A request rate of 0 with no latency samples is an idle service, a rate above 0 without them
    # a blind one (safe mode), and a blind sample learns no burst for the pool: across that
    # boundary only serving must be monotone (hypothesis found it: idle pool 2, blind pool 1).
    if low.safe_mode == high.safe_mode:
        assert (low.serving + low.standby <= high.serving + high.standby
                or high.serving + high.standby == bounds(spec)[1])


@SETTINGS
@given(
    spec=specs(), observation=observations(), fleet=fleets(), memory=memories(),
    mean=st.floats(0, 300), a=st.floats(0, 500), b=st.floats(0, 500),
)
def test_desired_capacity_is_monotone_in_forecast(
    spec: InferenceServiceSpec, observation: Observation, fleet: FleetState, memory: PolicyMemory,
    mean: float, a: float, b: float,
) -> None:
    lo_v, hi_v = sorted((a, b))
    low, _ = decide(spec, observation, fleet, memory, ForecastSummary(90, mean, mean + lo_v, "hw"))
    high, _ = decide(spec, observation, fleet, memory, ForecastSummary(90, mean, mean + hi_v, "hw"))
    assert low.serving <= high.serving


# ---------------------------------------------------------------------------------------------
# Safe mode.


@st.composite
def blind_observations(draw: st.DrawFn) -> Observation:
    kind = draw(st.sampled_from(["none", "stale", "queue", "rate"]))
    if kind == "none":
        return Observation()
    if kind == "stale":
        return Observation(sampled_at=NOW - draw(st.floats(3601, 10_000)), queue_depth=0.0, request_rate=0.0)
    base = draw(fresh_observations())
    return replace(base, **{"queue_depth" if kind == "queue" else "request_rate": None})


@SETTINGS
@given(spec=specs(), observation=blind_observations(), fleet=fleets(), memory=memories(), forecast=forecasts())
def test_safe_mode_never_reduces_capacity(
    spec: InferenceServiceSpec, observation: Observation, fleet: FleetState, memory: PolicyMemory,
    forecast: ForecastSummary | None,
) -> None:
    plan, _ = decide(spec, observation, fleet, memory, forecast)
    view = FleetView.of(fleet)
    hi = spec.replicas.max
    assert plan.safe_mode and plan.reason == "SafeMode"
    current = memory.last_serving if memory.last_serving is not None else view.serving + view.starting
    assert plan.serving >= min(max(current, view.serving), hi)
    by_name = {r.name: r for r in fleet.replicas}
    ready = [r for r in fleet.replicas if is_healthy(r) and r.state in (ReplicaState.serving, ReplicaState.standby)]
    if len(ready) <= hi:
        assert not [n for n in plan.retire if by_name[n] in ready]
        interrupted = interrupted_by_class(fleet)
        assert plan.on_demand - interrupted[ON_DEMAND] >= view.ready_by_class[ON_DEMAND]
        assert plan.spot - interrupted[SPOT] >= view.ready_by_class[SPOT]


# ---------------------------------------------------------------------------------------------
# Determinism and stability.


@SETTINGS
@given(spec=specs(), observation=observations(), fleet=fleets(), memory=memories(), forecast=forecasts())
def test_same_inputs_same_plan(
    spec: InferenceServiceSpec, observation: Observation, fleet: FleetState, memory: PolicyMemory,
    forecast: ForecastSummary | None,
) -> None:
    assert decide(spec, observation, fleet, memory, forecast) == decide(spec, observation, fleet, memory, forecast)


@SETTINGS
@given(spec=specs(), observation=observations(), fleet=fleets(), memory=memories(), forecast=forecasts())
def test_recommend_mode_is_the_same_plan_not_applied(
    spec: InferenceServiceSpec, observation: Observation, fleet: FleetState, memory: PolicyMemory,
    forecast: ForecastSummary | None,
) -> None:
    active, mem_a = decide(spec.model_copy(update={"mode": Mode.active}), observation, fleet, memory, forecast)
    recommend, mem_r = decide(spec.model_copy(update={"mode": Mode.recommend}), observation, fleet, memory, forecast)
    assert active.apply and not recommend.apply
    assert replace(recommend, apply=True) == active and mem_a == mem_r


def reversals(xs: list[int]) -> int:
    steps = [b - a for a, b in zip(xs, xs[1:]) if b != a]
    return sum(1 for s1, s2 in zip(steps, steps[1:]) if (s1 > 0) != (s2 > 0))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), observation=observations(), fleet=fleets(max_size=20), forecast=forecasts())
def test_repeated_identical_observation_gives_a_stable_plan(
    spec: InferenceServiceSpec, observation: Observation, fleet: FleetState, forecast: ForecastSummary | None,
) -> None:
    memory = PolicyMemory()
    dt = float(spec.scaling.interval_seconds)
    plans = []
    for i in range(300):
        now = NOW + i * dt
        obs = replace(observation, sampled_at=now) if observation.sampled_at is not None else observation
        plan, memory = decide(spec, obs, fleet, memory, forecast, now=now)
        plans.append(plan)
    serving = [p.serving for p in plans]
    assert reversals(serving) == 0
    tail = plans[-20:]
    assert all(p == tail[0] for p in tail)


# ---------------------------------------------------------------------------------------------
# Cooldowns and windows, on a closed loop where the fleet follows the plan.


def fleet_of(n: int) -> FleetState:
    return FleetState(replicas=tuple(Replica(f"r{i}", ON_DEMAND, ReplicaState.serving, 0.0, 1.0) for i in range(n)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), loads=st.lists(st.tuples(st.floats(0, 300), st.floats(0, 300)), min_size=5, max_size=120))
def test_cooldowns_and_windows_are_honoured(spec: InferenceServiceSpec, loads: list[tuple[float, float]]) -> None:
    dt = float(spec.scaling.interval_seconds)
    down_window = spec.scaling.scale_down.stabilization_seconds
    memory = PolicyMemory()
    serving = spec.replicas.min
    needs: list[tuple[float, int]] = []
    last_down: float | None = None
    started = NOW
    for i, (queue, rate) in enumerate(loads):
        now = NOW + i * dt
        plan, memory = decide(spec, Observation(now, queue, 0.0, 0.0, 0.0, rate), fleet_of(serving), memory, now=now)
        assert memory.last_need is not None
        needs.append((now, memory.last_need))
        lo, hi = bounds(spec)
        if plan.serving > serving:
            assert plan.serving <= max(serving + max_up_step(spec, serving), lo)
        if plan.serving < serving:
            assert plan.serving >= min(serving - max_down_step(spec, serving), hi)
            if plan.serving < hi:  # not forced by replicas.max
                assert now - started >= down_window
                assert last_down is None or now - last_down >= spec.scaling.interval_seconds
                in_window = [n for t, n in needs if now - down_window <= t]
                assert plan.serving >= min(max(in_window), hi)
            last_down = now
        serving = plan.serving


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(noise=st.lists(st.floats(0, 1), min_size=60, max_size=60), level=st.floats(10, 200))
def test_noise_below_a_recurring_peak_never_scales_down(noise: list[float], level: float) -> None:
    spec = InferenceServiceSpec.model_validate(
        {"model": {"name": "m"}, "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
         "replicas": {"min": 1, "max": 64}, "scaling": {"targetRpsPerReplica": 10}}
    )
    peak = math.ceil(level / 10 - 1e-9)
    memory = PolicyMemory()
    history = []
    for i, x in enumerate(noise):
        now = NOW + 10 * i
        rate = level if i % 25 == 0 else level * (0.5 + 0.5 * x)  # peak every 250 s < 300 s window
        plan, memory = decide(spec, Observation(now, 0.0, None, None, None, rate), fleet_of(peak), memory, now=now)
        history.append(plan.serving)
    assert set(history) == {peak}
