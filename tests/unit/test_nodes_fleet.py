"""The nodes under the simulated fleet (issue 16 item 2): a start with no free node pays
provisioning and image pull; a node a scale-in freed stays for consolidateAfter, billed, and the
next start of its class takes it (image cached: only load and server start); after that it is gone;
on-demand and spot nodes are not shared; a spot notice takes the zone's free nodes; with the simple
lognormal a node lives exactly as long as its pod. Fixed stage times: every figure is computed."""

from __future__ import annotations

import numpy as np
from gpufleet.core.types import ON_DEMAND, SPOT, Plan, ReplicaState
from gpufleet.sim.coldstart import ColdStart, NodeColdStart, Stage
from gpufleet.sim.fleet import SimFleet
from gpufleet.sim.nodes import NodePool
from gpufleet.sim.spot import SpotTrace

from tests import simdrive

INTERVAL = 10
PROVISION, PULL, LOAD, SERVER = 100.0, 200.0, 10.0, 5.0
KEEP = 300.0
COLD = NodeColdStart(name="t", provision=Stage(PROVISION), pull=Stage(PULL), load=Stage(LOAD), server=Stage(SERVER),
                     consolidate_after_s=KEEP)
FRESH = PROVISION + PULL + LOAD + SERVER
REUSE = LOAD + SERVER
GPUS = 8


def plan(serving: int, od: int, spot: int = 0) -> Plan:
    return Plan(serving=serving, standby=od + spot - serving, on_demand=od, spot=spot, reason="t", message="")


def fleet(cold: ColdStart = COLD, spot: SpotTrace | None = None) -> SimFleet:
    f = SimFleet(cold=cold, rng=np.random.default_rng(0), spot=spot, interval_s=INTERVAL, gpus_per_replica=GPUS)
    f.bootstrap(1)
    f.schedule_preemptions(100000.0)
    return f


def drive(f: SimFleet, start: int, end: int, p: Plan) -> dict[int, tuple[int, int]]:
    """(billed on-demand GPUs, billed spot GPUs) per second (the engine bills gpus_running())."""
    return simdrive.drive(f, start, end, p, interval=INTERVAL, read=SimFleet.gpus_running)


def newest(f: SimFleet, cls: str = ON_DEMAND) -> float:
    """Creation-to-Ready of the last pod of the class that turned Ready (what the estimator saw)."""
    return f.starts[cls][-1]


def test_a_start_with_no_free_node_pays_provisioning_and_pull() -> None:
    f = fleet()
    drive(f, 0, 400, plan(1, 2))
    assert newest(f) == FRESH
    assert f.nodes.provisioned == 2 and f.nodes.reused == 0
    assert sorted(r.state.value for r in f.replicas.values()) == ["serving", "standby"]


def test_a_node_freed_by_scale_in_is_reused_within_the_delay_billed_meanwhile() -> None:
    f = fleet()
    drive(f, 0, 400, plan(1, 2))  # a standby on a second node
    seen = drive(f, 400, 500, plan(1, 1))  # scale-in at 400: the standby goes, its node stays
    assert len(f.replicas) == 1 and seen[499] == (2 * GPUS, 0)  # 1 pod, 2 nodes billed
    assert f.nodes.free(ON_DEMAND) == 1
    seen = drive(f, 500, 600, plan(1, 2))  # 100 s later a start takes it: no provisioning, no pull
    assert newest(f) == REUSE
    assert f.nodes.reused == 1 and f.nodes.provisioned == 2 and f.nodes.free(ON_DEMAND) == 0
    assert all(v == (2 * GPUS, 0) for v in seen.values())


def test_a_freed_node_is_gone_after_the_consolidation_delay_and_billed_until_then() -> None:
    f = fleet()
    drive(f, 0, 400, plan(1, 2))
    seen = drive(f, 400, 1000, plan(1, 1))
    gone = min(t for t, (od, _) in seen.items() if od == GPUS)
    assert gone == 400 + KEEP  # freed at 400 (already up): consolidated consolidateAfter later
    assert f.nodes.consolidated == 1 and f.nodes.billed(ON_DEMAND) == 1
    billed_s = sum(od for od, _ in seen.values()) / GPUS
    assert billed_s == 600 + KEEP  # the pod's node all along, the free one for KEEP s
    drive(f, 1000, 1400, plan(1, 2))  # the next start finds no free node: a new one
    assert newest(f) == FRESH and f.nodes.provisioned == 3


def test_a_pod_removed_while_its_node_provisions_leaves_the_node_to_the_next_start() -> None:
    f = fleet()
    drive(f, 0, 50, plan(1, 2))  # a second pod, its node provisioning (up at 300)
    drive(f, 50, 60, plan(1, 1))  # scaled in at 50, before Ready: its node keeps launching
    assert f.nodes.billed(ON_DEMAND) == 2 and f.nodes.free(ON_DEMAND) == 1
    drive(f, 60, 400, plan(1, 2))  # a start at 60 takes it and waits for it: Ready at 300 + 15
    assert newest(f) == PROVISION + PULL + REUSE - 60
    assert f.nodes.provisioned == 2


