"""Per-service accounting between ticks: metering, the budget's standing, and which Events to send.

The kopf layer owns one `Accounting` per InferenceService loop. It starts from the status the
previous operator wrote (usage totals, budget state), so a restart neither loses metered hours nor
repeats the last budget Event. Pure apart from keeping that state: no Kubernetes calls here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from gpufleet.api.models import BudgetStatus, InferenceServiceSpec, UsageStatus
from gpufleet.control import metering
from gpufleet.core.budget import ALERT, CAPPED, DAY_S, INFEASIBLE, OK
from gpufleet.core.types import BudgetCheck, FleetState, Plan, PolicyMemory

CONDITION = "BudgetExceeded"
# Event reasons (warnings at the alert threshold and at the cap; a normal Event when back under).
EVENT_REASON = {ALERT: "BudgetAlert", CAPPED: "BudgetCapped", INFEASIBLE: "BudgetInfeasible", OK: "BudgetOK"}
_SEVERITY = {OK: 0, ALERT: 1, CAPPED: 2, INFEASIBLE: 3}


@dataclass(frozen=True)
class Event:
    warning: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Condition:
    status: bool
    reason: str
    message: str


@dataclass
class Accounting:
    usage: UsageStatus | None = None  # unrounded running totals; None until read from status
    budget_state: str | None = None
    events: list[Event] = field(default_factory=list)

    def resume(self, status_usage: UsageStatus, status_budget: BudgetStatus | None) -> None:
        """Continue from what the previous operator wrote (first tick only)."""
        if self.usage is None:
            self.usage = status_usage
            self.budget_state = status_budget.state if status_budget is not None else None

    def seed(self, memory: PolicyMemory, now: float) -> PolicyMemory:
        """Today's spend in the policy's memory = what was metered today (the policy adds the
        interval since the last tick itself): one truth for the daily budget across restarts."""
        usage = self.usage
        if usage is None or usage.day != metering.utc_day(now):
            return memory
        return replace(memory, spend_day=int(now // DAY_S), spent_today=usage.cost_today)

    def meter(
        self, spec: InferenceServiceSpec, fleet: FleetState, request_rate: float | None, now: float
    ) -> metering.UsageDelta:
        usage, delta = metering.accumulate(self.usage or UsageStatus(), spec, fleet, request_rate, now)
        self.usage = usage
        return delta

    def judge(self, spec: InferenceServiceSpec, plan: Plan) -> tuple[BudgetStatus | None, Condition | None]:
        """Budget status and condition for this plan; queues an Event when the state changed."""
        check = plan.budget
        if spec.budget is None or check is None:
            self.budget_state = None
            return None, None
        previous = self.budget_state
        self.budget_state = check.state
        if check.state != previous and (previous is not None or check.state != OK):
            worse = _SEVERITY[check.state] > _SEVERITY.get(previous or OK, 0)
            self.events.append(Event(warning=check.state != OK and worse,
                                     reason=EVENT_REASON[check.state], message=_event_message(check)))
        return _status(check), _condition(check, spec)

    def take_events(self) -> list[Event]:
        out, self.events = self.events, []
        return out


def _event_message(check: BudgetCheck) -> str:
    return (f"{check.state}: wanted {check.wanted_per_hour:.2f}/h, limit {check.limit_per_hour:.2f}/h, "
            f"planned {check.planned_per_hour:.2f}/h; {check.message}")[:1000]


def _status(check: BudgetCheck) -> BudgetStatus:
    return BudgetStatus(
        state=check.state,  # one of the four literals (core.budget)
        limit_per_hour=round(check.limit_per_hour, 4),
        wanted_per_hour=round(check.wanted_per_hour, 4),
        planned_per_hour=round(check.planned_per_hour, 4),
        message=check.message[:1000],
    )


def _condition(check: BudgetCheck, spec: InferenceServiceSpec) -> Condition:
    if check.state in (CAPPED, INFEASIBLE):
        return Condition(True, "BudgetCapped" if check.state == CAPPED else "BudgetInfeasible", check.message)
    budget = spec.budget
    pct = budget.alert_percent if budget is not None else 80
    if check.state == ALERT:
        return Condition(False, "AlertThreshold", f"at or above {pct}% of a budget limit: {check.message}")
    return Condition(False, "WithinBudget", check.message)
