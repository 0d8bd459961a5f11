"""The frontier benchmark's knobs reach the policies, and its tuning and evaluation traces never
overlap (sim/scenarios.py, benchmarks/frontier.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gpufleet.sim import traces as T
from gpufleet.sim.baselines import HpaLike, KedaLike, KpaLike
from gpufleet.sim.scenarios import BENCH_TRACES, DAY, KNOBS, make_scenario

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import frontier as F  # noqa: E402


def scenario():  # type: ignore[no-untyped-def]
    return make_scenario("k", T.step_load(10.0, 2.0, 300, 300, seed=0))


def test_knobs_reach_the_policies() -> None:
    sc = scenario()
    hpa, spec = sc.with_knobs("hpa", {"u": 0.6})
    assert isinstance(hpa, HpaLike) and hpa.utilization == 0.6 and spec == sc.spec
    keda, _ = sc.with_knobs("keda", {"u": 0.65})
    assert isinstance(keda, KedaLike) and keda.utilization == 0.65
    kpa, _ = sc.with_knobs("knative-kpa", {"u": 0.7, "scale_down_delay_s": 300})
    assert isinstance(kpa, KpaLike) and kpa.utilization == 0.7 and kpa.scale_down_delay_s == 300.0
    assert kpa.load_test is not None  # the per-pod target is read off the scenario's load test
    _, gspec = sc.with_knobs("gpufleet", {"u": 0.75, "pool": 2})
    assert gspec.scaling.target_utilization == 0.75 and gspec.warm_pool.size == 2
    _, auto = sc.with_knobs("gpufleet", {"pool": "auto"})
    assert auto.warm_pool.size == "auto"
    with pytest.raises(ValueError):
        sc.with_knobs("hpa", {"pool": 2})
    # every knob a grid sweeps or chooses is one its policy has
    for grid in F.GRIDS.values():
        for policy in grid.policies:
            for cand in F.candidates(grid, policy):
                assert set(cand) | {"u"} <= set(KNOBS[policy]), (grid.name, policy)


def span(trace_id: str) -> tuple[str, int, int]:
    bt = BENCH_TRACES[trace_id]
    return bt.source, bt.start_s, bt.start_s + int(bt.days * DAY)


def test_tuning_and_evaluation_never_overlap() -> None:
    for grid in F.GRIDS.values():
        assert grid.tune_traces and grid.eval_traces
        assert set(grid.u_tune) <= set(grid.u)  # the tuned default is a point of the eval frontier
        for t in grid.tune_traces:
            src, lo, hi = span(t)
            assert BENCH_TRACES[t].split == "tune"
            assert src in ("servegen:m-small", "servegen:m-mid") and hi <= 10 * DAY  # days 1-10 only
            for e in grid.eval_traces:
                esrc, elo, ehi = span(e)
                assert BENCH_TRACES[e].split == "eval" and BENCH_TRACES[e].held_out
                assert esrc != src or elo >= hi or ehi <= lo, (grid.name, t, e)
