"""Which pods serve, drain and leave: one rollout step for the operator and the simulator.

The policy decides how many replicas serve and how many each class keeps (a Plan), and names
the pods to retire and promote in this module's orders (`retirements`, `promotions`); this module
decides which pods move, from the plan and the pods as they are now, and returns one plain
`Rollout` value. The executors (adapters.kubefleet on the cluster, sim.fleet in the simulator) only carry
it out. Karpenter's disruption controller is the model: compute a command value, re-check it
against fresh state, execute.

Pods move like this:
- a Ready standby joins the Service (promotion) while fewer healthy pods serve than planned;
  named promotions first, then the oldest standbys, on-demand first (they stay longest);
- surplus serving pods leave the Service and stay loaded (demotion): least work in flight
  first, then the most recently Ready;
- a serving pod the plan retires leaves the Service and drains: it keeps its in-flight requests
  and is released when they are done, or after spec.scaling.scaleDown.drainTimeoutSeconds;
  an interrupted one waits until the healthy serving pods cover the plan, or until its node is
  about to go (core.split.notice_drain_due);
- a draining pod whose capacity is wanted back has its drain cancelled (it is still loaded);
- a retired standby has no traffic and goes at once.

How a pod leaves a Deployment: its pod-deletion-cost is set to the minimum and the Deployment
shrinks by one, so the ReplicaSet deletes exactly that pod. The ReplicaSet ranks not-Ready pods
before the deletion cost, though, so a pod released while another pod of its class is still
starting is evicted first (and the Deployment shrinks after): otherwise the starting pod would
go in its place. `replicaset_victims` is that ranking, for the simulator.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple

from gpufleet.core.fleet import FleetView
from gpufleet.core.split import notice_drain_due
from gpufleet.core.types import ON_DEMAND, SPOT, FleetState, Plan, Replica, ReplicaState, quick_init

# pod-deletion-cost marks (controller.kubernetes.io/pod-deletion-cost): a draining pod is kept
# while it finishes; a released or discarded one is deleted first when its Deployment shrinks.
KEEP_COST = 1000
GO_FIRST_COST = -1000

# Creation-to-Ready durations kept per class, and the statistic planned with: the p90 of the
# recent starts (one slow start should not size the pool, nine should).
TTR_SAMPLES = 20


@quick_init
@dataclass(frozen=True, slots=True)
class Release:
    name: str
    why: str  # "idle", or "drain timeout 30s (in flight: 2)"
    after_s: float = 0.0  # since it left the Service
    evict: bool = False  # evict the pod itself first (a not-Ready pod of its class would go instead)


@quick_init
@dataclass(frozen=True, slots=True)
class Rollout:
    promote: tuple[str, ...] = ()  # standby -> in the Service
    demote: tuple[str, ...] = ()  # in the Service -> standby (still loaded)
    drain: tuple[str, ...] = ()  # leave the Service, finish in-flight work, then go
    cancel: tuple[str, ...] = ()  # drains called off: standby again (capacity is wanted back)
    release: tuple[Release, ...] = ()  # drained pods that go now
    discard: tuple[str, ...] = ()  # retired standbys: no traffic, they go first
    deferred: tuple[str, ...] = ()  # interrupted serving pods kept in the Service until covered
    costs: tuple[tuple[str, int | None], ...] = ()  # deletion-cost marks to write (None: remove)
    sizes: tuple[tuple[str, int], ...] = ()  # Deployment size per capacity class

    def size(self, capacity_class: str) -> int:
        return dict(self.sizes)[capacity_class]

    def notes(self) -> list[tuple[str, str]]:
        """(Event reason, message) of every pod that moves."""
        out = [("Promoted", f"pod {n} joined the Service") for n in self.promote]
        out += [("Demoted", f"pod {n} left the Service (standby)") for n in self.demote]
        out += [("DrainCancelled", f"pod {n} kept: capacity is needed again") for n in self.cancel]
        out += [("Draining", f"pod {n} left the Service; deleted when idle") for n in self.drain]
        out += [("Drained", f"pod {r.name} released after {r.after_s:.0f}s: {r.why}") for r in self.release]
        return out


# The members as module constants: an attribute lookup on the Enum class costs ~10x a global read,
# and the simulator runs these loops over every pod ~10^5 times per simulated day.
_STARTING, _STANDBY, _SERVING, _DRAINING = (ReplicaState.starting, ReplicaState.standby, ReplicaState.serving,
                                            ReplicaState.draining)
_STATE_RANK = {_STARTING: 0, _STANDBY: 1, _SERVING: 2, _DRAINING: 3}
_CLASS_RANK = {SPOT: 0, ON_DEMAND: 1}


def retirement_key(r: Replica) -> tuple[int, int, int, float, float, str]:
    """Interrupted first, then not-yet-Ready, standby before serving, spot before on-demand,
    least in-flight work, youngest first (it has warmed the least), and the name for ties."""
    return (
        0 if r.interrupted else 1,
        _STATE_RANK[r.state],
        _CLASS_RANK.get(r.capacity_class, 0),
        r.in_flight if r.in_flight is not None else 0.0,
        -r.created_at,
        r.name,
    )


def retirements(fleet: FleetState, plan_by_class: dict[str, int]) -> tuple[str, ...]:
    """Replicas to retire, in order: every interrupted one, then each class's excess.

    Draining replicas are already leaving and are not listed again.
    """
    # Most decisions retire nothing: the fleet's view (counted once per FleetState, the same
    # healthy pods per class) says so without a pass over the pods.
    view = FleetView.of(fleet)
    counted = view.healthy_by_class
    if not view.interrupted and all(c in counted and counted[c] <= n for c, n in plan_by_class.items()):
        return ()
    victims: list[Replica] = []
    healthy: dict[str, list[Replica]] = {}  # per class (core.fleet.is_healthy, in one pass)
    for r in fleet.replicas:
        if r.state == _DRAINING:
            continue
        if r.interrupted:
            victims.append(r)
        else:
            healthy.setdefault(r.capacity_class, []).append(r)
    for cls, wanted in plan_by_class.items():
        mine = healthy.get(cls, [])
        if len(mine) > wanted:  # sorting only when something goes (most decisions retire nothing)
            victims.extend(sorted(mine, key=retirement_key)[: len(mine) - wanted])
    if not victims:
        return ()
    return tuple(r.name for r in sorted(victims, key=retirement_key))


def promotions(replicas: Sequence[Replica], count: int) -> tuple[str, ...]:
    """Standbys the policy names to move into the Service now, in the rollout's own order."""
    if count <= 0:
        return ()
    ready = sorted((r for r in replicas if r.state == _STANDBY and not r.interrupted), key=promotion_key)
    return tuple(r.name for r in ready[:count])


