"""The cluster's executor (adapters.kubefleet on a recording fake of the API) and the simulator's
(sim.fleet) carry out the same rollout the same way: from the same pods and the same plan, the
same pods serve, stand by, drain and leave, with the same deletion costs and Deployment sizes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gpufleet.adapters import manifests
from gpufleet.adapters.kubefleet import KubeFleet
from gpufleet.api.models import InferenceServiceSpec
from gpufleet.api.timefmt import iso
from gpufleet.control.step import revalidate
from gpufleet.core.rollout import promotions, retirements, rollout
from gpufleet.core.types import CAPACITY_CLASSES, ON_DEMAND, SPOT, Plan, ReplicaState
from gpufleet.sim.fleet import SimFleet, SimReplica
from gpufleet.sim.model import ColdStart
from tests.fakes import RecordingKube, pod

T0 = 1_767_225_600.0
NOW = T0 + 3600
DRAIN_TIMEOUT = 60
STATES = (ReplicaState.starting, ReplicaState.standby, ReplicaState.serving, ReplicaState.draining)


@dataclass(frozen=True)
class Pod:
    name: str
    capacity_class: str
    state: ReplicaState
    created_at: float
    ready_at: float | None
    in_flight: float  # serving pods share one value (the simulator's pooled model)
    draining_since: float | None
    deletion_cost: int | None


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[Pod], Plan]:
    n = draw(st.integers(1, 8))
    shared = draw(st.sampled_from([0.0, 3.0]))
    pods = []
    for i in range(n):
        state = draw(st.sampled_from(STATES))
        created = T0 + draw(st.integers(0, 600))  # whole seconds: the API server's resolution
        ready = None if state == ReplicaState.starting else created + draw(st.integers(1, 600))
        draining = state == ReplicaState.draining
        pods.append(Pod(
            name=f"p{i}", capacity_class=draw(st.sampled_from(CAPACITY_CLASSES)), state=state, created_at=created,
            ready_at=ready,
            in_flight=shared if state == ReplicaState.serving else draw(st.sampled_from([0.0, 2.0])) if draining else 0.0,
            draining_since=NOW - draw(st.sampled_from([1, 30, DRAIN_TIMEOUT])) if draining else None,
            deletion_cost=draw(st.sampled_from([None, 1000, -1000])) if draining else draw(st.sampled_from([None, -1000])),
        ))
    names = [p.name for p in pods]
    od, spot = draw(st.integers(0, 6)), draw(st.integers(0, 4))
    serving = draw(st.integers(0, od + spot))
    plan = Plan(serving=serving, standby=od + spot - serving, on_demand=od, spot=spot, reason="Test", message="",
                promote=tuple(draw(st.lists(st.sampled_from(names), max_size=2, unique=True))),
                retire=tuple(draw(st.lists(st.sampled_from(names), max_size=3, unique=True))))
    return pods, plan


def spec() -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate({
        "model": {"name": "chat"}, "template": {"spec": {"containers": [{"name": "t", "image": "t"}]}},
        "scaling": {"intervalSeconds": 10, "scaleDown": {"drainTimeoutSeconds": DRAIN_TIMEOUT}}})


def on_cluster(pods: list[Pod], plan: Plan) -> dict[str, object]:
    objects = {}
    for p in pods:
        annotations = {}
        if p.draining_since is not None:
            annotations[manifests.ANNOTATION_DRAINING] = str(p.draining_since)
        if p.deletion_cost is not None:
            annotations[manifests.ANNOTATION_DELETION_COST] = str(p.deletion_cost)
        objects[p.name] = pod(p.name, p.capacity_class, ready_at=iso(p.ready_at) if p.ready_at else None,
                              serving=p.state == ReplicaState.serving, annotations=annotations,
                              created_at=iso(p.created_at))
    sizes = {manifests.deployment_name("chat", c): sum(1 for p in pods if p.capacity_class == c)
             for c in CAPACITY_CLASSES}
    api = RecordingKube(pods=objects, deployments=sizes)
    fleet = KubeFleet(api, namespace="ns", name="chat", spec=spec(), snapshot=api.snapshot,
                      in_flight=lambda: {p.name: p.in_flight for p in pods})
    fleet.state(now=NOW)
    fleet.apply(plan, now=NOW)
    out: dict[str, object] = {}
    for name, obj in api.pods.items():
        meta = obj["metadata"]
        state = ("draining" if manifests.ANNOTATION_DRAINING in meta["annotations"]
                 else "serving" if meta["labels"].get(manifests.LABEL_SERVING) == "true"
                 else "starting" if not obj["status"]["conditions"] else "standby")
        cost = meta["annotations"].get(manifests.ANNOTATION_DELETION_COST)
        out[name] = (state, None if cost is None else int(cost))
    out["sizes"] = {c: api.deployments[manifests.deployment_name("chat", c)] for c in CAPACITY_CLASSES}
    return out


def sim_fleet(pods: list[Pod]) -> SimFleet:
    """The simulator's fleet holding `pods`, each class's Deployment sized to them."""
    fleet = SimFleet(cold=ColdStart(fixed_s=60.0), rng=np.random.default_rng(0), drain_timeout_s=DRAIN_TIMEOUT,
                     interval_s=10)
    for p in pods:
        fleet.place(SimReplica(
            name=p.name, cls=p.capacity_class, state=p.state, created_at=p.created_at, ready_at=p.ready_at,
            left_at=NOW if p.state == ReplicaState.draining else None,  # its in-flight work as drawn, now
            carried=p.in_flight if p.state == ReplicaState.draining else 0.0,
            draining_since=p.draining_since, deletion_cost=p.deletion_cost))
        fleet.size[p.capacity_class] += 1
    return fleet


def in_simulator(pods: list[Pod], plan: Plan) -> dict[str, object]:
    fleet = sim_fleet(pods)
    fleet.in_flight_per_serving = next((p.in_flight for p in pods if p.state == ReplicaState.serving), 0.0)
    fleet.apply(plan, now=NOW)
    out: dict[str, object] = {name: (r.state.value, r.deletion_cost)
                              for name, r in fleet.replicas.items() if name in {p.name for p in pods}}
    out["sizes"] = dict(fleet.size)
    return out


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_both_executors_carry_out_a_rollout_alike(case: tuple[list[Pod], Plan]) -> None:
    pods, plan = case
    assert on_cluster(pods, plan) == in_simulator(pods, plan)


def test_the_comparison_sees_a_difference() -> None:
    """Control: a plan that moves pods changes what both report (the comparison is not vacuous)."""
    pods = [Pod("a", ON_DEMAND, ReplicaState.serving, T0, T0 + 60, 1.0, None, None),
            Pod("b", SPOT, ReplicaState.serving, T0, T0 + 90, 1.0, None, None)]
    keep = Plan(serving=2, standby=0, on_demand=1, spot=1, reason="Test", message="")
    drain = Plan(serving=1, standby=0, on_demand=1, spot=0, reason="Test", message="", retire=("b",))
    assert on_cluster(pods, keep) != on_cluster(pods, drain)
    assert in_simulator(pods, drain)["b"] == ("draining", 1000) == on_cluster(pods, drain)["b"]


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_carrying_out_the_same_decision_again_changes_nothing(case: tuple[list[Pod], Plan]) -> None:
    """A decision carried out again (a pod's Ready event between ticks, control.step.reroute) on
    the pods its rollout left moves nothing and sizes nothing anew. The plan is shaped as the
    policy shapes it: its victims and promotions come from core.rollout for its counts."""
    pods, drawn = case
    fleet = sim_fleet(pods)
    state = fleet.state(now=NOW)
    retire = retirements(state, {ON_DEMAND: drawn.on_demand, SPOT: drawn.spot})
    serving_now = sum(1 for r in state.replicas if r.state == ReplicaState.serving)
    promote = promotions(tuple(r for r in state.replicas if r.name not in retire), drawn.serving - serving_now)
    plan = replace(drawn, retire=retire, promote=promote)
    fleet.apply(plan, now=NOW)
    before = ({n: (r.state, r.deletion_cost) for n, r in fleet.replicas.items()}, dict(fleet.size))
    fresh = fleet.state(now=NOW)
    again = rollout(revalidate(plan, fresh), fresh.replicas, now=NOW, drain_timeout_s=DRAIN_TIMEOUT, interval_s=10)
    assert (again.promote, again.demote, again.drain, again.cancel, again.release) == ((), (), (), (), ())
    fleet.execute(again, NOW)
    assert ({n: (r.state, r.deletion_cost) for n, r in fleet.replicas.items()}, dict(fleet.size)) == before
