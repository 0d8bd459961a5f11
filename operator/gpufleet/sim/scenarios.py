"""Benchmark scenarios: a trace, a spec, the simulator config, and every policy built for them.

The spec is the InferenceService a platform engineer would write for the trace: the TTFT target,
`targetRpsPerReplica` from a load test of one replica (the model's steady Poisson capacity at the
99.9 % goal, computed here from the service model, the same figure for every policy) planned at a
utilisation target of UTILIZATION (gpufleet and the HPA), min/max replicas, and for gpufleet the
forecast and an automatic warm pool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Callable, cast

import numpy as np

from gpufleet.api.models import (
    Capacity,
    Forecast,
    InferenceServiceSpec,
    ModelRef,
    OnDemand,
    Replicas,
    Scaling,
    Slo,
    Spot,
    WarmPool,
)
from gpufleet.control.ports import Policy
from gpufleet.control.service import Settings
from gpufleet.sim.baselines import HpaLike, KedaLike, KpaLike, Oracle, StaticPeak
from gpufleet.sim.capacity import capacity_table, oracle_replicas
from gpufleet.sim.engine import SimConfig, SimResult, simulate
from gpufleet.sim.loadtest import LoadTest
from gpufleet.sim.lowerbound import LowerBound, lower_bound
from gpufleet.sim.coldstart import COLD_SETTINGS, ColdStart
from gpufleet.sim.model import LatencyBook, ReplicaModel
from gpufleet.sim.spot import SpotTrace
from gpufleet.sim.traces import Trace

TEMPLATE = {"spec": {"containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:24.08-trtllm-python-py3"}]}}
UTILIZATION = 0.8  # the spec's scaling.targetUtilization, shared by gpufleet and the HPA baseline
# "clairvoyant-5s" is the policy once called "oracle": it knows the next 5 s of arrivals and starts
# replicas instantly. It is not a lower bound (sim/lowerbound.py is: each second's exact need).
CLAIRVOYANT = "clairvoyant-5s"
POLICIES = ("static-peak", "hpa", "keda", "knative-kpa", "gpufleet", CLAIRVOYANT)


# Knobs a user turns, by policy (benchmarks/frontier.py sweeps them):
# - "u": the utilisation target. gpufleet: spec.scaling.targetUtilization; the HPA: its AverageValue
#   is targetRpsPerReplica x u; KEDA: the same for its request-rate trigger; Knative KPA: its per-pod
#   concurrency target is the in-flight count a load test reads at that rate (sim/baselines.py).
# - "pool": gpufleet's spec.warmPool.size (an int, or "auto").
# - "scale_down_delay_s": Knative's scale-down-delay (its default is 0).
KNOBS: dict[str, tuple[str, ...]] = {
    "static-peak": (), "hpa": ("u",), "keda": ("u",), "knative-kpa": ("u", "scale_down_delay_s"),
    "gpufleet": ("u", "pool"), CLAIRVOYANT: (),
}
Knobs = Mapping[str, "float | int | str"]


@dataclass(slots=True)
class Scenario:
    name: str
    trace: Trace
    spec: InferenceServiceSpec
    cfg: SimConfig
    spot: SpotTrace | None = None
    step_at_s: int | None = None
    rps_per_replica: float = 0.0
    inflight_per_replica: float = 0.0
    notes: list[str] = field(default_factory=list)
    # (time, rps) before t = 0 that the operator would read back from Prometheus at start (the
    # forecaster's warm-up; empty where the source has nothing before the trace).
    history: tuple[tuple[float, float], ...] = ()
    _oracle_need: dict[int, np.ndarray] = field(default_factory=dict)

    def oracle_need(self, window_s: int = 1) -> np.ndarray:
        """Replicas per second a clairvoyant policy sizes for (sim.capacity.oracle_replicas)."""
        if window_s not in self._oracle_need:
            book = LatencyBook(self.cfg.model, self.trace.in_sample, self.cfg.target_ttft_s)
            self._oracle_need[window_s] = oracle_replicas(
                self.cfg.model, book, self.trace.counts, self.trace.in_tokens, self.trace.ca2,
                float(self.trace.in_sample.mean()), float(self.trace.out_sample.mean()), self.spec.replicas.max,
                window_s=window_s)
        return self._oracle_need[window_s]

    def lower_bound(self) -> LowerBound:
        """Each second's exact need, zero cold start (sim/lowerbound.py)."""
        return lower_bound(self.trace, self.cfg.model, self.cfg.target_ttft_s, n_min=self.spec.replicas.min,
                           gpus_per_replica=self.spec.capacity.gpus_per_replica)

    def static_replicas(self) -> int:
        peak_min = float(self.trace.rate_per_window(60).max())
        return min(self.spec.replicas.max, max(1, math.ceil(peak_min / self.rps_per_replica)))

    def load_test(self) -> LoadTest:
        """One replica under a steady Poisson load with the trace's request mix (sim.loadtest):
        what a Knative user reads the per-pod concurrency target from."""
        return LoadTest.of(self.cfg.model, self.trace)

    def with_knobs(self, name: str, knobs: Knobs | None = None) -> tuple[Policy, InferenceServiceSpec]:
        """The policy `name` and the spec it runs on, with `knobs` (KNOBS) applied: the baselines
        take theirs as constructor fields, gpufleet as spec fields."""
        knobs = dict(knobs or {})
        unknown = set(knobs) - set(KNOBS.get(name, ()))
        if unknown:
            raise ValueError(f"{name} has no knob {', '.join(sorted(unknown))}")
        u = float(knobs["u"]) if "u" in knobs else None
        spot = self.spot is not None and self.spec.capacity.spot.enabled
        spec = self.spec
        if name == "hpa":
            return HpaLike(utilization=u, naive_spot=spot), spec
        if name == "keda":
            return KedaLike(utilization=u, naive_spot=spot), spec
        if name == "knative-kpa":
            return KpaLike(load_test=self.load_test().in_flight, utilization=u, naive_spot=spot,
                           scale_down_delay_s=float(knobs.get("scale_down_delay_s", 0.0))), spec
        if name == "gpufleet":
            if u is not None:
                spec = spec.model_copy(update={"scaling": spec.scaling.model_copy(update={"target_utilization": u})})
            if "pool" in knobs:
                pool = knobs["pool"]
                size: int | str = pool if pool == "auto" else int(pool)
                spec = spec.model_copy(update={"warm_pool": spec.warm_pool.model_copy(update={"size": size})})
        return self.policy(name), spec

    def policy(self, name: str, *, oracle_window_s: int = 1) -> Policy:
        """The policy called `name` (POLICIES); the clairvoyant one sizes for its need over
        `oracle_window_s` seconds."""
        spot = self.spot is not None and self.spec.capacity.spot.enabled
        if name == "static-peak":
            return StaticPeak(self.static_replicas(), naive_spot=spot)
        if name == "hpa":
            return HpaLike(naive_spot=spot)
        if name == "keda":
            return KedaLike(naive_spot=spot)
        if name == "knative-kpa":
            # The per-pod concurrency target a user reads off a load test at the HPA's rate target.
            return KpaLike(load_test=self.load_test().in_flight, naive_spot=spot)
        if name == "gpufleet":
            from gpufleet.core.policy import GpufleetPolicy

            return cast(Policy, GpufleetPolicy())
        if name == CLAIRVOYANT:
            return Oracle(self.oracle_need(oracle_window_s), name=CLAIRVOYANT)
        raise ValueError(f"unknown policy {name!r}")

    def run(self, name: str, progress: Callable[[int], None] | None = None, *, oracle_window_s: int = 1,
            knobs: Knobs | None = None) -> SimResult:
        from gpufleet.sim.engine import RateForecastPort

        if knobs:
            policy, spec = self.with_knobs(name, knobs)
        else:
            policy, spec = self.policy(name, oracle_window_s=oracle_window_s), self.spec
        res = simulate(
            self.trace, policy, spec, self.cfg, spot=self.spot,
            # Only gpufleet reads forecasts; baselines skip the forecaster's cost.
            forecaster=(lambda sp: RateForecastPort(sp, history=self.history)) if name == "gpufleet" else None,
            instant_start=name == CLAIRVOYANT, step_at_s=self.step_at_s, progress=progress,
        )
        res.policy = name
        return res

    def run_clairvoyant(self) -> SimResult:
        """Perfect knowledge of the next 5 s (the policy's interval), each second sized for its own
        need (with the simulator's 10 s smoothing of sub-second queueing), instant starts."""
        return self.run(CLAIRVOYANT)

    # The old name; it was never a lower bound (sim/lowerbound.py is).
    run_oracle = run_clairvoyant