def demotion_key(r: Replica) -> tuple[float, float, str]:
    """Least work in flight first (fewest requests to finish), then the most recently Ready."""
    return (r.in_flight or 0.0, -(r.ready_at or 0.0), r.name)


def promotion_key(r: Replica) -> tuple[bool, float, str]:
    """On-demand first (they stay longest), then the longest Ready."""
    return (r.capacity_class != ON_DEMAND, r.ready_at or 0.0, r.name)


def release_reason(r: Replica, *, now: float, drain_timeout_s: float) -> str | None:
    """Why a draining pod may go now (idle, or past its drain timeout); None while it must stay."""
    if r.in_flight is not None and r.in_flight <= 0:
        return "idle"
    since = r.draining_since if r.draining_since is not None else now
    if now - since >= drain_timeout_s:
        return f"drain timeout {drain_timeout_s:.0f}s (in flight: {_count(r.in_flight)})"
    return None


def drain_deadline(replicas: Iterable[Replica], *, drain_timeout_s: float) -> float | None:
    """When the first draining pod reaches its drain timeout (`release_reason`'s), or None: none
    drains with a known start. The operator wakes the service's loop then, so the pod goes at its
    timeout, not up to an interval later."""
    starts = [r.draining_since for r in replicas if r.state == ReplicaState.draining and r.draining_since is not None]
    return min(starts) + drain_timeout_s if starts else None


