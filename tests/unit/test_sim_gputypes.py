"""sim/gputypes.py: fleets of several GPU types run by the operator's decision path (control.step,
GpufleetPolicy, core.mix) on SimFleet's per-class node pools, and the benchmark's tiny run."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace

import numpy as np
import pytest
from gpufleet.core.types import ON_DEMAND, SPOT
from gpufleet.sim import gputypes as G
from gpufleet.sim.nodes import StockOut
from gpufleet.sim.traces import Trace

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def flat_trace(rps: float, seconds: int, seed: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rps, seconds).astype(float)
    ins = rng.lognormal(6.7, 0.9, 4096).clip(16, 16000)
    outs = rng.lognormal(5.3, 0.8, 4096).clip(1, 4096)
    return Trace("flat", counts, counts * ins.mean(), counts * outs.mean(), np.ones(seconds),
                 np.zeros(seconds, dtype=bool), ins, outs)


@pytest.fixture(scope="module")
def profiles() -> dict[str, G.TypeProfile]:
    tr = flat_trace(20.0, 600)
    return {t: G.profile(gt, tr, 2.0) for t, gt in G.TYPES.items()}


def test_smaller_types_serve_less_per_replica(profiles: dict[str, G.TypeProfile]) -> None:
    h, mig, l4 = profiles["h100"], profiles["h100-mig-3g-40gb"], profiles["l4"]
    assert h.rps > mig.rps > l4.rps > 0
    assert h.batch == 128 and mig.batch < h.batch and l4.batch < mig.batch  # KV cache beside 16 GB of weights
    # The same deadline for every type: the slower ones miss it on some long prompts.
    assert h.ok_at_wait[0] >= mig.ok_at_wait[0] >= l4.ok_at_wait[0]
    assert np.all(np.diff(h.ok_at_wait) <= 1e-12)  # waiting longer never helps


def classes(profiles: dict[str, G.TypeProfile], spot_out: tuple[StockOut, ...] = ()) -> list[G.SimClass]:
    h, mig = profiles["h100"], profiles["h100-mig-3g-40gb"]
    return [G.SimClass("h100", G.H100, 3.0, h),
            G.SimClass("h100-spot", G.H100, 2.25, h, spot=True, max_share=0.7, stock_outs=spot_out),
            G.SimClass("mig", G.MIG_3G40, 1.5, mig)]


def test_the_fleet_is_an_operator_spec_with_the_classes(profiles: dict[str, G.TypeProfile]) -> None:
    tr = flat_trace(20.0, 600)
    cl = classes(profiles)
    spec = G.service_spec(tr, cl, utilization=0.6, target_s=2.0)
    listed = spec.capacity.classes or []
    assert [c.name for c in listed] == ["h100", "h100-spot", "mig"]
    assert [c.spot for c in listed] == [False, True, False] and listed[1].max_share == 0.7
    assert listed[2].resources == {"nvidia.com/mig-3g.40gb": 1} and listed[2].gpus() == 0.5
    assert [c.price_per_replica_hour for c in listed] == [3.0, 2.25, 1.5]
    # The policy sizes in replicas of the smallest class (docs/gpu-types.md).
    assert spec.scaling.target_rps_per_replica == pytest.approx(profiles["h100-mig-3g-40gb"].rps, abs=1e-3)
    assert spec.scaling.target_utilization == 0.6
    legacy = G.service_spec(tr, cl[:2], utilization=0.6, target_s=2.0, legacy=True)
    assert legacy.capacity.classes is None and legacy.capacity.spot.enabled
    assert legacy.capacity.spot.max_fraction == 0.7 and legacy.capacity.price_per_gpu_hour.spot == 2.25


def test_steady_load_runs_on_the_cheapest_mix(profiles: dict[str, G.TypeProfile]) -> None:
    tr = flat_trace(3.0 * profiles["h100"].rps * 0.6, 3600)
    res = G.simulate(tr, classes(profiles), utilization=0.7, target_s=2.0)
    assert res.attainment > 0.99 and res.decisions == 360
    # Spot is the cheapest per request: it carries most of the capacity, within its 70 % share.
    spot_h, od_h = res.replica_hours["h100-spot"], res.replica_hours["h100"]
    assert spot_h > od_h > 0
    cap = {k: v[5:] for k, v in res.capacity.items()}  # after the first start-ups
    total = sum(cap.values())
    assert np.all(cap["h100-spot"] <= 0.7 * total + 1e-6 + profiles["h100"].rps)


def test_stock_out_without_notices_falls_back_after_the_pending_timeout(profiles: dict[str, G.TypeProfile]) -> None:
    # Load doubles while H100 spot has no nodes: the new spot pods stay Pending, the class is
    # marked out after its pending timeout and the capacity goes on on-demand.
    base = profiles["h100"].rps * 1.5
    tr = flat_trace(base, 5400)
    tr = replace(tr, counts=np.concatenate([tr.counts[:1800], tr.counts[1800:] * 2.0]))
    res = G.simulate(tr, classes(profiles, (StockOut(1500, 5400),)), utilization=0.7, target_s=2.0)
    assert any("h100-spot stocked out" in n and "Pending past 120s" in n for n in res.outage_notes)
    t = res.t
    late = t >= 2400
    assert np.all(res.capacity["h100-spot"][late] <= res.capacity["h100-spot"][t == 1440][0] + 1e-9)
    assert res.capacity["h100"][late].min() > res.capacity["h100"][t == 1440][0]
    assert np.all(sum(c[late] for c in res.capacity.values()) >= res.load[late] * 0.95)


def test_spot_returns_after_the_stock_out(profiles: dict[str, G.TypeProfile]) -> None:
    tr = flat_trace(profiles["h100"].rps * 2.0, 7200)
    out = (StockOut(600, 1800, reclaim=True),)
    res = G.simulate(tr, classes(profiles, out), utilization=0.7, target_s=2.0)
    spot = res.capacity["h100-spot"]
    assert spot[(res.t >= 1000) & (res.t < 1800)].max() == 0.0  # reclaimed, nothing new
    assert spot[res.t >= 5400].min() > 0.0  # back after the outage and the back-off
    assert any("interruption notice" in n for n in res.outage_notes)


def test_single_types_and_the_two_class_form_run_the_same_path(profiles: dict[str, G.TypeProfile]) -> None:
    tr = flat_trace(profiles["h100"].rps * 0.1, 1800)
    h100, spot, mig = classes(profiles)
    one = G.simulate(tr, [mig], utilization=0.7, target_s=2.0)
    assert set(one.replica_hours) == {"mig"} and one.attainment > 0.99
    big = G.simulate(tr, [h100], utilization=0.7, target_s=2.0)
    # A tenth of an H100's load: slices cost less than whole H100s (half the price each).
    assert one.cost < big.cost
    legacy = G.simulate(tr, [h100, spot], utilization=0.7, target_s=2.0, legacy=True)
    assert set(legacy.replica_hours) == {ON_DEMAND, SPOT} and legacy.replica_hours[ON_DEMAND] > 0


def test_tiny_benchmark_writes_its_report(tmp_path: object) -> None:
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import gputype_bench as B

    out = str(tmp_path)
    res = B.main(["--tiny", "--out", out, "--workers", "1"])
    on_disk = json.load(open(os.path.join(out, "results.json")))
    assert on_disk["verdicts"] == json.loads(json.dumps(res["verdicts"]))
    assert os.path.getsize(os.path.join(out, "gputypes.png")) > 0
    readme = open(os.path.join(out, "README.md")).read()
    assert "Stock-out of the cheapest type" in readme and "h100-spot stocked out" in readme
    # The verdicts are the runs' figures, not typed: recompute one.
    runs = on_disk["runs_data"]
    mix = [r for r in runs if r["scenario"] == "large" and r["fleet"] == "classes" and r["condition"] == "normal"]
    so = [r for r in runs if r["scenario"] == "large" and r["fleet"] == "classes" and r["condition"] == "stock-out"]
    ratio = so[0]["cost_per_1m"] / mix[0]["cost_per_1m"]
    assert on_disk["verdicts"]["large"]["stock_out"]["ratio_to_no_stock_out"] == pytest.approx(ratio)
    assert f"{ratio:.3f}x" in readme