def ttft_target_s(trace: Trace, model: ReplicaModel) -> float:
    """1 s, or twice the unloaded p95 TTFT where prompts are long (Mooncake), rounded to 0.5 s."""
    p95 = float(np.quantile(model.first_token_s(trace.in_sample), 0.95))
    return max(1.0, math.ceil(2 * p95 * 2) / 2)


def make_scenario(name: str, trace: Trace, *, seed: int = 0, cold: ColdStart | None = None,
                  spot: SpotTrace | None = None, spot_enabled: bool = False, spot_max_fraction: float = 0.9,
                  step_at_s: int | None = None,
                  max_replicas: int | None = None, target_s: float | None = None,
                  warm_pool: int | str = "auto") -> Scenario:
    model = ReplicaModel()
    target = target_s or ttft_target_s(trace, model)
    cfg = SimConfig(model=model, cold=cold or ColdStart(), target_ttft_s=target, seed=seed)
    book = LatencyBook(model, trace.in_sample, target)
    mean_in, mean_out = float(trace.in_sample.mean()), float(trace.out_sample.mean())
    peak = float(trace.rate_per_window(60).max()) if trace.seconds >= 60 else float(trace.counts.max())
    # Load test: the per-replica Poisson capacity at the goal, at the fleet size of mean load.
    probe = capacity_table(model, book, mean_in, mean_out, 1.0, 64)
    mean_rps = float(trace.counts.mean())
    n_mean = int(np.clip(np.searchsorted(probe.cap_requests, mean_rps), 1, 64))
    rps = float(probe.cap_requests[n_mean] / n_mean)
    inflight = float(probe.inflight_per_replica[n_mean])
    maxr = max_replicas or max(8, math.ceil(3 * peak / rps))
    spec = InferenceServiceSpec(
        model=ModelRef(name="llm-8b", backend="tensorrtllm"),
        template=TEMPLATE,
        replicas=Replicas(min=1, max=maxr),
        slo=Slo(ttft_p95_ms=int(round(target * 1000))),
        # Plan replicas at 80 % of the load-test figure: that figure is steady Poisson capacity,
        # and production arrivals burst within the 1-min rate window (TUNING.md: 0.7-0.85 tried).
        scaling=Scaling(interval_seconds=10, target_rps_per_replica=round(rps, 3), target_utilization=UTILIZATION),
        forecast=Forecast(enabled=True, quantile=0.9),
        warm_pool=WarmPool(size=warm_pool, max=4),
        # Spot: an on-demand base of 1 and up to 90 % spot, what a platform engineer chasing spot
        # savings would set (at 0.7 even permanent spot costs >= 0.3 + 0.7 x 1.30/4.10 = 0.52x).
        capacity=Capacity(on_demand=OnDemand(base=1),
                          spot=Spot(enabled=spot_enabled, max_fraction=spot_max_fraction)),
    )
    sc = Scenario(name=name, trace=trace, spec=spec, cfg=cfg, spot=spot, step_at_s=step_at_s,
                  rps_per_replica=rps, inflight_per_replica=inflight)
    sc.notes.append(f"TTFT target {target:g} s; load-test capacity {rps:.2f} req/s per replica "
                    f"(at {n_mean} replicas), in-flight {inflight:.0f}/replica; max replicas {maxr}")
    return sc


