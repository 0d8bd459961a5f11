"""SimFleet and NodePool with N named capacity classes (issue 18): one Deployment and node pool per
class, billed at its own GPUs and price; a stock-out leaves the class's new pods Pending (no node,
not billed) and counts them past the class's pending timeout, as the operator's fleet adapter does;
with reclaims its running pods are noticed and go; the default stays the two classes."""

from __future__ import annotations

import numpy as np
import pytest
from gpufleet.core.types import ON_DEMAND, SPOT, ClassChoice, Plan, ReplicaState
from gpufleet.sim.coldstart import ColdStart
from gpufleet.sim.fleet import SimFleet
from gpufleet.sim.nodes import NodeClass, NodePool, StockOut

from tests import simdrive

INTERVAL = 10
COLD = 30  # fixed creation-to-Ready (s)
H100 = NodeClass("h100", gpus=1.0, price_per_hour=3.0, rps_per_replica=13.6)
SPOT_H100 = NodeClass("h100-spot", spot=True, gpus=1.0, price_per_hour=2.25, rps_per_replica=13.6)
MIG = NodeClass("mig", gpus=0.5, price_per_hour=1.5, rps_per_replica=4.6, pending_timeout_s=60.0)


def plan(**sizes: int) -> Plan:
    """A plan sizing each class (every pod wanted serving)."""
    choices = tuple(ClassChoice(name=k.replace("_", "-"), replicas=v, price_per_hour=0.0, rps_per_replica=1.0,
                                state="available", reason="t") for k, v in sizes.items())
    total = sum(sizes.values())
    return Plan(serving=total, standby=0, on_demand=0, spot=0, reason="t", message="", classes=choices)


def fleet(*classes: NodeClass) -> SimFleet:
    return SimFleet(cold=ColdStart(fixed_s=COLD), rng=np.random.default_rng(0), interval_s=INTERVAL,
                    classes=list(classes))


def drive(f: SimFleet, start: int, end: int, p: Plan) -> None:
    simdrive.drive(f, start, end, p, interval=INTERVAL)


def by_class(f: SimFleet, pending: bool | None = None) -> dict[str, int]:
    out = dict.fromkeys(f.names, 0)
    for r in f.replicas.values():
        if pending is None or r.pending == pending:
            out[r.cls] += 1
    return out


def test_the_default_is_the_two_classes() -> None:
    f = SimFleet(cold=ColdStart(fixed_s=COLD), rng=np.random.default_rng(0), gpus_per_replica=8)
    assert f.names == (ON_DEMAND, SPOT) and not f.listed
    assert f.classes[SPOT].spot and not f.classes[ON_DEMAND].spot
    f.bootstrap(2)
    assert f.gpus_running() == (16, 0)


def test_node_pool_bills_each_class_at_its_gpus_and_price() -> None:
    pool = NodePool(classes=[H100, MIG])
    for i in range(3):
        pool.provision("mig", -1, f"m{i}", now=0.0, warm_at=0.0)
    pool.provision("h100", -1, "h", now=0.0, warm_at=0.0)
    assert pool.billed("mig") == 3 and pool.billed_gpus("mig") == pytest.approx(1.5)
    assert pool.billed_gpus("h100") == 1.0
    assert pool.cost_per_hour() == pytest.approx(3 * 1.5 + 3.0)
    with pytest.raises(KeyError, match="no node class 'l4'"):
        pool.provision("l4", -1, "x", now=0.0, warm_at=0.0)
    with pytest.raises(ValueError, match="unique"):
        NodePool(classes=[H100, H100])


