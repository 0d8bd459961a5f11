"""The simulation loop: trace -> fluid service model -> metrics -> `control.step` -> SimFleet.

Time advances in 1 s ticks. Each tick:
1. fleet events (replicas become Ready, spot notices and reclaims);
2. arrivals join a FIFO prompt queue (rejected at once if the predicted wait exceeds the
   request timeout, like Triton's queue policy; with no serving replica at all they fail);
3. the serving replicas, pooled (the Service balances load), process prompt tokens in chunks that
   share iterations with decoding (see model.ReplicaModel); decode advances every in-flight
   sequence; departures follow from the remaining decode tokens (fluid);
4. each cohort's fluid FIFO wait is known exactly from cumulative arrival/service curves; the
   sub-second queueing a fluid model cannot see is added analytically (model.LatencyBook) with
   the arrivals' variability *inside* the second (Trace.ca2): the bursts from one second to the
   next are in the counts, which the fluid queue already serves, and are not added again;
5. every `interval_s` of the policy, `gpufleet.control.step.step` runs with SimMetrics (what
   Prometheus would report, scraped every 15 s; the request rate counts every arrival, rejected
   ones included, as a gateway would), SimFleet and a forecaster port.

Approximations (documented in reports/bench/README.md): pooled replicas (join-shortest-queue
across replicas is close to one pooled queue), 1 s fluid dynamics with M/G/c waiting inside the
second, token lengths per second replaced by the second's means for the fluid part (the full
per-request distribution is used for latencies), and instant drains.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from gpufleet.api.models import InferenceServiceSpec
from gpufleet.control.ports import ForecastPort, Policy
from gpufleet.control.step import step
from gpufleet.core.types import ForecastSummary, Observation, PolicyMemory
from gpufleet.sim.fleet import SimFleet
from gpufleet.sim.model import BookMemo, ColdStart, LatencyBook, ReplicaModel, hist_percentile
from gpufleet.sim.spot import SpotTrace
from gpufleet.sim.traces import Trace

if TYPE_CHECKING:
    from gpufleet.forecasting.api import FittedForecaster

SCRAPE_S = 15  # Prometheus scrape interval
RATE_WINDOW_S = 60  # rate()/histogram_quantile window of the operator's default queries ([1m])
VIOLATION_SHARE = 0.95  # a second is "in violation" when < 95 % of its requests meet the SLO


@dataclass(slots=True)
class SimConfig:
    model: ReplicaModel = field(default_factory=ReplicaModel)
    cold: ColdStart = field(default_factory=ColdStart)
    target_ttft_s: float = 1.0
    timeout_s: float = 60.0  # requests predicted to wait longer are rejected (dropped)
    seed: int = 0
    initial_serving: int | None = None  # None: what the first minute's load needs
    drain_tail_s: int = 900  # after the trace, run on without arrivals to finish the backlog
    record_every_s: int = 60  # resolution of the time series kept for plots
    scrape_s: int = SCRAPE_S  # Prometheus scrape interval every policy sees


@dataclass(slots=True)
class SimResult:
    policy: str
    trace: str
    seconds: int
    arrived: float
    served: float
    dropped: float
    rejected: float
    lost_in_flight: float
    met_slo: float
    attainment: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    ttft_p99_ms: float
    gpu_hours: float
    gpu_hours_spot: float
    cost: float
    cost_per_1m: float
    scale_events: int
    violation_s: int
    violation_after_step_s: int | None
    preemptions: int
    wall_s: float
    t: np.ndarray  # time series (record_every_s): start of each bucket
    load_rps: np.ndarray
    serving: np.ndarray
    total: np.ndarray
    hist: np.ndarray  # TTFT histogram over model.HIST_EDGES
    viol: np.ndarray  # seconds in violation per record bucket

    def row(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in (
            "policy", "attainment", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms", "gpu_hours", "cost",
            "cost_per_1m", "scale_events", "violation_s", "violation_after_step_s", "dropped", "arrived",
            "preemptions", "wall_s")}


class SimMetrics:
    """The MetricsPort: what the default Prometheus queries would return at the last scrape."""

    def __init__(self, n: int, scrape_s: int = SCRAPE_S) -> None:
        self.scrape_s = scrape_s
        # Requests reaching the Service each second, rejected ones included: what a gateway counts,
        # and the request rate every policy reads (a policy must see the load it is turning away).
        self.arrivals = np.zeros(n)
        self.admitted = np.zeros(n)  # of those, queued: the weights of queue time and TTFT p95
        self.queue = np.zeros(n)  # waiting requests at the end of each second
        self.wait_ms = np.zeros(n)  # mean queue wait of the second's arrivals
        self.p95_ms = np.zeros(n)  # TTFT p95 of the second's arrivals (estimated)
        self.n = n
        self.last: Observation | None = None
        self.in_flight = 0.0  # live requests in the Service (queued + executing): Knative's concurrency

    def observe(self, *, now: float) -> Observation:
        ts = int(now // self.scrape_s) * self.scrape_s
        if self.last is not None and self.last.sampled_at == float(ts):
            return self.last  # same scrape: Prometheus would answer the same
        hi = min(ts, self.n)
        lo = max(0, hi - RATE_WINDOW_S)
        if hi <= 0:
            self.last = Observation(sampled_at=None)
            return self.last
        rate = float(self.arrivals[lo:hi].sum()) / (hi - lo)
        arr = self.admitted[lo:hi]  # latency histograms hold the requests that were served
        total = float(arr.sum())
        if total > 0:
            p95 = float(np.dot(arr, self.p95_ms[lo:hi]) / total)
            qt = float(np.dot(arr, self.wait_ms[lo:hi]) / total)
        else:  # histogram_quantile over an empty window is NaN: the core treats it as missing
            p95 = qt = float("nan")
        self.last = Observation(sampled_at=float(ts), queue_depth=float(self.queue[hi - 1]), queue_time_ms=qt,
                                ttft_p95_ms=p95, latency_p95_ms=None, request_rate=rate)
        return self.last


class _FitMemo(OrderedDict[bytes, "FittedForecaster"]):
    """The forecaster's full fits by their exact inputs, least recently used dropped past `size`."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get(self, key: bytes, default: FittedForecaster | None = None) -> FittedForecaster | None:  # type: ignore[override]
        v = super().get(key, default)
        if v is not None:
            self.move_to_end(key)
        return v

    def __setitem__(self, key: bytes, value: FittedForecaster) -> None:
        super().__setitem__(key, value)
        while len(self) > self.size:
            self.popitem(last=False)