# ---------------------------------------------------------------------------------------------
# The frontier benchmark's traces, splits and cold-start settings (benchmarks/frontier.py).

DAY = 86400
SERVEGEN_SCALE = 0.1  # a service with a tenth of the model's clients' traffic


@dataclass(frozen=True, slots=True)
class BenchTrace:
    """A trace of the frontier benchmark: a source, a load factor and a window of it.

    `split` is "tune" (knobs may be chosen on it: days 1-10 of ServeGen m-small and m-mid only),
    "eval" (never used to choose anything; `held_out` says why an eval trace is held out) or
    "timing" (run only for its run time: benchmarks/run_time.py)."""

    id: str
    source: str  # servegen:<language model> | servegen-reason:<model> | azure | mooncake
    split: str
    start_s: int = 0
    length_s: int | None = None  # None: to the end
    scale: float = 1.0
    held_out: str = ""

    @property
    def days(self) -> float:
        """Simulated days (the length of the source where no window is set)."""
        if self.length_s is not None:
            return self.length_s / DAY
        full = {"servegen": 14.0, "servegen-reason": 1.0, "azure": 1 / 24, "mooncake": 1 / 24}
        return full[self.source.partition(":")[0]] - self.start_s / DAY


# The operator's default --backfill-seconds (control.service.Settings.backfill_s): the rate
# history its forecaster reads back from Prometheus at start.
BACKFILL_S = int(Settings.backfill_s)


