"""SimFleet: the FleetPort of the simulator (replicas, cold starts, spot interruptions, cost).

Semantics follow the operator's adapter: one "Deployment" per capacity class whose size is the
plan's class count; surplus pods go in `plan.retire` order (pod-deletion-cost), then by the core's
retirement order; a Ready pod joins the Service while serving < plan.serving, otherwise waits as a
standby; standbys are promoted and surplus serving pods demoted to reach plan.serving. A pod
killed by a spot reclaim is replaced by its ReplicaSet (the class count is unchanged).

Spot zones (a SpotTrace over several zones of a region): a new spot pod is placed in an available
zone, the one with the fewest of this fleet's spot pods (lowest index on ties), as a topology
spread constraint on the zone would place it; it receives notices at its own zone's reclaims only.
While no zone reads 1, new spot pods stay Pending. One zone: every spot pod is in zone 0.

Interrupted replicas, as in the Kubernetes adapter (adapters/kube.py): they do not count as serving
capacity (plan.serving is healthy replicas), so Ready replacements and standbys are promoted past
them; an interrupted serving pod that the plan lists in `retire` leaves the Service (drains) once
the healthy serving pods cover plan.serving, or, covered or not, once less than
core.split.NOTICE_DRAIN_S of its notice is left (`notice_drain_due`). A policy that does not list
it (the naive baselines) leaves it serving until its node goes.

Loss physics, the same for every policy: a pod that left the Service (drained or demoted) finishes
its in-flight requests within DRAIN_S, on itself; its node reclaimed d seconds after it left loses
the share of the in-flight requests it took along (1/serving when it left) times
max(0, 1 - d/DRAIN_S) (linear: pessimistic, most answers are far shorter than the longest). A
pod still serving when its node is reclaimed loses its whole share (1/serving). The lost requests
are counted as dropped. Simplification: the in-flight requests of a pod leaving the Service stay
in the pooled fluid model (capacity drops at once), and a drain outside a reclaim is lossless.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from gpufleet.core.split import NOTICE_DRAIN_S, notice_drain_due
from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, Plan, Replica, ReplicaState
from gpufleet.sim.model import ColdStart
from gpufleet.sim.spot import SpotTrace

# Seconds a pod that left the Service needs to finish its in-flight requests: the longest answer
# (4,096 tokens, the trace loaders' clip) at the replica model's full-batch ITL (~8 ms).
DRAIN_S = 33.0

_STATE_RANK = {ReplicaState.starting: 0, ReplicaState.standby: 1, ReplicaState.serving: 2, ReplicaState.draining: 3}


@dataclass
class SimReplica:
    name: str
    cls: str
    state: ReplicaState
    created_at: float
    ready_at: float | None  # scheduled (starting) or actual (Ready)
    pending: bool = False  # spot pod waiting for capacity (no node, no cost)
    pending_since: float = 0.0
    interrupted: bool = False
    terminate_at: float | None = None
    left_at: float | None = None  # when it last left the Service (drained or demoted)
    share: float = 0.0  # its share of the in-flight requests then (1 / serving)
    zone: int = -1  # spot: the zone of its node (-1: none yet)


class SimFleet:
    def __init__(self, *, cold: ColdStart, rng: np.random.Generator, spot: SpotTrace | None = None,
                 gpus_per_replica: int = 1, pending_timeout_s: float = 120.0, instant_start: bool = False) -> None:
        self.cold = cold
        self.rng = rng
        self.spot = spot
        self.gpus = gpus_per_replica
        self.pending_timeout_s = pending_timeout_s
        self.instant = instant_start
        self.replicas: dict[str, SimReplica] = {}
        self.serving_target = 0
        self.class_target = {ON_DEMAND: 0, SPOT: 0}
        self._seq = 0
        self._ready_heap: list[tuple[float, str]] = []
        self._term_heap: list[tuple[float, str]] = []
        self._drain_heap: list[tuple[float, str]] = []  # notice drain deadlines of interrupted pods
        self._release_heap: list[tuple[float, str]] = []  # drained interrupted pods, done at
        self._retire: frozenset[str] = frozenset()  # the last plan's retire list
        self._now = 0.0
        self._preempt_times: list[tuple[float, int]] = []  # (time, zone) of the spot reclaims
        self.n_serving = 0
        self.version = 0
        self._cached: tuple[tuple[int, bool], FleetState] | None = None
        self.in_flight_per_serving = 0.0
        self.starts: dict[str, list[float]] = {ON_DEMAND: [], SPOT: []}
        self.scale_events = 0
        self.created = 0
        self.lost_in_flight_share = 0.0  # share of the in-flight requests lost this tick (engine resets it)
        self.preemptions = 0
        self._last_apply: tuple[object, int] | None = None
        self._ttr: tuple[tuple[int, int], dict[str, float]] | None = None
        self.next_due = 0.0  # the engine calls advance() only from this time on

    def _due(self, t: float) -> None:
        if t < self.next_due:
            self.next_due = t

    # -- setup ---------------------------------------------------------------------------------

    def bootstrap(self, serving: int, now: float = 0.0) -> None:
        """Start with `serving` on-demand replicas already Ready and serving (a warm fleet)."""
        for _ in range(serving):
            r = self._new(ON_DEMAND, now)
            r.state, r.ready_at = ReplicaState.serving, now
            self.n_serving += 1
        self.serving_target = serving
        self.class_target[ON_DEMAND] = serving
        self._ready_heap.clear()

    def schedule_preemptions(self, duration_s: float) -> None:
        if self.spot is not None:
            self._preempt_times = self.spot.preemption_events(duration_s)
            if self._preempt_times:
                self._due(self._preempt_times[0][0])

    # -- FleetPort ---------------------------------------------------------------------------

    def state(self, *, now: float) -> FleetState:
        # Rebuilt only when the fleet changed (or spot availability did): in-flight counts in it are
        # those of the last rebuild (all serving replicas carry the same pooled share anyway; the
        # KPA baseline reads live concurrency from SimMetrics, as Knative reads its queue-proxies).
        spot_unavailable = any(
            r.pending and now - r.pending_since > self.pending_timeout_s for r in self.replicas.values()
        )
        key = (self.version, spot_unavailable)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        inflight = self.in_flight_per_serving
        reps = tuple(
            Replica(name=r.name, capacity_class=r.cls, state=r.state, created_at=r.created_at,
                    ready_at=r.ready_at if r.state != ReplicaState.starting else None,
                    in_flight=inflight if r.state == ReplicaState.serving else 0.0, interrupted=r.interrupted)
            for r in self.replicas.values()
        )
        fs = FleetState(replicas=reps, spot_unavailable=spot_unavailable, time_to_ready_s=self.time_to_ready())
        self._cached = (key, fs)
        return fs

    def time_to_ready(self) -> dict[str, float]:
        """Robust measured creation-to-Ready time (p90 of the last 20 starts), with a prior."""
        key = (len(self.starts[ON_DEMAND]), len(self.starts[SPOT]))
        if self._ttr is not None and self._ttr[0] == key:
            return self._ttr[1]
        out = {}
        for cls, xs in self.starts.items():
            recent = xs[-20:]
            # p90 with linear interpolation (as numpy's default), on at most 20 values
            if len(recent) >= 3:
                xs = sorted(recent)
                pos = 0.9 * (len(xs) - 1)
                lo = int(pos)
                hi = min(lo + 1, len(xs) - 1)
                out[cls] = float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))
            else:
                out[cls] = self.cold.p90
        self._ttr = (key, out)
        return out

    def apply(self, plan: Plan, *, now: float) -> None:
        sig = (plan.on_demand, plan.spot, plan.serving, plan.promote, plan.retire)
        if self._last_apply == (sig, self.version):
            return  # the same plan on an unchanged fleet changes nothing (speed on 2 s ticks)
        self._apply(plan, now)
        self._last_apply = (sig, self.version)

    def _apply(self, plan: Plan, now: float) -> None:
        self._now = now
        before = (self.class_target[ON_DEMAND], self.class_target[SPOT], self.serving_target)
        self.serving_target = plan.serving
        self._retire = frozenset(plan.retire)
        order = {n: i for i, n in enumerate(plan.retire)}
        for cls, want in ((ON_DEMAND, plan.on_demand), (SPOT, plan.spot)):
            self.class_target[cls] = want
            mine = [r for r in self.replicas.values() if r.cls == cls and r.state != ReplicaState.draining]
            if len(mine) > want:
                mine.sort(key=lambda r: (order.get(r.name, len(order)), not r.interrupted, _STATE_RANK[r.state],
                                         -r.created_at))
                for r in mine[: len(mine) - want]:
                    self._remove(r, now, lost=False)
            else:
                for _ in range(want - len(mine)):
                    self._new(cls, now)
        for name in plan.promote:
            p = self.replicas.get(name)
            if (p is not None and p.state == ReplicaState.standby and not p.interrupted
                    and self._healthy_serving() < plan.serving):
                self._set_state(p, ReplicaState.serving)
        self._route(plan.retire)
        if (self.class_target[ON_DEMAND], self.class_target[SPOT], self.serving_target) != before:
            self.scale_events += 1

    # -- internals ---------------------------------------------------------------------------

    def _new(self, cls: str, now: float) -> SimReplica:
        self._seq += 1
        self.created += 1
        r = SimReplica(name=f"{cls}-{self._seq}", cls=cls, state=ReplicaState.starting, created_at=now, ready_at=None)
        self.replicas[r.name] = r
        zones = self.spot.available_zones(now) if cls == SPOT and self.spot is not None else []
        if cls == SPOT and self.spot is not None and not zones:
            r.pending, r.pending_since = True, now
            self._due(now + 1)
        else:
            if zones:
                r.zone = self._pick_zone(zones)
            self._schedule_ready(r, now)
        self.version += 1
        return r

    def _pick_zone(self, zones: list[int]) -> int:
        """The available zone with the fewest of this fleet's placed spot pods (spread)."""
        if len(zones) == 1:
            return zones[0]
        count = dict.fromkeys(zones, 0)
        for x in self.replicas.values():
            if x.cls == SPOT and x.zone in count:
                count[x.zone] += 1
        return min(zones, key=lambda z: (count[z], z))

    def _schedule_ready(self, r: SimReplica, now: float) -> None:
        r.pending = False
        r.ready_at = now if self.instant else now + self.cold.sample(self.rng)
        heapq.heappush(self._ready_heap, (r.ready_at, r.name))
        self._due(r.ready_at)

    def _set_state(self, r: SimReplica, state: ReplicaState) -> None:
        if r.state == ReplicaState.serving and state != ReplicaState.serving:
            r.left_at, r.share = self._now, 1.0 / max(self.n_serving, 1)
        if r.state == ReplicaState.serving:
            self.n_serving -= 1
        if state == ReplicaState.serving:
            self.n_serving += 1
        r.state = state
        self.version += 1

    def _remove(self, r: SimReplica, now: float, lost: bool) -> None:
        if r.state == ReplicaState.serving:
            if lost and self.n_serving > 0:
                self._lose(1.0 / self.n_serving)
            self.n_serving -= 1
        elif lost and r.left_at is not None:
            # Left the Service too shortly before its node went: what it still ran is lost.
            self._lose(r.share * max(0.0, 1.0 - (now - r.left_at) / DRAIN_S))
        del self.replicas[r.name]
        self.version += 1

    def _lose(self, share: float) -> None:
        """Compose losses within a tick multiplicatively: 3 of 4 serving pods reclaimed together
        lose 1/4, then 1/3 of the rest, then 1/2 of that: 3/4 in all (not 1/4 + 1/3 + 1/2)."""
        self.lost_in_flight_share = 1.0 - (1.0 - self.lost_in_flight_share) * (1.0 - min(share, 1.0))

    def _healthy_serving(self) -> int:
        return sum(1 for r in self.replicas.values() if r.state == ReplicaState.serving and not r.interrupted)

    def _route(self, retire: tuple[str, ...] = ()) -> None:
        """Promote standbys (healthy, oldest on-demand first) or demote surplus serving pods, counting
        healthy serving pods only; then drain the interrupted serving pods that may go."""
        healthy = self._healthy_serving()
        leaving = self._retire
        if healthy < self.serving_target:
            cands = sorted((r for r in self.replicas.values()
                            if r.state == ReplicaState.standby and not r.interrupted and r.name not in leaving),
                           key=lambda r: (r.cls != ON_DEMAND, r.ready_at or 0.0))
            for r in cands[: self.serving_target - healthy]:
                self._set_state(r, ReplicaState.serving)
        elif healthy > self.serving_target:
            order = {n: i for i, n in enumerate(retire)}
            serving = sorted((r for r in self.replicas.values() if r.state == ReplicaState.serving and not r.interrupted),
                             key=lambda r: (order.get(r.name, len(order)), r.cls == ON_DEMAND, -r.created_at))
            for r in serving[: healthy - self.serving_target]:
                self._set_state(r, ReplicaState.standby)
        covered = self._healthy_serving() >= self.serving_target
        for r in [r for r in self.replicas.values() if r.state == ReplicaState.serving and r.interrupted]:
            if r.name in leaving and (covered or notice_drain_due(r.terminate_at, self._now)):
                self._drain(r)

    def _drain(self, r: SimReplica) -> None:
        """An interrupted pod leaves the Service; it is released once its in-flight work is done."""
        self._set_state(r, ReplicaState.draining)
        heapq.heappush(self._release_heap, (self._now + DRAIN_S, r.name))
        self._due(self._now + DRAIN_S)

    def advance(self, now: float) -> None:
        """Apply every event due by `now`: readiness, spot availability, notices, terminations."""
        self._now = now
        self._advance(now)
        nxt = [math.inf]
        for h in (self._ready_heap, self._term_heap, self._drain_heap, self._release_heap):
            if h:
                nxt.append(h[0][0])
        if self._preempt_times:
            nxt.append(self._preempt_times[0][0])
        if any(r.pending for r in self.replicas.values()):
            nxt.append(now + 1)
        self.next_due = max(min(nxt), now + 1e-9) if min(nxt) > now else now + 1

    def _advance(self, now: float) -> None:
        heap = self._ready_heap
        while heap and heap[0][0] <= now:
            t, name = heapq.heappop(heap)
            r = self.replicas.get(name)
            if r is None or r.state != ReplicaState.starting or r.ready_at != t:
                continue
            self.starts[r.cls].append(t - r.created_at)
            self._set_state(r, ReplicaState.serving if not r.interrupted and self._healthy_serving() < self.serving_target
                            else ReplicaState.standby)
        if self.spot is None:
            return
        pt = self._preempt_times
        while pt and pt[0][0] <= now:
            t, zone = pt.pop(0)
            for r in list(self.replicas.values()):
                if r.cls == SPOT and not r.pending and not r.interrupted and r.zone == zone:
                    r.interrupted, r.terminate_at = True, t + self.spot.notice_s
                    heapq.heappush(self._term_heap, (r.terminate_at, r.name))
                    self._due(r.terminate_at)
                    heapq.heappush(self._drain_heap, (r.terminate_at - NOTICE_DRAIN_S, r.name))
                    self.preemptions += 1
            self.version += 1
        dh = self._drain_heap
        while dh and dh[0][0] <= now:
            _, name = heapq.heappop(dh)
            r = self.replicas.get(name)
            # The deadline passed: drain without waiting for cover, if the plan retires it.
            if r is not None and r.state == ReplicaState.serving and r.interrupted and name in self._retire:
                self._drain(r)
        rh = self._release_heap
        while rh and rh[0][0] <= now:
            _, name = heapq.heappop(rh)
            r = self.replicas.get(name)
            if r is not None and r.state == ReplicaState.draining:
                self._remove(r, now, lost=False)  # idle: the Deployment shrinks by this pod
        th = self._term_heap
        while th and th[0][0] <= now:
            _, name = heapq.heappop(th)
            r = self.replicas.get(name)
            if r is not None:
                self._remove(r, now, lost=True)
                # The ReplicaSet replaces a reclaimed pod: the class count is unchanged.
                live = sum(1 for x in self.replicas.values() if x.cls == r.cls and x.state != ReplicaState.draining)
                if live < self.class_target[r.cls]:
                    self._new(r.cls, now)
        if int(now) % 5 == 0 and self.spot.is_available(now):
            zones = self.spot.available_zones(now)
            for r in list(self.replicas.values()):
                if r.pending:
                    r.zone = self._pick_zone(zones)
                    self._schedule_ready(r, now)
                    self.version += 1

    def gpus_running(self) -> tuple[int, int]:
        """GPUs billed now per class (every pod with a node: starting, standby, serving)."""
        od = sp = 0
        for r in self.replicas.values():
            if r.pending:
                continue
            if r.cls == ON_DEMAND:
                od += self.gpus
            else:
                sp += self.gpus
        return od, sp