# Shared by every run in this process: the forecaster is fed the observed request rate, which
# counts every arrival whatever the policy does, so the runs of one trace and seed (each warm
# pool, target and cold setting) make the same full fits (~1 s of CPU per simulated day). A fit
# with its key (the history, 8 bytes a bucket) is ~0.3 MB at 8 days of 1-min buckets: 128 of them ~40 MB.
FIT_MEMO = _FitMemo(128)


# Per-state latency values by LatencyBook inputs, for the runs in this process (most recent last):
# they depend on the trace's prompt sample and the target only, so every policy and knob run on one
# trace and seed reuses what the runs before it evaluated (~3,500 states, under 4 MB, a simulated
# day). Eight kept: at the frontier's run order a worker meets a trace and seed again within eight
# others for ~64 % of its runs (full grid, 16 workers; 25 % with four).
_BOOK_MEMOS: OrderedDict[bytes, BookMemo] = OrderedDict()
BOOK_MEMOS = 8


def _book_memo(model: ReplicaModel, in_sample: np.ndarray, target_s: float) -> BookMemo:
    key = BookMemo.key(model, in_sample, target_s)
    memo = _BOOK_MEMOS.pop(key, None)
    if memo is None:
        memo = BookMemo()
    _BOOK_MEMOS[key] = memo
    while len(_BOOK_MEMOS) > BOOK_MEMOS:
        _BOOK_MEMOS.popitem(last=False)
    return memo


class RateForecastPort:
    """The operator's own forecast port (gpufleet.control.forecast.ForecastAdapter), fed the same way:
    after each control step, with the observed request rate at that time; nothing else."""

    def __init__(self, spec: InferenceServiceSpec, step_s: float = 60.0,
                 history: Sequence[tuple[float, float]] = ()) -> None:
        from gpufleet.control.forecast import ForecastAdapter

        self.adapter = ForecastAdapter(spec.forecast, step_s=step_s, fit_memo=FIT_MEMO)
        # What the operator reads back from Prometheus when its loop starts (ServiceLoop._backfill):
        # (time, rps) points before the run, fed the same way.
        for t, rps in history:
            self.adapter.observe(t, rps)

    def observe(self, t: float, rps: float) -> None:
        self.adapter.observe(t, rps)

    def forecast(self, *, now: float, horizon_s: float, quantile: float) -> ForecastSummary | None:
        return self.adapter.forecast(now=now, horizon_s=horizon_s, quantile=quantile)


def _initial_serving(trace: Trace, rps_per_replica: float) -> int:
    first = float(trace.counts[:60].mean()) if trace.seconds else 0.0
    return max(1, math.ceil(first / max(rps_per_replica, 1e-9)))


