"""GPU types in the simulator: a fleet of several capacity classes run by core.classes.choose.

The frontier simulator (sim/engine.py) pools identical replicas; a fleet of H100s, L4s and MIG
slices is not identical, so this module runs its own loop with the same decision core
(core.classes: the cheapest mix, availability, back-off) and the same per-type service model
(sim/model.ReplicaModel, the calibrated Llama-3-8B-class engine) scaled to each GPU type.

GPU types (figures and where they come from):
- Relative throughput from each type's datasheet ratios against the H100 80GB the reference
  model is calibrated on: prefill (compute-bound) scales with dense BF16 tensor throughput,
  decode (memory-bound) with memory bandwidth, and the batch is capped by the KV cache that fits
  beside the weights. Memory sizes and bandwidths: Google Cloud's GPU table (H100 80GB HBM3 at
  3.35 TB/s, L4 24GB GDDR6 at 300 GB/s; cloud.google.com/compute/docs/gpus). Dense BF16: H100 SXM
  989 TFLOPS, L4 121 TFLOPS (NVIDIA's H100 and L4 datasheets). MIG 3g.40gb of an H100 80GB holds 3
  of its 7 compute slices and 4 of its 8 memory slices (40 GB, half the bandwidth): NVIDIA's MIG
  user guide, H100 profiles; two such slices fit on one GPU, so one is priced as half a GPU.
- Per replica, the load-test capacity (requests/s at the 99.9 % goal) comes from the same
  capacity table the frontier benchmark sizes its replicas with (sim/capacity.py), evaluated on
  each type's model; every request is judged against the reference deadline (1 s TTFT, or 1.5x
  its own unloaded H100 time for long prompts): a slower GPU does not get a laxer SLO.
- Prices (USD per GPU-hour; benchmarks/gputype_bench.py cites them): passed in per class.

The fleet (per second): arrivals join one FIFO fluid queue served by the Ready replicas at their
load-test capacity, split in proportion to capacity (a least-outstanding-requests balancer, e.g.
the Gateway API inference extension; plain kube-proxy would send a slow pod as much as a fast
one); a second's requests meet the SLO when their FIFO wait plus their own first-token time on
the class that serves them is within the deadline (a distribution over the trace's prompts);
requests that would wait past 60 s are rejected. Every 10 s the loop takes the 1-min request rate
(scraped every 15 s) and the backlog, sizes the need in requests/s, holds the highest need of the
last 5 minutes (scale-down stabilisation) and asks `choose` for the mix, with the replicas each
class has now (the core's start cost: an equal-cost mix does not churn; `churn_guard=False` drops
it, three times faster and within 0.2 % of the cost on ServeGen). Pods take a cold start
(sim/coldstart.ColdStart, median 48 s, p90 79 s) from creation to Ready and are billed from
creation; a class in a stock-out (no nodes) leaves new pods Pending (unbilled) until its
pendingTimeoutSeconds marks it unavailable; a stock-out with reclaims sends each running pod of
the class a notice (120 s), after which its node goes. Simplifications: sub-second queueing is
not modelled (the fluid model sees only backlogs), in-flight requests of a reclaimed pod are
not counted as lost (its replacements are Ready within the notice: the pod drains first), and
all pods share one cold-start distribution.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from gpufleet.core.classes import Availability, GpuClass, Mix, Signal, choose, track
from gpufleet.sim.capacity import capacity_table
from gpufleet.sim.coldstart import ColdStart
from gpufleet.sim.model import LatencyBook, ReplicaModel
from gpufleet.sim.traces import Trace

REF_WEIGHTS_GB = 16.0  # an 8B-parameter model in bf16
KV_BYTES_PER_TOKEN = 131072  # Llama-3-8B: 32 layers x 8 KV heads x 128 dims x (K, V) x 2 bytes
USABLE_MEMORY = 0.9  # of a GPU's memory: the rest is the runtime's (CUDA context, activations)
H100_BF16_TFLOPS = 989.0
H100_BW_TBS = 3.35


@dataclass(frozen=True)
class GpuType:
    name: str
    product: str  # nvidia.com/gpu.product
    resources: tuple[tuple[str, int], ...]
    memory_gb: float
    bw_tbs: float
    bf16_tflops: float

    def model(self, mean_tokens: float) -> ReplicaModel:
        ref = ReplicaModel()
        kv = max(self.memory_gb * USABLE_MEMORY - REF_WEIGHTS_GB, 0.0) * 1e9
        batch = int(min(ref.max_batch, kv / (KV_BYTES_PER_TOKEN * max(mean_tokens, 1.0))))
        return ReplicaModel(prefill_tps=ref.prefill_tps * self.bf16_tflops / H100_BF16_TFLOPS,
                            itl1_s=ref.itl1_s * H100_BW_TBS / self.bw_tbs, max_batch=max(batch, 1))


H100 = GpuType("h100", "NVIDIA-H100-80GB-HBM3", (("nvidia.com/gpu", 1),), 80.0, 3.35, 989.0)
L4 = GpuType("l4", "NVIDIA-L4", (("nvidia.com/gpu", 1),), 24.0, 0.300, 121.0)
# 3 of 7 compute slices, 4 of 8 memory slices (40 GB, half the bandwidth).
MIG_3G40 = GpuType("h100-mig-3g.40gb", "NVIDIA-H100-80GB-HBM3", (("nvidia.com/mig-3g.40gb", 1),),
                   40.0, 3.35 * 4 / 8, 989.0 * 3 / 7)
TYPES = {t.name: t for t in (H100, L4, MIG_3G40)}


@dataclass(frozen=True)
class TypeProfile:
    """What one replica of a type serves on a trace: load-test rps and first-token times."""

    rps: float  # load-test capacity per replica at the goal (Poisson arrivals)
    batch: int
    ok_at_wait: np.ndarray  # share of requests meeting the deadline after a FIFO wait of WAITS[i]


WAITS = np.concatenate([[0.0], np.geomspace(0.005, 60.0, 200)])


def profile(t: GpuType, trace: Trace, target_s: float, n_at: int = 4) -> TypeProfile:
    ref = ReplicaModel()
    mean_in, mean_out = float(trace.in_sample.mean()), float(trace.out_sample.mean())
    model = t.model(mean_in + mean_out)
    # Throughput: the load test on the type's own model (its own unloaded times as the floor of
    # the deadline, else a slow type would have no capacity at all) ...
    book = LatencyBook(model, trace.in_sample, target_s)
    tab = capacity_table(model, book, mean_in, mean_out, 1.0, max(n_at, 1))
    rps = float(tab.cap_requests[n_at] / n_at)
    # ... and attainment against the reference deadline: a slower GPU does not get a laxer SLO.
    ref_book = LatencyBook(ref, trace.in_sample, target_s)
    slack = ref_book.deadline - book.s  # per prompt quantile: time left for waiting
    ok = np.array([float((slack >= w).mean()) for w in WAITS])
    return TypeProfile(rps=rps, batch=model.max_batch, ok_at_wait=ok)


@dataclass(frozen=True)
class SimClass:
    name: str
    gpu: GpuType
    price_per_hour: float  # one replica-hour
    rps: float  # load-test capacity per replica
    ok_at_wait: np.ndarray = field(compare=False, repr=False)
    spot: bool = False
    min: int = 0
    max: int = 10000
    max_share: float = 1.0
    pending_timeout_s: float = 120.0
    return_after_s: float = 600.0

    def core(self, utilization: float) -> GpuClass:
        return GpuClass(self.name, self.price_per_hour, self.rps * utilization, spot=self.spot, min=self.min,
                        max=self.max, max_share=self.max_share, pending_timeout_s=self.pending_timeout_s,
                        return_after_s=self.return_after_s, resources=dict(self.gpu.resources))


@dataclass(frozen=True)
class Outage:
    """No node of `cls` can be had over [start_s, end_s); with `reclaim`, the running ones get a notice."""

    cls: str
    start_s: int
    end_s: int
    reclaim: bool = False
    notice_s: float = 120.0


@dataclass
class Pod:
    cls: str
    created: float
    ready_at: float | None  # None: Pending (no node)
    pending_since: float | None = None
    terminate_at: float | None = None  # its node goes then (interruption notice)


@dataclass
class GtResult:
    fleet: str
    arrived: float
    met: float
    rejected: float
    cost: float
    replica_hours: dict[str, float]
    attainment: float
    cost_per_1m: float
    outage_notes: list[str]
    t: np.ndarray  # minute marks
    load: np.ndarray  # rps per minute
    capacity: dict[str, np.ndarray]  # Ready capacity (rps) per class per minute

    def row(self) -> dict[str, object]:
        return {"fleet": self.fleet, "attainment": self.attainment, "cost": round(self.cost, 4),
                "cost_per_1m": self.cost_per_1m, "arrived": self.arrived, "rejected": self.rejected,
                "replica_hours": {k: round(v, 3) for k, v in self.replica_hours.items()}, "outage_notes": self.outage_notes}


INTERVAL_S = 10
SCRAPE_S = 15
RATE_WINDOW_S = 60
DOWN_WINDOW_S = 300
TIMEOUT_S = 60.0


def simulate(trace: Trace, classes: list[SimClass], *, utilization: float = 0.8, outages: tuple[Outage, ...] = (),
             spot_max_share: float = 0.7, cold: ColdStart | None = None, seed: int = 0,
             name: str = "", churn_guard: bool = True) -> GtResult:
    rng = np.random.default_rng(seed)
    cold = cold or ColdStart()
    by_name = {c.name: c for c in classes}
    core = [c.core(utilization) for c in classes]
    quantum = 0.1 * min(c.rps_per_replica for c in core)  # needs are rounded up to this (caching)
    floor_rps = min(c.rps_per_replica for c in core)

    @lru_cache(maxsize=None)
    def mix_for(need_q: int, out: frozenset[str], ready_out: tuple[tuple[str, int], ...], now_b: int,
                current: tuple[tuple[str, int], ...]) -> Mix:
        avail = {n: avail_now[n] for n in out}
        return choose(core, need_q * quantum, avail, ready=dict(ready_out), current=dict(current),
                      spot_max_share=spot_max_share, now=float(now_b))

    n = trace.seconds
    counts = trace.counts
    pods: list[Pod] = []
    avail_now: dict[str, Availability] = {c.name: Availability() for c in classes}
    q = 0.0
    arrived = met = rejected = cost = 0.0
    replica_s = {c.name: 0.0 for c in classes}  # replica-seconds (a MIG slice is one replica)
    needs: deque[tuple[float, float]] = deque()
    notes: list[str] = []
    last_note = ""  # the classes out and their states at the last note
    nmin = -(-n // 60)
    cap_rec = {c.name: np.zeros(nmin) for c in classes}
    load_rec = np.zeros(nmin)
    # Initial fleet: what the first minute's load needs, Ready.
    first = float(counts[:60].mean()) if n else 0.0
    for cname, k0 in choose(core, max(first, floor_rps), spot_max_share=spot_max_share).replicas.items():
        pods += [Pod(cname, 0.0, 0.0) for _ in range(k0)]
    cum = np.concatenate([[0.0], np.cumsum(counts)])

    def out_at(cls: str, t: float) -> Outage | None:
        for o in outages:
            if o.cls == cls and o.start_s <= t < o.end_s:
                return o
        return None

    dirty, next_event = True, 0.0
    cap_by: dict[str, float] = {}
    cap, bill = 0.0, 0.0
    billed: dict[str, int] = {}
    for t in range(n):
        if dirty or t >= next_event:
            # Fleet events: outages start (reclaims), nodes come back for Pending pods, nodes go.
            for o in outages:
                if o.reclaim and t == o.start_s:
                    for p in pods:
                        if p.cls == o.cls and p.terminate_at is None and p.ready_at is not None:
                            p.terminate_at = t + o.notice_s
            for p in pods:
                if p.ready_at is None and out_at(p.cls, t) is None:
                    p.ready_at = t + cold.sample(rng)
                    p.pending_since = None
            pods = [p for p in pods if p.terminate_at is None or t < p.terminate_at]
            # Between events the Ready capacity and the bill are constant.
            cap_by = {c.name: 0.0 for c in classes}
            billed = {c.name: 0 for c in classes}
            for p in pods:
                if p.ready_at is not None:  # billed from its node's start (Pending pods have none)
                    billed[p.cls] += 1
                    if p.ready_at <= t:
                        cap_by[p.cls] += by_name[p.cls].rps
            cap = sum(cap_by.values())
            bill = sum(by_name[k].price_per_hour / 3600.0 * v for k, v in billed.items())
            later = [x for p in pods for x in (p.ready_at, p.terminate_at) if x is not None and x > t]
            later += [float(b) for o in outages for b in (o.start_s, o.end_s) if b > t]
            next_event = float(math.ceil(min(later))) if later else math.inf
            dirty = False
        # Serve this second.
        a = float(counts[t])
        arrived += a
        wait = q / cap if cap > 0 else math.inf
        if a > 0 and wait > TIMEOUT_S:
            rejected += a
        elif a > 0:
            i = min(int(np.searchsorted(WAITS, wait, side="left")), WAITS.size - 1)
            met += a * sum(v / cap * float(by_name[k].ok_at_wait[i]) for k, v in cap_by.items() if v > 0)
            q += a
        q = max(0.0, q - cap)
        cost += bill
        for k, v in billed.items():
            replica_s[k] += v
        if t % 60 == 0:
            load_rec[t // 60] = float(counts[t:t + 60].mean())
            for cname, c_rps in cap_by.items():
                cap_rec[cname][t // 60] = c_rps
        if t % INTERVAL_S:
            continue
        # Decide: the scraped 1-min rate and the backlog, stabilised downwards.
        ts = (t // SCRAPE_S) * SCRAPE_S
        lo = max(0, ts - RATE_WINDOW_S)
        rate = (cum[ts] - cum[lo]) / (ts - lo) if ts > lo else first
        raw = rate + q / INTERVAL_S
        needs.append((t, raw))
        while needs and needs[0][0] <= t - DOWN_WINDOW_S:
            needs.popleft()
        # replicas.min 1: never less than one replica of the smallest class.
        need = max(max(v for _, v in needs), floor_rps)
        # Availability per class from what the fleet shows.
        for c in classes:
            pend = sum(1 for p in pods if p.cls == c.name and p.ready_at is None
                       and p.pending_since is not None and t - p.pending_since >= c.pending_timeout_s)
            intr = sum(1 for p in pods if p.cls == c.name and p.terminate_at is not None)
            avail_now[c.name] = track(core[classes.index(c)], Signal(pending_past_timeout=pend, interrupted=intr),
                                      avail_now[c.name], float(t))
        out = frozenset(k for k, v in avail_now.items() if not v.usable)
        ready = {c.name: sum(1 for p in pods if p.cls == c.name and p.ready_at is not None and p.ready_at <= t
                             and p.terminate_at is None) for c in classes}
        live = {c.name: sum(1 for p in pods if p.cls == c.name and p.terminate_at is None) for c in classes}
        mix = mix_for(math.ceil(need / quantum - 1e-9), out, tuple(sorted((k, ready[k]) for k in out)),
                      t // 60 * 60 if out else 0, tuple(sorted(live.items())) if churn_guard else ())
        head = ",".join(f"{k}={avail_now[k].state.value}" for k in sorted(out))
        if out and head != last_note and len(notes) < 12:  # each new kind of fallback note, once
            notes.append(f"t={t}s: {mix.note}")
        last_note = head
        pods = _apply(pods, mix.replicas, by_name, core, need, t, out_at, cold, rng)
        dirty = True
    cost_per_1m = cost / arrived * 1e6 if arrived > 0 else float("nan")
    return GtResult(name or "+".join(c.name for c in classes), arrived, met, rejected, cost,
                    {k: v / 3600.0 for k, v in replica_s.items()}, met / arrived if arrived > 0 else 1.0, cost_per_1m,
                    notes, np.arange(nmin) * 60, load_rec, cap_rec)


def _apply(pods: list[Pod], target: dict[str, int], by_name: dict[str, SimClass], core: list[GpuClass],
           need: float, t: int, out_at: object, cold: ColdStart, rng: np.random.Generator) -> list[Pod]:
    """Carry out the mix: start what is missing; retire Pending/starting pods of a shrinking class
    at once and its Ready ones only while the other Ready capacity still covers the need
    (make-before-break); a noticed pod leaves once its replacement capacity is Ready."""
    planned = {c.name: c.rps_per_replica for c in core}
    live = [p for p in pods if p.terminate_at is None]
    noticed = [p for p in pods if p.terminate_at is not None]
    keep: list[Pod] = []
    for name, want in target.items():
        mine = [p for p in live if p.cls == name]
        # Ready first, then starting (soonest Ready first), Pending last.
        mine.sort(key=lambda p: (p.ready_at is None, p.ready_at if p.ready_at is not None else 0.0))
        keep += mine[:want]
        extra = mine[want:]
        for p in extra:
            if p.ready_at is not None and p.ready_at <= t:
                keep.append(p)  # Ready: may go below, once covered
        for _ in range(want - len(mine)):
            o = out_at(name, t)  # type: ignore[operator]
            keep.append(Pod(name, float(t), None, pending_since=float(t)) if o is not None
                        else Pod(name, float(t), t + cold.sample(rng)))
    # Release surplus Ready pods while the remaining Ready capacity covers the need.
    counts = {k: 0 for k in target}
    for p in keep:
        counts[p.cls] += 1
    ready_cap = sum(planned[p.cls] for p in keep if p.ready_at is not None and p.ready_at <= t)
    out: list[Pod] = []
    for p in sorted(keep, key=lambda p: -planned[p.cls]):
        surplus = counts[p.cls] > target[p.cls]
        is_ready = p.ready_at is not None and p.ready_at <= t
        if surplus and is_ready and ready_cap - planned[p.cls] >= need:
            counts[p.cls] -= 1
            ready_cap -= planned[p.cls]
            continue
        out.append(p)
    for p in noticed:  # leaves once the others cover the need
        if ready_cap < need:
            out.append(p)
    return out
