"""One InferenceService's loop: what the operator does for a service each interval, apart from
talking to Kubernetes.

`ServiceLoop.tick` (re)builds the ports when the spec changed (through a `Wiring`: the cluster's
adapters in the operator, fakes in tests), takes back status.memory on the first tick, decides
(`control.step.decide`), feeds the forecaster, meters, renders the status and decides whether it
is worth a write, writes it ahead of the rollout when the caller gives a way to, and carries the
plan out. It returns a plain `TickOutcome`: the status patch still to write (None when nothing
material changed or it was written ahead), the events to post and what to record in telemetry.
The caller (kopf_app) carries it out and hands a written outcome back to `confirm`, so a write
that failed is tried again next tick.

`ServiceLoop.reroute` carries out the last applied plan again on fresh state, between ticks (a pod
turned Ready: control.step.reroute). The caller never runs it beside a tick of the same service.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from gpufleet.api.models import InferenceServiceSpec, Mode, UsageStatus, read_status
from gpufleet.control import pricing, quota
from gpufleet.control.accounting import Accounting
from gpufleet.control.forecast import ForecastAdapter
from gpufleet.control.memory import MemoryFormatError
from gpufleet.control.memory import decode as decode_memory
from gpufleet.control.memory import encode as encode_memory
from gpufleet.control.memory import fingerprint as memory_fingerprint
from gpufleet.control.metering import UsageDelta
from gpufleet.control.ports import FleetPort, MetricsPort, Policy
from gpufleet.control.status import TargetReading, finite, material, render_status
from gpufleet.control.step import StepResult, carry_out, decide, initial_decision, reroute
from gpufleet.core import stabilize, warmpool
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.types import ON_DEMAND, SPOT, BudgetCheck, Plan, PolicyMemory

log = logging.getLogger(__name__)

# -- the ports one service's loop needs -----------------------------------------------------------


class ServiceFleet(FleetPort, Protocol):
    """The fleet port as a service's loop uses it (adapters.kubefleet.KubeFleet fits)."""

    spec: InferenceServiceSpec
    events: list[tuple[str, str]]  # (reason, message) of what the last apply() changed

    def start_samples(self) -> dict[str, list[float]]: ...  # time-to-Ready samples, persisted
    def restore_samples(self, samples: Mapping[str, list[float]]) -> None: ...
    def time_to_ready(self) -> dict[str, float]: ...


@runtime_checkable
class Shadowing(Protocol):
    """A fleet port that watches an existing workload (spec.targetRef; adapters.shadow.ShadowFleet):
    what it read of it at the last state()."""

    reading: TargetReading | None


class ServiceMetrics(MetricsPort, Protocol):
    """The metrics port as a service's loop uses it (adapters' PrometheusMetrics, ServiceMetrics,
    FallbackMetrics and NoMetrics fit)."""

    @property
    def available(self) -> bool: ...  # did the last observe() reach the metrics?
    @property
    def history_error(self) -> str | None: ...  # why the last history() failed (None: it answered)
    def summary(self) -> str: ...
    def history(self, key: str, *, start: float, end: float, step: float) -> list[tuple[float, float]]: ...


class Wiring(Protocol):
    """Builds (and lets go of) the I/O behind one service: adapters.wiring.ClusterWiring on a cluster."""

    def fleet(self, spec: InferenceServiceSpec) -> ServiceFleet: ...  # called once per loop
    def metrics(self, spec: InferenceServiceSpec) -> ServiceMetrics: ...  # again on every spec change
    def release(self, metrics: ServiceMetrics) -> None: ...  # the port is replaced or the loop ends
    def node_labels(self) -> Sequence[Mapping[str, str]]: ...  # every node's labels (price table)


@dataclass(frozen=True)
class Settings:
    """Operator-wide settings a loop reads (the CLI's flags)."""

    heartbeat_s: float = 60.0  # fields that change every tick are written at most this often
    backfill_s: float = 8 * 86400.0  # request-rate history read back at start
    price_table: pricing.PriceTable = field(default_factory=dict)


# -- what a tick asks its caller to do --------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class TickTelemetry:
    """What the tick's caller records in the operator's own metrics (gpufleet.telemetry)."""

    spec: InferenceServiceSpec
    result: StepResult
    usage: UsageStatus
    delta: UsageDelta
    budget: BudgetCheck | None
    max_cost_per_day: float | None
    alert_percent: int | None
    actual_replicas: int | None = None  # shadow mode: the target's spec.replicas (else: the pods)