def simulate(
    trace: Trace,
    policy: Policy,
    spec: InferenceServiceSpec,
    cfg: SimConfig,
    *,
    spot: SpotTrace | None = None,
    forecaster: Callable[[InferenceServiceSpec], ForecastPort] | None = RateForecastPort,
    instant_start: bool = False,
    step_at_s: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimResult:
    import time as _time

    wall0 = _time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    model = cfg.model
    n_trace = trace.seconds
    horizon = n_trace + cfg.drain_tail_s
    memo = _book_memo(model, trace.in_sample, cfg.target_ttft_s)
    book = LatencyBook(model, trace.in_sample, cfg.target_ttft_s, memo=memo)
    metrics = SimMetrics(horizon, cfg.scrape_s)
    fore = forecaster(spec) if forecaster is not None else None
    interval = int(getattr(policy, "interval_s", spec.scaling.interval_seconds))
    fleet = SimFleet(cold=cfg.cold, rng=rng, spot=spot, gpus_per_replica=spec.capacity.gpus_per_replica,
                     pending_timeout_s=spec.capacity.spot.pending_timeout_seconds, instant_start=instant_start,
                     drain_timeout_s=float(spec.scaling.scale_down.drain_timeout_seconds), interval_s=interval)
    rps0 = spec.scaling.target_rps_per_replica or 1.0
    init = cfg.initial_serving or _initial_serving(trace, rps0)
    fleet.bootstrap(max(init, spec.replicas.min))
    fleet.schedule_preemptions(horizon)
    if hasattr(policy, "concurrency_source"):
        policy.concurrency_source = metrics  # the KPA baseline's queue-proxy view
    if hasattr(policy, "fleet_counts"):
        policy.fleet_counts = fleet.counts  # the baselines' pod counts, kept by the fleet
    offset = int(getattr(policy, "phase_s", 0))
    memory = PolicyMemory()

    # Per-second inputs as lists, padded over the drain tail with what a second without arrivals
    # reads (no per-second bounds check in the loop).
    tail = max(horizon - n_trace, 0)
    counts = trace.counts.tolist() + [0.0] * tail
    ins = trace.in_tokens.tolist() + [0.0] * tail
    outs = trace.out_tokens.tolist() + [0.0] * tail
    ca2s = trace.ca2.tolist() + [1.0] * tail
    mean_in_g = float(np.mean(trace.in_sample)) or 1.0
    mean_out_g = float(np.mean(trace.out_sample)) or 1.0
    B = model.max_batch
    K = model.chunk_tokens
    P = model.prefill_tps
    itl_tab = model.itl_table
    timeout = cfg.timeout_s

    # fluid state
    wq = 0.0  # prompt tokens queued (not yet prefilled)
    qn = 0.0  # requests queued
    d = 0.0  # sequences decoding
    r_tok = 0.0  # decode tokens remaining
    cum_a = 0.0  # cumulative prompt tokens arrived (accepted)
    cum_s = 0.0  # cumulative prompt tokens processed
    tok_rate = 0.0  # EWMA (10 s) of offered prompt tokens/s: the utilisation the M/G/c part uses
    cohorts: deque[list[float]] = deque()  # [mid position, arrival time, requests, ca2]
    arrived = served = rejected = 0.0
    violation = 0
    viol_after = 0
    gpu_s_od = gpu_s_sp = 0.0
    od_now = sp_now = 0
    billed_version = -1
    rec = cfg.record_every_s
    nrec = horizon // rec + 1
    rec_load = np.zeros(nrec)
    rec_serv = np.zeros(nrec)
    rec_total = np.zeros(nrec)
    arr_m, adm_m, queue_m, wait_m, p95_m = (metrics.arrivals, metrics.admitted, metrics.queue, metrics.wait_ms,
                                            metrics.p95_ms)
    s_coarse = book.s[::16]
    stat_cache: dict[tuple[int, int, int, int], tuple[float, float]] = {}

    def stats_of(k: tuple[int, int, int, int]) -> tuple[float, float]:
        """(TTFT p95 ms, mean queue wait s) of a state, for the metrics the policies see."""
        v = stat_cache.get(k)
        if v is None:
            fw, pc, m = book._params(k)
            u = (np.arange(8) + 0.5) / 8
            w = np.where(u < 1 - pc, 0.0, -m * np.log(np.clip((1 - u) / max(pc, 1e-12), 1e-12, 1.0)))
            grid = np.sort((fw + s_coarse[:, None] + w[None, :]).ravel())
            p95 = float(grid[int(0.95 * grid.size)]) * 1000.0
            v = (p95, fw + pc * m)
            stat_cache[k] = v
        return v

    # Per state: (share meeting the SLO, TTFT p95 ms, mean wait s), computed in the order
    # book.add then stats_of would (the same values); the requests are counted in book.counts
    # as book.add counts them (same insertion order: met() and histogram() sum in that order).
    by_state = memo.by_state
    book_counts = book.counts
    counts_get = book_counts.get

    def state_of(k: tuple[int, int, int, int]) -> tuple[float, float, float]:
        v = (book.attainment(k), *stats_of(k))
        by_state[k] = v
        return v

    rec_load_l = [0.0] * nrec
    rec_viol = [0] * nrec
    book_key = book.key
    state_get = by_state.get
    for t in range(horizon):
        if t >= fleet.next_due:
            fleet.advance(float(t))
        if fleet.billing_version != billed_version:
            od_now, sp_now = fleet.gpus_running()
            billed_version = fleet.billing_version
        gpu_s_od += od_now
        gpu_s_sp += sp_now
        n = fleet.n_serving
        if fleet.lost_in_flight_share > 0:  # reclaimed serving pods lose their in-flight share
            share = min(fleet.lost_in_flight_share, 1.0)
            lost = d * share
            r_tok -= r_tok * share
            d -= lost
            book.unserved_ok += lost
            fleet.lost_in_flight_share = 0.0

        a = counts[t]
        a_in = ins[t]
        a_out = outs[t]
        ca2 = ca2s[t]
        arrived += a
        arr_m[t] = a  # the observed rate counts every arrival, before any rejection
        rec_load_l[t // rec] += a  # offered load (before any rejection)
        b = d / n if n > 0 else 0.0
        itl = itl_tab[int(b) if b < B else B]
        tchunk = itl + K / P
        peff = K / tchunk
        cap = n * peff  # prompt tokens/s the pool can prefill this second
        # Admission (Triton queue policy): reject when the predicted wait exceeds the timeout.
        if a > 0:
            if n == 0 or (wq / cap if cap > 0 else math.inf) > timeout:
                rejected += a
                violation += 1
                rec_viol[t // rec] += 1
                if step_at_s is not None and step_at_s <= t < step_at_s + 600:
                    viol_after += 1
                a = a_in = a_out = 0.0
        # Slots: prompts are admitted only while sequences fit in the batch (KV cache).
        mean_in = (a_in / a) if a > 0 else (wq / qn if qn > 1e-9 else mean_in_g)
        free = n * B - d
        demand = wq + a_in
        # (min and max spelled out in this loop, with their exact results: a builtin's call per
        # second and per line cost more than the arithmetic.)
        slot_cap = (0.0 if 0.0 > free else free) * mean_in + (d * 0.5 * mean_in if d > 0 else 0.0)
        if n > 0:  # = min(demand, cap, slot_cap)
            proc = cap if cap < demand else demand
            proc = slot_cap if slot_cap < proc else proc
        else:
            proc = 0.0
        u = proc / cap if cap > 0 else 0.0  # share of the second spent in prompt-carrying iterations
        # Sub-second queueing is a steady-state effect of the recent utilisation (EWMA), not of one
        # second's count (whose excess the fluid queue already carries).
        tok_rate += (a_in - tok_rate) * 0.1
        rho_s = tok_rate / cap if cap > 0 else 1.0
        # FIFO cohort bookkeeping
        s0 = cum_s
        lq = 0.0
        if a > 0:
            mid = cum_a + a_in * 0.5
            cum_a += a_in
            if wq <= 1e-9 and demand <= cap and a_in <= slot_cap:
                # No backlog and the second's load fits: only sub-second (M/G/c) queueing.
                k = book_key(n, 0.98 if 0.98 < rho_s else rho_s, ca2, 0.0)
                book_counts[k] = counts_get(k, 0.0) + a
                share_ok, p95_m[t], wmean = state_get(k) or state_of(k)
                adm_m[t] = a
                wait_m[t] = wmean * 1000.0
                lq = a * wmean
                if share_ok < VIOLATION_SHARE:
                    violation += 1
                    rec_viol[t // rec] += 1
                    if step_at_s is not None and step_at_s <= t < step_at_s + 600:
                        viol_after += 1
            else:
                cohorts.append([mid, t + 0.5, a, ca2])
                adm_m[t] = a
        wq = demand - proc
        cum_s += proc
        # Cohorts whose midpoint is processed this second get their fluid wait.
        if cohorts:
            rate = proc if proc > 0 else 0.0
            while cohorts and cohorts[0][0] <= cum_s + 1e-9:
                mid_c, t_arr, cnt, c2 = cohorts.popleft()
                t_reach = t + ((mid_c - s0) / rate if rate > 0 else 1.0)
                fw = max(0.0, t_reach - t_arr)
                # In a fluid backlog the server never idles: the wait is the work ahead (fw).
                k = book_key(n, 0.0, c2, fw)
                book_counts[k] = counts_get(k, 0.0) + cnt
                ti = int(t_arr)
                share_ok, p95_m[ti], wmean = state_get(k) or state_of(k)
                wait_m[ti] = wmean * 1000.0
                if share_ok < VIOLATION_SHARE:
                    violation += 1
                    rec_viol[ti // rec] += 1
                    if step_at_s is not None and step_at_s <= ti < step_at_s + 600:
                        viol_after += 1
        # Requests leave the queue in proportion to the tokens processed (exact conservation).
        queued = qn + a
        admitted = queued * (proc / demand) if demand > 0 else 0.0
        qn = queued - admitted
        if wq <= 1e-6:
            admitted += qn
            wq, qn = 0.0, 0.0
        # Decode: iterations this second (prompt-carrying ones are longer).
        if n > 0 and d > 0:
            n_iter = u / tchunk + (1.0 - u) / itl
            produced = d * n_iter
            produced = produced if produced < r_tok else r_tok
            mean_rem = r_tok / d if d > 0 else mean_out_g
            done = produced / (1.0 if 1.0 > mean_rem else mean_rem)
            done = done if done < d else d
            r_tok -= produced
            d -= done
            served += done
        d += admitted
        r_tok += admitted * ((a_out / a) if a > 0 else mean_out_g)
        if d < 1e-9:
            d, r_tok = 0.0, 0.0
        queue_m[t] = qn + lq  # Little's law for the sub-second queue
        fleet.in_flight_per_serving = (d + qn) / n if n > 0 else qn
        metrics.in_flight = d + qn
        if t % rec == 0:
            i = t // rec
            rec_serv[i] = n
            rec_total[i] = len(fleet.replicas)

        if t >= offset and (t - offset) % interval == 0 and t < n_trace:
            res = step(spec=spec, policy=policy, metrics=metrics, fleet=fleet, forecaster=fore, memory=memory,
                       now=float(t))
            memory = res.memory
            rate_obs = res.observation.request_rate
            if fore is not None and rate_obs is not None and math.isfinite(rate_obs) and hasattr(fore, "observe"):
                fore.observe(float(t), rate_obs)  # as the operator does after each tick
        if progress is not None and t % 86400 == 0:
            progress(t)
        if t >= n_trace and wq <= 0 and d <= 1e-6 and not cohorts:
            break

    unfinished = d + qn
    lost = book.unserved_ok
    dropped = rejected + lost + unfinished
    # Lost and still-decoding requests had their TTFT recorded: they do not count as met.
    met = max(0.0, book.met() - lost - d)
    hist = book.histogram()
    gpu_h_od = gpu_s_od / 3600.0
    gpu_h_sp = gpu_s_sp / 3600.0
    price = spec.capacity.price_per_gpu_hour
    cost = gpu_h_od * price.on_demand + gpu_h_sp * price.spot
    rec_load = np.asarray(rec_load_l) / rec
    t_axis = np.arange(nrec) * rec
    return SimResult(
        policy=policy.name, trace=trace.name, seconds=n_trace, arrived=arrived, served=served, dropped=dropped,
        rejected=rejected, lost_in_flight=lost + unfinished, met_slo=met,
        attainment=met / arrived if arrived > 0 else 1.0,
        ttft_p50_ms=hist_percentile(hist, 0.50) * 1000, ttft_p95_ms=hist_percentile(hist, 0.95) * 1000,
        ttft_p99_ms=hist_percentile(hist, 0.99) * 1000,
        gpu_hours=gpu_h_od + gpu_h_sp, gpu_hours_spot=gpu_h_sp, cost=cost,
        cost_per_1m=cost / arrived * 1e6 if arrived > 0 else float("nan"), scale_events=fleet.scale_events,
        violation_s=violation, violation_after_step_s=viol_after if step_at_s is not None else None,
        preemptions=fleet.preemptions, wall_s=_time.perf_counter() - wall0,
        t=t_axis[: n_trace // rec + 1], load_rps=rec_load[: n_trace // rec + 1],
        serving=rec_serv[: n_trace // rec + 1], total=rec_total[: n_trace // rec + 1], hist=hist,
        viol=np.asarray(rec_viol[: n_trace // rec + 1]),
    )
