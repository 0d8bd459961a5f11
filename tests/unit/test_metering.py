"""Metering against the simulator's ground truth, the price table, and budget Events."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from gpufleet.api.models import InferenceServiceSpec, Prices, UsageStatus
from gpufleet.control import metering, pricing
from gpufleet.control.accounting import Accounting
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.schedule import Window
from gpufleet.core.types import (
    ON_DEMAND,
    SPOT,
    BudgetCheck,
    FleetState,
    ForecastSummary,
    Observation,
    Plan,
    PolicyMemory,
    Replica,
    ReplicaState,
)
from gpufleet.sim.engine import simulate
from gpufleet.sim.scenarios import make_scenario
from gpufleet.sim.traces import step_load
from tests.support import ROOT


@dataclass
class MeteringPolicy:
    """The gpufleet policy, metering every tick exactly as the operator does (fleet seen by the
    step, observed request rate), with a status round trip through JSON at a chosen tick: an
    operator restart."""

    spec: InferenceServiceSpec
    restart_at: float = -1.0
    name: str = "gpufleet"
    inner: GpufleetPolicy = field(default_factory=GpufleetPolicy)
    usage: UsageStatus = field(default_factory=UsageStatus)
    last_now: float = 0.0

    def decide(self, *, spec: InferenceServiceSpec, observation: Observation, forecast: ForecastSummary | None,
               fleet: FleetState, memory: PolicyMemory, now: float,
               windows: tuple[Window, ...] = ()) -> tuple[Plan, PolicyMemory]:
        self.usage, _ = metering.accumulate(self.usage, spec, fleet, observation.request_rate, now)
        if now >= self.restart_at > self.last_now:
            self.usage = UsageStatus.model_validate_json(self.usage.model_dump_json(by_alias=True))
        self.last_now = now
        return self.inner.decide(spec=spec, observation=observation, forecast=forecast, fleet=fleet,
                                 memory=memory, now=now, windows=windows)


@pytest.mark.parametrize("restart_at", [-1.0, 1234.0])
def test_metering_matches_simulator_ground_truth(restart_at: float) -> None:
    # 40 min: 5 req/s, then 4x: the fleet scales up, holds a warm pool, and scales back in steps.
    trace = step_load(5.0, 4.0, 1200, 1200, seed=3)
    sc = make_scenario("metering", trace, seed=3)
    sc.cfg.drain_tail_s = 0  # ground truth then covers exactly the traced seconds
    spec = sc.spec.model_copy(update={"capacity": sc.spec.capacity.model_copy(
        update={"price_per_gpu_hour": Prices(on_demand=4.1, spot=1.3)})})
    policy = MeteringPolicy(spec, restart_at=restart_at)
    res = simulate(sc.trace, policy, spec, sc.cfg)
    usage = policy.usage
    # The simulator bills each second [0, T) for the fleet in it; metering covers (first tick,
    # last tick] = (0, T - interval]: the two differ by at most an interval of the largest fleet.
    slack_h = spec.replicas.max * spec.scaling.interval_seconds / 3600
    assert usage.gpu_hours == pytest.approx(res.gpu_hours, abs=slack_h)
    assert abs(usage.gpu_hours - res.gpu_hours) / res.gpu_hours < 0.01
    assert usage.spot.gpu_hours == 0 and usage.on_demand.gpu_hours == usage.gpu_hours
    assert usage.cost == pytest.approx(res.cost, rel=0.01)
    assert usage.cost == pytest.approx(usage.gpu_hours * 4.1)
    # Requests: the observed (scraped, 1-minute-window) rate integrated over time.
    assert usage.requests == pytest.approx(res.arrived, rel=0.03)
    assert usage.cost_per_million_requests == pytest.approx(res.cost_per_1m, rel=0.04)
    assert metering.stamp_seconds(usage.since) == pytest.approx(0.0)


def test_metering_counts_pod_lifetimes_and_the_utc_day() -> None:
    spec = InferenceServiceSpec.model_validate({
        "model": {"name": "m"}, "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
        "capacity": {"gpusPerReplica": 2, "pricePerGpuHour": {"onDemand": 3.0, "spot": 1.0}}})
    midnight = 20000 * 86400.0
    t0 = midnight - 600
    usage, _ = metering.accumulate(UsageStatus(), spec, FleetState(), None, t0)
    fleet = FleetState((
        Replica("a", ON_DEMAND, ReplicaState.serving, created_at=t0 - 5000, ready_at=t0),
        Replica("b", SPOT, ReplicaState.starting, created_at=midnight + 300),  # created in between
    ))
    usage, delta = metering.accumulate(usage, spec, fleet, 10.0, midnight + 1200)
    assert usage.on_demand.gpu_hours == pytest.approx(2 * 1800 / 3600)
    assert usage.spot.gpu_hours == pytest.approx(2 * 900 / 3600)
    assert usage.cost == pytest.approx(1.0 * 3.0 + 0.5 * 1.0)
    assert usage.cost_today == pytest.approx(2 * 1200 / 3600 * 3.0 + 0.5)  # since midnight only
    assert usage.day == "2024-10-04"
    assert usage.requests == pytest.approx(10.0 * metering.MAX_RATE_GAP_S)  # a long gap counts 300 s
    assert delta.gpu_hours[ON_DEMAND] == pytest.approx(1.0)
    rounded = metering.rounded(usage)
    assert rounded.cost == pytest.approx(usage.cost, abs=1e-6)


def test_price_table_overrides_spec_prices(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text('NVIDIA-H100-80GB-HBM3: {on-demand: 6.98, spot: 2.45}\n"*": {on-demand: 4.0}\n')
    table = pricing.load_table(str(path))
    spec = InferenceServiceSpec.model_validate({
        "model": {"name": "m"}, "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
        "capacity": {"onDemand": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
                     "pricePerGpuHour": {"onDemand": 1.0, "spot": 0.5}}})
    prices, note = pricing.resolve(spec, table)
    assert (prices.on_demand, prices.spot) == (6.98, 0.5)  # spot: no product, "*" has no spot price
    assert "table[NVIDIA-H100-80GB-HBM3]" in note
    prices, _ = pricing.resolve(spec, table, {SPOT: "NVIDIA-H100-80GB-HBM3"})
    assert prices.spot == 2.45  # product discovered on the spot nodes
    bare = spec.model_copy(update={"capacity": spec.capacity.model_copy(update={"on_demand": spec.capacity.on_demand.model_copy(update={"node_selector": {}})})})
    assert pricing.resolve(bare, table)[0].on_demand == 4.0  # "*"
    assert pricing.with_prices(spec, prices).capacity.price_per_gpu_hour == prices
    for bad in ("[1, 2]", "X: {gpu: 1}", "X: {spot: -1}", "X: {spot: yes}"):
        with pytest.raises(ValueError):
            pricing.parse_table(__import__("yaml").safe_load(bad))


def test_budget_events_fire_on_transitions_only() -> None:
    spec = InferenceServiceSpec.model_validate({
        "model": {"name": "m"}, "template": {"spec": {"containers": [{"name": "t", "image": "i"}]}},
        "budget": {"maxCostPerHour": 10}})
    acc = Accounting()
    acc.resume(UsageStatus(), None)

    def plan(state: str) -> Plan:
        return Plan(1, 0, 1, 0, "x", "m", budget=BudgetCheck(state, 10.0, 12.0, 9.0, 0.0, "msg"))

    seen = []
    for state in ("OK", "OK", "Alert", "Alert", "Capped", "Capped", "Alert", "OK"):
        status, cond = acc.judge(spec, plan(state))
        assert status is not None and cond is not None and status.state == state
        assert cond.status == (state == "Capped")
        seen += [(e.reason, e.warning) for e in acc.take_events()]
    assert seen == [("BudgetAlert", True), ("BudgetCapped", True), ("BudgetAlert", False), ("BudgetOK", False)]
    # After a restart the state comes from status: no repeated Event.
    again = Accounting()
    from gpufleet.api.models import BudgetStatus

    again.resume(UsageStatus(), BudgetStatus(state="Capped"))
    again.judge(spec, plan("Capped"))
    assert again.take_events() == []


def test_report_cli_on_a_trace_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    times = np.sort(np.concatenate([rng.uniform(0, 300, 300 * 20), rng.uniform(150, 300, 150 * 60)]))
    (tmp_path / "trace.csv").write_text("timestamp\n" + "\n".join(f"{t:.3f}" for t in times))
    (tmp_path / "spec.yaml").write_text(
        "apiVersion: gpufleet.io/v1alpha1\nkind: InferenceService\nmetadata: {name: x}\nspec:\n"
        "  model: {name: m}\n  template: {spec: {containers: [{name: t, image: i}]}}\n"
        "  replicas: {min: 1, max: 8}\n  scaling: {intervalSeconds: 5, targetRpsPerReplica: 40}\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "gpufleet.cli", "report", "--trace", str(tmp_path / "trace.csv"),
                           "--spec", str(tmp_path / "spec.yaml"), "--out", str(out)],
                          cwd="/", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "current spec" in proc.stdout and "KEDA-like" in proc.stdout and "load x" in proc.stdout
    for png in ("cost.png", "slo_attainment.png", "gpu_hours.png", "replicas.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert (ROOT / "docs" / "budgets.md").exists()