@dataclass(frozen=True)
class Written:
    """The status a loop holds as written once its caller has patched it."""

    status: dict[str, Any]
    at: float
    memory_fp: str


@dataclass(frozen=True)
class TickOutcome:
    status: dict[str, Any] | None = None  # merge patch for status; None: nothing worth a write
    events: tuple[Event, ...] = ()  # to post in this order
    telemetry: TickTelemetry | None = None
    written: Written | None = None  # for confirm(), once the patch went through
    written_ahead: bool = False  # the tick's status went through `write_ahead` (status is None then)


class Causes:
    """Warnings aggregated per cause: one Event when a cause appears (or changes into another),
    none while it persists, one `Normal` when it clears (if the caller gives a reason for that).
    The loop outlives its ticks, so a cause that lasts an hour is one Event, not one per tick."""

    def __init__(self) -> None:
        self._now: dict[str, object] = {}  # reason -> the cause currently reported

    def changed(self, reason: str, cause: object | None) -> bool:
        """Record `reason`'s cause (None: cleared); True when it differs from the one reported."""
        before = self._now.get(reason)
        if cause is None:
            self._now.pop(reason, None)
        else:
            self._now[reason] = cause
        return before != cause

    def active(self, reason: str) -> bool:
        return reason in self._now


def metrics_causes(summary: str) -> tuple[str, ...]:
    """The causes in a metrics port's summary ('request_rate, queue_depth: Prometheus timeout; ...'),
    without the signals each took nor their particulars (which pods, how many, since when: a
    partial scrape that moves from one pod to two is the same cause; make chaos saw six Warnings
    in 11 s from that): the set a MetricsUnavailable Warning is posted once for."""
    text = summary.removesuffix(" (details in the operator log)")
    return tuple(sorted({_cause_kind(part.split(": ", 1)[-1]) for part in text.split("; ") if part.strip()}))


def _cause_kind(cause: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "N", re.sub(r"\s*\([^()]*\)", "", cause)).strip()


