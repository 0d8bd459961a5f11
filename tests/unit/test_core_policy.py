"""Table-driven cases for each rule of the gpufleet decision core."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.policy import REASONS, GpufleetPolicy
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
from tests.builders import NOW, deep_merge, make_spec, obs, rep, serving_fleet

POLICY = GpufleetPolicy()


def decide(
    spec: InferenceServiceSpec,
    observation: Observation,
    fleet: FleetState,
    memory: PolicyMemory = PolicyMemory(),
    forecast: ForecastSummary | None = None,
    now: float = NOW,
) -> tuple[Plan, PolicyMemory]:
    return POLICY.decide(spec=spec, observation=observation, forecast=forecast, fleet=fleet, memory=memory, now=now)


# ---------------------------------------------------------------------------------------------
# Capacity: the worst of the signals.

FAST_UP = {"scaling": {"scaleUp": {"maxStepPercent": 1000, "maxStepReplicas": 100}}}


@pytest.mark.parametrize(
    ("case", "spec_extra", "observation", "forecast", "serving", "reason", "text"),
    [
        ("queue", {}, obs(queue_depth=42), None, 5, "QueueDepth", "queue 42 > 8/replica x 4 serving: need 5 (arrivals 40.0 rps + backlog over 10s)"),
            ("queue drains", {}, obs(queue_depth=300, request_rate=50), None, 8, "QueueDepth", "need 8 (arrivals 50.0 rps + backlog over 10s)"),
        ("queue under target holds", {"replicas": {"min": 4}}, obs(queue_depth=10), None, 4, "MinReplicas", "min replicas 4"),
        ("ttft", {"slo": {"ttftP95Ms": 800}}, obs(ttft_p95_ms=1200), None, 6, "Latency", "ttft p95 1200ms > 800ms target x 4 serving: need 6"),
        ("latency", {"slo": {"latencyP95Ms": 1000}}, obs(latency_p95_ms=2500), None, 10, "Latency", "latency p95 2500ms > 1000ms"),
        ("queue time", {"slo": {"queueTimeMs": 50}}, obs(queue_time_ms=100), None, 8, "Latency", "queue time 100ms > 50ms"),
        ("latency within target", {"slo": {"ttftP95Ms": 800}, "replicas": {"min": 4}}, obs(ttft_p95_ms=700), None, 4, "MinReplicas", ""),
        ("rate", {}, obs(request_rate=55), None, 6, "RequestRate", "rate 55.0 rps / 10.00 rps/replica: need 6"),
        ("rate at a utilisation target", {"scaling": {"targetUtilization": 0.8}}, obs(request_rate=55), None, 7, "RequestRate", "rate 55.0 rps / 8.00 rps/replica: need 7"),
        ("forecast at a utilisation target", {"scaling": {"targetUtilization": 0.5}}, obs(), ForecastSummary(95, 100, 120, "holt-winters"), 24, "ForecastLoad", "forecast 120.0 rps"),
        ("forecast", {}, obs(), ForecastSummary(95, 100, 120, "holt-winters"), 12, "ForecastLoad", "forecast 120.0 rps"),
        ("forecast disabled", {"forecast": {"enabled": False}, "replicas": {"min": 4}}, obs(), ForecastSummary(95, 100, 120, "hw"), 4, "MinReplicas", ""),
        ("min", {"replicas": {"min": 5}}, obs(), None, 5, "MinReplicas", "load needs 0; min replicas 5"),
        ("max", {"replicas": {"max": 10}}, obs(queue_depth=1000, request_rate=100), None, 10, "MaxReplicas", "capped at max replicas 10"),
        ("worst wins", {"slo": {"ttftP95Ms": 800}}, obs(queue_depth=40, ttft_p95_ms=1600, request_rate=30), None, 8, "Latency", ""),
    ],
)
def test_capacity_signals(
    case: str,
    spec_extra: dict[str, Any],
    observation: Observation,
    forecast: ForecastSummary | None,
    serving: int,
    reason: str,
    text: str,
) -> None:
    spec = make_spec(**deep_merge(FAST_UP, spec_extra))
    plan, _ = decide(spec, observation, serving_fleet(4), PolicyMemory(last_serving=4), forecast)
    assert (plan.serving, plan.reason) == (serving, reason), plan.message
    assert text in plan.message
    assert plan.reason in REASONS
    assert "\n" not in plan.message


def test_rps_per_replica_is_learned_near_the_queue_target() -> None:
    spec = make_spec(scaling={"targetRpsPerReplica": None})
    fleet = serving_fleet(4)
    # Queue at 7/replica (target 8): replicas are busy, 40 rps / 4 = 10 rps per replica.
    _, mem = decide(spec, obs(queue_depth=28, request_rate=40), fleet, PolicyMemory(last_serving=4))
    assert mem.learned_rps_per_replica == pytest.approx(10.0)
    # An idle sample (queue ~0) teaches nothing: rate/replica there measures idleness.
    _, mem2 = decide(spec, obs(queue_depth=0, request_rate=4), fleet, mem, now=NOW + 10)
    assert mem2.learned_rps_per_replica == pytest.approx(10.0)
    # The learned rate then turns a forecast into replicas.
    plan, _ = decide(spec, obs(request_rate=30), fleet, mem, ForecastSummary(95, 50, 60, "hw"), now=NOW + 10)
    assert (plan.serving, plan.reason) == (6, "ForecastLoad")


def test_without_rps_the_forecast_is_unused_but_queue_still_works() -> None:
    spec = make_spec(scaling={"targetRpsPerReplica": None})
    plan, _ = decide(spec, obs(queue_depth=0, request_rate=100), serving_fleet(2), PolicyMemory(last_serving=2),
                     ForecastSummary(95, 100, 200, "hw"))
    assert plan.serving == 2  # holding (scale-down window), nothing known to size the forecast
    plan, _ = decide(spec, obs(queue_depth=40), serving_fleet(2), PolicyMemory(last_serving=2))
    assert plan.serving == 5


def test_idle_service_without_latency_samples_is_not_blind() -> None:
    # No requests in the window: Prometheus' histogram_quantile is NaN. That is not missing data.
    spec = make_spec(slo={"ttftP95Ms": 800})
    plan, _ = decide(spec, obs(request_rate=0.0, ttft_p95_ms=math.nan), serving_fleet(2), PolicyMemory(last_serving=2))
    assert not plan.safe_mode


def test_forecast_is_trusted_up_to_one_step_above_the_load() -> None:
    spec = make_spec()  # scale-up step: max(100 %, 4 replicas)
    wild = ForecastSummary(95, 20, 400, "last-value", "interval from random-walk width")
    plan, _ = decide(spec, obs(request_rate=20), serving_fleet(2), PolicyMemory(last_serving=2), wild)
    assert (plan.serving, plan.reason) == (6, "ForecastLoad")  # load needs 2, + max(2, 4)
    assert "trusted up to 6" in plan.message
    ramp = ForecastSummary(95, 50, 55, "holt-winters")
    plan, _ = decide(spec, obs(request_rate=40), serving_fleet(4), PolicyMemory(last_serving=4), ramp)
    assert (plan.serving, plan.reason) == (6, "ForecastLoad") and "trusted" not in plan.message


def test_latency_breach_does_not_compound_while_new_replicas_settle() -> None:
    spec = make_spec(slo={"ttftP95Ms": 1000}, **FAST_UP)
    plan, mem = decide(spec, obs(ttft_p95_ms=2000), serving_fleet(4), PolicyMemory(last_serving=4))
    assert plan.serving == 8
    # 10 s later 8 serve (standbys promoted) but the p95 window still shows the old breach.
    plan, mem = decide(spec, obs(ttft_p95_ms=2000, sampled_at=NOW + 10), serving_fleet(8), mem, now=NOW + 10)
    assert plan.serving == 8
    # Once 8 have served for a full latency window and the breach persists, it is real.
    plan, mem = decide(spec, obs(ttft_p95_ms=2000, sampled_at=NOW + 80), serving_fleet(8), mem, now=NOW + 80)
    assert plan.serving == 16


def test_nan_and_negative_values_are_missing() -> None:
    spec = make_spec()
    plan, _ = decide(spec, obs(queue_depth=math.nan, request_rate=-1), serving_fleet(4), PolicyMemory(last_serving=4))
    assert plan.safe_mode and plan.reason == "SafeMode"
    assert "queue_depth missing" in plan.message and "request_rate missing" in plan.message


# ---------------------------------------------------------------------------------------------
# Stabilisation: fast bounded up, slow stabilised down, cooldown.


def test_scale_up_step_is_bounded_by_percent_or_replicas() -> None:
    spec = make_spec(scaling={"scaleUp": {"maxStepPercent": 50, "maxStepReplicas": 3}})
    # Queue need: (230 rps arriving + 800 queued / 10 s) / 10 rps per replica = 31.
    plan, _ = decide(spec, obs(queue_depth=800, request_rate=230), serving_fleet(4), PolicyMemory(last_serving=4))
    assert plan.serving == 7 and "step-limited from 31" in plan.message  # max(50% of 4, 3) = 3
    plan, _ = decide(spec, obs(queue_depth=800, request_rate=230), serving_fleet(10), PolicyMemory(last_serving=10))
    assert plan.serving == 15  # max(50% of 10, 3) = 5


def test_scale_up_stabilisation_waits_for_the_need_to_persist() -> None:
    spec = make_spec(scaling={"scaleUp": {"stabilizationSeconds": 30}})
    fleet = serving_fleet(4)
    mem = PolicyMemory(last_serving=4, recommendations=((NOW - 10, 4),))
    plan, mem = decide(spec, obs(queue_depth=48), fleet, mem)
    assert (plan.serving, plan.reason) == (4, "Stabilizing") and "persist 30s" in plan.message
    plan, mem = decide(spec, obs(queue_depth=48, sampled_at=NOW + 10), fleet, mem, now=NOW + 10)
    plan, mem = decide(spec, obs(queue_depth=48, sampled_at=NOW + 20), fleet, mem, now=NOW + 20)
    assert plan.serving == 4  # (NOW - 10, 4) is still inside the window
    plan, mem = decide(spec, obs(queue_depth=48, sampled_at=NOW + 30), fleet, mem, now=NOW + 30)
    # 4 saturated replicas serve ~40 rps: (40 + 48 / 10 s) / 10 -> 5.
    assert (plan.serving, plan.reason) == (5, "QueueDepth")


def test_scale_down_waits_for_the_window_then_steps_slowly() -> None:
    spec = make_spec(scaling={"scaleDown": {"stabilizationSeconds": 300, "maxStepPercent": 20}}, replicas={"max": 40})
    fleet = serving_fleet(20)
    mem = PolicyMemory(last_serving=20, recommendations=((NOW, 20),))
    plan, mem = decide(spec, obs(request_rate=200), fleet, mem)
    servings = []
    for t in range(10, 601, 10):
        plan, mem = decide(spec, obs(request_rate=50, sampled_at=NOW + t), fleet, mem, now=NOW + t)
        servings.append((t, plan.serving, plan.reason))
    held = [s for t, s, _ in servings if t <= 300]
    assert set(held) == {20}
    assert servings[0][2] == "Stabilizing"
    after = [s for t, s, _ in servings if t > 300]
    assert after[:4] == [16, 13, 11, 9]  # 20 % (at least one) per step
    assert after[-1] == 5  # 50 rps / 10
    assert all(a >= b for a, b in zip(after, after[1:]))


def test_scale_down_cooldown_between_two_calls_within_one_interval() -> None:
    spec = make_spec(scaling={"scaleDown": {"stabilizationSeconds": 0}})
    plan, mem = decide(spec, obs(request_rate=10), serving_fleet(10), PolicyMemory(last_serving=10))
    assert plan.serving == 8
    plan, _ = decide(spec, obs(request_rate=10, sampled_at=NOW + 2), serving_fleet(10), mem, now=NOW + 2)
    assert plan.serving == 8 and plan.reason == "Stabilizing" and "scaled down under 10s ago" in plan.message


def test_noise_around_a_level_does_not_flap() -> None:
    spec = make_spec()
    fleet = serving_fleet(5)
    mem = PolicyMemory(last_serving=5)
    seen = []
    for i in range(200):
        q = 33 if i % 2 else 39  # need 5 then 5; and 4 vs 5 on the rate signal below
        rate = 38 if i % 3 else 45
        plan, mem = decide(spec, obs(queue_depth=q, request_rate=rate, sampled_at=NOW + 10 * i), fleet, mem, now=NOW + 10 * i)
        seen.append(plan.serving)
    assert set(seen) == {5}


def test_identical_inputs_give_identical_plans() -> None:
    spec = make_spec(warmPool={"size": "auto"}, capacity={"spot": {"enabled": True}})
    args = (spec, obs(queue_depth=50, request_rate=30), serving_fleet(3, cls=SPOT), PolicyMemory(last_serving=3),
            ForecastSummary(95, 30, 45, "hw"))
    assert decide(*args) == decide(*args)


def test_deciding_twice_at_the_same_instant_is_idempotent() -> None:
    spec = make_spec()
    p1, m1 = decide(spec, obs(request_rate=20), serving_fleet(4), PolicyMemory(last_serving=4, recommendations=((NOW - 100, 4),)))
    p2, m2 = decide(spec, obs(request_rate=20), serving_fleet(4), m1)
    assert (p1.serving, p1.standby, p1.total) == (p2.serving, p2.standby, p2.total)
    assert m2.recommendations == m1.recommendations


# ---------------------------------------------------------------------------------------------
# Safe mode.


@pytest.mark.parametrize(
    ("case", "observation", "spec_extra", "missing"),
    [
        ("no sample", Observation(), {}, "no metrics sample"),
        ("stale", obs(sampled_at=NOW - 61), {}, "metrics stale (61s old > 60s)"),
        ("stale per spec", obs(sampled_at=NOW - 20), {"metrics": {"staleAfterSeconds": 15}}, "metrics stale"),
        ("queue missing", obs(queue_depth=None), {}, "queue_depth missing"),
        ("rate missing", obs(request_rate=None), {}, "request_rate missing"),
        ("configured ttft missing", obs(request_rate=5.0), {"slo": {"ttftP95Ms": 500}}, "ttft_p95_ms missing"),
    ],
)
def test_safe_mode_never_scales_down(case: str, observation: Observation, spec_extra: dict[str, Any], missing: str) -> None:
    spec = make_spec(**spec_extra)
    fleet = FleetState(
        replicas=(*serving_fleet(6).replicas, rep("b0", ReplicaState.standby), rep("b1", ReplicaState.standby, SPOT))
    )
    plan, mem = decide(spec, observation, fleet, PolicyMemory(last_serving=6))
    assert plan.safe_mode and plan.reason == "SafeMode"
    assert missing in plan.message and "no scale-down" in plan.message
    assert plan.serving == 6
    assert plan.retire == ()
    assert plan.on_demand >= 7 and plan.spot >= 1
    # The blind period is remembered at the held size: no scale-down right after it either.
    recovered = obs(sampled_at=NOW + 10, ttft_p95_ms=100.0, request_rate=5.0)
    plan, _ = decide(spec, recovered, fleet, mem, now=NOW + 10)
    assert plan.serving == 6 and plan.reason == "Stabilizing"


def test_safe_mode_scales_up_on_the_signals_that_exist() -> None:
    spec = make_spec(**FAST_UP)
    plan, _ = decide(spec, obs(request_rate=None, queue_depth=80), serving_fleet(4), PolicyMemory(last_serving=4))
    assert plan.safe_mode and plan.serving == 10 and plan.reason == "SafeMode"
    assert "request_rate missing" in plan.message and "queue 80" in plan.message
    # Stale: the forecast is still a signal that exists.
    plan, _ = decide(spec, Observation(), serving_fleet(4), PolicyMemory(last_serving=4), ForecastSummary(95, 60, 70, "hw"))
    assert plan.safe_mode and plan.serving == 7


def test_safe_mode_keeps_what_serves_even_above_the_previous_target() -> None:
    plan, _ = decide(make_spec(), Observation(), serving_fleet(9), PolicyMemory(last_serving=6))
    assert plan.serving == 9 and plan.retire == ()


# ---------------------------------------------------------------------------------------------
# Warm pool and promotion.


def test_fixed_pool_and_promotion_on_a_step() -> None:
    spec = make_spec(warmPool={"size": 2}, **FAST_UP)
    fleet = FleetState(
        replicas=(
            *serving_fleet(4).replicas,
            Replica("b-old", ON_DEMAND, ReplicaState.standby, 0, ready_at=100),
            Replica("b-new", ON_DEMAND, ReplicaState.standby, 0, ready_at=200),
        )
    )
    plan, _ = decide(spec, obs(queue_depth=40, request_rate=40), fleet, PolicyMemory(last_serving=4))
    assert plan.serving == 5 and plan.standby == 2
    assert plan.promote == ("b-old",)  # the longest-Ready first
    assert plan.total == 7 and plan.retire == ()  # the pool backfills one
    plan, _ = decide(spec, obs(queue_depth=80, request_rate=95), fleet, PolicyMemory(last_serving=4))
    assert plan.serving == 10 and set(plan.promote) == {"b-old", "b-new"}


def test_pool_yields_to_serving_at_max_replicas() -> None:
    spec = make_spec(warmPool={"size": 3}, replicas={"max": 8}, **FAST_UP)
    plan, _ = decide(spec, obs(queue_depth=56, request_rate=60), serving_fleet(4), PolicyMemory(last_serving=4))
    assert (plan.serving, plan.standby, plan.total) == (7, 1, 8)
    assert "capped by max replicas 8" in plan.message


def test_auto_pool_follows_forecast_spread_and_bursts() -> None:
    spec = make_spec(warmPool={"size": "auto", "max": 4}, **FAST_UP)
    fleet = serving_fleet(4)
    plan, _ = decide(spec, obs(request_rate=30), fleet, PolicyMemory(last_serving=4), ForecastSummary(95, 30, 40, "hw"))
    assert plan.standby == 1  # spread 10 rps = 1 replica; never below one with auto
    plan, _ = decide(spec, obs(request_rate=30), fleet, PolicyMemory(last_serving=4), ForecastSummary(95, 30, 55, "hw"))
    assert plan.standby == 3  # spread 25 rps = 2.5 -> 3
    plan, _ = decide(spec, obs(request_rate=30), fleet, PolicyMemory(last_serving=4), ForecastSummary(95, 30, 130, "hw"))
    assert plan.standby == 4  # warmPool.max
    # A recent jump of 3 replicas in need keeps 3 warm, decaying over time.
    mem = PolicyMemory(last_serving=4, last_need=4, last_decided_at=NOW - 10)
    plan, mem = decide(spec, obs(request_rate=70), fleet, mem)
    assert plan.standby == 3 and mem.burst_replicas == 3
    plan, mem = decide(spec, obs(request_rate=70, sampled_at=NOW + 7200), fleet, mem, now=NOW + 7200)
    assert plan.standby == 1


def test_auto_pool_counts_serving_headroom_and_shrinks_only_after_the_window() -> None:
    spec = make_spec(warmPool={"size": "auto", "max": 4})
    fleet = serving_fleet(8)
    # A burst of 3 replicas just happened, but serving is held at 8 while the need is 4:
    # the 4 spare serving replicas already cover it.
    mem = PolicyMemory(last_serving=8, last_need=1, last_decided_at=NOW - 10, started_at=NOW - 10,
                       recommendations=((NOW - 10, 8),))
    plan, _ = decide(spec, obs(request_rate=40), fleet, mem)
    assert plan.serving == 8 and plan.standby == 1 and "headroom 4" in plan.message
    # Pool wanted 3 a moment ago: it is held for the scale-down window, not destroyed at once.
    mem = PolicyMemory(last_serving=4, standby_recommendations=((NOW - 100, 3),))
    plan, _ = decide(spec, obs(request_rate=40), serving_fleet(4), mem)
    assert plan.standby == 3 and "holding 3" in plan.message
    plan, _ = decide(spec, obs(request_rate=40), serving_fleet(4), replace(mem, standby_recommendations=((NOW - 400, 3),)))
    assert plan.standby == 1


# ---------------------------------------------------------------------------------------------
# Spot / on-demand split, interruption, retirement order.


def spot_spec(**extra: Any) -> InferenceServiceSpec:
    return make_spec(**deep_merge({"capacity": {"spot": {"enabled": True, "maxFraction": 0.7}, "onDemand": {"base": 2}}}, extra))


@pytest.mark.parametrize(
    ("case", "spec", "fleet_kw", "od", "spot", "reason"),
    [
        ("spot share", spot_spec(), {}, 3, 7, "RequestRate"),
        ("base bounds spot", spot_spec(capacity={"onDemand": {"base": 5}}), {}, 5, 5, "RequestRate"),
        ("fraction bounds spot", spot_spec(capacity={"spot": {"maxFraction": 0.25}}), {}, 8, 2, "RequestRate"),
        ("spot disabled", make_spec(), {}, 10, 0, "RequestRate"),
        ("spot unavailable", spot_spec(), {"spot_unavailable": True}, 10, 0, "SpotUnavailable"),
        ("spot not cheaper", spot_spec(capacity={"pricePerGpuHour": {"spot": 5.0, "onDemand": 4.0}}), {}, 10, 0, "RequestRate"),
    ],
)
def test_class_split(case: str, spec: InferenceServiceSpec, fleet_kw: dict[str, Any], od: int, spot: int, reason: str) -> None:
    # Replicas still starting: nothing Ready to keep while moving between classes.
    fleet = FleetState(replicas=tuple(rep(f"n{i}", ReplicaState.starting) for i in range(10)), **fleet_kw)
    plan, _ = decide(spec, obs(request_rate=100), fleet, PolicyMemory(last_serving=10))
    assert (plan.on_demand, plan.spot, plan.reason) == (od, spot, reason), plan.message
    assert f"{od} on-demand + {spot} spot" in plan.message


def test_moving_to_spot_keeps_on_demand_until_spot_is_ready() -> None:
    spec = spot_spec(replicas={"max": 16})
    fleet = serving_fleet(10, cls=ON_DEMAND)
    plan, _ = decide(spec, obs(request_rate=100), fleet, PolicyMemory(last_serving=10))
    # Target 3 on-demand + 7 spot, but the 10 Ready on-demand stay as far as max (16) allows.
    assert (plan.spot, plan.on_demand) == (7, 9) and plan.total <= 16
    assert "until replacements are Ready" in plan.message
    ready_spot = FleetState(replicas=(*fleet.replicas, *(rep(f"p{i}", cls=SPOT) for i in range(7))))
    plan, _ = decide(spec, obs(request_rate=100), ready_spot, PolicyMemory(last_serving=10))
    assert (plan.on_demand, plan.spot) == (3, 7)
    assert len(plan.retire) == 7 and all(n.startswith("s") for n in plan.retire)


def test_spot_unavailable_sends_new_capacity_on_demand_and_keeps_running_spot() -> None:
    spec = spot_spec()
    fleet = FleetState(
        replicas=(*serving_fleet(3, cls=ON_DEMAND).replicas, *(rep(f"p{i}", cls=SPOT) for i in range(5)),
                  rep("pending", ReplicaState.starting, SPOT)),
        spot_unavailable=True,
    )
    plan, _ = decide(spec, obs(request_rate=100), fleet, PolicyMemory(last_serving=10))
    # 10 wanted: the 5 Ready spot replicas stay, the rest (2 new) on on-demand; the Pending spot pod goes.
    assert (plan.on_demand, plan.spot, plan.reason) == (5, 5, "SpotUnavailable")
    assert plan.retire == ("pending",)
    assert "new capacity on on-demand, 5 Ready spot kept" in plan.message


def test_interrupted_replicas_are_replaced_at_once() -> None:
    spec = spot_spec(warmPool={"size": 1})
    fleet = FleetState(
        replicas=(
            rep("od0"), rep("od1"), rep("od2"),
            rep("sp0", cls=SPOT, interrupted=True, in_flight=3),
            rep("sp1", cls=SPOT, interrupted=True, in_flight=1),
            *(rep(f"sp{i}", cls=SPOT) for i in range(2, 7)),
            rep("warm", ReplicaState.standby, SPOT, created=50),
        )
    )
    plan, _ = decide(spec, obs(request_rate=100), fleet, PolicyMemory(last_serving=10))
    assert plan.reason == "Interruption" and "2 replica(s) on interrupted nodes" in plan.message
    assert "promote 1, start 2" in plan.message
    assert plan.serving == 10 and plan.promote == ("warm",)
    assert plan.retire[:2] == ("sp1", "sp0")  # interrupted first, least in-flight first
    assert len(plan.retire) == 2
    # 10 serving + 1 standby healthy. A reclaim notice means spot is shrinking: the 6 healthy
    # Ready spot replicas stay, the 2 replacements start on on-demand (3 -> 5). The spot
    # Deployment keeps the 2 interrupted replicas until they are drained or reclaimed.
    assert (plan.on_demand, plan.spot) == (5, 8)
    assert "5 on-demand + 6 spot; + 2 interrupted until drained" in plan.message


def test_retirement_order() -> None:
    spec = spot_spec(capacity={"onDemand": {"base": 0}, "spot": {"maxFraction": 1.0}}, replicas={"min": 0},
                     scaling={"scaleDown": {"stabilizationSeconds": 0, "maxStepPercent": 100}})
    fleet = FleetState(
        replicas=(
            rep("serve-od-busy", cls=ON_DEMAND, in_flight=5),
            rep("serve-od-idle", cls=ON_DEMAND, in_flight=0),
            rep("serve-spot-old", cls=SPOT, created=1, in_flight=0),
            rep("serve-spot-young", cls=SPOT, created=9, in_flight=0),
            rep("standby-od", ReplicaState.standby, ON_DEMAND),
            rep("standby-spot", ReplicaState.standby, SPOT),
            rep("starting-od", ReplicaState.starting, ON_DEMAND),
            rep("interrupted-od", ReplicaState.serving, ON_DEMAND, interrupted=True, in_flight=9),
            rep("draining", ReplicaState.draining, SPOT),
        )
    )
    plan, _ = decide(spec, obs(), fleet, PolicyMemory(last_serving=4))
    assert (plan.serving, plan.standby, plan.total) == (0, 0, 1)  # the interrupted one, until drained
    assert plan.retire == (
        "interrupted-od",
        "starting-od",
        "standby-spot",
        "standby-od",
        "serve-spot-young",
        "serve-spot-old",
        "serve-od-idle",
        "serve-od-busy",
    )


# ---------------------------------------------------------------------------------------------
# Recommend mode.


def test_recommend_mode_gives_the_same_plan_not_applied() -> None:
    args = (obs(queue_depth=42, request_rate=10), serving_fleet(4), PolicyMemory(last_serving=4))
    active, mem_a = decide(make_spec(), *args)
    recommend, mem_r = decide(make_spec(mode="recommend"), *args)
    assert active.apply and not recommend.apply
    assert replace(recommend, apply=True) == active
    assert mem_a == mem_r


def test_no_scale_down_before_a_full_window_of_history() -> None:
    spec = make_spec()
    plan, mem = decide(spec, obs(request_rate=10), serving_fleet(8), PolicyMemory())
    assert plan.serving == 8 and plan.reason == "Stabilizing" and "300s of history" in plan.message
    for t in range(10, 301, 10):
        plan, mem = decide(spec, obs(request_rate=10, sampled_at=NOW + t), serving_fleet(8), mem, now=NOW + t)
    assert plan.serving == 7  # first step down once 300 s of history exist


def test_spot_fallback_has_hysteresis() -> None:
    spec = spot_spec(capacity={"spot": {"returnAfterSeconds": 600}})
    starting = FleetState(replicas=tuple(rep(f"n{i}", ReplicaState.starting) for i in range(10)))
    out = replace(starting, spot_unavailable=True)
    mem = PolicyMemory(last_serving=10)
    plan, mem = decide(spec, obs(request_rate=100), out, mem)
    assert (plan.spot, plan.reason) == (0, "SpotUnavailable")
    # The Pending spot pods are gone, so the fleet's signal clears: the plan stays on on-demand.
    plan, mem = decide(spec, obs(request_rate=100, sampled_at=NOW + 10), starting, mem, now=NOW + 10)
    assert plan.spot == 0 and "back to spot in 590s" in plan.message
    plan, mem = decide(spec, obs(request_rate=100, sampled_at=NOW + 600), starting, mem, now=NOW + 600)
    assert plan.spot == 7  # retry
    # Out again soon after the return: wait twice as long.
    plan, mem = decide(spec, obs(request_rate=100, sampled_at=NOW + 800), out, mem, now=NOW + 800)
    assert plan.spot == 0 and mem.spot_backoff_s == 1200
    plan, _ = decide(spec, obs(request_rate=100, sampled_at=NOW + 1900), starting, mem, now=NOW + 1900)
    assert plan.spot == 0
    plan, mem = decide(spec, obs(request_rate=100, sampled_at=NOW + 2000), starting, mem, now=NOW + 2000)
    assert plan.spot == 7
    # An outage after a quiet hour starts over at the base wait.
    plan, mem = decide(spec, obs(request_rate=100, sampled_at=NOW + 9000), out, mem, now=NOW + 9000)
    assert mem.spot_backoff_s == 600


def test_burst_is_the_rise_in_need_within_one_time_to_ready() -> None:
    from gpufleet.core.warmpool import horizon_s, recent_rise

    spec = make_spec()
    lead = horizon_s(spec, {ON_DEMAND: 90.0, SPOT: 120.0})
    assert lead == 130.0  # slowest class + one interval
    recs = ((NOW - 200, 1), (NOW - 120, 2), (NOW - 60, 4), (NOW - 10, 5))
    assert recent_rise(6, recs, NOW, lead, last=5) == 4  # 6 now vs 2 lowest within 130 s
    assert recent_rise(6, (), NOW, lead, last=5) == 1  # no history: the last step's rise
    # Through the policy: a fleet whose replicas take 120 s to start keeps the rise as standbys.
    spec = make_spec(warmPool={"size": "auto", "max": 8})
    fleet = replace(serving_fleet(6), time_to_ready_s={ON_DEMAND: 120.0})
    mem = PolicyMemory(last_serving=6, last_need=5, last_decided_at=NOW - 10, recommendations=recs)
    plan, _ = decide(spec, obs(request_rate=60), fleet, mem)
    assert plan.serving == 6 and plan.standby == 4 and "burst 4.0" in plan.message


@pytest.mark.parametrize("blind", [False, True])
def test_edited_bounds_apply_at_once(blind: bool) -> None:
    observation = Observation() if blind else obs(request_rate=100)
    plan, _ = decide(make_spec(replicas={"max": 6}), observation, serving_fleet(10), PolicyMemory(last_serving=10))
    assert plan.serving == 6 and "replicas.max is 6: serving 10 -> 6" in plan.message
    assert plan.reason == ("SafeMode" if blind else "MaxReplicas")
    assert len(plan.retire) == 4
    plan, _ = decide(make_spec(replicas={"min": 5}), obs(), serving_fleet(2), PolicyMemory(last_serving=2))
    assert (plan.serving, plan.reason) == (5, "MinReplicas")