def _sg_days(model: str, first: int, last: int, split: str, held_out: str = "") -> BenchTrace:
    """ServeGen language `model`, days first..last (1-based, inclusive)."""
    return BenchTrace(f"{model}/d{first}-{last}", f"servegen:{model}", split, (first - 1) * DAY,
                      (last - first + 1) * DAY, SERVEGEN_SCALE, held_out)


def _sg_hours(model: str, day: int, hour: int, hours: int, split: str, held_out: str = "") -> BenchTrace:
    """`hours` hours of ServeGen language `model` from `hour` o'clock of `day` (1-based)."""
    return BenchTrace(f"{model}/d{day}-{hour:02d}h+{hours}h", f"servegen:{model}", split,
                      (day - 1) * DAY + hour * 3600, hours * 3600, SERVEGEN_SCALE, held_out)


BENCH_TRACES: dict[str, BenchTrace] = {t.id: t for t in (
    _sg_days("m-small", 1, 10, "tune"), _sg_days("m-mid", 1, 10, "tune"),
    # A shorter slice of the tuning days (the reduced grid's tuning).
    _sg_days("m-small", 8, 10, "tune"), _sg_days("m-mid", 8, 10, "tune"),
    _sg_days("m-small", 11, 14, "eval", "days 11-14 (tuning saw days 1-10)"),
    _sg_days("m-mid", 11, 14, "eval", "days 11-14 (tuning saw days 1-10)"),
    # ServeGen reasoning at 5x its clients' rate: ~80 req/s, a fleet of several replicas (at 1x it
    # is two, where every policy sits at the floor).
    BenchTrace("deepseek-r1-x5", "servegen-reason:deepseek-r1", "eval", 0, None, 5.0,
               "never used for tuning (ServeGen reasoning, 1 day, 5x load)"),
    BenchTrace("azure-code-x4", "azure", "eval", 0, None, 4.0, "never used for tuning (Azure code, 1 h, 4x load)"),
    BenchTrace("azure-code-x16", "azure", "eval", 0, None, 16.0, "never used for tuning (Azure code, 1 h, 16x load)"),
    BenchTrace("mooncake-x4", "mooncake", "eval", 0, None, 4.0, "never used for tuning (Mooncake, 1 h, 4x load)"),
    # All fourteen days, for the run time of one 14-day run (benchmarks/run_time.py), never judged.
    _sg_days("m-mid", 1, 14, "timing"),
    # The quick variant's slices: three afternoon hours (the daily ramp).
    _sg_hours("m-small", 10, 13, 3, "tune"),
    _sg_hours("m-small", 11, 13, 3, "eval", "day 11 (tuning saw day 10)"),
)}