class ServiceLoop:
    """State one InferenceService's loop keeps between ticks: policy memory, forecaster, ports,
    the last applied plan and what it last wrote to status."""

    def __init__(self, *, name: str, wiring: Wiring, settings: Settings = Settings(),
                 policy: Policy | None = None) -> None:
        self.name = name
        self.wiring = wiring
        self.settings = settings
        self.policy: Policy = policy or GpufleetPolicy()
        self.memory = PolicyMemory()
        self.spec: InferenceServiceSpec | None = None  # as decided on: the price table's prices in
        self.raw_spec: InferenceServiceSpec | None = None  # as written
        self.fleet: ServiceFleet | None = None
        self.metrics: ServiceMetrics | None = None
        self.forecaster: ForecastAdapter | None = None
        self.accounting = Accounting()
        self.restored = False  # status.memory is read back on the first tick
        self.backfill_due: float | None = None  # when to (re)try reading history from Prometheus
        self.written: dict[str, Any] | None = None  # the last status written
        self.written_at = 0.0
        self.memory_fp = ""
        self.causes = Causes()
        # The last plan carried out, and the spec (as written) it was decided under: what a
        # reroute carries out again. None after a tick that applied nothing (recommend mode).
        self.applied: tuple[Plan, InferenceServiceSpec] | None = None

    # -- ports ----------------------------------------------------------------------------------

    def configure(self, spec: InferenceServiceSpec, now: float) -> None:
        """(Re)build the ports when the spec changed; keep memory and history across edits."""
        if spec == self.raw_spec:
            return
        self.raw_spec = spec
        # The price table's prices replace the spec's before anything decides or meters.
        spec = pricing.with_prices(spec, pricing.resolve(spec, self.settings.price_table, self._products(spec))[0],
                                   self.settings.price_table)
        old = self.spec
        self.spec = spec
        if self.fleet is None or (old is not None and old.target_ref != spec.target_ref):
            self.fleet = self.wiring.fleet(spec)  # shadow mode on or off, or another target: another port
        self.fleet.spec = spec
        self.close()
        self.metrics = self.wiring.metrics(spec)
        if self.forecaster is None or old is None or old.forecast != spec.forecast:
            self.forecaster = ForecastAdapter(spec.forecast, refit_offset_s=float(hash(self.name) % 86400))
            self.backfill_due = now

    def close(self) -> None:
        """Let go of the metrics port (the service is gone, or its metrics port changes)."""
        if self.metrics is not None:
            self.wiring.release(self.metrics)
            self.metrics = None

    def _products(self, spec: InferenceServiceSpec) -> dict[str, str]:
        """GPU product per class from the nodes its selector matches, when they all agree (only
        needed with a price table and no product in the selector)."""
        if not self.settings.price_table:
            return {}
        wanted = [(cls, p) for cls, p in ((ON_DEMAND, spec.capacity.on_demand), (SPOT, spec.capacity.spot))
                  if not pricing.product_of(spec, p)]
        if not wanted:
            return {}
        nodes = self.wiring.node_labels()
        out: dict[str, str] = {}
        for cls, placement in wanted:
            products = {labels.get(pricing.PRODUCT_LABEL) for labels in nodes
                        if all(labels.get(k) == v for k, v in placement.node_selector.items())} - {None}
            if len(products) == 1:
                out[cls] = str(products.pop())
        return out

    def _backfill(self, metrics: ServiceMetrics, now: float) -> None:
        """Seed the forecaster with the request-rate history Prometheus already has; retried
        every minute until Prometheus answers (it may be down when the operator starts)."""
        if self.backfill_due is None or now < self.backfill_due or self.forecaster is None:
            return
        if not metrics.available:
            self.backfill_due = now + 60.0
            return
        history = metrics.history("request_rate", start=now - self.settings.backfill_s, end=now,
                                  step=self.forecaster.rate.step_s)
        for t, rps in history:
            self.forecaster.observe(t, rps)
        self.backfill_due = now + 60.0 if metrics.history_error else None

    # -- memory ---------------------------------------------------------------------------------

    def restore(self, status: Mapping[str, Any], now: float) -> str | None:
        """Take back what an earlier operator process persisted in status.memory; the reason it
        was discarded, if it was."""
        text = status.get("memory")
        decided = (status.get("lastDecision") or {}).get("time")
        if not text and not decided and self.spec is not None and self.spec.target_ref is None:
            # Never decided on: start from the decision its new Deployments were sized from. (Not
            # in shadow mode: no Deployment was sized from it; steps start from what the target runs.)
            self.memory = initial_decision(self.spec, self.policy, now=now)[1]
            return None
        if not text or self.fleet is None:
            return None
        try:
            memory, samples = decode_memory(str(text), now=now)
        except MemoryFormatError as exc:
            return str(exc)
        self.memory = memory
        self.fleet.restore_samples(samples)
        self.memory_fp = memory_fingerprint(memory, samples)
        return None

    # -- one tick -------------------------------------------------------------------------------

    def tick(self, status: Mapping[str, Any], generation: int | None, *, now: float,
             reconciled: int | None = None, conflicts: Sequence[str] = (),
             autoscalers: Sequence[str] = (), rejected: Sequence[str] = (),
             write_ahead: Callable[[dict[str, Any]], None] | None = None) -> TickOutcome:
        """One interval's work from the service's status as last read (`configure` first).
        `generation` is the spec's; `reconciled` the generation whose children were last applied
        (status.observedGeneration; None: unknown, the status's own value is kept). `conflicts`
        name objects of a child's name that the service does not own (Ready=False, Conflict),
        `rejected` the children the API server refused as invalid (Ready=False, InvalidSpec),
        `autoscalers` the HPAs and ScaledObjects aimed at its Deployments (Degraded): each is
        one Warning when it appears and one Normal when it clears, not one per tick.

        `write_ahead` (the caller's status patch) is given the status of a decision that changes
        the fleet *before* the fleet is changed: a process killed between the two leaves the
        decision and its memory in status, for the next process to carry out, never children
        changed under a status that does not know it (make chaos: a restarted operator demoted
        pods promoted a moment before, on memory from before the load step). When it fails the
        fleet is changed all the same and the outcome carries the patch, for the caller to retry."""
        spec, fleet, metrics = self.spec, self.fleet, self.metrics
        assert spec is not None and fleet is not None and metrics is not None, "configure() first"
        events: list[Event] = []
        if not self.restored:
            self.restored = True
            discarded = self.restore(status, now)
            if discarded:
                events.append(Event("Warning", "MemoryDiscarded", f"status.memory not restored: {discarded}"[:500]))
        forecaster = self.forecaster if spec.forecast.enabled else None
        old = read_status(status)
        self.accounting.resume(old.usage, old.budget)
        self.memory = self.accounting.seed(self.memory, now)
        result = decide(spec=spec, policy=self.policy, metrics=metrics, fleet=fleet,
                        forecaster=forecaster, memory=self.memory, now=now)
        self.memory = result.memory
        self._backfill(metrics, now)
        if self.forecaster is not None and result.observation.request_rate is not None:
            self.forecaster.observe(now, result.observation.request_rate)
        rollout_at = len(events)  # the rollout's events go here, once it is carried out below
        events += self._metrics_events(metrics, result)
        delta = self.accounting.meter(spec, result.fleet, result.observation.request_rate, now)
        # What this loop wrote last is newer than the status read, whose watch event may still be on its way.
        previous = self.written if self.written is not None else status
        shadow = fleet.reading if spec.target_ref is not None and isinstance(fleet, Shadowing) else None
        new = render_status(previous, generation, spec, result, now, metrics_ok=metrics.available,
                            metrics_note=metrics.summary(), accounting=self.accounting, reconciled=reconciled,
                            conflicts=conflicts, autoscalers=autoscalers, rejected=rejected, shadow=shadow)
        verdict = getattr(self.policy, "verdict", None)  # spec.quota: the QuotaLimited condition
        new = quota.with_condition(new, verdict, now=now, generation=generation)
        if self.causes.changed("QuotaLimited", verdict.reason if verdict else None) and verdict is not None:
            events.append(Event("Warning" if verdict.reason in quota.UNRESOLVED else "Normal", verdict.reason,
                                verdict.message[:500]))
        events += self._shadow_events(new.get("shadow"))
        events += self._cause_events("Conflict", conflicts, "no object of its children's names held by another owner")
        events += self._cause_events("AutoscalerConflict", autoscalers, "no other autoscaler targets its Deployments")
        events += self._cause_events("InvalidSpec", rejected, "the API server accepts its children again")
        new, non_finite = finite(new)
        if self.causes.changed("NonFiniteStatus", tuple(non_finite) or None) and non_finite:
            events.append(Event("Warning", "NonFiniteStatus",
                                f"not a finite number, left out of status: {', '.join(non_finite)}"[:500]))
        patch, written = self._write(status, new, now)
        ahead = False
        if result.applied and patch is not None and write_ahead is not None:
            try:
                write_ahead(patch)
            except Exception as exc:  # noqa: BLE001 - the caller writes it again after the rollout
                log.info("%s: status not written ahead of the rollout (%s); written after it", self.name, exc)
            else:
                self.confirm(TickOutcome(written=written))
                patch, written, ahead = None, None, True
        carry_out(result, fleet, now=now)
        self.applied = (result.plan, self.raw_spec) if result.applied and self.raw_spec is not None else None
        if result.applied:
            events[rollout_at:rollout_at] = self._fleet_events(fleet.events)
        events += [Event("Warning" if e.warning else "Normal", e.reason, e.message)
                   for e in self.accounting.take_events()]
        budget = spec.budget
        telemetry = TickTelemetry(spec=spec, result=result, usage=self.accounting.usage or UsageStatus(),
                                  delta=delta, budget=result.plan.budget,
                                  max_cost_per_day=budget.max_cost_per_day if budget else None,
                                  alert_percent=budget.alert_percent if budget else None,
                                  actual_replicas=shadow.replicas if shadow is not None else None)
        return TickOutcome(status=patch, events=tuple(events), telemetry=telemetry, written=written,
                           written_ahead=ahead)

    def confirm(self, outcome: TickOutcome) -> None:
        """The outcome's status patch went through: compare the next ticks against it."""
        if outcome.written is not None:
            self.written = outcome.written.status
            self.written_at = outcome.written.at
            self.memory_fp = outcome.written.memory_fp

    def _cause_events(self, reason: str, causes: Sequence[str], cleared: str) -> list[Event]:
        """A Warning naming `causes` when they appear or change, a Normal when they clear."""
        was = self.causes.active(reason)
        if not self.causes.changed(reason, tuple(sorted(causes)) or None):
            return []
        if causes:
            return [Event("Warning", reason, "; ".join(causes)[:500])]
        return [Event("Normal", f"{reason}Resolved", cleared)] if was else []

    def _shadow_events(self, shadow: Mapping[str, Any] | None) -> list[Event]:
        """Shadow mode: one Warning when the target cannot be read (TargetUnavailable, once per
        cause), and one Normal `Recommendation` when recommended or actual replicas change, never
        one per tick while both hold."""
        if shadow is None:
            return [*self._cause_events("TargetUnavailable", (), "the target is read again")]
        found = bool(shadow.get("found"))
        out = self._cause_events("TargetUnavailable", () if found else (str(shadow.get("message", "")),),
                                 "the target is read again")
        key = (shadow.get("recommendedReplicas"), shadow.get("actualReplicas")) if found else None
        if self.causes.changed("Recommendation", key) and key is not None:
            out.append(Event("Normal", "Recommendation", str(shadow.get("message", ""))[:500]))
        return out

    def _metrics_events(self, metrics: ServiceMetrics, result: StepResult) -> list[Event]:
        """One Warning when the metrics go away, another only when the cause changes (never one per
        tick), one Normal when they return."""
        blind = result.plan.safe_mode and metrics.available is False
        cause = metrics_causes(metrics.summary()) if blind else None
        was = self.causes.active("MetricsUnavailable")
        out = []
        if self.causes.changed("MetricsUnavailable", cause):
            if blind:
                out.append(Event("Warning", "MetricsUnavailable", metrics.summary()[:500]))
            elif was:
                out.append(Event("Normal", "MetricsAvailable", "metrics are back"))
        return out

    def _fleet_events(self, events: Sequence[tuple[str, str]]) -> list[Event]:
        """What a rollout changed (Normal, each once: they are changes), and its failures: one
        RolloutFailed Warning per set of failing calls, not one per tick while the same calls keep
        failing, and one RolloutRecovered once a rollout goes through again."""
        out = [Event("Normal", reason, message) for reason, message in events if reason != "RolloutFailed"]
        failed = tuple(message for reason, message in events if reason == "RolloutFailed")
        was = self.causes.active("RolloutFailed")
        if self.causes.changed("RolloutFailed", failed or None):
            if failed:
                out += [Event("Warning", "RolloutFailed", message) for message in failed]
            elif was:
                out.append(Event("Normal", "RolloutRecovered", "the rollout's calls go through again"))
        return out

    def _write(self, status: Mapping[str, Any], new: dict[str, Any],
               now: float) -> tuple[dict[str, Any] | None, Written | None]:
        """A status patch only when something a reader acts on changed, when the learned memory
        changed, or once per heartbeat for the fields that move every tick."""
        assert self.spec is not None and self.fleet is not None
        samples = self.fleet.start_samples()
        fp = memory_fingerprint(self.memory, samples)
        heartbeat = now - self.written_at >= self.settings.heartbeat_s
        if self.written is not None and not heartbeat and fp == self.memory_fp \
                and material(new) == material(self.written):
            return None, None
        keep = stabilize.retention_s(self.spec, warmpool.horizon_s(self.spec, self.fleet.time_to_ready()))
        new["memory"] = encode_memory(self.memory, samples, now=now, keep_s=keep)
        patch = dict(new)
        old_budget = (self.written or status).get("budget")
        if "budget" not in patch and old_budget is not None:
            patch["budget"] = None  # budget removed from spec: drop its status (merge patch deletes nulls)
        if "shadow" not in patch and (self.written or status).get("shadow") is not None:
            patch["shadow"] = None  # targetRef removed: likewise
        return patch, Written(status=new, at=now, memory_fp=fp)

    # -- between ticks --------------------------------------------------------------------------

    def reroute(self, spec: InferenceServiceSpec, *, now: float) -> TickOutcome | None:
        """Carry out the last applied plan again on fresh state (a pod turned Ready since): its
        events, or None when there is nothing to carry out: no plan applied yet, recommend mode,
        or a spec edited since the plan (the next tick decides under the new one)."""
        if self.applied is None or self.fleet is None or spec.mode != Mode.active:
            return None
        plan, decided_under = self.applied
        if spec != decided_under:
            return None
        reroute(plan, self.fleet, now=now)
        return TickOutcome(events=tuple(self._fleet_events(self.fleet.events)))
