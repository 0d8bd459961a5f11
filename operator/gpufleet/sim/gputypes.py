"""GPU types in the simulator: the GPU-type scenario, run by the operator's own decision path.

What is here is the scenario and the service physics, no sizing rule: each fleet is an
InferenceServiceSpec with `spec.capacity.classes` (the pydantic model the operator reads; a
single-type fleet is a list of one class, and `legacy=True` runs the onDemand/spot form), sized
every interval by `control.step` with `GpufleetPolicy` (core.policy, whose last stage core.mix
turns the fleet into replicas per class with core.classes.choose: the cheapest mix, stock-out
fallback, back-off and the reasons), and carried out by SimFleet with one Deployment and node pool
per class (sim/fleet.py, sim/nodes.py: prices, GPUs per replica, spot, stock-outs).

GPU types (figures and where they come from):
- Relative throughput from each type's datasheet ratios against the H100 80GB the reference
  model is calibrated on: prefill (compute-bound) scales with dense BF16 tensor throughput,
  decode (memory-bound) with memory bandwidth, and the batch is capped by the KV cache that fits
  beside the weights. Memory sizes and bandwidths: Google Cloud's GPU table (H100 80GB HBM3 at
  3.35 TB/s, L4 24GB GDDR6 at 300 GB/s; cloud.google.com/compute/docs/gpus). Dense BF16: H100 SXM
  989 TFLOPS, L4 121 TFLOPS (NVIDIA's H100 and L4 datasheets). MIG 3g.40gb of an H100 80GB holds 3
  of its 7 compute slices and 4 of its 8 memory slices (40 GB, half the bandwidth): NVIDIA's MIG
  user guide, H100 profiles; two such slices fit on one GPU, so one is half a GPU (sliceOfGpu 0.5).
- Per replica, the load-test capacity (requests/s at the 99.9 % goal) comes from the same
  capacity table the frontier benchmark sizes its replicas with (sim/capacity.py), evaluated on
  each type's model; it is the class's targetRpsPerReplica. Every request is judged against the
  reference deadline (1 s TTFT, or 1.5x its own unloaded H100 time for long prompts): a slower GPU
  does not get a laxer SLO.
- Prices (USD per GPU-hour; benchmarks/gputype_bench.py cites them): passed in per class.

The spec is the frontier benchmark's gpufleet spec for the trace (sim/scenarios.make_scenario:
forecast, warm pool, windows, utilisation target) with the classes. Its scaling.targetRpsPerReplica
(the reference the policy sizes in) is the smallest listed class's figure, as docs/gpu-types.md
tells users: core.mix sizes whole reference replicas, so a coarser reference would round a
tenth of an H100 up to a whole one.

The service (per second): arrivals join one FIFO fluid queue served by the serving replicas at
their load-test capacity, split in proportion to capacity (a least-outstanding-requests balancer,
e.g. the Gateway API inference extension; plain kube-proxy would send a slow pod as much as a fast
one); a second's requests meet the SLO when their FIFO wait plus their own first-token time on
the class that serves them is within the deadline (a distribution over the trace's prompts);
requests that would wait past 60 s are rejected. The metrics the policy reads (engine.SimMetrics:
scraped every 15 s, the 1-min rate of every arrival, the queue, the mean wait, a TTFT p95 taken
as the wait plus the capacity-weighted p95 of the classes' own first-token times) come from that
queue. Pods take the cold start of sim/coldstart.ColdStart (median 48 s, p90 79 s) from creation
to Ready and their nodes are billed from creation to deletion; a stock-out leaves a class's new
pods Pending (unbilled) and, with reclaims, gives its running pods a 120 s notice at its start.
Simplifications: sub-second queueing is not modelled (the fluid model sees only backlogs), the
in-flight requests of a reclaimed pod are not counted as lost (the core drains a noticed pod
within its notice), and all pods share one cold-start distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gpufleet.api.models import (
    Capacity,
    CapacityClassSpec,
    InferenceServiceSpec,
    OnDemand,
    Prices,
    Replicas,
    Spot,
)
from gpufleet.control.step import step
from gpufleet.core.mix import gpu_classes, reference_rps
from gpufleet.core.policy import GpufleetPolicy
from gpufleet.core.types import ON_DEMAND, SPOT, PolicyMemory
from gpufleet.sim.capacity import capacity_table
from gpufleet.sim.coldstart import ColdStart
from gpufleet.sim.engine import RateForecastPort, SimMetrics
from gpufleet.sim.fleet import SimFleet
from gpufleet.sim.model import LatencyBook, ReplicaModel
from gpufleet.sim.nodes import NodeClass, StockOut
from gpufleet.sim.scenarios import make_scenario
from gpufleet.sim.traces import Trace

REF_WEIGHTS_GB = 16.0  # an 8B-parameter model in bf16
KV_BYTES_PER_TOKEN = 131072  # Llama-3-8B: 32 layers x 8 KV heads x 128 dims x (K, V) x 2 bytes
USABLE_MEMORY = 0.9  # of a GPU's memory: the rest is the runtime's (CUDA context, activations)
H100_BF16_TFLOPS = 989.0
H100_BW_TBS = 3.35


@dataclass(frozen=True, slots=True)
class GpuType:
    name: str
    product: str  # nvidia.com/gpu.product
    resources: tuple[tuple[str, int], ...]
    memory_gb: float
    bw_tbs: float
    bf16_tflops: float
    slice_of_gpu: float = 1.0  # a MIG slice's share of its GPU (pricing, GPU-hours)

    def model(self, mean_tokens: float) -> ReplicaModel:
        ref = ReplicaModel()
        kv = max(self.memory_gb * USABLE_MEMORY - REF_WEIGHTS_GB, 0.0) * 1e9
        batch = int(min(ref.max_batch, kv / (KV_BYTES_PER_TOKEN * max(mean_tokens, 1.0))))
        return ReplicaModel(prefill_tps=ref.prefill_tps * self.bf16_tflops / H100_BF16_TFLOPS,
                            itl1_s=ref.itl1_s * H100_BW_TBS / self.bw_tbs, max_batch=max(batch, 1))


H100 = GpuType("h100", "NVIDIA-H100-80GB-HBM3", (("nvidia.com/gpu", 1),), 80.0, 3.35, 989.0)
L4 = GpuType("l4", "NVIDIA-L4", (("nvidia.com/gpu", 1),), 24.0, 0.300, 121.0)
# 3 of 7 compute slices, 4 of 8 memory slices (40 GB, half the bandwidth); two per GPU.
MIG_3G40 = GpuType("h100-mig-3g-40gb", "NVIDIA-H100-80GB-HBM3", (("nvidia.com/mig-3g.40gb", 1),),
                   40.0, 3.35 * 4 / 8, 989.0 * 3 / 7, slice_of_gpu=0.5)
TYPES = {t.name: t for t in (H100, L4, MIG_3G40)}


@dataclass(frozen=True, slots=True)
class TypeProfile:
    """What one replica of a type serves on a trace: load-test rps and first-token times."""

    rps: float  # load-test capacity per replica at the goal (Poisson arrivals)
    batch: int
    ok_at_wait: np.ndarray  # share of requests meeting the deadline after a FIFO wait of WAITS[i]
    ttft_p95_s: float = 0.0  # p95 of its own first-token times (no wait)


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
    return TypeProfile(rps=rps, batch=model.max_batch, ok_at_wait=ok, ttft_p95_s=float(np.quantile(book.s, 0.95)))


@dataclass(frozen=True, slots=True)
class SimClass:
    """One capacity class of the scenario: a GPU type, its price, what it serves, its stock-outs."""

    name: str
    gpu: GpuType
    price_per_hour: float  # one replica-hour
    prof: TypeProfile = field(compare=False, repr=False)
    spot: bool = False
    max_share: float = 1.0
    stock_outs: tuple[StockOut, ...] = ()

    @property
    def rps(self) -> float:
        return self.prof.rps

    def spec(self) -> CapacityClassSpec:
        """The class as the operator reads it (spec.capacity.classes[i])."""
        return CapacityClassSpec(name=self.name, resources=dict(self.gpu.resources), spot=self.spot,
                                 price_per_replica_hour=self.price_per_hour, product=self.gpu.product,
                                 slice_of_gpu=self.gpu.slice_of_gpu, target_rps_per_replica=round(self.rps, 3),
                                 max_share=self.max_share)

    def node(self, name: str | None = None, pending_timeout_s: float | None = None) -> NodeClass:
        return NodeClass(name or self.name, spot=self.spot, gpus=self.gpu.slice_of_gpu * sum(
            v for _, v in self.gpu.resources), price_per_hour=self.price_per_hour, rps_per_replica=self.rps,
            pending_timeout_s=pending_timeout_s, stock_outs=self.stock_outs)


def service_spec(trace: Trace, classes: list[SimClass], *, utilization: float, target_s: float,
                 legacy: bool = False) -> InferenceServiceSpec:
    """The frontier benchmark's gpufleet spec for the trace, with these classes.

    The reference (scaling.targetRpsPerReplica) is the smallest class's figure. `legacy`: the
    onDemand/spot form (classes[0] on-demand, classes[1] spot, same GPU type), not a list."""
    sc = make_scenario("gputypes", trace, target_s=target_s)
    base = sc.spec
    ref = min(c.rps for c in classes)
    peak = float(trace.rate_per_window(60).max()) if trace.seconds >= 60 else float(trace.counts.max())
    scaling = base.scaling.model_copy(update={"target_rps_per_replica": round(ref, 3),
                                              "target_utilization": utilization})
    replicas = Replicas(min=1, max=min(10000, max(8, math.ceil(3 * peak / ref))))
    # The warm pool's most standbys count reference replicas: the same capacity for every fleet
    # (the frontier spec's, in its H100-class replicas), not 4 slices where another has 4 H100s.
    pool = base.warm_pool.model_copy(update={"max": max(1, round(base.warm_pool.max * sc.rps_per_replica / ref))})
    if legacy:
        od, sp = classes
        capacity = Capacity(on_demand=OnDemand(base=1), spot=Spot(enabled=True, max_fraction=sp.max_share),
                            price_per_gpu_hour=Prices(on_demand=od.price_per_hour, spot=sp.price_per_hour))
    else:
        capacity = Capacity(classes=[c.spec() for c in classes])
    return base.model_copy(update={"scaling": scaling, "replicas": replicas, "capacity": capacity,
                                   "warm_pool": pool})


@dataclass(slots=True)
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
    capacity: dict[str, np.ndarray]  # serving capacity (rps) per class per minute
    missed: np.ndarray  # requests per minute that missed the SLO (or were rejected)
    decisions: int = 0

    def row(self) -> dict[str, object]:
        return {"fleet": self.fleet, "attainment": self.attainment, "cost": round(self.cost, 4),
                "cost_per_1m": self.cost_per_1m, "arrived": self.arrived, "rejected": self.rejected,
                "replica_hours": {k: round(v, 3) for k, v in self.replica_hours.items()},
                "outage_notes": self.outage_notes, "decisions": self.decisions}


TIMEOUT_S = 60.0


def simulate(trace: Trace, classes: list[SimClass], *, utilization: float = 0.8, target_s: float = 1.0,
             legacy: bool = False, cold: ColdStart | None = None, seed: int = 0, name: str = "") -> GtResult:
    """One fleet on the trace: control.step + GpufleetPolicy every interval, SimFleet carrying it out."""
    rng = np.random.default_rng(seed)
    cold = cold or ColdStart()
    spec = service_spec(trace, classes, utilization=utilization, target_s=target_s, legacy=legacy)
    # The fleet's classes, named as the spec names them (the onDemand/spot form: on-demand, spot).
    names = [ON_DEMAND, SPOT] if legacy else [c.name for c in classes]
    timeouts = ([float(spec.capacity.spot.pending_timeout_seconds)] * 2 if legacy else
                [float(c.pending_timeout_seconds) for c in spec.capacity.classes or ()])
    nodes = [c.node(n, to) for c, n, to in zip(classes, names, timeouts)]
    by_name = {n: c for n, c in zip(names, classes)}
    interval = spec.scaling.interval_seconds
    fleet = SimFleet(cold=cold, rng=rng, classes=nodes, pending_timeout_s=float(spec.capacity.spot.pending_timeout_seconds),
                     drain_timeout_s=float(spec.scaling.scale_down.drain_timeout_seconds), interval_s=interval)
    n = trace.seconds
    counts = trace.counts.tolist()
    # A warm fleet for the first minute's load: the core's cheapest mix of the on-demand classes.
    first = float(np.mean(counts[:60])) if n else 0.0
    if legacy:
        fleet.bootstrap(max(1, math.ceil(first / (classes[0].rps * utilization))), capacity_class=ON_DEMAND)
    else:
        from gpufleet.core.classes import choose

        core = [c for c in gpu_classes(spec, reference_rps(spec, None)) if not c.spot]
        for cname, count in choose(core, max(first, min(c.rps_per_replica for c in core))).replicas.items():
            if count:
                fleet.bootstrap(count, capacity_class=cname)
    fleet.schedule_preemptions(float(n))
    metrics = SimMetrics(n)
    fore = RateForecastPort(spec)
    policy = GpufleetPolicy()
    memory = PolicyMemory()
    q = 0.0
    arrived = met = rejected = cost = 0.0
    node_s = dict.fromkeys(names, 0.0)  # replica-seconds billed (a MIG slice is one replica)
    notes: list[str] = []
    last_head = ""
    nmin = -(-n // 60)
    cap_rec = {k: np.zeros(nmin) for k in names}
    load_rec = np.zeros(nmin)
    miss_rec = np.zeros(nmin)
    version = -1
    cap = bill = p95_s = 0.0
    shares: list[tuple[float, np.ndarray]] = []
    cap_by: dict[str, float] = {}
    billed: dict[str, int] = {}
    decisions = 0
    for t in range(n):
        if t >= fleet.next_due:
            fleet.advance(float(t))
        fleet.lost_in_flight_share = 0.0  # see the module's simplifications
        if fleet.billing_version != version:
            version = fleet.billing_version
            cap_by = fleet.serving_rps_by_class()
            cap = sum(cap_by.values())
            shares = [(v / cap, by_name[k].prof.ok_at_wait) for k, v in cap_by.items() if v > 0]
            p95_s = sum(v / cap * by_name[k].prof.ttft_p95_s for k, v in cap_by.items() if v > 0) if cap > 0 else 0.0
            billed = {k: fleet.nodes.billed(k) for k in names}
            bill = fleet.nodes.cost_per_hour() / 3600.0
        # Serve this second.
        a = float(counts[t])
        arrived += a
        metrics.arrivals[t] = a
        wait = q / cap if cap > 0 else math.inf
        if a > 0 and wait > TIMEOUT_S:
            rejected += a
            miss_rec[t // 60] += a
        elif a > 0:
            i = min(int(np.searchsorted(WAITS, wait, side="left")), WAITS.size - 1)
            ok_a = a * sum(w * float(ok[i]) for w, ok in shares)
            met += ok_a
            miss_rec[t // 60] += a - ok_a
            q += a
            metrics.admitted[t] = a
            metrics.wait_ms[t] = wait * 1000.0
            metrics.p95_ms[t] = (wait + p95_s) * 1000.0
        q = max(0.0, q - cap)
        metrics.queue[t] = q
        fleet.in_flight_per_serving = q / fleet.n_serving if fleet.n_serving > 0 else q
        cost += bill
        for k, nb in billed.items():
            node_s[k] += nb
        if t % 60 == 0:
            load_rec[t // 60] = float(np.mean(counts[t:t + 60]))
            for k, v in cap_by.items():
                cap_rec[k][t // 60] = v
        if t % interval:
            continue
        res = step(spec=spec, policy=policy, metrics=metrics, fleet=fleet, forecaster=fore, memory=memory,
                   now=float(t))
        decisions += 1
        memory = res.memory
        rate = res.observation.request_rate
        if rate is not None and math.isfinite(rate):
            fore.observe(float(t), rate)
        # The core's reasons while a class is out (each new set of classes out and states, once).
        plan = res.plan
        out = [f"{c.name}={c.state}" for c in plan.classes or () if c.state != "available"]
        head = ",".join(out)
        if out and head != last_head and len(notes) < 12:
            notes.append(f"t={t}s: {plan.mix_note}")
        elif legacy and plan.reason in ("SpotUnavailable", "Interruption") and plan.reason != last_head \
                and len(notes) < 12:
            head = plan.reason
            notes.append(f"t={t}s: {plan.reason}: {plan.message}")
        last_head = head
    cost_per_1m = cost / arrived * 1e6 if arrived > 0 else float("nan")
    return GtResult(name or "+".join(c.name for c in classes), arrived, met, rejected, cost,
                    {k: v / 3600.0 for k, v in node_s.items()}, met / arrived if arrived > 0 else 1.0, cost_per_1m,
                    notes, np.arange(nmin) * 60, load_rec, cap_rec, miss_rec, decisions)