def load_bench_trace(trace_id: str, seed: int = 0) -> Trace:
    """The trace `trace_id` of BENCH_TRACES for `seed` (ServeGen's per-second counts are drawn)."""
    return _load_bench_trace(trace_id, seed)[0]


def _load_bench_trace(trace_id: str, seed: int) -> tuple[Trace, tuple[tuple[float, float], ...]]:
    """(the trace, its warm-up history: see bench_history)."""
    import os

    from gpufleet.sim import traces as T

    bt = BENCH_TRACES[trace_id]
    kind, _, arg = bt.source.partition(":")
    if kind == "servegen":
        full = T.load_servegen_clients(T.servegen_folder(arg), scale=bt.scale, seed=seed)
        history = _history(full.counts, bt.start_s)
        if bt.length_s is not None and bt.start_s % DAY == 0 and bt.length_s % DAY == 0:
            tr = T.days(full, bt.start_s // DAY + 1, (bt.start_s + bt.length_s) // DAY)
            return replace(tr, name=bt.id), history
        tr = full
    else:
        history = ()
    if kind == "servegen-reason":
        tr = T.load_servegen_clients(os.path.join(T.SHARED_TRACES, "servegen", "reason", arg), scale=bt.scale,
                                     seed=seed)
    elif kind in ("azure", "mooncake"):
        tr = T.load_azure(seed=seed) if kind == "azure" else T.load_mooncake(seed=seed)
        if bt.scale != 1.0:
            tr = T.scale_load(tr, bt.scale, seed=seed)
    elif kind != "servegen":
        raise ValueError(f"unknown source {bt.source!r}")
    if bt.start_s or bt.length_s is not None:
        length = bt.length_s if bt.length_s is not None else tr.seconds - bt.start_s
        tr = T.window(tr, bt.start_s, length)
    return replace(tr, name=bt.id), history


def _history(counts: np.ndarray, start_s: int, step_s: int = 60) -> tuple[tuple[float, float], ...]:
    """The request rate of the BACKFILL_S before `start_s`, one point per `step_s` at the end of
    its minute, in the run's time (negative): what a Prometheus range query of the operator's
    rate signal returns at start. Arrivals, rejected ones included (as the gateway counts)."""
    first = max(0, start_s - BACKFILL_S) // step_s * step_s
    n = (start_s - first) // step_s
    if n <= 0:
        return ()
    rates = np.asarray(counts[first: first + n * step_s], dtype=float).reshape(n, step_s).mean(axis=1)
    ends = first + step_s * (np.arange(n) + 1) - start_s
    return tuple(zip(ends.astype(float).tolist(), rates.tolist()))


def cold_setting(name: str) -> ColdStart:
    """One of sim/coldstart.py's COLD_SETTINGS: "warm" (~1 min), "typical" (~5 min), "large"
    (~10 min) creation to Ready from a fresh node, as stages with the node included."""
    return COLD_SETTINGS[name]


def describe_cold(name: str) -> dict[str, object]:
    """What the report says of a cold-start setting (by sampling its stages, deterministic)."""
    cs = COLD_SETTINGS[name]
    return {"fresh_node_median_s": round(cs.quantile(0.5), 1), "fresh_node_p90_s": round(cs.quantile(0.9), 1),
            "free_node_median_s": round(cs.quantile(0.5, fresh=False), 1),
            "consolidate_after_s": cs.consolidate_after_s, "stage_medians_s": cs.stage_medians()}


def bench_scenario(trace_id: str, seed: int, cold: str | None) -> Scenario:
    """The frontier benchmark's scenario: a BENCH_TRACES trace, a cold-start setting (None: the
    default, for the clairvoyant policy and the lower bound, which start nothing cold)."""
    tr, history = _load_bench_trace(trace_id, seed)
    sc = make_scenario(trace_id, tr, seed=seed, cold=cold_setting(cold) if cold else None)
    sc.history = history
    if history:
        sc.notes.append(f"forecaster warm-up: {len(history) * 60 / DAY:g} days of rate history before the trace "
                        "(the operator's Prometheus backfill)")
    return sc
