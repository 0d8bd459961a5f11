"""The rollout step (core.rollout) and its execution on the cluster (adapters.kubefleet), against
a recording fake of the Kubernetes API (tests/fakes.py) with error injection."""

from __future__ import annotations

import inspect
import heapq
from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from gpufleet.adapters import manifests
from gpufleet.adapters.kube import Kube, KubeAPI
from gpufleet.adapters.kubefleet import KubeFleet
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.core.rollout import (
    GO_FIRST_COST,
    KEEP_COST,
    _called_off,
    _route,
    _scan,
    replicaset_rank,
    replicaset_retirements,
    replicaset_victims,
    rollout,
    route,
    time_to_ready,
)
from gpufleet.core.types import ON_DEMAND, SPOT, Plan, Replica, ReplicaState
from tests.fakes import RecordingKube, pod

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the fake pods' creation time
NOW = T0 + 600
DRAIN = 30.0
S, B, D, P = ReplicaState.serving, ReplicaState.standby, ReplicaState.draining, ReplicaState.starting


def rep(name: str, state: ReplicaState, cls: str = ON_DEMAND, **kw: Any) -> Replica:
    ready = kw.pop("ready_at", None if state == P else T0 + 60)
    return Replica(name, cls, state, kw.pop("created_at", T0), ready, **kw)


def plan(serving: int, od: int, spot: int = 0, *, promote: tuple[str, ...] = (), retire: tuple[str, ...] = ()) -> Plan:
    return Plan(serving=serving, standby=od + spot - serving, on_demand=od, spot=spot, reason="Test", message="",
                promote=promote, retire=retire)


def go(p: Plan, replicas: list[Replica], now: float = NOW) -> Any:
    return rollout(p, replicas, now=now, drain_timeout_s=DRAIN)


# -- the pure step ------------------------------------------------------------------------------

def test_promotion_fills_the_gap_named_first_then_oldest_on_demand() -> None:
    pods = [rep("s1", S), rep("spot-old", B, SPOT, ready_at=T0 + 10), rep("od-new", B, ready_at=T0 + 90),
            rep("od-old", B, ready_at=T0 + 30)]
    ro = go(plan(3, 3, 1, promote=("spot-old",)), pods)
    assert ro.promote == ("od-old", "spot-old") and ro.demote == ()
    assert ro.size(ON_DEMAND) == 3 and ro.size(SPOT) == 1


def test_surplus_serving_pods_are_demoted_least_busy_first() -> None:
    pods = [rep("a", S, in_flight=4), rep("b", S, in_flight=0), rep("c", S, in_flight=1)]
    ro = go(plan(1, 3), pods)
    assert set(ro.demote) == {"b", "c"} and ro.drain == ()


def test_a_retired_serving_pod_drains_until_idle_or_its_timeout() -> None:
    pods = [rep("keep", S, in_flight=3), rep("busy", S, in_flight=5)]
    ro = go(plan(1, 1, retire=("busy",)), pods)
    assert ro.drain == ("busy",) and ro.release == () and ro.size(ON_DEMAND) == 2
    assert ("busy", KEEP_COST) in ro.costs
    draining = rep("busy", D, in_flight=5, draining_since=NOW, deletion_cost=KEEP_COST)
    assert go(plan(1, 1), [pods[0], draining], NOW + DRAIN - 1).release == ()
    late = go(plan(1, 1), [pods[0], draining], NOW + DRAIN)
    assert [r.name for r in late.release] == ["busy"] and "drain timeout" in late.release[0].why
    assert ("busy", GO_FIRST_COST) in late.costs and late.size(ON_DEMAND) == 1
    idle = go(plan(1, 1), [pods[0], rep("busy", D, in_flight=0, draining_since=NOW)], NOW + 1)
    assert idle.release[0].why == "idle"


def test_unknown_in_flight_is_not_idle() -> None:
    ro = go(plan(0, 0), [rep("x", D, in_flight=None, draining_since=NOW)], NOW + 1)
    assert ro.release == ()


def test_a_drain_is_cancelled_when_capacity_is_wanted_back() -> None:
    pods = [rep("s", S), rep("d", D, in_flight=2, draining_since=NOW - 5, deletion_cost=KEEP_COST)]
    ro = go(plan(1, 2), pods)
    assert ro.cancel == ("d",) and ro.release == () and ("d", None) in ro.costs and ro.size(ON_DEMAND) == 2