def test_each_class_is_a_deployment_and_spot_classes_bill_as_spot() -> None:
    f = fleet(H100, SPOT_H100, MIG)
    drive(f, 0, 50, plan(h100=1, h100_spot=2, mig=3))
    assert f.size == {"h100": 1, "h100-spot": 2, "mig": 3}
    assert by_class(f) == {"h100": 1, "h100-spot": 2, "mig": 3}
    assert all(r.state == ReplicaState.serving for r in f.replicas.values())
    od, sp = f.gpus_billed()
    assert (od, sp) == (pytest.approx(1.0 + 1.5), pytest.approx(2.0))
    with pytest.raises(ValueError, match="slices of a GPU"):
        f.gpus_running()  # whole GPUs only
    assert f.nodes.cost_per_hour() == pytest.approx(3.0 + 2 * 2.25 + 3 * 1.5)
    assert f.serving_rps_by_class() == pytest.approx({"h100": 13.6, "h100-spot": 2 * 13.6, "mig": 3 * 4.6})
    # Shrinking one class leaves the others alone.
    drive(f, 50, 60, plan(h100=1, h100_spot=2, mig=1))
    assert by_class(f) == {"h100": 1, "h100-spot": 2, "mig": 1}


def test_a_stock_out_leaves_new_pods_pending_unbilled_and_counted_past_the_class_timeout() -> None:
    f = fleet(H100, NodeClass("mig", gpus=0.5, price_per_hour=1.5, pending_timeout_s=60.0,
                              stock_outs=(StockOut(100.0, 400.0),)))
    drive(f, 0, 50, plan(h100=1, mig=1))
    assert by_class(f, pending=False) == {"h100": 1, "mig": 1}
    drive(f, 100, 150, plan(h100=1, mig=3))
    assert by_class(f, pending=True) == {"h100": 0, "mig": 2}  # no node for the new ones
    assert f.nodes.billed("mig") == 1  # the running one; the pending ones have no node
    assert f.state(now=150.0).pending_by_class == ()  # 50 s Pending: within the 60 s timeout
    assert f.state(now=161.0).pending_by_class == (("mig", 2),)
    assert not f.state(now=161.0).spot_unavailable  # an on-demand class: not the spot signal
    # The window ends: the pending pods get nodes (looked for every 5 s) and turn Ready.
    drive(f, 150, 400 + 5 + COLD + 1, plan(h100=1, mig=3))
    assert by_class(f, pending=True)["mig"] == 0 and f.nodes.billed("mig") == 3
    assert sum(1 for r in f.replicas.values() if r.cls == "mig" and r.state == ReplicaState.serving) == 3
    assert f.state(now=440.0).pending_by_class == ()


def test_a_stock_out_with_reclaims_notices_the_running_pods_and_their_replacements_wait() -> None:
    out = StockOut(100.0, 1000.0, reclaim=True, notice_s=120.0)
    f = fleet(H100, NodeClass("h100-spot", spot=True, gpus=1.0, price_per_hour=2.25, stock_outs=(out,)))
    drive(f, 0, 60, plan(h100=1, h100_spot=2))
    drive(f, 60, 101, plan(h100=1, h100_spot=2))
    noticed = [r for r in f.replicas.values() if r.cls == "h100-spot"]
    assert len(noticed) == 2 and all(r.interrupted and r.terminate_at == 220.0 for r in noticed)
    assert f.state(now=101.0).replicas and sum(r.interrupted for r in f.state(now=101.0).replicas) == 2
    drive(f, 101, 230, plan(h100=1, h100_spot=2))
    spot = [r for r in f.replicas.values() if r.cls == "h100-spot"]
    # Reclaimed at 220 s; the ReplicaSet's replacements have no node while the stock-out lasts.
    assert len(spot) == 2 and all(r.pending for r in spot)
    assert f.nodes.billed("h100-spot") == 0 and f.preemptions == 2
    assert f.gpus_running() == (1, 0)


def test_two_spot_classes_spread_their_own_pods_over_zones() -> None:
    from gpufleet.sim.spot import SpotTrace

    zones = SpotTrace("t", np.ones(10, dtype=np.int8), 3600.0, 120.0, zones=np.ones((2, 10), dtype=np.int8))
    a = NodeClass("a", spot=True)
    b = NodeClass("b", spot=True)
    f = SimFleet(cold=ColdStart(fixed_s=COLD), rng=np.random.default_rng(0), interval_s=INTERVAL, classes=[a, b],
                 spot=zones)
    drive(f, 0, 5, plan(a=2, b=2))
    for cls in ("a", "b"):
        assert sorted(r.zone for r in f.replicas.values() if r.cls == cls) == [0, 1]