def _count(x: float | None) -> str:
    return "unknown" if x is None else f"{x:g}"


def _moved(r: Replica, state: ReplicaState) -> Replica:
    return Replica(r.name, r.capacity_class, state, r.created_at, r.ready_at, r.in_flight, r.interrupted,
                   r.draining_since, r.reclaim_at, r.deletion_cost)


def route(plan: Plan, replicas: Sequence[Replica], leaving: set[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(promote, demote): healthy serving pods brought to plan.serving. Interrupted serving pods
    are not capacity here, and pods the plan retires are drained, not demoted."""
    return _route(plan, *_routable(replicas, leaving))


def _routable(replicas: Iterable[Replica], leaving: set[str]) -> tuple[list[Replica], dict[str, Replica]]:
    """(healthy serving pods, healthy standbys by name), the plan's retired ones left out."""
    kept: list[Replica] = []
    standby: dict[str, Replica] = {}
    for r in replicas:
        if r.interrupted or r.name in leaving:
            continue
        if r.state == _SERVING:
            kept.append(r)
        elif r.state == _STANDBY:
            standby[r.name] = r
    return kept, standby


def _route(plan: Plan, kept: list[Replica], standby: dict[str, Replica]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    wanted = [n for n in dict.fromkeys(plan.promote) if n in standby]
    gap = plan.serving - len(kept) - len(wanted)
    if gap > 0:  # sorting only when a standby is wanted
        for r in sorted(standby.values(), key=promotion_key):
            if gap <= 0:
                break
            if r.name not in wanted:
                wanted.append(r.name)
                gap -= 1
    # Never more promotions than the plan has room for (a named promotion may be stale).
    wanted = wanted[: max(0, plan.serving - len(kept))]
    surplus = len(kept) - plan.serving
    demote = tuple(r.name for r in sorted(kept, key=demotion_key)[:surplus]) if surplus > 0 else ()
    return tuple(sorted(wanted)), demote


def rollout(plan: Plan, replicas: Sequence[Replica], *, now: float, drain_timeout_s: float,
            interval_s: float = 0.0) -> Rollout:
    """The one rollout step: which pods move, and each Deployment's size (see the module doc).

    `plan.on_demand` / `plan.spot` count the healthy replicas wanted plus the interrupted ones
    still present (the core's convention), so a Deployment grows for replacements as soon as a
    notice lands. `interval_s` is how soon the next rollout comes (the decision interval): an
    interrupted pod is drained at the last one that leaves it core.split.DRAIN_S.
    """
    leaving = set(plan.retire)
    scan = _scan(replicas, leaving)
    # Capacity wanted back: a healthy draining pod still has its model loaded; keep it, and let
    # it serve again in this same step if the plan wants more serving.
    cancel = _cancels(plan, scan)
    # Each class's pods as they are after the moves below: the scan's, with any drain called off
    # counted as a standby (promotions and demotions swap healthy, kept pods between serving and
    # standby, which changes none of the counts and lists read below, and leave the retired pods
    # as they are). Rescanned only for a called-off drain the plan also retires (goers' order).
    facts: _Scan | None = scan
    if cancel:
        back = {r.name: Replica(r.name, r.capacity_class, _STANDBY, r.created_at, r.ready_at, r.in_flight,
                                r.interrupted, None, r.reclaim_at, r.deletion_cost)
                for pods_of_class in scan.drains.values() for r in pods_of_class if r.name in cancel}
        pods: Sequence[Replica] = [back.get(r.name, r) for r in replicas]
        if leaving.isdisjoint(back):
            facts = _called_off(scan, back)
            promote, demote = _route(plan, scan.kept, facts.standby)
        else:
            facts = None
            promote, demote = route(plan, pods, leaving)
    else:
        pods = replicas
        promote, demote = _route(plan, scan.kept, scan.standby)
    up, down = set(promote), set(demote)
    moved: list[Replica] | None = None  # the pods after those moves, listed only when read

    def after() -> Sequence[Replica]:
        nonlocal moved
        if not (up or down):
            return pods
        if moved is None:
            moved = [_moved(r, _SERVING) if r.name in up else _moved(r, _STANDBY) if r.name in down else r
                     for r in pods]
        return moved
    # Interrupted serving pods keep serving until the healthy ones cover the plan (counted only
    # when one of them is retired).
    covered: bool | None = None

    drain: list[str] = []
    release: list[Release] = []
    discard: list[str] = []
    deferred: list[str] = []
    sizes: list[tuple[str, int]] = []
    if facts is None:
        facts = _scan(after(), leaving)
    for capacity_class in plan.class_names():
        draining = list(facts.draining.get(capacity_class, ()))
        drained_now: list[Replica] = []  # after the ones already draining
        held_back = 0
        for r in facts.goers.get(capacity_class, ()):  # the retired pods not draining yet, in order
            st = r.state
            if st == _SERVING:
                if r.interrupted and covered is None:
                    covered = sum(1 for o in after() if o.state == _SERVING and not o.interrupted
                                  and o.name not in leaving) >= plan.serving
                if r.interrupted and not covered and not notice_drain_due(r.reclaim_at, now, interval_s):
                    deferred.append(r.name)  # still carries load; drained once the replacements serve
                    held_back += 1
                else:
                    drain.append(r.name)
                    drained_now.append(Replica(r.name, r.capacity_class, _DRAINING, r.created_at,
                                               r.ready_at, r.in_flight, r.interrupted, now, r.reclaim_at))
            elif st == _STANDBY:
                discard.append(r.name)
        n_noticed = facts.noticed.get(capacity_class, 0)
        kept_noticed = facts.kept_noticed.get(capacity_class, 0)
        n_staying = facts.staying.get(capacity_class, 0)
        starting = capacity_class in facts.starting
        any_leaving = capacity_class in facts.any_leaving
        draining += drained_now
        healthy_target = _healthy_target(plan, capacity_class, n_noticed)
        held = 0
        for r in draining:
            why = release_reason(r, now=now, drain_timeout_s=drain_timeout_s)
            if why is None:
                held += 1
            else:
                since = r.draining_since if r.draining_since is not None else now
                release.append(Release(r.name, why, now - since, evict=starting))
        # With named victims, keep exactly the others; without, let the ReplicaSet choose.
        base = max(healthy_target, n_staying) if any_leaving else healthy_target
        # An interrupted pod the plan does not retire (kept_noticed) stays in its Deployment until
        # its node goes (a plain Deployment's pod; the core always retires them).
        sizes.append((capacity_class, base + held + held_back + kept_noticed))

    # Only a marked or retired pod can need a different mark: any other one wants none and
    # carries none. The moves above change no pod's mark or draining state (a cancelled drain
    # wants no mark either way), so the pods as they were give the marks in the same order.
    costs = _costs(scan.costed, set(drain), {r.name for r in release} | set(discard), set(cancel))
    return Rollout(promote=promote, demote=demote, drain=tuple(drain), cancel=cancel, release=tuple(release),
                   discard=tuple(discard), deferred=tuple(deferred), costs=costs, sizes=tuple(sizes))


class _Scan(NamedTuple):
    """What rollout() reads off the pods as they are, in one pass (per class: keyed by class)."""

    noticed: dict[str, int]  # interrupted, not draining
    staying: dict[str, int]  # healthy, not draining, not retired
    drains: dict[str, list[Replica]]  # healthy draining pods (drains one may cancel)
    kept: list[Replica]  # healthy serving pods, not retired (route)
    standby: dict[str, Replica]  # healthy standbys by name, not retired (route)
    costed: list[Replica]  # pods with a deletion-cost mark, draining or retired, in order (_costs)
    draining: dict[str, list[Replica]]  # draining pods, in order
    goers: dict[str, list[Replica]]  # retired pods not draining, in order
    kept_noticed: dict[str, int]  # interrupted, not draining, not retired
    starting: set[str]  # classes with a pod not Ready yet
    any_leaving: set[str]  # classes with a retired pod (draining or not)


def _scan(replicas: Iterable[Replica], leaving: set[str]) -> _Scan:
    scan = _Scan({}, {}, {}, [], {}, [], {}, {}, {}, set(), set())
    noticed, staying, drains, kept, standby, costed, draining, goers, kept_noticed, starting, any_leaving = scan
    keep = kept.append
    for r in replicas:
        st = r.state
        # Most pods serve, healthy, unmarked and kept: listed at once (counted in staying below).
        # (`is`: a state that only equals the member takes the general branches, to the same end.)
        if st is _SERVING and r.deletion_cost is None and not r.interrupted and (not leaving or r.name not in leaving):
            keep(r)
            continue
        c = r.capacity_class
        goes = r.name in leaving
        if st == _DRAINING:
            costed.append(r)
            draining.setdefault(c, []).append(r)
            if not r.interrupted:
                drains.setdefault(c, []).append(r)
            if goes:
                any_leaving.add(c)
            continue
        if r.deletion_cost is not None or goes:
            costed.append(r)
        if st == _STARTING:
            starting.add(c)
        if r.interrupted:
            noticed[c] = noticed.get(c, 0) + 1
        if goes:
            any_leaving.add(c)
            goers.setdefault(c, []).append(r)
        elif r.interrupted:
            kept_noticed[c] = kept_noticed.get(c, 0) + 1
        elif st == _SERVING:
            kept.append(r)
        else:
            staying[c] = staying.get(c, 0) + 1
            if st == _STANDBY:
                standby[r.name] = r
    # The kept serving pods stay too, counted per class: most pods are among them, and most fleets
    # have one class (a Counter costs ~3x this on the simulator's 2 s ticks).
    if kept:
        classes = [r.capacity_class for r in kept]
        if classes.count(classes[0]) == len(classes):
            staying[classes[0]] = staying.get(classes[0], 0) + len(classes)
        else:
            for c in set(classes):
                staying[c] = staying.get(c, 0) + classes.count(c)
    return scan


def _called_off(scan: _Scan, back: dict[str, Replica]) -> _Scan:
    """The scan with the drains called off (`back`: their pods, standby again and not retired)
    counted as staying standbys: the counts and lists rollout reads after the moves, as a scan of
    the pods after the call-off gives them."""
    staying = dict(scan.staying)
    for r in back.values():
        staying[r.capacity_class] = staying.get(r.capacity_class, 0) + 1
    draining = {c: [r for r in pods if r.name not in back] for c, pods in scan.draining.items()}
    drains = {c: [r for r in pods if r.name not in back] for c, pods in scan.drains.items()}
    return scan._replace(staying=staying, draining=draining, drains=drains, standby={**scan.standby, **back})


def _healthy_target(plan: Plan, capacity_class: str, noticed_now: int) -> int:
    """Healthy pods the plan wants in a class: its count less the interrupted ones it included."""
    included = noticed_now if plan.interrupted is None else dict(plan.interrupted).get(capacity_class, 0)
    return max(plan.by_class(capacity_class) - included, 0)


def _cancels(plan: Plan, scan: _Scan) -> tuple[str, ...]:
    """Healthy draining pods to keep, per class, while fewer pods stay than the plan wants (the
    most recent drains first: they have gone least far)."""
    if not scan.drains:
        return ()  # nothing to cancel (most steps)
    out: list[str] = []
    for capacity_class in plan.class_names():
        gap = (_healthy_target(plan, capacity_class, scan.noticed.get(capacity_class, 0))
               - scan.staying.get(capacity_class, 0))
        if gap > 0:
            candidates = sorted(scan.drains.get(capacity_class, []), key=lambda r: (-(r.draining_since or 0.0), r.name))
            out += [r.name for r in candidates[:gap]]
    return tuple(out)


def _costs(pods: Iterable[Replica], drain: set[str], go: set[str], cancel: set[str]) -> tuple[tuple[str, int | None], ...]:
    """Deletion-cost marks that differ from what each pod carries. A pod that stays (promoted,
    standby kept, drain cancelled) loses any mark: a standby once retired with the minimum and
    promoted since must not be the ReplicaSet's first pick while it serves."""
    out: list[tuple[str, int | None]] = []
    for r in pods:
        if r.name in go:
            want: int | None = GO_FIRST_COST
        elif r.name in drain or (r.state == _DRAINING and r.name not in cancel):
            want = KEEP_COST
        else:
            want = None
        if want != r.deletion_cost:
            out.append((r.name, want))
    return tuple(out)


def replicaset_rank(r: Replica) -> tuple[int, int, float, float]:
    """A ReplicaSet's deletion order, lowest first (Kubernetes' controller.ActivePodsWithRanks):
    not Ready first, then lower pod-deletion-cost, then shorter Ready, then newer."""
    return (1 if r.state != _STARTING else 0, r.deletion_cost or 0, -(r.ready_at or 0.0), -r.created_at)


_NEWEST_READY = attrgetter("ready_at", "created_at")


def replicaset_victims(pods: Sequence[Replica], count: int) -> list[Replica]:
    """The pods a ReplicaSet deletes when it shrinks by `count`, in its order (`replicaset_rank`,
    ties in the pods' order): = heapq.nsmallest(count, pods, key=replicaset_rank). The
    simulator's stand-in for the ReplicaSet controller."""
    if count <= 0:
        return []
    not_ready = [r for r in pods if r.state == _STARTING]
    # Not-Ready pods rank first: when they are enough, the victims are among them alone (the
    # baselines shrink on 2 s ticks, mostly by a pod still starting).
    if len(not_ready) >= count:
        return heapq.nsmallest(count, not_ready, key=replicaset_rank)
    ready = [r for r in pods if r.state != _STARTING] if not_ready else list(pods)
    head = sorted(not_ready, key=replicaset_rank)
    rest = count - len(head)
    # Ready pods without a deletion-cost mark and with a Ready time (most of a fleet) rank by
    # (Ready time, creation time), latest first: nlargest keeps ties in order as nsmallest does
    # (both are a stable sort's first items), and ranks in C (attrgetter), not through
    # replicaset_rank.
    if [r.deletion_cost for r in ready].count(None) == len(ready) and None not in [r.ready_at for r in ready]:
        return head + heapq.nlargest(rest, ready, key=_NEWEST_READY)
    return head + heapq.nsmallest(rest, ready, key=replicaset_rank)


def replicaset_retirements(replicas: Sequence[Replica], sizes: dict[str, int]) -> tuple[str, ...]:
    """The pods a plain Deployment loses when each class shrinks to `sizes`: its ReplicaSet's
    own choice among the pods it still counts (the draining ones are terminating). The
    baselines name these in their plans, so their pods leave as a scaled-down Deployment's do."""
    out: list[str] = []
    for capacity_class, size in sizes.items():
        mine = [r for r in replicas if r.capacity_class == capacity_class and r.state != _DRAINING]
        out += [r.name for r in replicaset_victims(mine, len(mine) - size)]
    return tuple(out)


def time_to_ready(samples: Sequence[float], prior: float | None = None) -> float | None:
    """Creation-to-Ready seconds planned with: the p90 (linear interpolation) of the last
    TTR_SAMPLES starts; without any, the prior (None: unknown)."""
    recent = sorted(samples[-TTR_SAMPLES:])
    if not recent:
        return prior
    pos = 0.9 * (len(recent) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(recent) - 1)
    return float(recent[lo] + (recent[hi] - recent[lo]) * (pos - lo))