@st.composite
def called_off(draw: st.DrawFn) -> tuple[list[Replica], set[str], dict[str, Replica], Plan]:
    """Pods of every kind, the names a plan retires, drains called off (healthy draining pods the
    plan does not retire, standby again) and a plan to route."""
    pods = []
    for i in range(draw(st.integers(1, 12))):
        state = draw(st.sampled_from([S, B, D, P]))
        pods.append(rep(f"p{i}", state, draw(st.sampled_from([ON_DEMAND, SPOT])), created_at=T0 + i,
                        in_flight=draw(st.sampled_from([None, 0.0, 2.0])), interrupted=draw(st.booleans()),
                        draining_since=NOW - i if state == D else None,
                        deletion_cost=draw(st.sampled_from([None, KEEP_COST, GO_FIRST_COST]))))
    leaving = draw(st.sets(st.sampled_from([r.name for r in pods])))
    drains = [r for r in pods if r.state == D and not r.interrupted and r.name not in leaving]
    back = {r.name: replace(r, state=B, draining_since=None) for r in drains if draw(st.booleans())}
    serving = draw(st.integers(0, len(pods)))
    names = [r.name for r in pods]
    return pods, leaving, back, plan(serving, serving, promote=tuple(draw(st.lists(st.sampled_from(names)))))


@given(called_off())
def test_called_off_drains_are_counted_as_a_rescan_counts_them(case: Any) -> None:
    """rollout() derives the pods after called-off drains from its first scan (core.rollout._called_off);
    every count and list it reads then must be what a scan of those pods gives, and the standbys it
    promotes from must route as the pods themselves do."""
    pods, leaving, back, p = case
    after = [back.get(r.name, r) for r in pods]
    scan = _scan(pods, leaving)
    got, want = _called_off(scan, back), _scan(after, leaving)

    def names(by_class: dict[str, list[Replica]]) -> dict[str, list[str]]:
        return {c: [r.name for r in rs] for c, rs in by_class.items() if rs}
    for field in ("draining", "drains", "goers"):
        assert names(getattr(got, field)) == names(getattr(want, field)), field
    for field in ("noticed", "kept_noticed", "staying", "starting", "any_leaving", "standby"):
        assert getattr(got, field) == getattr(want, field), field
    assert _route(p, scan.kept, got.standby) == route(p, after, leaving)


def test_an_interrupted_serving_pod_waits_for_cover_unless_its_node_is_about_to_go() -> None:
    noticed = rep("old", S, SPOT, interrupted=True, reclaim_at=NOW + 100)
    starting = rep("new", P)
    ro = go(plan(1, 1, 1, retire=("old",)), [noticed, starting])
    assert ro.deferred == ("old",) and ro.drain == ()
    due = go(plan(1, 1, 1, retire=("old",)), [noticed, starting], NOW + 70)  # 30 s left < the drain margin
    assert due.drain == ("old",)


def test_a_promoted_standby_loses_its_go_first_cost() -> None:
    # Bug: a standby retired with the minimum cost kept it after promotion, so a later scale-in
    # could take it while it served.
    pods = [rep("s", S), rep("b", B, deletion_cost=GO_FIRST_COST)]
    ro = go(plan(2, 2), pods)
    assert ro.promote == ("b",) and ("b", None) in ro.costs


def test_a_release_while_a_pod_of_its_class_starts_evicts_the_pod_itself() -> None:
    # Bug: the drained pod was held out of the Service while any pod of its class was starting
    # (the ReplicaSet deletes not-Ready pods before it looks at the deletion cost).
    pods = [rep("s", S), rep("d", D, in_flight=0, draining_since=NOW - 5), rep("new", P)]
    ro = go(plan(1, 2), pods)
    assert [(r.name, r.evict) for r in ro.release] == [("d", True)] and ro.size(ON_DEMAND) == 2


def test_an_interrupted_pod_the_plan_does_not_retire_stays_in_its_deployment() -> None:
    # A plain Deployment (the naive baselines) keeps a noticed pod until its node goes; counting it
    # out of the size made its ReplicaSet delete a healthy pod instead.
    pods = [rep("ok", S, SPOT), rep("noticed", S, SPOT, interrupted=True, reclaim_at=NOW + 100)]
    ro = go(plan(2, 0, 2), pods)
    assert ro.size(SPOT) == 2 and ro.drain == ()


