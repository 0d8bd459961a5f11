"""One control step: observe -> forecast -> decide -> re-check -> apply.

The operator calls this once per interval for each InferenceService; the simulator calls it on
simulated time. Nothing here knows where the ports' data comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.control import schedule
from gpufleet.control.ports import FleetPort, ForecastPort, MetricsPort, Policy
from gpufleet.core.schedule import Window
from gpufleet.core.types import FleetState, ForecastSummary, Observation, Plan, PolicyMemory, quick_init


@quick_init
@dataclass(frozen=True, slots=True)
class StepResult:
    plan: Plan
    observation: Observation
    forecast: ForecastSummary | None
    fleet: FleetState
    memory: PolicyMemory
    applied: bool
    windows: tuple[Window, ...] = ()  # planned windows open or to come at this step (for status)


def forecast_horizon_s(spec: InferenceServiceSpec, fleet: FleetState) -> float:
    """Look ahead as far as a new replica needs to become Ready, plus one decision interval."""
    ttr = max(fleet.time_to_ready_s.values(), default=0.0)
    return ttr + spec.scaling.interval_seconds


def initial_decision(spec: InferenceServiceSpec, policy: Policy, *, now: float) -> tuple[Plan, PolicyMemory]:
    """The decision brand-new Deployments are sized from: no load, no pods, no memory (the floor,
    or an open planned window's, split as the policy would).

    Its memory is what the service's first tick starts from until it has memory of its own: the
    pods it finds starting came from this plan, standbys among them. Without it, a first tick in
    safe mode (no metrics yet) would hold every starting pod as serving and add a pool on top.
    """
    return policy.decide(spec=spec, observation=Observation(), forecast=None, fleet=FleetState(),
                         memory=PolicyMemory(), now=now, windows=schedule.windows(spec.schedules, now))


def revalidate(plan: Plan, fresh: FleetState) -> Plan:
    """Drop promotions/retirements of replicas that vanished or changed state since the decision."""
    if not plan.promote and not plan.retire:
        return plan  # nothing named (most ticks): the plan stands as decided
    # (A pass for the standbys only when the plan promotes.)
    names = {r.name for r in fresh.replicas}
    retire = tuple(n for n in plan.retire if n in names)
    promote = plan.promote
    if promote:
        standby = {r.name for r in fresh.replicas if r.state.value == "standby"}
        promote = tuple(n for n in promote if n in standby)
    if promote == plan.promote and retire == plan.retire:
        return plan  # nothing dropped: no copy of the plan
    return replace(plan, promote=promote, retire=retire)


def reroute(plan: Plan, fleet: FleetPort, *, now: float) -> Plan:
    """Carry out the last decision again on fresh state, between ticks: when a pod turns Ready it
    joins the Service now if that plan wants more serving (a plain Deployment's pod serves once
    Ready; a standby is promoted the same way). No metrics read, no new decision."""
    plan = revalidate(plan, fleet.state(now=now))
    fleet.apply(plan, now=now)
    return plan


def decide(
    *,
    spec: InferenceServiceSpec,
    policy: Policy,
    metrics: MetricsPort,
    fleet: FleetPort,
    forecaster: ForecastPort | None,
    memory: PolicyMemory,
    now: float,
) -> StepResult:
    """Observe, forecast and decide, and check the plan against a fresh fleet state; nothing is
    changed yet (`carry_out` does that). `applied` says whether the plan is to be carried out."""
    observation = metrics.observe(now=now)
    state = fleet.state(now=now)
    forecast = None
    if forecaster is not None and spec.forecast.enabled:
        forecast = forecaster.forecast(
            now=now, horizon_s=forecast_horizon_s(spec, state), quantile=spec.forecast.quantile
        )
    # Planned windows are resolved here (calendar, time zones) and decided on in the core. They
    # never reach the forecaster: it learns from observed demand only (see kopf_app / sim engine).
    windows: tuple[Window, ...] = schedule.windows(spec.schedules, now)
    plan, memory = policy.decide(
        spec=spec, observation=observation, forecast=forecast, fleet=state, memory=memory, now=now, windows=windows
    )
    if plan.apply:
        plan = revalidate(plan, fleet.state(now=now))
    return StepResult(
        plan=plan, observation=observation, forecast=forecast, fleet=state, memory=memory, applied=plan.apply,
        windows=windows,
    )


def carry_out(result: StepResult, fleet: FleetPort, *, now: float) -> None:
    """Change the fleet as `decide` planned (nothing in recommend mode)."""
    if result.applied:
        fleet.apply(result.plan, now=now)


def step(
    *,
    spec: InferenceServiceSpec,
    policy: Policy,
    metrics: MetricsPort,
    fleet: FleetPort,
    forecaster: ForecastPort | None,
    memory: PolicyMemory,
    now: float,
) -> StepResult:
    """`decide`, then `carry_out` (the simulator; the operator's loop writes its status between
    the two: control.service)."""
    result = decide(spec=spec, policy=policy, metrics=metrics, fleet=fleet, forecaster=forecaster, memory=memory,
                    now=now)
    carry_out(result, fleet, now=now)
    return result
