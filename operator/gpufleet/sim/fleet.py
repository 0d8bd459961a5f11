"""SimFleet: the FleetPort of the simulator (replicas, cold starts, spot interruptions, cost).

It carries out the core's rollout (core.rollout) as adapters.kubefleet does on a cluster; which
pod serves, drains or leaves is never decided here. The cluster's machinery is modelled:
- one "Deployment" per capacity class; when it shrinks, its ReplicaSet deletes pods in its own
  order (core.rollout.replicaset_victims: not Ready first, then pod-deletion-cost, ...); when a
  node is reclaimed, the ReplicaSet replaces the pod (the class size is unchanged);
- a pod turns Ready as a standby; the last decision is then carried out again at once
  (control.step.reroute, as the operator does on the pod's Ready event), so it serves if the plan
  wants it to (a plain Deployment's pod, whose plan serves every pod, serves once Ready);
- a pod that left the Service to drain keeps its in-flight requests, which it finishes within
  DRAIN_S (its snapshot counts what it carried when it left until then, 0 after); the rollout
  releases it when it is idle or past drainTimeoutSeconds, at the next decision. It is billed
  until it goes.

Nodes (sim/nodes.py): each pod runs on a GPU node of its own class (on-demand and spot are separate
node pools). A starting pod takes a free node of its class (and zone) if one exists, skipping the
cold-start model's node stages (provisioning, image pull, weight download: sim/coldstart.py), or
has a node provisioned for it. A pod removed by a scale-in or a drain frees its node, which stays
for the model's consolidate_after_s (Karpenter's consolidateAfter), billed, for the next start of
its class, then goes; a reclaimed pod's node goes with it. Billing (`gpus_running`) is per node,
busy or free. With the simple ColdStart (no node stages, consolidate_after_s 0) a node lives
exactly as long as its pod: billing is the pods', as before the node model.

Spot zones (a SpotTrace over several zones of a region): a new spot pod is placed in an available
zone, the one with the fewest of this fleet's spot pods (lowest index on ties), as a topology
spread constraint on the zone would place it; it receives notices at its own zone's reclaims only.
While no zone reads 1, new spot pods stay Pending. One zone: every spot pod is in zone 0.

Classes (`classes`, sim/nodes.NodeClass): by default the onDemand/spot form's two; with
spec.capacity.classes, one Deployment and node pool per named class, each with its GPUs per node
(a MIG slice as its share), price, spot-ness (the SpotTrace places and reclaims every spot class's
pods) and stock-outs: while one covers the time, the class's new pods stay Pending (no node, not
billed) and the ones past its pending timeout are counted in FleetState.pending_by_class, as the
operator's fleet adapter counts them; a stock-out with `reclaim` sends each running pod of the
class a notice at its start (the ReplicaSet's replacements then stay Pending).

Loss physics, the same for every policy: a pod that left the Service (drained or demoted) finishes
its in-flight requests within DRAIN_S, on itself; its node reclaimed d seconds after it left loses
the share of the in-flight requests it took along (1/serving when it left) times
max(0, 1 - d/DRAIN_S) (linear: pessimistic, most answers are far shorter than the longest). A
pod still serving when its node is reclaimed loses its whole share (1/serving). The lost requests
are counted as dropped. Simplification: the in-flight requests of a pod leaving the Service stay
in the pooled fluid model (capacity drops at once), and a drain outside a reclaim is lossless
(a pod released at its drain timeout still finishes within its graceful termination).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gpufleet.control.step import reroute
from gpufleet.core.rollout import Rollout, replicaset_victims, rollout, time_to_ready
from gpufleet.core.split import DRAIN_S
from gpufleet.core.types import (
    ON_DEMAND,
    FleetState,
    Plan,
    Replica,
    ReplicaState,
)
from gpufleet.sim.coldstart import ColdStart
from gpufleet.sim.nodes import Node, NodeClass, NodePool, two_classes
from gpufleet.sim.spot import SpotTrace

# The members as module constants: an attribute lookup on the Enum class costs ~10x a global read,
# and the fleet's loops run over every pod on most ticks.
_STARTING, _STANDBY, _SERVING, _DRAINING = (ReplicaState.starting, ReplicaState.standby, ReplicaState.serving,
                                            ReplicaState.draining)


_set_field = object.__setattr__  # sets a SimReplica field past its __setattr__ (a pod being built)


# The SimReplica fields its Replica snapshot is built from (SimReplica.snapshot).
_SNAPSHOT_OF = frozenset({"name", "cls", "state", "created_at", "ready_at", "interrupted", "draining_since",
                          "terminate_at", "deletion_cost", "carried"})


@dataclass(slots=True)
class SimReplica:
    # Set first by __init__ (__setattr__ reads them): the last snapshot(), kept until a field it is
    # built from changes, and its fleet's changed pods (SimFleet._marks), set when it joins one.
    _snap: Replica | None = field(default=None, init=False, repr=False, compare=False)
    _marks: dict[str, SimReplica] | None = field(default=None, init=False, repr=False, compare=False)
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
    carried: float = 0.0  # the in-flight requests it took along when it left to drain (0 once idle)
    draining_since: float | None = None
    deletion_cost: int | None = None
    zone: int = -1  # spot: the zone of its node (-1: none yet)
    node: Node | None = None  # the GPU node it runs on (None: pending, no node)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name in _SNAPSHOT_OF and self._snap is not None:
            object.__setattr__(self, "_snap", None)
            if self._marks is not None:
                self._marks[self.name] = self  # its fleet's list of snapshots takes the new one

    def snapshot(self) -> Replica:
        """The pod as the core sees it: serving, its own count unknown (the pooled model has none;
        SimFleet.state sets 0 while the pool is empty); draining, what it took along until it is
        idle (SimFleet.state clears `carried` DRAIN_S after it left); else none. Cached: the fleet
        is snapshotted whenever it changes, most pods unchanged."""
        snap: Replica | None = self._snap
        if snap is None:
            st = self.state
            snap = Replica(self.name, self.cls, st, self.created_at, self.ready_at if st != _STARTING else None,
                           None if st == _SERVING else self.carried if st == _DRAINING else 0.0,
                           self.interrupted, self.draining_since, self.terminate_at, self.deletion_cost)
            object.__setattr__(self, "_snap", snap)
        return snap


_SIM_DEFAULTS = tuple((f.name, f.default) for f in dataclasses.fields(SimReplica) if f.default is not dataclasses.MISSING)


def _starting(name: str, cls: str, now: float) -> SimReplica:
    """SimReplica(name=name, cls=cls, state=starting, created_at=now, ready_at=None), the same
    value with its fields set directly: the dataclass __init__ would pass each of them through
    SimReplica.__setattr__ (the KPA baseline starts ~10^4 pods per simulated day)."""
    r: SimReplica = object.__new__(SimReplica)
    for k, v in _SIM_DEFAULTS:
        _set_field(r, k, v)
    for k, v in (("name", name), ("cls", cls), ("state", _STARTING), ("created_at", now), ("ready_at", None)):
        _set_field(r, k, v)
    return r


class SimFleet:
    def __init__(self, *, cold: ColdStart, rng: np.random.Generator, spot: SpotTrace | None = None,
                 gpus_per_replica: int = 1, pending_timeout_s: float = 120.0, instant_start: bool = False,
                 drain_timeout_s: float = 120.0, interval_s: float = 0.0,
                 classes: Sequence[NodeClass] | None = None) -> None:
        self.cold = cold
        self.rng = rng
        self.spot = spot
        self.gpus = gpus_per_replica
        # The capacity classes (default: on-demand and spot); `listed`: spec.capacity.classes.
        self.listed = classes is not None
        self.classes = {c.name: c for c in (classes if classes is not None else two_classes(gpus_per_replica))}
        self.names = tuple(self.classes)
        self.nodes = NodePool(gpus_per_replica, list(self.classes.values()))  # one node per replica
        self._spot_classes = frozenset(c.name for c in self.classes.values() if c.spot)
        # (time, class, notice) of the stock-outs that reclaim running pods, in time order.
        self._stock_out_notices = sorted((o.start_s, c.name, o.notice_s) for c in self.classes.values()
                                         for o in c.stock_outs if o.reclaim)
        self._has_stock_outs = any(c.stock_outs for c in self.classes.values())
        self.pending_timeout_s = pending_timeout_s
        self.instant = instant_start
        self.drain_timeout_s = drain_timeout_s  # spec.scaling.scaleDown.drainTimeoutSeconds
        self.interval_s = interval_s  # how often the policy decides (the rollout's notice margin)
        self.replicas: dict[str, SimReplica] = {}
        self._by_class = dict.fromkeys(self.names, 0)  # pods per class, kept by _new and _remove
        # Kept as pods change state (_set_state, _notice, _remove): what the baselines count on each
        # tick (counts()), without a pass over the pods.
        self._draining_by_class = dict.fromkeys(self.names, 0)
        self._noticed_kept = 0  # interrupted pods not draining
        self._n_pending = 0  # Pending pods (no node yet)
        self._clocking: dict[str, SimReplica] = {}  # the pods draining or noticed, as they change
        self._idle_heap: list[tuple[float, str]] = []  # (when, pod): a draining pod's carried work is done
        self.size = dict.fromkeys(self.names, 0)  # each class's Deployment spec.replicas
        self.plan: Plan | None = None  # the last decision carried out
        self.last_rollout = Rollout()
        self._seq = 0
        self._ready_heap: list[tuple[float, str]] = []
        self._term_heap: list[tuple[float, str]] = []
        self._now = 0.0
        self._preempt_times: list[tuple[float, int]] = []  # (time, zone) of the spot reclaims
        self.n_serving = 0
        self.version = 0  # bumped whenever a pod changes: the fleet state and the rollout follow it
        self.nodes_version = 0  # bumped when free nodes are consolidated (billing only)
        # (version, spot unavailable, pending per class) and the state.
        self._cached: tuple[tuple[int, bool, tuple[tuple[str, int], ...]], FleetState] | None = None
        self._last_state: tuple[int, float, FleetState] | None = None
        self._flags_at: tuple[int, tuple[float | None, bool]] = (-1, (None, False))
        self._pods_at: tuple[int, list[Replica]] = (-1, [])
        # Every pod's last snapshot, in self.replicas' order, and the pods added, removed or
        # changed since it was brought up to date: a fleet change snapshots only the pods it touched.
        self._snaps: dict[str, Replica] = {}
        self._marks: dict[str, SimReplica] = {}
        self._pool_empty_at_build = False  # in_flight_per_serving <= 0 when _pods_at was built
        self._recheck_pool = False  # free nodes went (no pod changed): see state()
        self.in_flight_per_serving = 0.0
        self.starts: dict[str, list[float]] = {c: [] for c in self.names}
        self.scale_events = 0
        self.created = 0
        self.lost_in_flight_share = 0.0  # share of the in-flight requests lost this tick (engine resets it)
        self.preemptions = 0
        self._last_apply: tuple[tuple[object, ...], int] | None = None
        self._quiet_until = math.inf  # the last rollout holds until then on an unchanged fleet
        self._ttr: dict[str, float] | None = None  # time_to_ready() until the next start
        self.next_due = 0.0  # the engine calls advance() only from this time on

    def _due(self, t: float) -> None:
        if t < self.next_due:
            self.next_due = t

    # -- setup ---------------------------------------------------------------------------------

    def bootstrap(self, serving: int, now: float = 0.0, capacity_class: str = ON_DEMAND) -> None:
        """Start with `serving` replicas of the class (on-demand) already Ready and serving (a warm
        fleet). Their starts are drawn from the cold-start model and remembered, as the operator
        remembers the starts of the pods it finds. Once per class."""
        for _ in range(serving):
            r = self._new(capacity_class, now)
            r.state, r.ready_at = _SERVING, now
            if r.node is not None:
                r.node.warm_at = now  # found up, with the image
            self._started(capacity_class, 0.0 if self.instant else self.cold.sample(self.rng))
            self.n_serving += 1
        self.size[capacity_class] = serving
        self._ready_heap.clear()

    def schedule_preemptions(self, duration_s: float) -> None:
        if self.spot is not None:
            self._preempt_times = self.spot.preemption_events(duration_s)
            if self._preempt_times:
                self._due(self._preempt_times[0][0])

    # -- FleetPort ---------------------------------------------------------------------------

    def state(self, *, now: float) -> FleetState:
        # Rebuilt only when the fleet changed (a draining pod turning idle, DRAIN_S after it left,
        # is a change) or spot availability did. The fluid model pools the requests: a serving
        # pod's own in-flight count is unknown (None), or 0 when the pool was empty at the last
        # rebuild: all the core reads of it (an idle pod may go at once; demotion order ties, every
        # serving pod alike). A draining pod runs what it took along until DRAIN_S after it left,
        # then is idle: the core reads its count only to tell the two apart
        # (core.rollout.release_reason). The KPA baseline reads live concurrency from SimMetrics,
        # as Knative reads its queue-proxies.
        idle = self._idle_heap
        while idle and idle[0][0] <= now:
            self._turn_idle(*heapq.heappop(idle))
        if self._recheck_pool:
            # Nodes went, no pod: the state stands unless the pool's emptiness, read when it was
            # built, has changed since (what a rebuild at this point would read afresh).
            self._recheck_pool = False
            if (self.in_flight_per_serving <= 0) != self._pool_empty_at_build:
                self.version += 1
        last = self._last_state  # a control step asks up to three times at one time, fleet unchanged
        if last is not None and last[0] == self.version and last[1] == now:
            return last[2]
        fs = self._state(now)
        self._last_state = (self.version, now, fs)
        return fs

    def _turn_idle(self, at: float, name: str) -> None:
        """A draining pod's carried work is done: it reads idle from now on. The pods' list, when
        it is this version's, gets the pod's new snapshot in place: a rebuild would read the
        pool's emptiness afresh for every serving pod, which only a change to the pods does."""
        r = self.replicas.get(name)
        if r is None or r.state != _DRAINING or r.left_at is None or r.left_at + DRAIN_S != at:
            return  # gone, or it left again since (a later event of its own)
        r.carried = 0.0
        current = self._pods_at[0] == self.version
        self.version += 1
        if current:
            pods = self._pods_at[1]
            pods[[p.name for p in pods].index(name)] = r.snapshot()
            self._pods_at = (self.version, pods)

    def _state(self, now: float) -> FleetState:
        oldest_pending, any_pending = self._flags()
        spot_unavailable = oldest_pending is not None and now - oldest_pending > self.pending_timeout_s
        pending = self._pending_by_class(now) if any_pending and self.listed else ()
        key = (self.version, spot_unavailable, pending)
        cached = self._cached
        if cached is not None and cached[0] == key:
            return cached[1]
        if self._pods_at[0] != self.version:  # the pods as of this version
            # Every pod's snapshot as it is (those of the pods marked since the last rebuild taken
            # again): no per-pod copy while requests are in flight (a serving pod's own count is
            # unknown, the pool's requests being shared by all).
            snaps, marks, pods = self._snaps, self._marks, self.replicas
            for name, r in marks.items():
                if name in pods:
                    snaps[name] = r._snap or r.snapshot()
                else:
                    snaps.pop(name, None)
            marks.clear()
            pods_now = list(snaps.values())
            self._pool_empty_at_build = self.in_flight_per_serving <= 0
            if self._pool_empty_at_build:  # the pool is empty: every serving pod is idle
                pods_now = [dataclasses.replace(p, in_flight=0.0) if p.state == _SERVING else p for p in pods_now]
            self._pods_at = (self.version, pods_now)
        fs = FleetState(replicas=tuple(self._pods_at[1]), spot_unavailable=spot_unavailable,
                        time_to_ready_s=self.time_to_ready(), pending_by_class=pending)
        self._cached = (key, fs)
        return fs

    def counts(self, fs: FleetState) -> tuple[int, int, dict[str, int]] | None:
        """(serving pods, pods neither draining nor noticed, pods not draining per class) of `fs`,
        kept as the pods change: None unless `fs` is the fleet's current state(), for the caller to
        count itself."""
        last = self._last_state
        if last is None or last[2] is not fs or last[0] != self.version:
            return None
        drained = self._draining_by_class
        kept = {c: n - drained.get(c, 0) for c, n in self._by_class.items()}
        return self.n_serving, sum(kept.values()) - self._noticed_kept, kept

    def _flags(self) -> tuple[float | None, bool]:
        """(the oldest pending spot pod's creation; whether any pod is Pending), recomputed only
        when the fleet changed."""
        if self._flags_at[0] != self.version:
            oldest: float | None = None
            any_pending = self._n_pending > 0  # (a pod is rarely Pending)
            if any_pending:
                spot = self._spot_classes
                for r in self.replicas.values():
                    if r.pending and r.cls in spot and (oldest is None or r.pending_since < oldest):
                        oldest = r.pending_since
            self._flags_at = (self.version, (oldest, any_pending))
        return self._flags_at[1]

    def _pending_by_class(self, now: float) -> tuple[tuple[str, int], ...]:
        """Pods of each class Pending past its pending timeout (the operator's fleet adapter's count)."""
        out: dict[str, int] = {}
        for r in self.replicas.values():
            if r.pending:
                timeout = self.classes[r.cls].pending_timeout_s
                if now - r.pending_since > (self.pending_timeout_s if timeout is None else timeout):
                    out[r.cls] = out.get(r.cls, 0) + 1
        return tuple(sorted(out.items()))

    def time_to_ready(self) -> dict[str, float]:
        """Creation-to-Ready seconds per class: the core's estimator over the starts seen."""
        if self._ttr is None:  # (a start seen since: _started)
            out = {c: time_to_ready(xs) for c, xs in self.starts.items()}
            self._ttr = {c: v for c, v in out.items() if v is not None}
        return self._ttr

    def _started(self, capacity_class: str, seconds: float) -> None:
        self.starts[capacity_class].append(seconds)
        self._ttr = None

    def apply(self, plan: Plan, *, now: float) -> None:
        """Carry out the core's rollout of `plan` on the pods as they are now."""
        self._now = now
        self.plan = plan
        if self._last_apply == (self._signature(plan), self.version) and now < self._quiet_until:
            return  # the same plan on an unchanged fleet changes nothing yet (speed on 2 s ticks)
        ro = rollout(plan, self.state(now=now).replicas, now=now, drain_timeout_s=self.drain_timeout_s,
                     interval_s=self.interval_s)
        self.execute(ro, now)
        self._last_apply = (self._signature(plan), self.version)
        self._quiet_until = self._clock_changes()

    def _signature(self, plan: Plan) -> tuple[object, ...]:
        """What a rollout reads of `plan` on this fleet: its sizes and named moves, without the
        retired pods that are gone (a name that matches no pod plays no part in a rollout, so the
        decision after a scale-down, naming no victim once it is gone, is the same plan)."""
        retire = plan.retire
        return (plan.on_demand, plan.spot, plan.serving, plan.promote,
                tuple(n for n in retire if n in self.replicas) if retire else ())

    def _clock_changes(self) -> float:
        """The first time the same plan could move a pod on this fleet without it changing: a
        draining pod turns idle or reaches its drain timeout, a noticed pod's drain falls due."""
        out = math.inf
        for r in self._clocking.values():  # the pods draining or noticed (none: nothing the clock moves)
            if r.state == _DRAINING:
                since = r.draining_since if r.draining_since is not None else self._now
                out = min(out, since + self.drain_timeout_s,
                          (r.left_at if r.left_at is not None else self._now) + DRAIN_S)
            elif r.interrupted and r.terminate_at is not None:
                out = min(out, r.terminate_at - DRAIN_S - self.interval_s)
        return out

    def execute(self, ro: Rollout, now: float) -> None:
        """What the API server and the controllers do with a rollout: labels (Service membership),
        annotations (drains, deletion costs), evictions, then the Deployments' sizes."""
        self._now, self.last_rollout = now, ro
        for name in ro.cancel:  # standby again; it may be promoted below
            r = self.replicas[name]
            self._set_state(r, _STANDBY)
            r.draining_since = None
        for name in ro.promote:
            self._set_state(self.replicas[name], _SERVING)
        for name in ro.demote:
            self._set_state(self.replicas[name], _STANDBY)
        for name in ro.drain:
            r = self.replicas[name]
            r.carried = self.in_flight_per_serving if r.state == _SERVING else 0.0
            self._set_state(r, _DRAINING)
            r.draining_since = now
            self._carry(r)
        for name, cost in ro.costs:
            self.replicas[name].deletion_cost = cost
            self.version += 1
        for release in ro.release:
            if release.evict and release.name in self.replicas:
                self._remove(self.replicas[release.name], now, lost=False)
        before = dict(self.size)
        self.size.update(dict(ro.sizes))
        for capacity_class in self.names:
            self._reconcile(capacity_class, now)
        if self.size != before:
            self.scale_events += 1

    # -- the ReplicaSet ------------------------------------------------------------------------

    def _reconcile(self, capacity_class: str, now: float) -> None:
        """Bring the class's pods to its Deployment's size, as its ReplicaSet does (its pods are
        counted as they change: no pass over them on the KPA baseline's 2 s ticks)."""
        have = self._by_class.get(capacity_class, 0)
        want = self.size[capacity_class]
        if have > want:
            # The ReplicaSet's ranking reads no in-flight work: the pods' cached snapshots rank as
            # a fresh state() would (same order), without rebuilding the fleet mid-execute.
            ranked = [r._snap or r.snapshot() for r in self.replicas.values() if r.cls == capacity_class]
            for v in replicaset_victims(ranked, have - want):
                self._remove(self.replicas[v.name], now, lost=False)
        for _ in range(want - have):
            self._new(capacity_class, now)

    # -- internals ---------------------------------------------------------------------------

    def _new(self, cls: str, now: float) -> SimReplica:
        self._seq += 1
        self.created += 1
        r = _starting(f"{cls}-{self._seq}", cls, now)
        self._add(r)
        zone = self._placement(cls, now)
        if zone is None:
            r.pending, r.pending_since = True, now
            self._n_pending += 1
            self._due(now + 1)
        else:
            r.zone = zone
            self._schedule_ready(r, now)
        self.version += 1
        return r

    def _placement(self, cls: str, now: float) -> int | None:
        """Where a new pod of the class can get a node now: its zone (-1: none), or None (no node
        can be had: a stock-out, or no spot zone reads 1)."""
        if self._has_stock_outs and self.classes[cls].stock_out(now) is not None:
            return None
        if cls not in self._spot_classes or self.spot is None:
            return -1
        zones = self.spot.available_zones(now)
        return self._pick_zone(cls, zones) if zones else None

    def _pick_zone(self, cls: str, zones: list[int]) -> int:
        """The available zone with the fewest of this fleet's placed pods of the class (spread)."""
        if len(zones) == 1:
            return zones[0]
        count = dict.fromkeys(zones, 0)
        for x in self.replicas.values():
            if x.cls == cls and x.zone in count:
                count[x.zone] += 1
        return min(zones, key=lambda z: (count[z], z))

    def _schedule_ready(self, r: SimReplica, now: float) -> None:
        """The pod gets a node (a free one of its class and zone, else a new one) and its Ready time:
        the cold-start model's node stages on a new node, then its pod stages."""
        if r.pending:
            r.pending = False
            self._n_pending -= 1
        node = self.nodes.take(r.cls, r.zone, r.name)
        if self.instant:
            r.ready_at = now
            if node is None:
                node = self.nodes.provision(r.cls, r.zone, r.name, now=now, warm_at=now)
        elif node is None:
            warm_at = now + self.cold.node_s(self.rng)
            node = self.nodes.provision(r.cls, r.zone, r.name, now=now, warm_at=warm_at)
            r.ready_at = warm_at + self.cold.pod_s(self.rng)
        else:
            r.ready_at = max(now, node.warm_at) + self.cold.pod_s(self.rng)
        r.node = node
        heapq.heappush(self._ready_heap, (r.ready_at, r.name))
        self._due(r.ready_at)

    def _add(self, r: SimReplica) -> None:
        """A new pod in the fleet's counts (by class, serving, draining, noticed)."""
        self.replicas[r.name] = r
        self._marks[r.name] = r
        object.__setattr__(r, "_marks", self._marks)
        self._by_class[r.cls] = self._by_class.get(r.cls, 0) + 1
        self._n_pending += r.pending
        if r.state == _SERVING:
            self.n_serving += 1
        if r.state == _DRAINING:
            self._draining_by_class[r.cls] = self._draining_by_class.get(r.cls, 0) + 1
        elif r.interrupted:
            self._noticed_kept += 1
        if r.state == _DRAINING or r.interrupted:
            self._clocking[r.name] = r
        if r.state == _DRAINING:
            self._carry(r)

    def _carry(self, r: SimReplica) -> None:
        """A draining pod that took requests along is idle DRAIN_S after it left (state() clears its
        count then); one with no known leaving time carries its count until it goes."""
        if r.carried > 0 and r.left_at is not None:
            heapq.heappush(self._idle_heap, (r.left_at + DRAIN_S, r.name))

    def place(self, r: SimReplica) -> None:
        """A pod that is already there, in any state (a test's starting fleet); its Deployment's
        size is the caller's. The simulator's own pods come from _new."""
        self._add(r)
        self.version += 1

    def _set_state(self, r: SimReplica, state: ReplicaState) -> None:
        was_draining, draining = r.state == _DRAINING, state == _DRAINING
        if was_draining != draining:
            step = 1 if draining else -1
            self._draining_by_class[r.cls] = self._draining_by_class.get(r.cls, 0) + step
            if r.interrupted:
                self._noticed_kept -= step
            elif draining:
                self._clocking[r.name] = r
            else:
                self._clocking.pop(r.name, None)
        if r.state == _SERVING and state != _SERVING:
            r.left_at, r.share = self._now, 1.0 / max(self.n_serving, 1)
        if r.state == _SERVING:
            self.n_serving -= 1
        if state == _SERVING:
            self.n_serving += 1
        r.state = state
        self.version += 1

    def _remove(self, r: SimReplica, now: float, lost: bool) -> None:
        if r.state == _SERVING:
            if lost and self.n_serving > 0:
                self._lose(1.0 / self.n_serving)
            self.n_serving -= 1
        elif lost and r.left_at is not None:
            # Left the Service too shortly before its node went: what it still ran is lost.
            self._lose(r.share * max(0.0, 1.0 - (now - r.left_at) / DRAIN_S))
        self._clocking.pop(r.name, None)
        if r.state == _DRAINING:
            self._draining_by_class[r.cls] = self._draining_by_class.get(r.cls, 0) - 1
        elif r.interrupted:
            self._noticed_kept -= 1
        if r.node is not None:
            if lost or r.interrupted:  # reclaimed with it, or noticed: Karpenter deletes it
                self.nodes.delete(r.node)
            else:  # empty: kept for the next start until consolidated
                self.nodes.release(r.node, now=now, keep_s=0.0 if self.instant else self.cold.consolidate_after_s)
                self._due(self.nodes.next_event())
            r.node = None
        del self.replicas[r.name]
        self._marks[r.name] = r
        self._by_class[r.cls] -= 1
        self._n_pending -= r.pending
        self.version += 1

    def _lose(self, share: float) -> None:
        """Compose losses within a tick multiplicatively: 3 of 4 serving pods reclaimed together
        lose 1/4, then 1/3 of the rest, then 1/2 of that: 3/4 in all (not 1/4 + 1/3 + 1/2)."""
        self.lost_in_flight_share = 1.0 - (1.0 - self.lost_in_flight_share) * (1.0 - min(share, 1.0))

    def advance(self, now: float) -> None:
        """Apply every event due by `now`: readiness, spot availability, notices, terminations."""
        self._now = now
        if self._advance(now) and self.plan is not None:
            reroute(self.plan, self, now=now)  # a pod turned Ready: the last decision, carried out again
        nxt = [math.inf, self.nodes.next_event()]
        for h in (self._ready_heap, self._term_heap):
            if h:
                nxt.append(h[0][0])
        if self._preempt_times:
            nxt.append(self._preempt_times[0][0])
        if self._stock_out_notices:
            nxt.append(self._stock_out_notices[0][0])
        if self._flags()[1]:  # pending pods: look for capacity every second
            nxt.append(now + 1)
        self.next_due = max(min(nxt), now + 1e-9) if min(nxt) > now else now + 1

    def _advance(self, now: float) -> bool:
        """Events due by `now`; True when a pod turned Ready."""
        ready = False
        if self.nodes.consolidate(now):
            self.nodes_version += 1  # fewer nodes billed; no pod changed
            self._recheck_pool = True
        heap = self._ready_heap
        while heap and heap[0][0] <= now:
            t, name = heapq.heappop(heap)
            r = self.replicas.get(name)
            if r is None or r.state != _STARTING or r.ready_at != t:
                continue
            self._started(r.cls, t - r.created_at)
            self._set_state(r, _STANDBY)
            ready = True
        if self.spot is None and not self._has_stock_outs:
            return ready
        pt = self._preempt_times
        while pt and pt[0][0] <= now:
            t, zone = pt.pop(0)
            assert self.spot is not None  # preemptions come from the spot trace
            for cls in self._spot_classes:
                self.nodes.reclaim_zone(cls, zone)  # the zone's free spot nodes go at the notice
            self._notice((r for r in self.replicas.values() if r.cls in self._spot_classes and r.zone == zone),
                         t + self.spot.notice_s)
        so = self._stock_out_notices
        while so and so[0][0] <= now:
            t, cls, notice_s = so.pop(0)
            for zone in {n.zone for n in self.nodes.nodes.values() if n.cls == cls}:
                self.nodes.reclaim_zone(cls, zone)  # its free nodes go too
            self._notice((r for r in self.replicas.values() if r.cls == cls), t + notice_s)
        th = self._term_heap
        while th and th[0][0] <= now:
            _, name = heapq.heappop(th)
            r = self.replicas.get(name)
            if r is not None:
                self._remove(r, now, lost=True)
                self._reconcile(r.cls, now)  # the ReplicaSet replaces a reclaimed pod
        if int(now) % 5 == 0 and self._flags()[1]:  # Pending pods look for a node every 5 s
            for r in list(self.replicas.values()):
                if r.pending:
                    placed = self._placement(r.cls, now)
                    if placed is not None:
                        r.zone = placed
                        self._schedule_ready(r, now)
                        self.version += 1
        return ready

    def _notice(self, pods: Iterable[SimReplica], terminate_at: float) -> None:
        """Interruption notices: the pods' nodes go at terminate_at (pending pods have none)."""
        for r in list(pods):
            if not r.pending and not r.interrupted:
                r.interrupted, r.terminate_at = True, terminate_at
                if r.state != _DRAINING:
                    self._noticed_kept += 1
                self._clocking[r.name] = r
                heapq.heappush(self._term_heap, (terminate_at, r.name))
                self._due(terminate_at)
                self.preemptions += 1
        self.version += 1

    def serving_rps_by_class(self) -> dict[str, float]:
        """Load-test capacity of the serving pods, per class (each class's rps_per_replica)."""
        out = dict.fromkeys(self.names, 0.0)
        for r in self.replicas.values():
            if r.state == _SERVING:
                out[r.cls] += self.classes[r.cls].rps_per_replica
        return out

    @property
    def billing_version(self) -> int:
        """Changes whenever what gpus_billed() reads may have: a pod, or a free node consolidated
        (the sum of two counters that only grow)."""
        return self.version + self.nodes_version

    def gpus_billed(self) -> tuple[float, float]:
        """GPUs billed now, on-demand and spot classes: every node that exists, busy (a pod
        starting, standby, serving or draining on it) or free (waiting for consolidation); a
        pending pod has none. A MIG slice counts as its share of a GPU."""
        od = sp = 0.0
        for c in self.names:
            if c in self._spot_classes:
                sp += self.nodes.billed_gpus(c)
            else:
                od += self.nodes.billed_gpus(c)
        return od, sp

    def gpus_running(self) -> tuple[int, int]:
        """gpus_billed() in whole GPUs (the engine's fleets); a fleet of MIG slices reads gpus_billed."""
        od, sp = self.gpus_billed()
        if od != int(od) or sp != int(sp):
            raise ValueError(f"{od} + {sp} GPUs billed: slices of a GPU, read gpus_billed()")
        return int(od), int(sp)