def test_a_decision_carried_out_again_after_its_drains_grows_nothing() -> None:
    # The core's counts include the interrupted pods it saw; once they drain, carrying out the
    # same decision again (a reroute between ticks) must not read them as healthy capacity wanted.
    noticed = [rep(f"s{i}", S, SPOT, interrupted=True, reclaim_at=NOW + 30) for i in range(3)]
    decided = Plan(serving=1, standby=0, on_demand=1, spot=3, reason="Test", message="",
                   retire=tuple(r.name for r in noticed), interrupted=((ON_DEMAND, 0), (SPOT, 3)))
    first = go(decided, [rep("od", S), *noticed])
    assert first.drain == ("s0", "s1", "s2") and first.size(SPOT) == 3
    drained = [rep(f"s{i}", D, SPOT, interrupted=True, in_flight=2, draining_since=NOW) for i in range(3)]
    assert go(decided, [rep("od", S), *drained], NOW + 2).size(SPOT) == 3
    # Without the count, the drained pods would read as 3 healthy spot pods to replace.
    assert go(replace(decided, interrupted=None), [rep("od", S), *drained], NOW + 2).size(SPOT) == 6


def test_a_plain_deployment_loses_the_pods_its_replicaset_picks() -> None:
    pods = [rep("old", S, ready_at=T0 + 30), rep("young", S, ready_at=T0 + 90), rep("new", P),
            rep("going", D, draining_since=NOW)]
    assert replicaset_retirements(pods, {ON_DEMAND: 2}) == ("new",)  # not Ready first
    assert replicaset_retirements(pods, {ON_DEMAND: 1}) == ("new", "young")  # then the shortest Ready
    assert replicaset_retirements(pods, {ON_DEMAND: 3}) == ()  # the draining pod is not counted


@given(st.lists(st.tuples(st.sampled_from([S, B, D, P]), st.sampled_from([None, KEEP_COST, GO_FIRST_COST, 0]),
                          st.sampled_from([None, 30.0, 60.0, -0.0, 0.0]), st.sampled_from([0.0, 5.0, 10.0])),
                max_size=12),
       st.integers(-1, 13), st.booleans())
def test_replicaset_victims_are_the_documented_ranking_ties_in_order(pods: Any, count: int, marked: bool) -> None:
    """replicaset_victims ranks unmarked Ready pods by their times in C; its answer is still
    nsmallest over replicaset_rank, ties (equal times, -0.0 and 0.0) in the pods' order."""
    reps = [Replica(f"p{i}", ON_DEMAND, state, T0 + created, None if state == P else ready,
                    deletion_cost=cost if marked else None)
            for i, (state, cost, ready, created) in enumerate(pods)]
    want = heapq.nsmallest(count, reps, key=replicaset_rank) if count > 0 else []
    assert [r.name for r in replicaset_victims(reps, count)] == [r.name for r in want]


def test_time_to_ready_is_the_p90_of_the_last_twenty_starts() -> None:
    assert time_to_ready([]) is None and time_to_ready([], prior=90.0) == 90.0 and time_to_ready([42.0]) == 42.0
    assert time_to_ready([float(x) for x in range(1, 11)]) == 9.1
    assert time_to_ready([1000.0] * 5 + [10.0] * 20) == 10.0  # only the last 20


# -- execution on the cluster (recording fake) --------------------------------------------------

def spec() -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": "chat"}, "template": {"spec": {"containers": [{"name": "t", "image": "t"}]}},
        "scaling": {"scaleDown": {"drainTimeoutSeconds": int(DRAIN)}}})


def fleet(api: RecordingKube, in_flight: dict[str, float] | None = None) -> KubeFleet:
    return KubeFleet(api, namespace="ns", name="chat", spec=spec(), snapshot=api.snapshot,
                     in_flight=lambda: dict(in_flight or {}))


def run(api: RecordingKube, p: Plan, now: float = NOW, in_flight: dict[str, float] | None = None) -> KubeFleet:
    f = fleet(api, in_flight)
    f.state(now=now)
    f.apply(p, now=now)
    return f


def test_the_fake_implements_the_protocol_the_real_wrapper_does() -> None:
    assert isinstance(RecordingKube(), KubeAPI) and isinstance(Kube.__new__(Kube), KubeAPI)
    for name in ("scale", "patch_pod_metadata", "evict_pod"):
        assert inspect.signature(getattr(RecordingKube, name)) == inspect.signature(getattr(Kube, name)), name