def test_spot_and_on_demand_nodes_are_not_shared() -> None:
    always = SpotTrace(name="up", available=np.ones(10000, dtype=np.int8), gap_s=60.0, notice_s=120.0)
    f = fleet(spot=always)
    drive(f, 0, 400, plan(1, 1, 1))  # a spot standby on a spot node
    assert newest(f, SPOT) == FRESH
    drive(f, 400, 410, plan(1, 1, 0))  # spot scaled in at 400: a free spot node
    assert f.nodes.free(SPOT) == 1 and f.gpus_running() == (GPUS, GPUS)
    drive(f, 410, 800, plan(1, 2, 0))  # an on-demand start does not take the spot node
    assert newest(f, ON_DEMAND) == FRESH and f.nodes.reused == 0 and f.nodes.consolidated == 1
    f2 = fleet(spot=always)
    drive(f2, 0, 400, plan(1, 2))  # an on-demand standby
    drive(f2, 400, 410, plan(1, 1))  # freed at 400: a free on-demand node
    drive(f2, 410, 800, plan(1, 1, 1))  # a spot start provisions a spot node
    assert newest(f2, SPOT) == FRESH and f2.nodes.reused == 0
    drive(f2, 800, 810, plan(1, 1, 0))
    drive(f2, 810, 900, plan(1, 1, 1))  # and the next spot start takes the freed spot node
    assert newest(f2, SPOT) == REUSE and f2.nodes.reused == 1


def test_a_spot_notice_takes_the_zone_free_nodes_and_pending_pods_have_none() -> None:
    avail = np.ones(100, dtype=np.int8)
    avail[10:20] = 0  # capacity gone at 600 s (a notice), back at 1200 s
    trace = SpotTrace(name="z", available=avail, gap_s=60.0, notice_s=120.0)
    f = fleet(spot=trace)
    drive(f, 0, 400, plan(1, 1, 1))
    drive(f, 400, 410, plan(1, 1, 0))  # a free spot node (kept until 700)
    assert f.nodes.free(SPOT) == 1
    drive(f, 410, 700, plan(1, 1, 0))
    assert f.nodes.billed(SPOT) == 0 and f.nodes.consolidated == 0  # deleted at the notice (600)
    seen = drive(f, 700, 800, plan(1, 1, 1))  # no capacity: the new spot pod is Pending
    pods = [r for r in f.replicas.values() if r.cls == SPOT]
    assert len(pods) == 1 and pods[0].pending and pods[0].node is None
    assert all(sp == 0 for _, sp in seen.values())  # pending: no node, nothing billed
    drive(f, 800, 1600, plan(1, 1, 1))  # capacity back at 1200: a node is provisioned then
    assert pods[0].state == ReplicaState.standby and f.nodes.billed(SPOT) == 1
    assert newest(f, SPOT) == 1200 - 700 + FRESH


def test_with_the_simple_lognormal_a_node_lives_as_long_as_its_pod() -> None:
    f = fleet(cold=ColdStart(fixed_s=30.0))
    drive(f, 0, 100, plan(1, 2))
    assert newest(f) == 30.0
    seen = drive(f, 100, 120, plan(1, 1))
    assert seen[100] == (GPUS, 0) and f.nodes.free(ON_DEMAND) == 0  # billing stops with the pod
    drive(f, 120, 200, plan(1, 2))
    assert newest(f) == 30.0 and f.nodes.reused == 0


def test_node_bookkeeping_per_event_is_cheap() -> None:
    pool = NodePool(gpus_per_node=1)
    nodes = [pool.provision(ON_DEMAND, -1, f"p{i}", now=0.0, warm_at=0.0) for i in range(2000)]
    for i, n in enumerate(nodes):
        pool.release(n, now=float(i), keep_s=100.0)
    assert pool.billed(ON_DEMAND) == 2000
    taken = pool.take(ON_DEMAND, -1, "q")
    assert taken is nodes[-1]  # the most recently freed
    assert pool.take(SPOT, -1, "s") is None  # another class's free nodes are not its
    assert pool.consolidate(1000.0) == 901 and pool.billed(ON_DEMAND) == 1099  # freed at 0..900
    assert pool.next_event() == 901.0 + 100.0  # the node freed at 901 next


def test_a_benchmark_run_with_a_setting_conserves_requests_and_bills_nodes() -> None:
    import pytest
    from gpufleet.sim import traces as T
    from gpufleet.sim.coldstart import COLD_SETTINGS
    from gpufleet.sim.scenarios import make_scenario

    tr = T.step_load(20.0, 3.0, 900, 900, seed=3)
    for name in ("warm", "typical"):
        r = make_scenario(f"step-{name}", tr, cold=COLD_SETTINGS[name], max_replicas=16).run("hpa")
        assert r.served + r.dropped == pytest.approx(r.arrived, rel=1e-9, abs=1e-6)
        assert r.gpu_hours > 0