def test_scale_in_drains_then_the_replicaset_deletes_exactly_the_released_pod() -> None:
    api = RecordingKube(pods={n: pod(n, serving=True) for n in ("a", "b", "c")}, deployments={"chat-ondemand": 3})
    f = run(api, plan(2, 2, retire=("b",)), in_flight={"a": 1, "b": 4, "c": 2})
    assert api.pods["b"]["metadata"]["annotations"][manifests.ANNOTATION_DRAINING] == str(NOW)
    assert manifests.LABEL_SERVING not in api.pods["b"]["metadata"]["labels"]
    assert api.deployments["chat-ondemand"] == 3 and ("Draining", "pod b left the Service; deleted when idle") in f.events
    # One patch per moving pod, nothing else.
    assert api.calls == [("patch", "b")]
    run(api, plan(2, 2), NOW + 5, in_flight={"a": 1, "b": 0, "c": 2})
    assert set(api.pods) == {"a", "c"} and api.deployments["chat-ondemand"] == 2


def test_a_release_next_to_a_starting_pod_keeps_the_starting_pod() -> None:
    api = RecordingKube(pods={"a": pod("a", serving=True), "new": pod("new", ready_at=None),
                              "d": pod("d", annotations={manifests.ANNOTATION_DRAINING: str(NOW - 5),
                                                         manifests.ANNOTATION_DELETION_COST: str(KEEP_COST)})},
                        deployments={"chat-ondemand": 3})
    run(api, plan(2, 2), in_flight={"a": 1, "d": 0})
    assert set(api.pods) == {"a", "new"} and api.deployments["chat-ondemand"] == 2
    assert api.calls.index(("evict", "d")) < api.calls.index(("scale", "chat-ondemand"))


def test_a_pod_vanishing_mid_rollout_is_skipped() -> None:
    api = RecordingKube(pods={n: pod(n, serving=True) for n in ("a", "b", "c")}, deployments={"chat-ondemand": 3})
    api.vanish = {"b"}  # gone (someone deleted it) before the rollout's first call lands
    f = run(api, plan(1, 1, retire=("b", "c")), in_flight={"a": 1, "b": 1, "c": 0})
    assert f.errors == [] and "b" not in api.pods
    # The step counted b as still draining: nothing that serves was taken, and the next tick,
    # on fresh state, finishes the job.
    assert "a" in api.pods and api.pods["c"]["metadata"]["annotations"][manifests.ANNOTATION_DELETION_COST] == "-1000"
    run(api, plan(1, 1), NOW + 2, in_flight={"a": 1, "c": 0})
    assert set(api.pods) == {"a"} and api.deployments["chat-ondemand"] == 1


def test_a_failed_patch_keeps_its_class_from_shrinking_and_is_reported() -> None:
    for status in (409, 500):
        api = RecordingKube(pods={n: pod(n, serving=True) for n in ("a", "b", "c")},
                            deployments={"chat-ondemand": 3}, fail={("patch", "c"): status})
        f = run(api, plan(1, 1, retire=("b", "c")), in_flight={"a": 1, "b": 0, "c": 0})
        # b drained and was idle, but c's drain failed: shrinking now could take c while it serves.
        assert api.deployments["chat-ondemand"] == 3 and set(api.pods) == {"a", "b", "c"}
        assert api.pods["c"]["metadata"]["labels"].get(manifests.LABEL_SERVING) == "true"
        assert f.errors and f.events[-1][0] == "RolloutFailed" and str(status) in f.events[-1][1]


def test_a_failed_scale_is_reported_not_raised() -> None:
    api = RecordingKube(pods={"a": pod("a", serving=True)}, deployments={"chat-ondemand": 1},
                        fail={("scale", "chat-ondemand"): 500})
    f = run(api, plan(2, 2))
    assert f.errors and "scale chat-ondemand" in f.errors[0]


def test_restored_start_samples_are_not_counted_again_for_the_pods_still_there() -> None:
    # Bug: after a restart the pods still running were sampled again beside the persisted samples.
    api = RecordingKube(pods={n: pod(n, serving=True) for n in ("a", "b")}, deployments={"chat-ondemand": 2})
    f = fleet(api)
    f.restore_samples({ON_DEMAND: [60.0, 60.0]})
    f.state(now=NOW)
    assert f.start_samples() == {ON_DEMAND: [60.0, 60.0]}
    api.pods["c"] = pod("c", ready_at="2026-01-01T00:02:00Z")  # a start after the restart is sampled
    f.state(now=NOW + 10)
    assert f.start_samples() == {ON_DEMAND: [60.0, 60.0, 120.0]}
